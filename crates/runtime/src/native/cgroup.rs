//! cgroup v1 and v2 behind one interface. This host mounts v1 controllers with an empty v2 hierarchy
//! beside them; a pure v2 host has the controllers in the unified tree. Every sandbox gets
//! `<controller root>/warren/<id>` with CPU, memory and pids limits plus a freezer.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{RuntimeError, Stats};

const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone)]
pub struct Layout {
    kind: Kind,
    /// The cgroup (below each controller root) holding this daemon's sandboxes.
    parent: String,
}

#[derive(Debug, Clone)]
enum Kind {
    V1 { cpu: PathBuf, cpuacct: PathBuf, memory: PathBuf, pids: PathBuf, freezer: PathBuf },
    V2 { root: PathBuf },
}

/// Limits written into a sandbox's cgroup.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub cpu_count: u32,
    pub memory_bytes: u64,
    pub pids_max: u32,
}

fn cg_err(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> RuntimeError {
    let path = path.to_owned();
    move |source| RuntimeError::Cgroup { path, op, source }
}

fn write(path: &Path, value: &str) -> Result<(), RuntimeError> {
    fs::write(path, value).map_err(cg_err(path, "write"))
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl Layout {
    /// Finds the controllers from the mount table.
    pub fn detect(parent: &str) -> Result<Layout, RuntimeError> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|source| RuntimeError::Prepare {
            what: "mount table",
            path: "/proc/self/mountinfo".into(),
            source,
        })?;
        let kind = Self::from_mountinfo(&mountinfo, |p| fs::read_to_string(p).ok())?;
        Ok(Layout { kind, parent: parent.to_owned() })
    }

    fn from_mountinfo(mountinfo: &str, read: impl Fn(&Path) -> Option<String>) -> Result<Kind, RuntimeError> {
        let mut v1 = std::collections::HashMap::new();
        let mut v2 = None;
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else { continue };
            let mount_point = left.split(' ').nth(4).unwrap_or_default();
            let mut r = right.split(' ');
            let fstype = r.next().unwrap_or_default();
            let _source = r.next();
            let options = r.next().unwrap_or_default();
            match fstype {
                "cgroup" => {
                    for opt in options.split(',') {
                        if matches!(opt, "cpu" | "cpuacct" | "memory" | "pids" | "freezer") {
                            v1.insert(opt.to_owned(), PathBuf::from(mount_point));
                        }
                    }
                }
                "cgroup2" => v2 = Some(PathBuf::from(mount_point)),
                _ => {}
            }
        }
        if let Some(root) = &v2 {
            let controllers = read(&root.join("cgroup.controllers")).unwrap_or_default();
            let have: Vec<&str> = controllers.split_whitespace().collect();
            if ["cpu", "memory", "pids"].iter().all(|c| have.contains(c)) {
                return Ok(Kind::V2 { root: root.clone() });
            }
        }
        let get = |name: &str| {
            v1.get(name).cloned().ok_or_else(|| RuntimeError::HostUnsupported {
                backend: "native",
                reason: format!(
                    "no cgroup v2 with cpu, memory and pids controllers and no cgroup v1 '{name}' controller is mounted"
                ),
            })
        };
        Ok(Kind::V1 {
            cpu: get("cpu")?,
            cpuacct: get("cpuacct")?,
            memory: get("memory")?,
            pids: get("pids")?,
            freezer: get("freezer")?,
        })
    }

    pub fn version(&self) -> u8 {
        match self.kind {
            Kind::V1 { .. } => 1,
            Kind::V2 { .. } => 2,
        }
    }

    /// The distinct hierarchy roots (v1 may co-mount cpu and cpuacct).
    fn roots(&self) -> Vec<PathBuf> {
        let mut roots = match &self.kind {
            Kind::V1 { cpu, cpuacct, memory, pids, freezer } => {
                vec![cpu.clone(), cpuacct.clone(), memory.clone(), pids.clone(), freezer.clone()]
            }
            Kind::V2 { root } => vec![root.clone()],
        };
        roots.sort();
        roots.dedup();
        roots
    }

    /// Creates the `warren` parent cgroups (and on v2 delegates the controllers to them).
    pub fn prepare(&self) -> Result<(), RuntimeError> {
        for root in self.roots() {
            let parent = root.join(&self.parent);
            fs::create_dir_all(&parent).map_err(cg_err(&parent, "mkdir"))?;
        }
        if let Kind::V2 { root } = &self.kind {
            for dir in [root.clone(), root.join(&self.parent)] {
                let file = dir.join("cgroup.subtree_control");
                write(&file, "+cpu +memory +pids")?;
            }
        }
        Ok(())
    }

    pub fn sandbox(&self, id: &str) -> SandboxCgroup {
        SandboxCgroup { layout: self.clone(), id: id.to_owned() }
    }

    /// Ids of every sandbox cgroup present (live or leftover).
    pub fn list(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for root in self.roots() {
            if let Ok(rd) = fs::read_dir(root.join(&self.parent)) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        ids.push(e.file_name().to_string_lossy().into_owned());
                    }
                }
            }
        }
        ids.sort();
        ids.dedup();
        ids
    }
}

/// One sandbox's cgroup(s).
#[derive(Debug, Clone)]
pub struct SandboxCgroup {
    layout: Layout,
    id: String,
}

impl SandboxCgroup {
    fn dir(&self, root: &Path) -> PathBuf {
        root.join(&self.layout.parent).join(&self.id)
    }

    fn dirs(&self) -> Vec<PathBuf> {
        self.layout.roots().iter().map(|r| self.dir(r)).collect()
    }

    /// Creates the cgroup and writes its limits.
    pub fn create(&self, limits: Limits) -> Result<(), RuntimeError> {
        for dir in self.dirs() {
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(cg_err(&dir, "mkdir")(e)),
            }
        }
        let quota = CPU_PERIOD_US * u64::from(limits.cpu_count.max(1));
        match &self.layout.kind {
            Kind::V1 { cpu, memory, pids, .. } => {
                let cpu = self.dir(cpu);
                write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write(&cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
                let mem = self.dir(memory);
                write(&mem.join("memory.limit_in_bytes"), &limits.memory_bytes.to_string())?;
                let memsw = mem.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &limits.memory_bytes.to_string())?;
                }
                write(&self.dir(pids).join("pids.max"), &limits.pids_max.to_string())?;
            }
            Kind::V2 { root } => {
                let dir = self.dir(root);
                write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
                write(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
                let swap = dir.join("memory.swap.max");
                if swap.exists() {
                    write(&swap, "0")?;
                }
                write(&dir.join("pids.max"), &limits.pids_max.to_string())?;
            }
        }
        Ok(())
    }

    /// Changes the CPU quota of a live sandbox (burst and back).
    pub fn set_cpu(&self, cpu_count: u32) -> Result<(), RuntimeError> {
        let quota = CPU_PERIOD_US * u64::from(cpu_count.max(1));
        match &self.layout.kind {
            Kind::V1 { cpu, .. } => write(&self.dir(cpu).join("cpu.cfs_quota_us"), &quota.to_string()),
            Kind::V2 { root } => write(&self.dir(root).join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}")),
        }
    }

    /// The `cgroup.procs` files a process writes its pid into to join every controller.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs().into_iter().map(|d| d.join("cgroup.procs")).collect()
    }

    fn pids(&self) -> Vec<i32> {
        let mut all = Vec::new();
        for dir in self.dirs() {
            if let Ok(s) = fs::read_to_string(dir.join("cgroup.procs")) {
                all.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        all.sort_unstable();
        all.dedup();
        all
    }

    /// The directory whose freezer holds the sandbox (CRIU's `--freeze-cgroup`).
    pub fn freezer_dir(&self) -> PathBuf {
        match &self.layout.kind {
            Kind::V1 { freezer, .. } => self.dir(freezer),
            Kind::V2 { root } => self.dir(root),
        }
    }

    pub fn freeze(&self) -> Result<(), RuntimeError> {
        self.set_frozen(true)
    }

    pub fn thaw(&self) -> Result<(), RuntimeError> {
        self.set_frozen(false)
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), RuntimeError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        match &self.layout.kind {
            Kind::V1 { freezer, .. } => {
                let file = self.dir(freezer).join("freezer.state");
                let want = if frozen { "FROZEN" } else { "THAWED" };
                write(&file, want)?;
                // FREEZING is transient; poll until the kernel reports the final state.
                while fs::read_to_string(&file).map_err(cg_err(&file, "read"))?.trim() != want {
                    if Instant::now() > deadline {
                        return Err(cg_err(&file, "freeze")(io::Error::from(io::ErrorKind::TimedOut)));
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            Kind::V2 { root } => {
                let dir = self.dir(root);
                write(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
                let want = if frozen { "frozen 1" } else { "frozen 0" };
                let events = dir.join("cgroup.events");
                while !fs::read_to_string(&events).map_err(cg_err(&events, "read"))?.lines().any(|l| l == want) {
                    if Instant::now() > deadline {
                        return Err(cg_err(&events, "freeze")(io::Error::from(io::ErrorKind::TimedOut)));
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        Ok(())
    }

    /// Kills every process in the cgroup and removes it, waiting up to `wait` for the processes to go.
    pub fn kill_and_remove(&self, wait: Duration) -> Result<(), RuntimeError> {
        let deadline = Instant::now() + wait;
        if let Kind::V2 { root } = &self.layout.kind {
            let kill = self.dir(root).join("cgroup.kill");
            if kill.exists() {
                let _ = fs::write(&kill, "1");
            }
        }
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            // A frozen task does not die until thawed.
            let _ = self.thaw_quietly();
            if Instant::now() > deadline {
                let dir = self.dirs().remove(0);
                return Err(cg_err(&dir, "kill")(io::Error::from(io::ErrorKind::TimedOut)));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        for dir in self.dirs() {
            // rmdir can race with the last task's exit accounting; retry briefly.
            let mut tries = 0;
            loop {
                match fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 200 => {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => return Err(cg_err(&dir, "rmdir")(e)),
                }
            }
        }
        Ok(())
    }

    /// Thaws without waiting for the state to settle (before killing: frozen tasks cannot die).
    pub fn thaw_quietly(&self) -> io::Result<()> {
        match &self.layout.kind {
            Kind::V1 { freezer, .. } => fs::write(self.dir(freezer).join("freezer.state"), "THAWED"),
            Kind::V2 { root } => fs::write(self.dir(root).join("cgroup.freeze"), "0"),
        }
    }

    /// Fills the CPU, memory and process-count fields of `stats`. Processes, not tasks
    /// (`pids.current` counts threads): the agent's own threads must not look like user work.
    pub fn stats(&self, stats: &mut Stats) {
        match &self.layout.kind {
            Kind::V1 { cpuacct, memory, pids, .. } => {
                stats.cpu_usage_ns = read_u64(&self.dir(cpuacct).join("cpuacct.usage")).unwrap_or(0);
                let mem = self.dir(memory);
                stats.memory_used_bytes = read_u64(&mem.join("memory.usage_in_bytes")).unwrap_or(0);
                stats.memory_limit_bytes = read_u64(&mem.join("memory.limit_in_bytes")).unwrap_or(0);
                stats.memory_cache_bytes = stat_field(&mem.join("memory.stat"), "total_cache").unwrap_or(0);
                stats.pids = count_lines(&self.dir(pids).join("cgroup.procs"));
            }
            Kind::V2 { root } => {
                let dir = self.dir(root);
                stats.cpu_usage_ns = stat_field(&dir.join("cpu.stat"), "usage_usec").unwrap_or(0) * 1000;
                stats.memory_used_bytes = read_u64(&dir.join("memory.current")).unwrap_or(0);
                stats.memory_limit_bytes = read_u64(&dir.join("memory.max")).unwrap_or(0);
                stats.memory_cache_bytes = stat_field(&dir.join("memory.stat"), "file").unwrap_or(0);
                stats.pids = count_lines(&dir.join("cgroup.procs"));
            }
        }
    }

    /// Fills only CPU time and memory used (two reads), and cached memory when `with_cache` (the
    /// kernel builds the whole memory.stat for it).
    pub fn sample(&self, stats: &mut Stats, with_cache: bool) {
        match &self.layout.kind {
            Kind::V1 { cpuacct, memory, .. } => {
                stats.cpu_usage_ns = read_u64(&self.dir(cpuacct).join("cpuacct.usage")).unwrap_or(0);
                let mem = self.dir(memory);
                stats.memory_used_bytes = read_u64(&mem.join("memory.usage_in_bytes")).unwrap_or(0);
                if with_cache {
                    stats.memory_cache_bytes = stat_field(&mem.join("memory.stat"), "total_cache").unwrap_or(0);
                }
            }
            Kind::V2 { root } => {
                let dir = self.dir(root);
                stats.cpu_usage_ns = stat_field(&dir.join("cpu.stat"), "usage_usec").unwrap_or(0) * 1000;
                stats.memory_used_bytes = read_u64(&dir.join("memory.current")).unwrap_or(0);
                if with_cache {
                    stats.memory_cache_bytes = stat_field(&dir.join("memory.stat"), "file").unwrap_or(0);
                }
            }
        }
    }

    /// Whether the kernel's OOM killer fired in this cgroup.
    pub fn oom_killed(&self) -> bool {
        match &self.layout.kind {
            Kind::V1 { memory, .. } => {
                stat_field(&self.dir(memory).join("memory.oom_control"), "oom_kill").unwrap_or(0) > 0
            }
            Kind::V2 { root } => stat_field(&self.dir(root).join("memory.events"), "oom_kill").unwrap_or(0) > 0,
        }
    }
}

fn stat_field(path: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Lines in a file (processes in a `cgroup.procs`); 0 when unreadable.
fn count_lines(path: &Path) -> u64 {
    fs::read(path).map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64).unwrap_or(0)
}

/// What [`favor_migrations`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrations {
    /// The host already favoured them.
    AlreadyFavoured,
    /// Warren turned the flag on.
    Favoured,
}

/// Sets cgroup2's `favordynmods` flag, which makes moving a task between cgroups cheap: without
/// it every move (each sandbox's init joining its cgroup, each task CRIU restores) waits for an
/// RCU grace period, ≈ 5 ms on these hosts, at the price of slightly dearer fork and exit. The
/// flag belongs to the cgroup2 root but the lock it governs serves v1 hierarchies too, so it
/// pays on v1 hosts as well. Set through a remount that keeps the mount's other options (a
/// cgroup2 remount replaces them all; `nsdelegate` must survive), or through a short-lived
/// cgroup2 mount at `scratch` when none is mounted.
pub fn favor_migrations(scratch: &Path) -> Result<Migrations, String> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("reading the mount table: {e}"))?;
    match cgroup2_mount(&mountinfo) {
        Some(m) if m.favours_migrations() => Ok(Migrations::AlreadyFavoured),
        Some(m) => {
            let data = remount_data(&m.super_options);
            mount(None::<&str>, m.point.as_path(), None::<&str>, MsFlags::MS_REMOUNT | m.flags, Some(data.as_str()))
                .map_err(|e| format!("remounting {} with {data}: {e}", m.point.display()))?;
            // Outside the host's cgroup namespace the kernel accepts the remount and ignores
            // the flag: believe the mount table, not the call.
            let after = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            match cgroup2_mount(&after) {
                Some(m) if m.favours_migrations() => Ok(Migrations::Favoured),
                _ => Err(format!(
                    "the kernel did not keep favordynmods on {} (is warren outside the host's cgroup namespace?)",
                    m.point.display()
                )),
            }
        }
        None => {
            fs::create_dir_all(scratch).map_err(|e| format!("creating {}: {e}", scratch.display()))?;
            let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            mount(Some("cgroup2"), scratch, Some("cgroup2"), flags, Some("favordynmods"))
                .map_err(|e| format!("mounting cgroup2 at {} with favordynmods: {e}", scratch.display()))?;
            // The flag stays with the cgroup2 root after the mount is gone.
            let _ = umount2(scratch, MntFlags::MNT_DETACH);
            let _ = fs::remove_dir(scratch);
            Ok(Migrations::Favoured)
        }
    }
}

#[derive(Debug, PartialEq)]
struct Cgroup2Mount {
    point: PathBuf,
    /// The mount's own flags (nosuid, nodev, …), which a remount would otherwise clear.
    flags: nix::mount::MsFlags,
    super_options: String,
}

impl Cgroup2Mount {
    fn favours_migrations(&self) -> bool {
        self.super_options.split(',').any(|o| o == "favordynmods")
    }
}

/// The first cgroup2 mount in a mount table (`/proc/self/mountinfo`).
fn cgroup2_mount(mountinfo: &str) -> Option<Cgroup2Mount> {
    use nix::mount::MsFlags;
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut r = right.split(' ');
        if r.next()? != "cgroup2" {
            return None;
        }
        let super_options = r.nth(1)?.to_owned();
        let mut l = left.split(' ');
        let point = PathBuf::from(l.nth(4)?.replace("\\040", " "));
        let flags = l.next()?.split(',').fold(MsFlags::empty(), |f, o| {
            f | match o {
                "ro" => MsFlags::MS_RDONLY,
                "nosuid" => MsFlags::MS_NOSUID,
                "nodev" => MsFlags::MS_NODEV,
                "noexec" => MsFlags::MS_NOEXEC,
                "noatime" => MsFlags::MS_NOATIME,
                "nodiratime" => MsFlags::MS_NODIRATIME,
                "relatime" => MsFlags::MS_RELATIME,
                _ => MsFlags::empty(),
            }
        });
        Some(Cgroup2Mount { point, flags, super_options })
    })
}

/// The option string of a remount that keeps a cgroup2 mount's options and adds favordynmods
/// (`rw`/`ro` travel as mount flags).
fn remount_data(super_options: &str) -> String {
    let mut opts: Vec<&str> = super_options.split(',').filter(|o| !matches!(*o, "rw" | "ro" | "")).collect();
    opts.push("favordynmods");
    opts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
35 25 0:30 / /sys/fs/cgroup/cpu rw,relatime shared:11 - cgroup cgroup rw,cpu
36 25 0:31 / /sys/fs/cgroup/cpuacct rw,relatime shared:12 - cgroup cgroup rw,cpuacct
37 25 0:32 / /sys/fs/cgroup/memory rw,relatime shared:13 - cgroup cgroup rw,memory
38 25 0:33 / /sys/fs/cgroup/pids rw,relatime shared:14 - cgroup cgroup rw,pids
39 25 0:34 / /sys/fs/cgroup/freezer rw,relatime shared:15 - cgroup cgroup rw,freezer
40 25 0:35 / /sys/fs/cgroup/unified rw,relatime shared:16 - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_host_without_v2_controllers_uses_v1() {
        let layout = Layout::from_mountinfo(HYBRID, |_| Some(String::new())).unwrap();
        match layout {
            Kind::V1 { memory, cpuacct, .. } => {
                assert_eq!(memory, PathBuf::from("/sys/fs/cgroup/memory"));
                assert_eq!(cpuacct, PathBuf::from("/sys/fs/cgroup/cpuacct"));
            }
            other => panic!("expected v1, got {other:?}"),
        }
    }

    #[test]
    fn v2_with_controllers_wins() {
        let layout = Layout::from_mountinfo(HYBRID, |_| Some("cpuset cpu io memory pids".into())).unwrap();
        assert!(matches!(layout, Kind::V2 { .. }));
    }

    #[test]
    fn comounted_cpu_cpuacct_is_one_root() {
        let info = "35 25 0:30 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                    37 25 0:32 / /m rw - cgroup cgroup rw,memory\n\
                    38 25 0:33 / /p rw - cgroup cgroup rw,pids\n\
                    39 25 0:34 / /f rw - cgroup cgroup rw,freezer\n";
        let kind = Layout::from_mountinfo(info, |_| None).unwrap();
        assert_eq!(Layout { kind, parent: "warren".into() }.roots().len(), 4);
    }

    #[test]
    fn missing_controller_is_a_clear_error() {
        let err = Layout::from_mountinfo("", |_| None).unwrap_err();
        assert!(err.to_string().contains("controller"), "{err}");
    }

    #[test]
    fn a_cgroup2_remount_keeps_its_options() {
        let table = "25 20 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        let m = cgroup2_mount(table).expect("found");
        assert_eq!(m.point, PathBuf::from("/sys/fs/cgroup"));
        use nix::mount::MsFlags;
        assert_eq!(m.flags, MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RELATIME);
        assert_eq!(remount_data(&m.super_options), "nsdelegate,memory_recursiveprot,favordynmods");
        assert_eq!(remount_data("rw"), "favordynmods");
    }

    #[test]
    fn v1_hierarchies_are_not_the_cgroup2_mount() {
        let table = "30 25 0:26 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                     40 25 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(table).expect("found").point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(cgroup2_mount("30 25 0:26 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"), None);
    }
}
