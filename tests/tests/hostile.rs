//! Hostile code: each probe runs inside a sandbox as its unprivileged user and as its root, and
//! must fail in the specific way stated; afterwards the host and a neighbour sandbox are fine.
//! (Network probes — the host API, other sandboxes, metadata — are in network.rs; mount,
//! module loading, fork bombs, memory and disk limits in sandboxes.rs.)

use std::time::{Duration, Instant};

use serde_json::json;
use warren_e2e::{shared, wait_for, Daemon, Sandbox};

fn daemon() -> &'static Daemon {
    shared("hostile")
}

/// Runs a Python probe that prints its outcome on one line (an errno name, or what it got).
fn probe(sb: &Sandbox, user: &str, code: &str) -> String {
    let path = format!("/tmp/probe-{}.py", user);
    let (status, body) = sb.write_file(&path, code.as_bytes());
    assert_eq!(status, 200, "{body}");
    let r = sb.sh_as(user, &format!("python3 {path} 2>&1"));
    r.stdout.trim().to_owned()
}

const ERRNO: &str = "import errno, os, socket, ctypes\n\
def attempt(f):\n    try:\n        f()\n        print('ALLOWED')\n    except OSError as e:\n        print(errno.errorcode.get(e.errno, e.errno))\n";

fn libc_call(body: &str) -> String {
    format!(
        "import ctypes, errno\nlibc = ctypes.CDLL(None, use_errno=True)\nr = {body}\n\
         print('ALLOWED' if r >= 0 else errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno()))\n"
    )
}

#[test]
fn privileged_operations_fail_with_the_expected_errors_as_user_and_root() {
    let d = daemon();
    let sb = d.create(json!({"templateID": "base"}));
    for user in ["user", "root"] {
        let p = |code: &str| probe(&sb, user, code);
        // The probes can tell "allowed" from "refused": an ordinary socket is allowed.
        assert_eq!(p(&format!("{ERRNO}attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))")), "ALLOWED");
        // Raw and packet sockets need CAP_NET_RAW, which no sandbox has.
        assert_eq!(
            p(&format!("{ERRNO}attempt(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))")),
            "EPERM",
            "{user}"
        );
        assert_eq!(
            p(&format!("{ERRNO}attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))")),
            "EPERM",
            "{user}"
        );
        // Kernel tunables and the magic SysRq key.
        let sysctl = p(&format!("{ERRNO}import os.path\nassert os.path.exists('/proc/sys/kernel/panic')\nattempt(lambda: open('/proc/sys/kernel/panic', 'w').write('1'))"));
        assert!(["EROFS", "EACCES", "EPERM"].contains(&sysctl.as_str()), "{user}: /proc/sys write gave {sysctl}");
        let sysrq = p(&format!("{ERRNO}attempt(lambda: open('/proc/sysrq-trigger', 'w').write('h'))"));
        assert!(["EROFS", "EACCES", "ENOENT", "EPERM"].contains(&sysrq.as_str()), "{user}: sysrq-trigger gave {sysrq}");
        // Device nodes.
        assert_eq!(p(&format!("{ERRNO}import stat\nattempt(lambda: os.mknod('/tmp/sda-{user}', stat.S_IFBLK | 0o600, os.makedev(8, 0)))")), "EPERM", "{user}");
        // New namespaces and joining others'.
        assert_eq!(p(&libc_call("libc.unshare(0x10000000)")), "EPERM", "{user}: unshare(CLONE_NEWUSER)");
        assert_eq!(p(&libc_call("libc.unshare(0x40000000)")), "EPERM", "{user}: unshare(CLONE_NEWNET)");
        let setns = p(&libc_call("libc.setns(__import__('os').open('/proc/self/ns/net', 0), 0)"));
        assert_eq!(setns, "EPERM", "{user}: setns");
        // PID 1 is the agent: no one inside may trace it or read its memory.
        assert_eq!(p(&libc_call("libc.ptrace(16, 1, 0, 0)")), "EPERM", "{user}: ptrace(ATTACH, 1)");
        let mem = p(&format!("{ERRNO}attempt(lambda: open('/proc/1/mem', 'rb').read(1))"));
        assert!(mem == "EACCES" || mem == "EPERM", "{user}: /proc/1/mem gave {mem}");
        // Routes and addresses of its own network (no CAP_NET_ADMIN).
        let route = p(&format!(
            "{ERRNO}import fcntl, struct\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             attempt(lambda: fcntl.ioctl(s, 0x8916, struct.pack('16s16s', b'eth0', b'\\x02\\x00' + bytes(14))))"
        ));
        assert_eq!(route, "EPERM", "{user}: SIOCSIFADDR on eth0");
        // Time and the kernel's clock.
        assert_eq!(
            p(&libc_call("libc.syscall(227, 0, ctypes.byref(ctypes.c_long(0)))")),
            "EPERM",
            "{user}: clock_settime"
        );
        assert_eq!(p(&libc_call("libc.syscall(169, 0xfee1dead, 672274793, 0x4321fedc, 0)")), "EPERM", "{user}: reboot");
    }
    // The daemon's socket for the agent is the sandbox root's alone: no other user inside can
    // take the agent's place and be handed its requests.
    let dial = "attempt(lambda: socket.socket(socket.AF_UNIX).connect('/.warren/dial/agent.sock'))";
    assert_eq!(probe(&sb, "user", &format!("{ERRNO}{dial}")), "EACCES");
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
}

#[test]
fn one_sandbox_cannot_see_or_touch_another() {
    let d = daemon();
    let a = d.create(json!({"templateID": "base"}));
    let b = d.create(json!({"templateID": "base"}));
    assert_eq!(b.sh("echo b-secret > /home/user/secret && echo ok").stdout, "ok\n");
    for user in ["user", "root"] {
        // B's files are nowhere in A's tree, nor are the host's state files.
        let r = a.sh_as(
            user,
            "grep -rls b-secret /home /tmp /root /var 2>/dev/null | head -1; ls /var/lib/warren* 2>&1 | head -1",
        );
        assert!(!r.stdout.contains("/home/user/secret") && r.stdout.contains("No such file"), "{user}: {r:?}");
        // B's processes are invisible, so they cannot be signalled.
        let r = a.sh_as(user, "pkill -f http.server; ps -e -o comm= | sort -u | tr '\\n' ' '");
        assert!(!r.stdout.contains("python3 -m"), "{r:?}");
    }
    assert_eq!(b.sh("cat /home/user/secret").stdout, "b-secret\n");
    for s in [&a, &b] {
        d.api("DELETE", &format!("/sandboxes/{}", s.id), None);
    }
}

#[test]
fn exhaustion_inside_stays_inside() {
    let d = daemon();
    let bad = d.create(json!({"templateID": "base", "memoryMB": 128}));
    let neighbour = d.create(json!({"templateID": "base"}));
    // Descriptors: the process hits its limit, the sandbox goes on.
    let r = bad.sh("python3 -c 'import os\nfs=[]\ntry:\n while True: fs.append(os.open(\"/dev/null\", 0))\nexcept OSError as e: print(e.errno == 24, len(fs) > 1000)'");
    assert_eq!(r.stdout.trim(), "True True", "{r:?}");
    // Memory: the allocating process is OOM-killed inside; the agent and the sandbox survive.
    let r = bad.sh("python3 -c 'x = bytearray(1 << 30)'; echo rc=$?");
    assert!(r.stdout.contains("rc=137") || r.stdout.contains("MemoryError") || r.stdout.contains("rc=1"), "{r:?}");
    assert_eq!(bad.sh("echo alive").stdout, "alive\n");
    // Processes: the pids limit stops a fork bomb (sandboxes.rs kills one; here the
    // neighbour must not notice).
    let started = Instant::now();
    assert_eq!(neighbour.sh("echo unaffected").stdout, "unaffected\n");
    assert!(started.elapsed() < Duration::from_secs(5));
    for s in [&bad, &neighbour] {
        d.api("DELETE", &format!("/sandboxes/{}", s.id), None);
    }
}

#[test]
fn a_process_that_ignores_sigterm_does_not_outlive_its_sandbox() {
    let d = daemon();
    let sb = d.create(json!({"templateID": "base"}));
    let r = sb.sh_as(
        "root",
        "nohup sh -c 'trap \"\" TERM INT HUP; while :; do sleep 1; done' >/dev/null 2>&1 & echo started",
    );
    assert_eq!(r.stdout, "started\n");
    let started = Instant::now();
    assert_eq!(d.api("DELETE", &format!("/sandboxes/{}", sb.id), None).0, 204);
    assert!(started.elapsed() < Duration::from_secs(2), "kill took {:?}", started.elapsed());
    wait_for("every process of the sandbox to be gone", Duration::from_secs(10), || {
        let alive = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .any(|e| std::fs::read_to_string(e.path().join("cgroup")).is_ok_and(|c| c.contains(&sb.id)));
        (!alive).then_some(())
    });
}
