//! CRIU (checkpoint/restore in user space), which memory snapshots of native sandboxes stand on:
//! whether the configured binary exists, is new enough and works on this kernel. Debian 12's own
//! CRIU (3.17) fails `criu check` on recent kernels; `scripts/criu.sh` builds 4.1.1.

use std::path::Path;
use std::process::{Command, Stdio};

/// The oldest CRIU whose dumps work on the kernels Warren runs on.
pub const MIN_MAJOR: u32 = 4;

/// The CRIU version at `criu` when it is new enough and `criu check` passes, or why not (in words
/// a user can act on).
pub fn probe(criu: &Path) -> Result<String, String> {
    let run = |args: &[&str]| {
        Command::new(criu)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{} cannot be run ({e}); scripts/deps.sh builds CRIU 4.1.1 there", criu.display()))
    };
    let out = run(&["--version"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = parse_version(&text)
        .ok_or_else(|| format!("{} --version printed no version ({:?})", criu.display(), text.trim()))?;
    let major: u32 = version.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
    if major < MIN_MAJOR {
        return Err(format!(
            "{} is CRIU {version}; {MIN_MAJOR}.0 or newer is needed (scripts/criu.sh builds 4.1.1)",
            criu.display()
        ));
    }
    let check = run(&["check"])?;
    if !check.status.success() {
        let err = String::from_utf8_lossy(&check.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no reason given");
        return Err(format!("`{} check` fails on this kernel: {}", criu.display(), last.trim()));
    }
    Ok(version)
}

/// Whether `criu` can restore memory lazily here: the kernel's userfaultfd with the events a
/// restore needs, `/dev/userfaultfd` (tasks in a user namespace make their descriptor through it),
/// and the CRIU fix that does so (recorded by `scripts/criu.sh` beside the binary).
pub fn lazy_pages(criu: &Path) -> Result<(), String> {
    if !Path::new("/dev/userfaultfd").exists() {
        return Err("the kernel offers no /dev/userfaultfd".into());
    }
    let fixes = criu.parent().and_then(Path::parent).map(|p| p.join("fixes"));
    let fixed = fixes.as_ref().and_then(|f| std::fs::read_to_string(f).ok()).unwrap_or_default();
    if !fixed.split_whitespace().any(|f| f == "lazy-pages-in-userns") {
        return Err(format!("{} lacks the lazy-pages-in-userns fix of scripts/criu.sh", criu.display()));
    }
    let out = Command::new(criu)
        .args(["check", "--feature", "uffd-noncoop"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{} cannot be run ({e})", criu.display()))?;
    if !out.status.success() {
        return Err("the kernel's userfaultfd lacks the non-cooperative events".into());
    }
    Ok(())
}

/// `Version: 4.1.1` (the first line of `criu --version`) → `4.1.1`.
fn parse_version(text: &str) -> Option<String> {
    let v = text.lines().find_map(|l| l.trim().strip_prefix("Version:"))?.trim();
    (!v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.')).then(|| v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_criu_output() {
        assert_eq!(parse_version("Version: 4.1.1\n").as_deref(), Some("4.1.1"));
        assert_eq!(parse_version("Version: 3.17.1\nGitID: v3.17.1\n").as_deref(), Some("3.17.1"));
        assert_eq!(parse_version("criu: command not found"), None);
        assert_eq!(parse_version("Version: 4.1-rc1"), None);
    }

    #[test]
    fn lazy_restores_need_the_fix_of_criu_sh() {
        let dir = std::env::temp_dir().join(format!("warren-criu-fixes-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sbin")).unwrap();
        std::fs::write(dir.join("fixes"), "passcred-eopnotsupp kdat-cache-in-dev-shm\n").unwrap();
        let why = lazy_pages(&dir.join("sbin/criu")).unwrap_err();
        assert!(why.contains("lazy-pages-in-userns") || why.contains("/dev/userfaultfd"), "{why}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_binary_says_where_it_was_looked_for() {
        let why = probe(Path::new("/nonexistent/criu")).unwrap_err();
        assert!(why.contains("/nonexistent/criu") && why.contains("scripts/deps.sh"), "{why}");
    }
}
