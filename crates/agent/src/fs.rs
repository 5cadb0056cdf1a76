//! Filesystem operations of the protocol (`filesystem.Filesystem` and `/files`), each run on a
//! blocking thread with the caller's filesystem identity so the kernel enforces that user's
//! permissions. The agent's root is the sandbox's root, so no path — `..`, absolute or a symlink —
//! can reach outside the sandbox.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use warren_protocol::connect::{Code, Error};
use warren_protocol::filesystem::{EntryInfo, FileType};

use crate::users::{self, User};

/// Resolves a protocol path for `user` (see [`warren_protocol::filesystem::resolve_path`]).
pub fn resolve(path: &str, user: &User) -> Result<PathBuf, Error> {
    warren_protocol::filesystem::resolve_path(path, &user.home)
}

pub fn io_error(e: &io::Error, path: &Path) -> Error {
    let p = path.display();
    match e.kind() {
        io::ErrorKind::NotFound => Error::new(Code::NotFound, format!("path {p} does not exist")),
        io::ErrorKind::PermissionDenied => Error::new(Code::PermissionDenied, format!("permission denied: {p}")),
        io::ErrorKind::AlreadyExists => Error::new(Code::AlreadyExists, format!("path {p} already exists")),
        _ if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) => {
            Error::new(Code::ResourceExhausted, format!("no space left on the sandbox's disk writing {p}"))
        }
        _ if e.raw_os_error() == Some(libc::ENOTDIR) => {
            Error::new(Code::InvalidArgument, format!("path {p} is not a directory"))
        }
        _ if e.raw_os_error() == Some(libc::EISDIR) => {
            Error::new(Code::InvalidArgument, format!("path {p} is a directory"))
        }
        _ if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
            Error::new(Code::FailedPrecondition, format!("directory {p} is not empty"))
        }
        _ => Error::new(Code::Internal, format!("{p}: {e}")),
    }
}

fn permissions_string(mode: u32, ft: FileType) -> String {
    let mut s = String::with_capacity(10);
    s.push(match ft {
        FileType::Directory => 'd',
        FileType::Symlink => 'L',
        _ => '-',
    });
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn rfc3339(secs: i64, nanos: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(secs).ok()? + time::Duration::nanoseconds(nanos);
    t.format(&time::format_description::well_known::Rfc3339).ok()
}

/// Describes one path (not following a final symlink, like envd).
pub fn entry(path: &Path) -> io::Result<EntryInfo> {
    let md = fs::symlink_metadata(path)?;
    let ft = if md.file_type().is_symlink() {
        FileType::Symlink
    } else if md.is_dir() {
        FileType::Directory
    } else {
        FileType::File
    };
    let (size, mode) = if ft == FileType::Symlink {
        // Report what the link points at, when it resolves.
        match fs::metadata(path) {
            Ok(t) => (t.len() as i64, t.permissions().mode() & 0o7777),
            Err(_) => (md.len() as i64, md.permissions().mode() & 0o7777),
        }
    } else {
        (md.len() as i64, md.permissions().mode() & 0o7777)
    };
    Ok(EntryInfo {
        name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "/".into()),
        file_type: ft,
        path: path.display().to_string(),
        size,
        mode,
        permissions: permissions_string(mode, ft),
        owner: users::name_of(md.uid(), "/etc/passwd"),
        group: users::name_of(md.gid(), "/etc/group"),
        modified_time: rfc3339(md.mtime(), md.mtime_nsec()),
        symlink_target: if ft == FileType::Symlink {
            fs::read_link(path).ok().map(|t| t.display().to_string())
        } else {
            None
        },
        metadata: read_metadata(path),
        is_symlink: ft == FileType::Symlink,
    })
}

/// Extended attributes that carry user metadata (E2B's convention): `user.e2b.<key>`.
pub const METADATA_XATTR_PREFIX: &str = "user.e2b.";

/// A file's user metadata. Empty when it has none or the filesystem keeps no extended attributes.
pub fn read_metadata(path: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut names = vec![0u8; 1024];
    let len = loop {
        match rustix::fs::llistxattr(path, &mut names) {
            Ok(n) => break n,
            // Grow once to what the kernel says it needs (bounded: names are short).
            Err(rustix::io::Errno::RANGE) if names.len() < 64 * 1024 => names.resize(names.len() * 8, 0),
            Err(_) => return out,
        }
    };
    for name in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = std::str::from_utf8(name) else { continue };
        let Some(key) = name.strip_prefix(METADATA_XATTR_PREFIX) else { continue };
        let mut value = vec![0u8; 4096];
        if let Ok(n) = rustix::fs::lgetxattr(path, name, &mut value) {
            out.insert(key.to_owned(), String::from_utf8_lossy(&value[..n]).into_owned());
        }
    }
    out
}

/// Sets user metadata on a file (as the calling user, who must own it).
pub fn write_metadata(path: &Path, metadata: &[(String, String)]) -> Result<(), Error> {
    for (k, v) in metadata {
        let name = format!("{METADATA_XATTR_PREFIX}{k}");
        rustix::fs::lsetxattr(path, name.as_str(), v.as_bytes(), rustix::fs::XattrFlags::empty()).map_err(|e| {
            let io = std::io::Error::from(e);
            let mut err = io_error(&io, path);
            if e == rustix::io::Errno::NOTSUP || e == rustix::io::Errno::OPNOTSUPP {
                err.message = format!("the filesystem at {} cannot store file metadata", path.display());
            }
            err
        })?;
    }
    Ok(())
}

pub fn stat(path: &Path) -> Result<EntryInfo, Error> {
    entry(path).map_err(|e| io_error(&e, path))
}

pub fn make_dir(path: &Path) -> Result<EntryInfo, Error> {
    if path.exists() {
        return Err(Error::new(Code::AlreadyExists, format!("path {} already exists", path.display())));
    }
    fs::create_dir_all(path).map_err(|e| io_error(&e, path))?;
    stat(path)
}

pub fn move_path(from: &Path, to: &Path) -> Result<EntryInfo, Error> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).map_err(|e| io_error(&e, parent))?;
    }
    fs::rename(from, to).map_err(|e| io_error(&e, from))?;
    stat(to)
}

pub fn remove(path: &Path) -> Result<(), Error> {
    let md = fs::symlink_metadata(path).map_err(|e| io_error(&e, path))?;
    if md.is_dir() {
        fs::remove_dir_all(path).map_err(|e| io_error(&e, path))
    } else {
        fs::remove_file(path).map_err(|e| io_error(&e, path))
    }
}

/// Lists a directory `depth` levels deep (0 and 1 both mean the directory itself).
pub fn list_dir(path: &Path, depth: u32) -> Result<Vec<EntryInfo>, Error> {
    let md = fs::metadata(path).map_err(|e| io_error(&e, path))?;
    if !md.is_dir() {
        return Err(Error::new(Code::InvalidArgument, format!("path {} is not a directory", path.display())));
    }
    let mut out = Vec::new();
    walk(path, depth.max(1), &mut out)?;
    Ok(out)
}

fn walk(dir: &Path, depth: u32, out: &mut Vec<EntryInfo>) -> Result<(), Error> {
    let rd = fs::read_dir(dir).map_err(|e| io_error(&e, dir))?;
    let mut names: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    names.sort();
    for p in names {
        let Ok(e) = entry(&p) else { continue };
        let is_dir = e.file_type == FileType::Directory;
        out.push(e);
        if is_dir && depth > 1 {
            walk(&p, depth - 1, out)?;
        }
    }
    Ok(())
}

/// Runs a filesystem closure as `user` on a blocking thread.
pub async fn run_as<T: Send + 'static>(user: User, f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(move || users::as_user(&user, f)).await.expect("filesystem task panicked")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            name: "user".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/user".into(),
            shell: "/bin/bash".into(),
            groups: vec![],
        }
    }

    #[test]
    fn relative_and_tilde_paths_start_at_home() {
        assert_eq!(resolve("a/b", &user()).unwrap(), PathBuf::from("/home/user/a/b"));
        assert_eq!(resolve("~/x", &user()).unwrap(), PathBuf::from("/home/user/x"));
        assert_eq!(resolve("/etc/../tmp/./x", &user()).unwrap(), PathBuf::from("/tmp/x"));
        assert_eq!(resolve("../../../../etc", &user()).unwrap(), PathBuf::from("/etc"));
        assert!(resolve("", &user()).is_err());
    }

    #[test]
    fn permission_strings() {
        assert_eq!(permissions_string(0o755, FileType::Directory), "drwxr-xr-x");
        assert_eq!(permissions_string(0o640, FileType::File), "-rw-r-----");
    }
}
