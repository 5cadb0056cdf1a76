//! Writable layers with enforced disk quotas. Every sandbox's upper and work directories live in its
//! own btrfs subvolume, and each subvolume has a qgroup limit, so the kernel refuses writes past the
//! quota (EDQUOT) without the sandbox being able to change it. The btrfs filesystem is a sparse image
//! under the data directory, created and loop-mounted once. (btrfs rather than XFS/ext4 project
//! quotas: kernels built without CONFIG_XFS_QUOTA or CONFIG_QFMT_V2, like this project's CI hosts,
//! still have btrfs qgroups, and creating a subvolume costs one ioctl.)

use std::ffi::c_void;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::RuntimeError;

const BTRFS_IOC_SUBVOL_CREATE: libc::c_ulong = 0x5000_940e;
const BTRFS_IOC_SNAP_DESTROY: libc::c_ulong = 0x5000_940f;
const BTRFS_IOC_SNAP_CREATE_V2: libc::c_ulong = 0x5000_9417;
const BTRFS_SUBVOL_RDONLY: u64 = 1 << 1;
/// Frozen layers live here: a name no sandbox id can have, so sweeps never take them.
const FROZEN_DIR: &str = ".frozen";
const BTRFS_IOC_QUOTA_CTL: libc::c_ulong = 0xc010_9428;
const BTRFS_IOC_QGROUP_LIMIT: libc::c_ulong = 0x8030_942b;
const BTRFS_IOC_INO_LOOKUP: libc::c_ulong = 0xd000_9412;
const BTRFS_IOC_FS_INFO: libc::c_ulong = 0x8400_941f;
const BTRFS_QUOTA_CTL_ENABLE: u64 = 1;
const BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA: u64 = 4;
const BTRFS_QGROUP_LIMIT_MAX_RFER: u64 = 1;
const BTRFS_FIRST_FREE_OBJECTID: u64 = 256;

#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; 4040],
}

#[repr(C)]
#[derive(Default)]
struct QuotaCtlArgs {
    cmd: u64,
    status: u64,
}

#[repr(C)]
#[derive(Default)]
struct QgroupLimitArgs {
    qgroupid: u64,
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}

#[repr(C)]
struct FsInfoArgs {
    max_id: u64,
    num_devices: u64,
    fsid: [u8; 16],
    rest: [u8; 992],
}

/// The quota-enforcing filesystem that holds every writable layer.
#[derive(Debug)]
pub struct LayerStore {
    root: PathBuf,
    root_fd: File,
    /// `/sys/fs/btrfs/<fsid>/qgroups`: each subvolume's usage as one small file (sampling every
    /// sandbox every second must not walk their trees).
    qgroups: Option<PathBuf>,
}

fn qerr(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> RuntimeError {
    let path = path.to_owned();
    move |source| RuntimeError::Quota { path, op, source }
}

fn ioctl<T>(fd: &File, req: libc::c_ulong, arg: &mut T) -> io::Result<()> {
    // SAFETY: every caller passes the request's matching #[repr(C)] argument struct.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req, arg as *mut T as *mut c_void) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl LayerStore {
    /// Mounts (creating on first use) the btrfs image at `data_dir/layers` and turns quotas on.
    pub fn open(data_dir: &Path, size_gb: u64) -> Result<LayerStore, RuntimeError> {
        let root = data_dir.join("layers");
        let image = data_dir.join("layers.btrfs");
        fs::create_dir_all(&root).map_err(qerr(&root, "mkdir"))?;
        if !is_btrfs_mount(&root) {
            if !image.exists() {
                let f = File::create(&image).map_err(qerr(&image, "create image"))?;
                f.set_len(size_gb.max(1) * 1024 * 1024 * 1024).map_err(qerr(&image, "size image"))?;
                drop(f);
                run(Command::new("mkfs.btrfs").args(["-q", "-f", "-m", "single"]).arg(&image), &image, "mkfs.btrfs")?;
            }
            run(
                Command::new("mount").args(["-t", "btrfs", "-o", "loop,noatime"]).arg(&image).arg(&root),
                &root,
                "mount",
            )?;
        }
        let root_fd = File::open(&root).map_err(qerr(&root, "open"))?;
        let mut store = LayerStore { root, root_fd, qgroups: None };
        store.enable_quotas()?;
        store.qgroups = store.qgroup_sysfs();
        Ok(store)
    }

    fn enable_quotas(&self) -> Result<(), RuntimeError> {
        // Simple quotas (Linux 6.7+) account at extent creation and cost far less than full qgroups.
        let mut args = QuotaCtlArgs { cmd: BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA, status: 0 };
        if ioctl(&self.root_fd, BTRFS_IOC_QUOTA_CTL, &mut args).is_ok() {
            return Ok(());
        }
        let mut args = QuotaCtlArgs { cmd: BTRFS_QUOTA_CTL_ENABLE, status: 0 };
        ioctl(&self.root_fd, BTRFS_IOC_QUOTA_CTL, &mut args).map_err(qerr(&self.root, "enable quotas"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn qgroup_sysfs(&self) -> Option<PathBuf> {
        let mut args = FsInfoArgs { max_id: 0, num_devices: 0, fsid: [0; 16], rest: [0; 992] };
        ioctl(&self.root_fd, BTRFS_IOC_FS_INFO, &mut args).ok()?;
        let _ = (args.max_id, args.num_devices, args.rest);
        let h: String = args.fsid.iter().map(|b| format!("{b:02x}")).collect();
        let uuid = format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]);
        let dir = PathBuf::from(format!("/sys/fs/btrfs/{uuid}/qgroups"));
        dir.is_dir().then_some(dir)
    }

    /// Bytes the subvolume `subvol` holds, from its qgroup (`None` when the kernel does not say).
    pub fn used_by_subvolume(&self, subvol: u32) -> Option<u64> {
        let p = self.qgroups.as_ref()?.join(format!("0_{subvol}")).join("referenced");
        fs::read_to_string(p).ok()?.trim().parse().ok()
    }

    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Creates the subvolume `<root>/<id>` with `upper` and `work` inside, limited to `bytes`.
    /// Returns the subvolume's directory and id (the qgroup that carries the limit).
    pub fn create(&self, id: &str, bytes: u64) -> Result<(PathBuf, u32), RuntimeError> {
        let dir = self.sandbox_dir(id);
        let mut args = VolArgs { fd: 0, name: [0; 4088] };
        if id.len() >= args.name.len() || id.contains('/') {
            return Err(qerr(&dir, "name subvolume")(io::Error::from(io::ErrorKind::InvalidInput)));
        }
        args.name[..id.len()].copy_from_slice(id.as_bytes());
        match ioctl(&self.root_fd, BTRFS_IOC_SUBVOL_CREATE, &mut args) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(qerr(&dir, "create subvolume")(e)),
        }
        let sub = File::open(&dir).map_err(qerr(&dir, "open subvolume"))?;
        let subvol_id = subvolume_id(&sub).map_err(qerr(&dir, "look up subvolume id"))?;
        let mut limit = QgroupLimitArgs {
            qgroupid: 0, // 0 = the subvolume the fd is in
            flags: BTRFS_QGROUP_LIMIT_MAX_RFER,
            max_rfer: bytes,
            ..Default::default()
        };
        ioctl(&sub, BTRFS_IOC_QGROUP_LIMIT, &mut limit).map_err(qerr(&dir, "set quota"))?;
        for name in ["upper", "work"] {
            let p = dir.join(name);
            match fs::create_dir(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(qerr(&p, "mkdir")(e)),
            }
        }
        Ok((dir, subvol_id as u32))
    }

    /// Where the frozen layer `layer` keeps its files (an overlay lower directory).
    pub fn frozen_layer(&self, layer: &str) -> PathBuf {
        self.root.join(FROZEN_DIR).join(layer).join("upper")
    }

    /// Freezes a copy of sandbox `id`'s writable layer as the read-only layer `layer`: a btrfs
    /// snapshot, so it costs the same whatever the layer holds, and shares its extents.
    pub fn freeze(&self, id: &str, layer: &str) -> Result<PathBuf, RuntimeError> {
        let frozen = self.root.join(FROZEN_DIR);
        fs::create_dir_all(&frozen).map_err(qerr(&frozen, "mkdir"))?;
        let src_dir = self.sandbox_dir(id);
        let src = File::open(&src_dir).map_err(qerr(&src_dir, "open layer"))?;
        let dst = File::open(&frozen).map_err(qerr(&frozen, "open"))?;
        let mut args = VolArgsV2 {
            fd: i64::from(src.as_raw_fd()),
            transid: 0,
            flags: BTRFS_SUBVOL_RDONLY,
            unused: [0; 4],
            name: [0; 4040],
        };
        if layer.is_empty() || layer.len() >= args.name.len() || layer.contains('/') || layer.starts_with('.') {
            return Err(qerr(&frozen, "name layer")(io::Error::from(io::ErrorKind::InvalidInput)));
        }
        args.name[..layer.len()].copy_from_slice(layer.as_bytes());
        ioctl(&dst, BTRFS_IOC_SNAP_CREATE_V2, &mut args).map_err(qerr(&frozen.join(layer), "snapshot layer"))?;
        Ok(self.frozen_layer(layer))
    }

    /// Deletes a frozen layer (idempotent).
    pub fn remove_frozen(&self, layer: &str) -> Result<(), RuntimeError> {
        let frozen = self.root.join(FROZEN_DIR);
        let dir = frozen.join(layer);
        if layer.is_empty() || layer.contains('/') || layer.starts_with('.') || !dir.exists() {
            return Ok(());
        }
        let fd = File::open(&frozen).map_err(qerr(&frozen, "open"))?;
        let mut args = VolArgs { fd: 0, name: [0; 4088] };
        args.name[..layer.len()].copy_from_slice(layer.as_bytes());
        match ioctl(&fd, BTRFS_IOC_SNAP_DESTROY, &mut args) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(qerr(&dir, "delete frozen layer")(e)),
        }
    }

    /// Frozen layers present on disk.
    pub fn frozen_layers(&self) -> Vec<String> {
        fs::read_dir(self.root.join(FROZEN_DIR))
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }

    /// Bytes a sandbox's layer holds (apparent size of its files; cheap enough for sampling).
    pub fn used(&self, id: &str) -> u64 {
        fn walk(p: &Path, total: &mut u64, budget: &mut u32) {
            let Ok(rd) = fs::read_dir(p) else { return };
            for e in rd.flatten() {
                if *budget == 0 {
                    return;
                }
                *budget -= 1;
                let Ok(md) = e.metadata() else { continue };
                if md.is_dir() {
                    walk(&e.path(), total, budget);
                } else {
                    use std::os::unix::fs::MetadataExt;
                    *total += md.blocks() * 512;
                }
            }
        }
        let mut total = 0;
        let mut budget = 200_000;
        walk(&self.sandbox_dir(id).join("upper"), &mut total, &mut budget);
        total
    }

    /// Deletes a sandbox's subvolume with everything in it.
    pub fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.sandbox_dir(id);
        if !dir.exists() {
            return Ok(());
        }
        let mut args = VolArgs { fd: 0, name: [0; 4088] };
        args.name[..id.len()].copy_from_slice(id.as_bytes());
        match ioctl(&self.root_fd, BTRFS_IOC_SNAP_DESTROY, &mut args) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            // Not a subvolume (a leftover plain directory): remove it the ordinary way.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOTDIR)) => {
                fs::remove_dir_all(&dir).map_err(qerr(&dir, "remove layer"))
            }
            Err(e) => Err(qerr(&dir, "delete subvolume")(e)),
        }
    }

    /// Sandbox layer directories present on disk.
    pub fn list(&self) -> Vec<String> {
        fs::read_dir(&self.root)
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }
}

/// The id of the subvolume `fd` lives in.
fn subvolume_id(fd: &File) -> io::Result<u64> {
    let mut args = InoLookupArgs { treeid: 0, objectid: BTRFS_FIRST_FREE_OBJECTID, name: [0; 4080] };
    ioctl(fd, BTRFS_IOC_INO_LOOKUP, &mut args)?;
    Ok(args.treeid)
}

fn run(cmd: &mut Command, path: &Path, what: &'static str) -> Result<(), RuntimeError> {
    let out = cmd.output().map_err(|e| RuntimeError::Prepare { what, path: path.to_owned(), source: e })?;
    if !out.status.success() {
        return Err(RuntimeError::Prepare {
            what,
            path: path.to_owned(),
            source: io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        });
    }
    Ok(())
}

/// Whether `path` is itself the mount point of a btrfs filesystem.
fn is_btrfs_mount(path: &Path) -> bool {
    let Ok(canon) = path.canonicalize() else { return false };
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else { return false };
    info.lines().any(|line| {
        let Some((left, right)) = line.split_once(" - ") else { return false };
        let mp = left.split(' ').nth(4).unwrap_or_default();
        Path::new(&unescape(mp)) == canon && right.starts_with("btrfs ")
    })
}

fn unescape(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as octal.
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}
