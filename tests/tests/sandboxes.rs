//! The sandbox API end to end: lifecycle, commands, files, PTYs, isolation, limits and bad input,
//! against one real daemon.

use std::time::Duration;

use serde_json::json;
use warren_e2e::{shared, wait_for, Daemon};

fn daemon() -> &'static Daemon {
    shared("sandboxes")
}

#[test]
fn lifecycle_create_list_info_timeout_kill() {
    let d = daemon();
    let sb =
        d.create(json!({"templateID": "base", "metadata": {"suite": "lifecycle"}, "cpuCount": 2, "memoryMB": 256}));
    let (status, info) = d.api("GET", &format!("/sandboxes/{}", sb.id), None);
    assert_eq!(status, 200);
    assert_eq!(info["state"], "running");
    assert_eq!(info["cpuCount"], 2);
    assert_eq!(info["memoryMB"], 256);
    assert_eq!(info["envdVersion"], "0.6.4");

    let (_, list) = d.api("GET", "/sandboxes?metadata=suite%3Dlifecycle", None);
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|s| s["sandboxID"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![sb.id.as_str()]);
    let (status, many) = d.api("GET", &format!("/sandboxes/metrics?sandbox_ids={},inotthere", sb.id), None);
    assert_eq!(status, 200, "{many}");
    assert_eq!(many["sandboxes"][&sb.id]["cpuCount"], 2, "{many}");
    assert!(many["sandboxes"].get("inotthere").is_none());
    assert_eq!(d.api("GET", "/sandboxes/metrics", None).0, 400);
    let (_, none) = d.api("GET", "/sandboxes?metadata=suite%3Dother", None);
    assert!(none.as_array().unwrap().iter().all(|s| s["sandboxID"] != sb.id.as_str()));

    let (status, _) = d.api("POST", &format!("/sandboxes/{}/timeout", sb.id), Some(json!({"timeout": 1})));
    assert_eq!(status, 204);
    // The end time passes and the engine kills it.
    wait_for("the sandbox to time out", Duration::from_secs(10), || {
        (d.api("GET", &format!("/sandboxes/{}", sb.id), None).0 == 404).then_some(())
    });
    let (status, body) = d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
    assert_eq!(status, 404, "{body}");
}

#[test]
fn kill_frees_everything() {
    let d = daemon();
    let sb = d.create(json!({"templateID": "base"}));
    let (status, _) = d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
    assert_eq!(status, 204);
    assert_eq!(d.api("GET", &format!("/sandboxes/{}", sb.id), None).0, 404);
    // Teardown finishes in the background, promptly.
    let cg = format!("/sys/fs/cgroup/memory/warren-e2e-sandboxes/{}", sb.id);
    wait_for("the cgroup and the writable layer to go", Duration::from_secs(10), || {
        (!std::path::Path::new(&cg).exists() && !d.data_dir.join("layers").join(&sb.id).exists()).then_some(())
    });
    // Traffic to a killed sandbox gets a clear 404.
    let (status, body) = d.raw("GET", "/health", &[("E2b-Sandbox-Id", &sb.id), ("X-API-KEY", &d.key())], b"");
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
}

#[test]
fn commands_output_exit_codes_env_cwd_user() {
    let d = daemon();
    let sb = d.create(json!({"templateID": "base", "envVars": {"GREETING": "hello"}}));
    let r = sb.sh("echo out; echo err >&2; exit 3");
    assert_eq!((r.stdout.as_str(), r.stderr.as_str(), r.exit_code), ("out\n", "err\n", Some(3)));
    assert_eq!(sb.sh("echo $GREETING-$USER-$(pwd)").stdout, "hello-user-/home/user\n");
    let r = sb.run(
        json!({"process": {"cmd": "/bin/sh", "args": ["-c", "echo $A; pwd"], "envs": {"A": "x"}, "cwd": "/tmp"}}),
        &[],
    );
    assert_eq!(r.stdout, "x\n/tmp\n");
    assert_eq!(sb.sh_as("root", "id -u").stdout, "0\n");
    assert_eq!(sb.sh("id -un").stdout, "user\n");
    // A command that does not exist: bash says 127; exec'ing it directly is a clear not_found.
    assert_eq!(sb.sh("no-such-command").exit_code, Some(127));
    let r = sb.run(json!({"process": {"cmd": "/no/such/binary"}}), &[]);
    assert_eq!(r.error.as_ref().map(|e| e["code"].clone()), Some(json!("not_found")), "{r:?}");
    let (_, list) = sb.rpc("process.Process/List", json!({}));
    assert!(list["processes"].as_array().unwrap().is_empty(), "{list}");
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
}

#[test]
fn background_process_stdin_signal_and_connect() {
    let d = daemon();
    let sb = d.create(json!({"templateID": "base"}));
    let mut frames = sb.stream(
        "process.Process/Start",
        json!({"process": {"cmd": "/bin/cat"}, "tag": "catter", "stdin": true}),
        &[],
    );
    let (_, first) = frames.next_frame().unwrap();
    let pid = first["event"]["start"]["pid"].as_u64().expect("first event is start");
    let (_, list) = sb.rpc("process.Process/List", json!({}));
    assert_eq!(list["processes"][0]["tag"], "catter");
    let (status, body) =
        sb.rpc("process.Process/SendInput", json!({"process": {"tag": "catter"}, "input": {"stdin": "aGkK"}}));
    assert_eq!(status, 200, "{body}");
    let (_, data) = frames.next_frame().unwrap();
    assert_eq!(data["event"]["data"]["stdout"], "aGkK");
    // A second client attaches to the same process.
    let mut attached = sb.stream("process.Process/Connect", json!({"process": {"pid": pid}}), &[]);
    assert_eq!(attached.next_frame().unwrap().1["event"]["start"]["pid"], pid);
    let (status, _) =
        sb.rpc("process.Process/SendSignal", json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}));
    assert_eq!(status, 200);
    for f in [&mut frames, &mut attached] {
        let mut end = None;
        while let Some((flags, msg)) = f.next_frame() {
            if flags & 2 != 0 {
                break;
            }
            if let Some(e) = msg["event"].get("end") {
                end = Some(e.clone());
            }
        }
        let end = end.expect("end event");
        assert_eq!(end["status"], "signal: killed");
    }
    let (status, body) =
        sb.rpc("process.Process/SendInput", json!({"process": {"pid": 999999}, "input": {"stdin": "eA=="}}));
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
}

#[test]
fn stream_deadline_leaves_the_process_running() {
    let d = daemon();
    let sb = d.create(json!({"templateID": "base"}));
    let r = sb.run(
        json!({"process": {"cmd": "/bin/sleep", "args": ["30"]}, "tag": "sleeper", "stdin": false}),
        &[("Connect-Timeout-Ms", "300")],
    );
    assert_eq!(r.error.as_ref().map(|e| e["code"].clone()), Some(json!("deadline_exceeded")), "{r:?}");
    let (_, list) = sb.rpc("process.Process/List", json!({}));
    assert_eq!(list["processes"][0]["tag"], "sleeper", "{list}");
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
}

#[test]
fn pty_input_resize_and_kill() {
    let d = daemon();
    let sb = d.create(json!({"templateID": "base"}));
    let mut frames = sb.stream(
        "process.Process/Start",
        json!({"process": {"cmd": "/bin/bash", "args": ["-i", "-l"], "envs": {"TERM": "xterm-256color"}}, "pty": {"size": {"cols": 80, "rows": 24}}}),
        &[],
    );
    let pid = frames.next_frame().unwrap().1["event"]["start"]["pid"].as_u64().unwrap();
    let (status, body) =
        sb.rpc("process.Process/Update", json!({"process": {"pid": pid}, "pty": {"size": {"cols": 123, "rows": 45}}}));
    assert_eq!(status, 200, "{body}");
    use base64::Engine;
    let input = base64::engine::general_purpose::STANDARD.encode("stty size; echo MARK$((6*7))\n");
    let (status, body) = sb.rpc("process.Process/SendInput", json!({"process": {"pid": pid}, "input": {"pty": input}}));
    assert_eq!(status, 200, "{body}");
    let mut seen = String::new();
    while !(seen.contains("MARK42") && seen.contains("45 123")) {
        let (_, msg) = frames.next_frame().expect("pty output");
        if let Some(p) = msg["event"]["data"]["pty"].as_str() {
            seen.push_str(&String::from_utf8_lossy(&base64::engine::general_purpose::STANDARD.decode(p).unwrap()));
        }
    }
    let (status, _) =
        sb.rpc("process.Process/SendSignal", json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}));
    assert_eq!(status, 200);
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
}

#[test]
fn files_read_write_list_and_traversal_stays_inside() {
    let d = daemon();
    let sb = d.create(json!({"templateID": "base"}));
    let (status, body) = sb.write_file("notes/a.txt", b"hello");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["path"], "/home/user/notes/a.txt");
    assert_eq!(sb.read_file("/home/user/notes/a.txt"), (200, b"hello".to_vec()));
    assert_eq!(sb.sh("stat -c %U notes/a.txt").stdout, "user\n");
    let (_, ls) = sb.rpc("filesystem.Filesystem/ListDir", json!({"path": "/home/user", "depth": 2}));
    let paths: Vec<&str> = ls["entries"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"/home/user/notes/a.txt"), "{paths:?}");
    let (status, _) = sb.rpc("filesystem.Filesystem/MakeDir", json!({"path": "/home/user/notes"}));
    assert_eq!(status, 409);
    let (status, mv) =
        sb.rpc("filesystem.Filesystem/Move", json!({"source": "notes/a.txt", "destination": "notes/b.txt"}));
    assert_eq!((status, mv["entry"]["name"].as_str()), (200, Some("b.txt")));
    let (status, st) = sb.rpc("filesystem.Filesystem/Stat", json!({"path": "notes/b.txt"}));
    assert_eq!((status, st["entry"]["size"].as_str()), (200, Some("5")));
    let (status, _) = sb.rpc("filesystem.Filesystem/Remove", json!({"path": "notes"}));
    assert_eq!(status, 200);
    assert_eq!(sb.read_file("notes/b.txt").0, 404);
    // `..`, absolute paths and symlinks all resolve inside the sandbox's own root.
    let host_marker = "/var/lib/warren-e2e/host-only-marker";
    std::fs::write(host_marker, "host secret").unwrap();
    assert_eq!(sb.read_file(&format!("../../../..{host_marker}")).0, 404);
    assert_eq!(sb.read_file(host_marker).0, 404);
    assert_eq!(sb.sh(&format!("ln -s {host_marker} /tmp/link")).exit_code, Some(0));
    assert_eq!(sb.read_file("/tmp/link").0, 404);
    // Permissions are the caller's: the default user cannot read root-only files.
    assert_eq!(sb.read_file("/etc/shadow").0, 403);
    // A directory is not a file.
    assert_eq!(sb.read_file("/etc").0, 400);
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
}

#[test]
fn isolation_basics() {
    let d = daemon();
    let sb = d.create(json!({"templateID": "base"}));
    assert_eq!(sb.sh("hostname").stdout.trim(), sb.id);
    // Only the sandbox's own processes are visible (the agent is PID 1).
    let ps = sb.sh("ps -e -o pid=,comm=").stdout;
    assert!(ps.lines().any(|l| l.trim() == "1 warren-agent"), "{ps}");
    assert!(ps.lines().count() < 6, "{ps}");
    assert_eq!(
        sb.sh("cat /proc/self/uid_map").stdout.split_whitespace().collect::<Vec<_>>(),
        ["0", "1000000", "65536"]
    );
    // User processes inherit no descriptor of the agent (its listening socket above all).
    assert_eq!(sb.sh("ls -l /proc/$$/fd | grep -c socket").stdout, "0\n");
    // SIGPIPE is back to its default for user code (Rust ignores it in the agent).
    assert_eq!(sb.sh("yes | head -c 4 | wc -c").stdout, "4\n");
    // The host's files are not there.
    assert_ne!(sb.sh("test -e /var/lib/warren-e2e").exit_code, Some(0));
    // Root in the sandbox cannot mount, load modules, or change the hostname.
    let root = |c: &str| sb.sh_as("root", c);
    assert_ne!(root("mount -t tmpfs none /mnt").exit_code, Some(0));
    assert_ne!(root("unshare -U true").exit_code, Some(0));
    let r = root("python3 -c 'import ctypes,os; l=ctypes.CDLL(None,use_errno=True); r=l.syscall(175,0,0,b\"\"); print(r, ctypes.get_errno())'");
    assert_eq!(r.stdout.trim(), "-1 1", "init_module must fail with EPERM: {r:?}");
    assert_ne!(root("hostname other").exit_code, Some(0));
    let status = root("grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status").stdout;
    assert!(status.contains("NoNewPrivs:\t1") && status.contains("Seccomp:\t2"), "{status}");
    let caps = root("grep CapBnd /proc/self/status").stdout;
    assert!(caps.contains("00000000a80405fb"), "bounding set is Docker's default without NET_RAW: {caps}");
    // Root may change the sandbox's view of the template, never the template itself.
    assert_eq!(root("echo changed > /etc/debian_version && cat /etc/debian_version").stdout, "changed\n");
    let tpl =
        std::fs::read_to_string(format!("{}/templates/base/rootfs/etc/debian_version", warren_e2e::ROOT)).unwrap();
    assert_ne!(tpl, "changed\n");
    // Loopback works, nothing else is there.
    let r = sb.sh("python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\",0)); s.listen(); print(\"ok\")'; ls /sys/class/net 2>/dev/null | wc -l");
    assert!(r.stdout.starts_with("ok\n"), "{r:?}");
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
}

#[test]
fn limits_memory_pids_disk_are_contained() {
    let d = daemon();
    let sb = d.create(json!({"templateID": "base", "memoryMB": 128, "diskSizeMB": 64}));
    // Allocating past the memory limit kills the allocating process, not the sandbox.
    let r = sb.sh("python3 -c 'x = bytearray(400*1024*1024); print(len(x))'");
    assert_ne!(r.exit_code, Some(0), "{r:?}");
    assert_eq!(sb.sh("echo alive").stdout, "alive\n");
    // Writing past the disk quota fails inside, and an upload past it is a 507.
    let r = sb.sh_as("root", "dd if=/dev/zero of=/big bs=1M count=100 2>&1; echo rc=$?");
    assert!(r.stdout.contains("Disk quota exceeded") || r.stdout.contains("No space left"), "{r:?}");
    let (status, body) = sb.write_file("/home/user/more", &vec![0u8; 80 * 1024 * 1024]);
    assert_eq!(status, 507, "{body}");
    assert_eq!(sb.sh_as("root", "rm -f /big /home/user/more && echo freed").stdout, "freed\n");
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
}

#[test]
fn fork_bomb_is_contained_and_killable() {
    let d = daemon();
    let bomb = d.create(json!({"templateID": "base", "memoryMB": 256}));
    let other = d.create(json!({"templateID": "base"}));
    let r = bomb.run(
        json!({"process": {"cmd": "/bin/bash", "args": ["-c", "bomb() { bomb | bomb & }; bomb; sleep 3; echo done"]}}),
        &[("Connect-Timeout-Ms", "5000")],
    );
    // Whether bash finished, was killed, or the stream deadline came first, the agent answered.
    assert!(r.exit_code.is_some() || r.error.is_some() || r.stdout.contains("done"), "{r:?}");
    assert_eq!(other.sh("echo fine").stdout, "fine\n");
    assert_eq!(d.api("GET", "/health", None).0, 200);
    let started = std::time::Instant::now();
    assert_eq!(d.api("DELETE", &format!("/sandboxes/{}", bomb.id), None).0, 204);
    assert!(started.elapsed() < Duration::from_secs(10), "killing a fork-bombed sandbox took {:?}", started.elapsed());
    d.api("DELETE", &format!("/sandboxes/{}", other.id), None);
}

#[test]
fn bad_input_gets_clear_errors() {
    let d = daemon();
    let cases = [
        (json!({"templateID": "nope"}), 404, "template nope does not exist"),
        (json!({"templateID": "../etc"}), 400, "invalid"),
        (json!({"templateID": "base", "cpuCount": 1000}), 400, "cpuCount"),
        (json!({"templateID": "base", "memoryMB": 1}), 400, "memoryMB"),
        (json!({"templateID": "base", "diskSizeMB": 99999999}), 400, "diskSizeMB"),
        (json!({"templateID": "base", "timeout": 0}), 400, "timeout"),
        (json!({"templateID": "base", "envVars": {"A=B": "x"}}), 400, "envVars"),
        (json!({}), 400, "templateID"),
        (
            json!({"templateID": "base", "volumeMounts": [{"name": "v", "path": "/data"}]}),
            400,
            "volumes are not offered",
        ),
        (json!({"templateID": "base", "mcp": {"github": {}}}), 400, "MCP gateway"),
        (json!({"templateID": "base", "iam": {"tokens": []}}), 400, "IAM"),
    ];
    for (body, status, needle) in cases {
        let (got, v) = d.api("POST", "/sandboxes", Some(body.clone()));
        assert_eq!(got, status, "{body} -> {v}");
        assert!(v["message"].as_str().unwrap_or_default().contains(needle), "{body} -> {v}");
        assert_eq!(v["code"], status);
    }
    let (status, body) =
        d.raw("POST", "/sandboxes", &[("X-API-KEY", &d.key()), ("Content-Type", "application/json")], b"{not json");
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let huge = vec![b' '; 3 * 1024 * 1024];
    assert_eq!(d.raw("POST", "/sandboxes", &[("X-API-KEY", &d.key())], &huge).0, 413);
    assert_eq!(d.raw("GET", "/sandboxes", &[], b"").0, 401);
    assert_eq!(d.raw("GET", "/sandboxes", &[("X-API-KEY", "wrong")], b"").0, 401);
    assert_eq!(d.api("GET", "/sandboxes/inotthere", None).0, 404);
    assert_eq!(d.api("DELETE", "/templates/nosuch", None).0, 404);
    let (status, v) = d.api("POST", "/templates", Some(json!({"templateID": "x", "packages": ["bad;rm -rf /"]})));
    assert_eq!(status, 400, "{v}");
    assert_eq!(d.api("POST", "/templates", Some(json!({"templateID": "../x"}))).0, 400);
    assert_eq!(d.api("GET", "/sandboxes/..%2F..", None).0, 404);
    // Sandbox traffic needs the sandbox's token.
    let sb = d.create(json!({"templateID": "base"}));
    assert_eq!(d.raw("GET", "/health", &[("E2b-Sandbox-Id", &sb.id)], b"").0, 401);
    assert_eq!(d.raw("GET", "/health", &[("E2b-Sandbox-Id", &sb.id), ("X-Access-Token", "x")], b"").0, 401);
    assert_eq!(d.raw("GET", "/health", &[("E2b-Sandbox-Id", &sb.id), ("X-Access-Token", &sb.token)], b"").0, 204);
    let host = format!("49983-{}.localhost:{}", sb.id, d.port);
    assert_eq!(d.raw("GET", "/health", &[("Host", &host), ("X-Access-Token", &sb.token)], b"").0, 204);
    assert_eq!(d.raw("POST", "/init", &[("E2b-Sandbox-Id", &sb.id), ("X-Access-Token", &sb.token)], b"{}").0, 403);
    // Malformed protocol messages are refused, not fatal.
    let (status, v) = sb.rpc("process.Process/SendSignal", json!({"signal": "SIGNAL_NOPE"}));
    assert_eq!((status, v["code"].as_str()), (400, Some("invalid_argument")));
    assert_eq!(sb.sh("echo still-here").stdout, "still-here\n");
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
}

#[test]
fn many_sandboxes_through_one_port() {
    daemon();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let d = daemon();
                let sb = d.create(json!({"templateID": "base", "metadata": {"n": i.to_string()}}));
                let out = sb.sh(&format!("echo {i}")).stdout;
                d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
                out
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), format!("{i}\n"));
    }
}

#[test]
fn cli_run_prints_output_and_returns_the_exit_code() {
    let d = daemon();
    let out = d.cli(&["run", "--", "python3", "-c", "print(6*7)"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "42\n");
    assert_eq!(out.status.code(), Some(0));
    let out = d.cli(&["run", "--", "bash", "-c", "echo oops >&2; exit 7"]);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    assert_eq!(out.status.code(), Some(7));
    let out = d.cli(&["run", "--", "definitely-not-a-command"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("command not found"));
    let out = d.cli(&["run", "--template", "missing", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("template missing does not exist"));

    let out = d.cli(&["sandbox", "create", "-m", "via=cli"]);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(out.status.success(), "{out:?}");
    let out = d.cli(&["--json", "sandbox", "list"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(list.as_array().unwrap().iter().any(|s| s["sandboxID"] == id.as_str()));
    let out = d.cli(&["sandbox", "exec", &id, "--", "sh", "-c", "echo in-sandbox"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "in-sandbox\n");
    let mut child = std::process::Command::new(warren_e2e::warren_bin())
        .args(["sandbox", "files", "write", &id, "/tmp/from-cli"])
        .env("WARREN_URL", d.url())
        .env("WARREN_API_KEY", d.key())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"payload").unwrap();
    assert!(child.wait().unwrap().success());
    let out = d.cli(&["sandbox", "files", "read", &id, "/tmp/from-cli"]);
    assert_eq!(out.stdout, b"payload");
    let out = d.cli(&["sandbox", "kill", &id]);
    assert!(out.status.success());
    let out = d.cli(&["sandbox", "info", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn protobuf_codec_unary_and_streaming() {
    let d = daemon();
    let sb = d.create(json!({"templateID": "base"}));
    let auth: [(&str, &str); 3] =
        [("E2b-Sandbox-Id", &sb.id), ("X-Access-Token", &sb.token), ("Content-Type", "application/connect+proto")];
    // StartRequest{process: ProcessConfig{cmd: "/bin/echo", args: ["hi"]}}, hand-encoded.
    let mut msg = vec![0x0a, 0x0f, 0x0a, 0x09];
    msg.extend_from_slice(b"/bin/echo");
    msg.extend_from_slice(&[0x12, 0x02]);
    msg.extend_from_slice(b"hi");
    let mut env = vec![0u8];
    env.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    env.extend_from_slice(&msg);
    let (status, body) = d.raw("POST", "/process.Process/Start", &auth, &env);
    assert_eq!(status, 200);
    let mut rest = &body[..];
    let mut events = vec![];
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let (flags, payload) = (rest[0], &rest[5..5 + len]);
        if flags & 2 == 0 {
            events.push(warren_protocol::proto::decode("process.StartResponse", payload).unwrap());
        }
        rest = &rest[5 + len..];
    }
    assert!(events[0]["event"]["start"]["pid"].as_u64().is_some(), "{events:?}");
    assert!(events.iter().any(|e| e["event"]["data"]["stdout"] == "aGkK"), "{events:?}");
    assert!(events.iter().any(|e| e["event"]["end"]["exited"] == true), "{events:?}");
    // Unary: Stat{path: "/etc"} → StatResponse with a directory entry.
    let mut stat = vec![0x0a, 0x04];
    stat.extend_from_slice(b"/etc");
    let unary: [(&str, &str); 3] =
        [("E2b-Sandbox-Id", &sb.id), ("X-Access-Token", &sb.token), ("Content-Type", "application/proto")];
    let (status, body) = d.raw("POST", "/filesystem.Filesystem/Stat", &unary, &stat);
    assert_eq!(status, 200);
    let v = warren_protocol::proto::decode("filesystem.EntryResponse", &body).unwrap();
    assert_eq!(v["entry"]["type"], "FILE_TYPE_DIRECTORY");
    // Garbage in the protobuf codec is a clean invalid_argument.
    let (status, body) = d.raw("POST", "/filesystem.Filesystem/Stat", &unary, &[0x0a, 0xff, 0x01]);
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
}

#[test]
fn watch_dir_stream_and_polling_watchers() {
    let d = daemon();
    let sb = d.create(json!({"templateID": "base"}));
    assert_eq!(sb.sh("mkdir -p /home/user/w").exit_code, Some(0));
    let mut frames =
        sb.stream("filesystem.Filesystem/WatchDir", json!({"path": "/home/user/w", "recursive": true}), &[]);
    let (_, first) = frames.next_frame().unwrap();
    assert!(first.get("start").is_some(), "{first}");
    let (status, w) =
        sb.rpc("filesystem.Filesystem/CreateWatcher", json!({"path": "/home/user/w", "recursive": false}));
    assert_eq!(status, 200, "{w}");
    let watcher = w["watcherId"].as_str().unwrap().to_owned();
    assert_eq!(
        sb.sh("echo x > /home/user/w/new.txt && mkdir /home/user/w/sub && echo y > /home/user/w/sub/deep.txt")
            .exit_code,
        Some(0)
    );
    let mut seen = vec![];
    while !seen.iter().any(|n: &String| n == "sub/deep.txt") {
        let (_, msg) = frames.next_frame().expect("watch events");
        if let Some(ev) = msg.get("filesystem") {
            seen.push(ev["name"].as_str().unwrap().to_owned());
            assert!(ev["type"].as_str().unwrap().starts_with("EVENT_TYPE_"));
        }
    }
    assert!(seen.contains(&"new.txt".to_owned()), "{seen:?}");
    let events = wait_for("polled watcher events", Duration::from_secs(5), || {
        let (_, v) = sb.rpc("filesystem.Filesystem/GetWatcherEvents", json!({"watcherId": watcher}));
        let names: Vec<String> =
            v["events"].as_array()?.iter().map(|e| e["name"].as_str().unwrap_or("").to_owned()).collect();
        (!names.is_empty()).then_some(names)
    });
    assert!(events.contains(&"new.txt".to_owned()), "{events:?}");
    assert_eq!(sb.rpc("filesystem.Filesystem/RemoveWatcher", json!({"watcherId": watcher})).0, 200);
    assert_eq!(sb.rpc("filesystem.Filesystem/GetWatcherEvents", json!({"watcherId": watcher})).0, 404);
    assert_eq!(sb.rpc("filesystem.Filesystem/CreateWatcher", json!({"path": "/nope"})).0, 404);
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
}

#[test]
fn uploads_multipart_gzip_envs_stdin_streams() {
    let d = daemon();
    let sb = d.create(json!({"templateID": "base", "envVars": {"FROM_CREATE": "yes"}}));
    let hdr = |ct: &'static str| -> Vec<(&str, String)> {
        vec![("E2b-Sandbox-Id", sb.id.clone()), ("X-Access-Token", sb.token.clone()), ("Content-Type", ct.to_owned())]
    };
    // Two files in one multipart body: each part's file name is its destination.
    let body = "--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/tmp/m1.txt\"\r\n\r\none\r\n\
                --XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m2.txt\"\r\n\r\ntwo\r\n--XX--\r\n";
    let h = hdr("multipart/form-data; boundary=XX");
    let hs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, out) = d.raw("POST", "/files", &hs, body.as_bytes());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&out));
    assert_eq!(sb.read_file("/tmp/m1.txt").1, b"one");
    assert_eq!(sb.read_file("/home/user/m2.txt").1, b"two");
    // A gzip-encoded raw upload, and a gzip download.
    let gz = {
        use std::io::Write;
        let mut child = std::process::Command::new("gzip")
            .arg("-c")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"compressed payload").unwrap();
        child.wait_with_output().unwrap().stdout
    };
    let mut h = hdr("application/octet-stream");
    h.push(("Content-Encoding", "gzip".into()));
    let hs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, _) = d.raw("POST", "/files?path=/tmp/gz.txt", &hs, &gz);
    assert_eq!(status, 200);
    assert_eq!(sb.read_file("/tmp/gz.txt").1, b"compressed payload");
    // Environment: create-time variables are visible to processes and to /envs.
    assert_eq!(sb.sh("echo $FROM_CREATE").stdout, "yes\n");
    let h = hdr("application/json");
    let hs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, envs) = d.raw("GET", "/envs", &hs, b"");
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&envs).unwrap()["FROM_CREATE"], "yes");
    // /metrics of the sandbox, in envd's shape, from its cgroup and quota.
    assert_eq!(sb.sh("head -c 3000000 /dev/urandom > /home/user/blob && sync && echo ok").stdout, "ok\n");
    let (status, m) = d.raw("GET", "/metrics", &hs, b"");
    assert_eq!(status, 200);
    let m: serde_json::Value = serde_json::from_slice(&m).unwrap();
    assert_eq!(m["cpu_count"], 1);
    assert_eq!(m["mem_total"], 512 * 1024 * 1024);
    assert_eq!(m["disk_total"], 1024 * 1024 * 1024);
    assert!(m["mem_used"].as_u64().unwrap() > 0, "{m}");
    assert!(m["disk_used"].as_u64().unwrap() >= 3_000_000, "{m}");
    // stdin through StreamInput, then CloseStdin ends `cat`.
    let mut frames =
        sb.stream("process.Process/Start", json!({"process": {"cmd": "/bin/cat"}, "tag": "in", "stdin": true}), &[]);
    let pid = frames.next_frame().unwrap().1["event"]["start"]["pid"].as_u64().unwrap();
    let mut input = vec![];
    for m in [
        json!({"start": {"process": {"pid": pid}}}),
        json!({"data": {"input": {"stdin": "c3RyZWFtZWQK"}}}),
        json!({"keepalive": {}}),
    ] {
        let p = serde_json::to_vec(&m).unwrap();
        input.push(0u8);
        input.extend_from_slice(&(p.len() as u32).to_be_bytes());
        input.extend_from_slice(&p);
    }
    let h = hdr("application/connect+json");
    let hs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, out) = d.raw("POST", "/process.Process/StreamInput", &hs, &input);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&out));
    assert_eq!(frames.next_frame().unwrap().1["event"]["data"]["stdout"], "c3RyZWFtZWQK");
    assert_eq!(sb.rpc("process.Process/CloseStdin", json!({"process": {"pid": pid}})).0, 200);
    let mut exit = None;
    while let Some((flags, msg)) = frames.next_frame() {
        if flags & 2 != 0 {
            break;
        }
        if let Some(e) = msg["event"].get("end") {
            exit = e["exitCode"].as_i64();
        }
    }
    assert_eq!(exit, Some(0));
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
}

#[test]
fn keepalives_arrive_on_quiet_streams() {
    let d = daemon();
    let sb = d.create(json!({"templateID": "base"}));
    let mut frames = sb.stream(
        "process.Process/Start",
        json!({"process": {"cmd": "/bin/sleep", "args": ["3"]}}),
        &[("Keepalive-Ping-Interval", "1")],
    );
    assert!(frames.next_frame().unwrap().1["event"]["start"].is_object());
    let (_, ka) = frames.next_frame().unwrap();
    assert!(ka["event"]["keepalive"].is_object(), "{ka}");
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
}

#[test]
fn pause_freezes_and_connect_resumes() {
    let d = daemon();
    // A value of this run's own: the shared daemon keeps paused sandboxes of runs that failed.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let suite = format!("pause-{}-{nanos}", std::process::id());
    let sb = d.create(json!({"templateID": "base", "metadata": {"suite": suite}}));
    // A process that counts; while paused it must not advance.
    sb.run(json!({"process": {"cmd": "/bin/bash", "args": ["-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done"]}, "tag": "counter"}), &[("Connect-Timeout-Ms", "300")]);
    assert_eq!(d.api("POST", &format!("/sandboxes/{}/pause", sb.id), Some(json!({}))).0, 204);
    let (status, v) = d.api("POST", &format!("/sandboxes/{}/pause", sb.id), Some(json!({})));
    assert_eq!(status, 409, "{v}");
    let (_, info) = d.api("GET", &format!("/sandboxes/{}", sb.id), None);
    assert_eq!(info["state"], "paused");
    let (_, listed) = d.api("GET", &format!("/sandboxes?state=paused&metadata=suite%3D{suite}"), None);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let stats =
        |d: &Daemon| d.api("GET", &format!("/sandboxes/{}/stats", sb.id), None).1["cpuUsageNs"].as_u64().unwrap();
    let before = stats(d);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(stats(d), before, "a paused sandbox used CPU");
    // Traffic to a paused sandbox gets a clear 409.
    let (status, body) = d.raw("GET", "/health", &[("E2b-Sandbox-Id", &sb.id), ("X-Access-Token", &sb.token)], b"");
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    let (status, v) = d.api("POST", &format!("/sandboxes/{}/connect", sb.id), Some(json!({"timeout": 60})));
    assert_eq!(status, 201, "{v}");
    let (status, _) = d.api("POST", &format!("/sandboxes/{}/connect", sb.id), Some(json!({"timeout": 60})));
    assert_eq!(status, 200);
    let (_, list) = sb.rpc("process.Process/List", json!({}));
    assert_eq!(list["processes"][0]["tag"], "counter", "the process survived the pause: {list}");
    let a: u64 = sb.sh("cat /tmp/count").stdout.trim().parse().unwrap();
    wait_for("the counter to move again", Duration::from_secs(5), || {
        let b: u64 = sb.sh("cat /tmp/count").stdout.trim().parse().ok()?;
        (b > a).then_some(())
    });
    assert_eq!(d.api("POST", &format!("/sandboxes/{}/resume", sb.id), Some(json!({}))).0, 409);
    // A paused sandbox can be killed.
    assert_eq!(d.api("POST", &format!("/sandboxes/{}/pause", sb.id), Some(json!({}))).0, 204);
    assert_eq!(d.api("DELETE", &format!("/sandboxes/{}", sb.id), None).0, 204);
    assert_eq!(d.api("POST", &format!("/sandboxes/{}/pause", sb.id), Some(json!({}))).0, 404);
}

#[test]
fn idempotency_key_makes_create_retry_safe() {
    let d = daemon();
    let key = format!("k-{}", std::process::id());
    let create = move |k: String| {
        let d = daemon();
        let r = d
            .http
            .post(&format!("{}/sandboxes", d.url()))
            .set("X-API-KEY", &d.key())
            .set("Idempotency-Key", &k)
            .send_json(json!({"templateID": "base"}))
            .unwrap();
        assert_eq!(r.status(), 201);
        r.into_json::<serde_json::Value>().unwrap()["sandboxID"].as_str().unwrap().to_owned()
    };
    let (k1, k2) = (key.clone(), key.clone());
    let a = std::thread::spawn(move || create(k1));
    let b = std::thread::spawn(move || create(k2));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!(a, b, "two creates with one key made two sandboxes");
    let c = create(format!("{key}-other"));
    assert_ne!(a, c);
    for id in [a, c] {
        assert_eq!(d.api("DELETE", &format!("/sandboxes/{id}"), None).0, 204);
    }
}

#[test]
fn uploads_larger_than_the_memory_limit_stream_to_disk() {
    let d = daemon();
    // The agent is charged to the sandbox's memory: an upload it buffered would get it OOM-killed.
    let sb = d.create(json!({"templateID": "base", "memoryMB": 96, "diskSizeMB": 512}));
    let big = vec![7u8; 256 * 1024 * 1024];
    let (status, body) = sb.write_file("/home/user/big.bin", &big);
    assert_eq!(status, 200, "{body}");
    assert_eq!(sb.sh("stat -c %s /home/user/big.bin").stdout, "268435456\n");
    // And downloads of it stream too.
    let (status, data) = sb.read_file("/home/user/big.bin");
    assert_eq!(status, 200);
    assert_eq!(data.len(), big.len());
    assert!(data == big);
    let (status, _) = d.api("GET", &format!("/sandboxes/{}", sb.id), None);
    assert_eq!(status, 200, "the sandbox survived");
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
}

/// What a broken or hostile Connect client sends must get a Connect error, and a client that goes
/// away mid-stream must leave its process running and nothing of the stream behind in the agent.
#[test]
fn broken_connect_clients_get_errors_and_leave_nothing_behind() {
    use std::io::{Read, Write};
    let d = daemon();
    let sb = d.create(json!({"templateID": "base"}));
    let auth = |ct: &'static str| {
        [("E2b-Sandbox-Id", sb.id.clone()), ("X-Access-Token", sb.token.clone()), ("Content-Type", ct.to_owned())]
    };
    let call = |path: &str, ct: &'static str, body: &[u8]| {
        let h = auth(ct);
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body) = d.raw("POST", path, &h, body);
        (status, serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default(), body)
    };
    // Unknown methods and services: Connect's `unimplemented`.
    for path in ["/process.Process/Teleport", "/filesystem.Filesystem/Format", "/nosuch.Service/Method"] {
        let (status, v, _) = call(path, "application/json", b"{}");
        assert_eq!((status, v["code"].as_str()), (501, Some("unimplemented")), "{path}: {v}");
    }
    // Malformed JSON and wrong field types in a unary call.
    let (status, v, _) = call("/process.Process/List", "application/json", b"{not json");
    assert_eq!((status, v["code"].as_str()), (400, Some("invalid_argument")), "{v}");
    let (status, v, _) = call("/filesystem.Filesystem/Stat", "application/json", br#"{"path": 7}"#);
    assert_eq!((status, v["code"].as_str()), (400, Some("invalid_argument")), "{v}");
    // Streaming calls with broken envelopes end with an error in the end-of-stream frame.
    let end_error = |raw: &[u8]| -> serde_json::Value {
        assert!(raw.len() >= 5 && raw[0] & 2 != 0, "expected an end-of-stream frame: {raw:?}");
        serde_json::from_slice::<serde_json::Value>(&raw[5..]).unwrap()["error"].clone()
    };
    let mut cut = vec![0u8, 0, 0, 0x03, 0xe8];
    cut.extend_from_slice(br#"{"process""#);
    for (what, body) in [
        ("a cut envelope", cut),
        ("an envelope claiming 4 GiB", vec![0u8, 0xff, 0xff, 0xff, 0xf0, b'{', b'}']),
        ("three bytes", vec![0u8, 0, 0]),
        ("a compressed flag nobody negotiated", vec![1u8, 0, 0, 0, 2, b'{', b'}']),
    ] {
        let (status, _, raw) = call("/process.Process/Start", "application/connect+json", &body);
        assert_eq!(status, 200, "{what}");
        assert_eq!(end_error(&raw)["code"], "invalid_argument", "{what}");
    }
    // Header values no timer can hold mean "no deadline" and "rare keepalives", not a failure.
    let r = sb.run(
        json!({"process": {"cmd": "/bin/echo", "args": ["timers"]}, "stdin": false}),
        &[("Connect-Timeout-Ms", "18446744073709551615"), ("Keepalive-Ping-Interval", "18446744073709551615")],
    );
    assert_eq!((r.stdout.as_str(), r.exit_code, r.error), ("timers\n", Some(0), None));
    let r = sb.run(
        json!({"process": {"cmd": "/bin/echo", "args": ["junk"]}, "stdin": false}),
        &[("Connect-Timeout-Ms", "soon"), ("Keepalive-Ping-Interval", "-1")],
    );
    assert_eq!((r.stdout.as_str(), r.exit_code), ("junk\n", Some(0)));
    // An oversize unary body is refused, not buffered.
    let big = vec![b' '; 17 * 1024 * 1024];
    let (status, v, _) = call("/process.Process/List", "application/json", &big);
    assert_eq!((status, v["code"].as_str()), (429, Some("resource_exhausted")), "{v}");

    // Refused uploads (the agent answers before reading the body) do not break later calls.
    let body = vec![b'x'; 256 * 1024];
    for _ in 0..5 {
        let h = auth("application/octet-stream");
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, raw) = d.raw("POST", "/files", &h, &body);
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&raw));
        let (status, v) = sb.rpc("process.Process/List", json!({}));
        assert_eq!(status, 200, "a call after a refused upload: {v}");
    }
    // Clients that go away mid-stream: their processes keep running, the agent keeps no descriptor.
    let agent_fds = || sb.sh_as("root", "ls /proc/1/fd | wc -l").stdout.trim().parse::<usize>().unwrap();
    let before = agent_fds();
    let addr = d.url().trim_start_matches("http://").to_owned();
    for i in 0..20 {
        let msg = serde_json::to_vec(&json!({
            "process": {"cmd": "/bin/bash", "args": ["-c", "while true; do echo tick; sleep 0.01; done"]},
            "tag": format!("orphan-{i}"),
        }))
        .unwrap();
        let mut env = vec![0u8];
        env.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        env.extend_from_slice(&msg);
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "POST /process.Process/Start HTTP/1.1\r\nHost: {addr}\r\nE2b-Sandbox-Id: {}\r\nX-Access-Token: {}\r\n\
             Content-Type: application/connect+json\r\nContent-Length: {}\r\n\r\n",
            sb.id,
            sb.token,
            env.len()
        )
        .unwrap();
        s.write_all(&env).unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("\"start\"") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "the stream ended before its start event: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        drop(s);
    }
    let (_, list) = sb.rpc("process.Process/List", json!({}));
    let orphans = list["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["tag"].as_str().is_some_and(|t| t.starts_with("orphan-")))
        .count();
    assert_eq!(orphans, 20, "every process outlives its client: {list}");
    for i in 0..20 {
        let (status, v) = sb.rpc(
            "process.Process/SendSignal",
            json!({"process": {"tag": format!("orphan-{i}")}, "signal": "SIGNAL_SIGKILL"}),
        );
        assert_eq!(status, 200, "{v}");
    }
    wait_for("the agent to close the streams of gone clients", Duration::from_secs(10), || {
        let (_, list) = sb.rpc("process.Process/List", json!({}));
        let left = list["processes"].as_array().map_or(0, |p| p.len());
        (left == 0 && agent_fds() <= before).then_some(())
    });
    assert_eq!(sb.sh("echo still-here").stdout, "still-here\n");
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
}

#[test]
fn list_filters_by_template_and_start_orders_and_pages_past_a_killed_sandbox() {
    let d = daemon();
    let ids: Vec<String> =
        (0..3).map(|_| d.create(json!({"templateID": "base", "metadata": {"suite": "list-order"}})).id).collect();
    let list = |q: &str| -> (u16, Vec<String>, Option<String>) {
        let (status, headers, v) =
            d.api_with_headers("GET", &format!("/v2/sandboxes?metadata=suite%3Dlist-order{q}"), None);
        let ids = v
            .as_array()
            .map(|a| a.iter().map(|s| s["sandboxID"].as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        (status, ids, headers.get("x-next-token").cloned())
    };
    assert_eq!(list("").1, ids, "oldest first");
    let mut desc = ids.clone();
    desc.reverse();
    assert_eq!(list("&order=desc").1, desc);
    assert_eq!(list("&template=base").1, ids);
    assert_eq!(list("&template=nosuch").1, Vec::<String>::new());
    let (_, info) = d.api("GET", &format!("/sandboxes/{}", ids[1]), None);
    let since = info["startedAt"].as_str().unwrap().to_owned();
    let since_q = since.replace(':', "%3A").replace('+', "%2B");
    assert_eq!(list(&format!("&startedAfter={since_q}")).1, ids[1..].to_vec(), "started at or after {since}");
    // A page follows even when the sandbox that ended the previous one is gone.
    let (_, first, token) = list("&limit=1");
    assert_eq!(first, ids[..1].to_vec());
    let token = token.expect("a next token");
    d.api("DELETE", &format!("/sandboxes/{}", ids[0]), None);
    let (status, second, _) = list(&format!("&limit=1&nextToken={token}"));
    assert_eq!((status, second), (200, ids[1..2].to_vec()));
    let (_, first_desc, token) = list("&limit=1&order=desc");
    assert_eq!(first_desc, ids[2..].to_vec());
    assert_eq!(list(&format!("&limit=5&order=desc&nextToken={}", token.unwrap())).1, vec![ids[1].clone()]);
    for bad in ["&order=sideways", "&startedAfter=yesterday", "&nextToken=garbage", "&state=sleeping"] {
        let (status, _, _) = list(bad);
        assert_eq!(status, 400, "{bad}");
    }
    for id in &ids[1..] {
        d.api("DELETE", &format!("/sandboxes/{id}"), None);
    }
}
