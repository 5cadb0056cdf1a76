//! What the host has left: the figures capacity checks compare against their reserves.

use std::path::Path;

/// `MemAvailable` from /proc/meminfo, in MiB.
pub fn mem_available_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Space available to unprivileged writers on the filesystem holding `path`, in MiB.
pub fn disk_free_mb(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize) / (1024 * 1024))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_host_reports_memory_and_disk() {
        assert!(super::mem_available_mb().is_some_and(|m| m > 0));
        assert!(super::disk_free_mb(std::path::Path::new("/")).is_some());
    }
}
