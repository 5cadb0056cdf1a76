//! Users of the sandbox, read straight from its `/etc/passwd` and `/etc/group` (the agent is static
//! and has no NSS), and running file operations as one of them.

use std::fs;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The text of a file, re-read only when its modification time or size changes (checked at most
/// every 100 ms): every request resolves its user and every listed entry its owner, and the files
/// rarely change.
fn cached(path: &'static str) -> io::Result<Arc<str>> {
    type Entry = (&'static str, std::time::Instant, Option<SystemTime>, u64, Arc<str>);
    static CACHE: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, checked, _, _, text)) = cache.iter().find(|(p, ..)| *p == path) {
        if checked.elapsed() < std::time::Duration::from_millis(100) {
            return Ok(text.clone());
        }
    }
    let md = fs::metadata(path)?;
    let (mtime, len) = (md.modified().ok(), md.len());
    if let Some(e) = cache.iter_mut().find(|(p, ..)| *p == path) {
        if e.2 == mtime && e.3 == len && mtime.is_some() {
            e.1 = std::time::Instant::now();
            return Ok(e.4.clone());
        }
    }
    let text: Arc<str> = fs::read_to_string(path)?.into();
    cache.retain(|(p, ..)| *p != path);
    cache.push((path, std::time::Instant::now(), mtime, len, text.clone()));
    Ok(text)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
    pub groups: Vec<u32>,
}

/// Looks a user up by name.
pub fn lookup(name: &str) -> io::Result<User> {
    let passwd = cached("/etc/passwd")?;
    let group = cached("/etc/group").unwrap_or_else(|_| "".into());
    parse(name, &passwd, &group)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("user {name:?} does not exist in this sandbox")))
}

fn parse(name: &str, passwd: &str, group: &str) -> Option<User> {
    let line = passwd.lines().find(|l| l.split(':').next() == Some(name))?;
    let f: Vec<&str> = line.split(':').collect();
    if f.len() < 7 {
        return None;
    }
    let uid = f[2].parse().ok()?;
    let gid = f[3].parse().ok()?;
    let mut groups = vec![gid];
    for g in group.lines() {
        let gf: Vec<&str> = g.split(':').collect();
        if gf.len() >= 4 && gf[3].split(',').any(|m| m == name) {
            if let Ok(id) = gf[2].parse() {
                if !groups.contains(&id) {
                    groups.push(id);
                }
            }
        }
    }
    Some(User { name: name.to_owned(), uid, gid, home: f[5].to_owned(), shell: f[6].to_owned(), groups })
}

/// Name of a uid or gid for display (`owner`/`group` of entries).
pub fn name_of(id: u32, file: &'static str) -> String {
    cached(file)
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                let _ = f.next();
                (f.next()?.parse::<u32>().ok()? == id).then(|| name.to_owned())
            })
        })
        .unwrap_or_else(|| id.to_string())
}

/// Whether the kernel has per-thread filesystem ids (gVisor's does not: `setfsuid` is ENOSYS).
fn fsuid_works() -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // SAFETY: an invalid id changes nothing and returns the current fsuid, or -1 when unsupported.
    *WORKS.get_or_init(|| unsafe { libc::syscall(libc::SYS_setfsuid, u32::MAX as libc::c_long) } >= 0)
}

/// Runs `f` on the current (blocking) thread with the filesystem identity of `user`, so the kernel
/// applies that user's permissions and new files belong to them. fsuid/fsgid and the group list are
/// per-thread at the syscall level; the raw syscalls are used because libc would broadcast them to
/// every thread. Where filesystem ids do not exist, the thread's effective ids are switched
/// instead (the saved ids stay root, so it switches back).
pub fn as_user<T>(user: &User, f: impl FnOnce() -> T) -> T {
    if user.uid == 0 {
        return f();
    }
    let (set_uid, set_gid) = if fsuid_works() {
        (libc::SYS_setfsuid, libc::SYS_setfsgid)
    } else {
        (libc::SYS_setresuid, libc::SYS_setresgid)
    };
    let set = |nr: libc::c_long, id: u32| {
        // SAFETY: raw per-thread credential syscalls with plain integer arguments.
        unsafe {
            if nr == libc::SYS_setresuid || nr == libc::SYS_setresgid {
                libc::syscall(nr, -1 as libc::c_long, id as libc::c_long, -1 as libc::c_long);
            } else {
                libc::syscall(nr, id as libc::c_long);
            }
        }
    };
    // SAFETY: raw per-thread syscall with a valid array.
    unsafe { libc::syscall(libc::SYS_setgroups, user.groups.len(), user.groups.as_ptr()) };
    set(set_gid, user.gid);
    set(set_uid, user.uid);
    struct Restore<F: Fn(libc::c_long, u32)> {
        set: F,
        set_uid: libc::c_long,
        set_gid: libc::c_long,
    }
    impl<F: Fn(libc::c_long, u32)> Drop for Restore<F> {
        fn drop(&mut self) {
            // Back to root's identity for the next task on this thread (uid first: only root may
            // change its groups).
            (self.set)(self.set_uid, 0);
            (self.set)(self.set_gid, 0);
            // SAFETY: raw per-thread syscall with an empty list.
            unsafe { libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<u32>()) };
        }
    }
    let _restore = Restore { set, set_uid, set_gid };
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_user_and_supplementary_groups() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/bash\n";
        let group = "root:x:0:\nsudo:x:27:user\nuser:x:1000:\n";
        let u = parse("user", passwd, group).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/user"));
        assert_eq!(u.groups, vec![1000, 27]);
        assert!(parse("nobody", passwd, group).is_none());
    }
}
