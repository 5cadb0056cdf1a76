//! The gVisor runtime: sandboxes chosen per create, per pool or as the daemon's default run
//! inside runsc with the same API; a pause saves their processes and memory to disk and frees
//! them, a connect restores them where they were, also after a daemon restart; kill leaves
//! nothing behind.

use std::time::Duration;

use serde_json::json;
use warren_e2e::{wait_for, Daemon};

fn info(d: &Daemon, id: &str) -> serde_json::Value {
    let (status, v) = d.api("GET", &format!("/sandboxes/{id}"), None);
    assert_eq!(status, 200, "{v}");
    v
}

/// Host processes whose command line names the sandbox (runsc's sandbox and gofer processes).
fn runsc_processes(id: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| {
            let c = String::from_utf8_lossy(c);
            c.starts_with("runsc") && c.contains(id)
        })
        .count()
}

/// A background Python process holding a random value in memory, counting up in a file.
const COUNTER: &str = "cat > /tmp/counter.py <<'EOF'
import os, time
secret = os.urandom(8).hex()
i = 0
while True:
    i += 1
    with open('/home/user/count.tmp', 'w') as f: f.write(f'{secret} {i}')
    os.replace('/home/user/count.tmp', '/home/user/count')
    time.sleep(0.02)
EOF
(setsid python3 /tmp/counter.py >/dev/null 2>/tmp/counter.err </dev/null &)
for _ in $(seq 500); do [ -s /home/user/count ] && break; sleep 0.01; done; cat /home/user/count /tmp/counter.err";

fn counter(sb: &warren_e2e::Sandbox) -> (String, u64) {
    let r = sb.sh("cat /home/user/count");
    let (secret, n) = r.stdout.trim().split_once(' ').unwrap_or_else(|| panic!("{r:?}"));
    (secret.to_owned(), n.parse().unwrap())
}

#[test]
fn gvisor_sandboxes_keep_processes_and_memory_across_pause_and_restart() {
    let d = Daemon::start_fresh("gvisor");
    let sb = d.create(json!({"templateID": "base", "runtime": "gvisor", "envVars": {"A": "1"}}));
    let v = info(&d, &sb.id);
    assert_eq!(v["runtime"], "gvisor", "{v}");

    // The same sandbox API, inside gVisor's kernel.
    let r = sb.sh("dmesg | head -1; id -un; hostname; echo $A; python3 -c 'print(6 * 7)'");
    assert!(r.stdout.contains("gVisor"), "{r:?}");
    assert!(r.stdout.ends_with(&format!("user\n{}\n1\n42\n", sb.id)), "{r:?}");
    assert_eq!(sb.write_file("/home/user/data.bin", b"\x00\x01binary\xff").0, 200);
    assert_eq!(sb.read_file("/home/user/data.bin"), (200, b"\x00\x01binary\xff".to_vec()));
    let (status, stats) = d.api("GET", &format!("/sandboxes/{}/stats", sb.id), None);
    assert_eq!(status, 200, "{stats}");

    let first = sb.sh(COUNTER);
    assert_eq!(first.exit_code, Some(0), "{first:?}");
    assert_eq!(sb.sh("echo in-memory > /tmp/mem").exit_code, Some(0));
    assert!(runsc_processes(&sb.id) > 0);

    // Pause saves processes and memory and frees them.
    let pause = |id: &str| d.api("POST", &format!("/sandboxes/{id}/pause"), Some(json!({})));
    assert_eq!(pause(&sb.id).0, 204);
    let v = info(&d, &sb.id);
    assert_eq!((v["state"].as_str(), v["warrenState"].as_str()), (Some("paused"), Some("hibernated")), "{v}");
    assert_eq!(runsc_processes(&sb.id), 0, "runsc still runs for a paused sandbox");
    assert_eq!(pause(&sb.id).0, 409);
    let (secret, before) = {
        // Read from the layer on disk: the process stopped mid-count.
        let text =
            std::fs::read_to_string(d.data_dir.join("layers").join(&sb.id).join("upper/home/user/count")).unwrap();
        let (s, n) = text.split_once(' ').unwrap();
        (s.to_owned(), n.parse::<u64>().unwrap())
    };

    // Connect restores them: the same process carries on with the same value in memory.
    let (status, v) = d.api("POST", &format!("/sandboxes/{}/connect", sb.id), Some(json!({"timeout": 120})));
    assert_eq!(status, 201, "{v}");
    let after = wait_for("the counter to move on", Duration::from_secs(10), || {
        let (s, n) = counter(&sb);
        (n > before).then_some((s, n))
    });
    assert_eq!(after.0, secret, "a different process is counting");
    assert_eq!(sb.sh("cat /tmp/mem; echo $A").stdout, "in-memory\n1\n");
    // The restore ran on every CPU; the woken sandbox is back to its own quota (1 CPU).
    let quota = format!("/sys/fs/cgroup/cpu/warren-e2e-gvisor.gvisor/{}/cpu.cfs_quota_us", sb.id);
    let quota = std::fs::read_to_string(&quota)
        .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup/warren-e2e-gvisor.gvisor/{}/cpu.max", sb.id)));
    assert!(quota.as_deref().is_ok_and(|q| q.starts_with("100000")), "{quota:?}");

    // Paused across a daemon restart, it still wakes with its memory.
    assert_eq!(pause(&sb.id).0, 204);
    d.restart();
    assert_eq!(info(&d, &sb.id)["warrenState"], "hibernated");
    let (status, v) = d.api("POST", &format!("/sandboxes/{}/connect", sb.id), Some(json!({"timeout": 120})));
    assert_eq!(status, 201, "{v}");
    assert_eq!(counter(&sb).0, secret);
    assert_eq!(info(&d, &sb.id)["runtime"], "gvisor");

    // A running one is re-attached after a restart.
    d.restart();
    assert_eq!(sb.sh("cat /tmp/mem").stdout, "in-memory\n");

    // A fork of a running gVisor sandbox: clones restored from a copy of its memory.
    let (status, v) = d.api("POST", &format!("/sandboxes/{}/fork", sb.id), Some(json!({"count": 2})));
    assert_eq!(status, 201, "{v}");
    let second = v[1]["sandbox"]["sandboxID"].as_str().unwrap_or_else(|| panic!("{v}")).to_owned();
    let images = std::fs::read_dir(d.data_dir.join("images")).unwrap();
    assert!(
        images.flatten().all(|e| !e.file_name().to_string_lossy().starts_with("copy-")),
        "the fork's memory image was left behind"
    );
    let clone = warren_e2e::Sandbox {
        id: v[0]["sandbox"]["sandboxID"].as_str().unwrap_or_else(|| panic!("{v}")).to_owned(),
        token: v[0]["sandbox"]["envdAccessToken"].as_str().unwrap_or_default().to_owned(),
        url: d.url(),
        http: d.http.clone(),
    };
    assert_eq!(info(&d, &clone.id)["runtime"], "gvisor");
    // Memory mode: the clone's processes carry on from the source's memory (the same secret),
    // on its own copy of the files, and it is told whose clone it is.
    let r = clone.sh("cat /home/user/data.bin | od -c | head -1; echo $WARREN_FORKED_FROM; cat /tmp/mem");
    assert!(r.stdout.contains("b   i   n   a   r   y"), "{r:?}");
    assert!(r.stdout.ends_with(&format!("{}\nin-memory\n", sb.id)), "{r:?}");
    assert_eq!(counter(&clone).0, secret, "the clone's counter is not the source's process");
    assert_eq!(clone.sh("echo clone-only > /home/user/mine").exit_code, Some(0));
    assert_eq!(sb.sh("cat /home/user/mine 2>/dev/null || echo absent").stdout, "absent\n");
    // The source carries on too.
    let (s, n) = counter(&sb);
    assert_eq!(s, secret);
    wait_for("the source's counter to move", Duration::from_secs(10), || (counter(&sb).1 > n).then_some(()));
    let clone = clone.id;

    // Kill leaves nothing: no runsc process, mount, image or layer.
    for id in [&sb.id, &clone, &second] {
        assert_eq!(d.api("DELETE", &format!("/sandboxes/{id}"), None).0, 204);
    }
    for id in [&sb.id, &clone, &second] {
        wait_for("its layer and image to go", Duration::from_secs(30), || {
            let layers = d.data_dir.join("layers");
            (!layers.join(id).exists() && !d.data_dir.join("images").join(id).exists()).then_some(())
        });
        assert_eq!(runsc_processes(id), 0);
        assert!(!std::path::Path::new(&format!("/run/warren-e2e/gvisor/gvisor/sandboxes/{id}")).exists());
    }
}

#[test]
fn the_runtime_is_chosen_per_pool_and_per_daemon_and_bad_choices_are_refused() {
    let d = Daemon::start_fresh("gvisor-pools");
    let _ = std::fs::remove_file(std::path::Path::new(warren_e2e::ROOT).join("gvisor-default/state.redb"));
    let d2 =
        Daemon::start_with(std::path::Path::new(warren_e2e::ROOT), "gvisor-default", "default_runtime = \"gvisor\"\n");
    // The daemon's default.
    let sb = d2.create(json!({"templateID": "base"}));
    assert_eq!(info(&d2, &sb.id)["runtime"], "gvisor");
    assert!(sb.sh("dmesg | head -1").stdout.contains("gVisor"));
    let native = d2.create(json!({"templateID": "base", "runtime": "native"}));
    assert_eq!(info(&d2, &native.id)["runtime"], "native");
    // Pause of a native sandbox still freezes it (memory kept in place).
    assert_eq!(d2.api("POST", &format!("/sandboxes/{}/pause", native.id), Some(json!({}))).0, 204);
    assert_eq!(info(&d2, &native.id)["warrenState"], "paused");

    // Unknown runtimes, and networking features gVisor sandboxes lack, are refused clearly.
    let (status, v) = d.api("POST", "/sandboxes", Some(json!({"templateID": "base", "runtime": "firecracker"})));
    assert_eq!(status, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("native, gvisor"), "{v}");
    let (status, v) = d.api(
        "POST",
        "/sandboxes",
        Some(json!({"templateID": "base", "runtime": "gvisor", "network": {"denyOut": ["192.0.2.0/24"]}})),
    );
    assert!(status == 400 || status == 409, "{status} {v}");
    assert!(v["message"].as_str().unwrap().contains("network"), "{v}");

    // A pool of gVisor sandboxes: creates of its shape claim them.
    let (status, v) =
        d.api("POST", "/pools", Some(json!({"name": "gv", "templateID": "base", "runtime": "gvisor", "minReady": 1})));
    assert_eq!(status, 201, "{v}");
    wait_for("the gVisor pool to fill", Duration::from_secs(60), || {
        let (_, v) = d.api("GET", "/pools/gv", None);
        (v["ready"].as_u64() == Some(1)).then_some(())
    });
    let claimed = d.create(json!({"templateID": "base", "runtime": "gvisor"}));
    let v = info(&d, &claimed.id);
    assert_eq!(v["runtime"], "gvisor", "{v}");
    assert_eq!(claimed.sh("echo ok").stdout, "ok\n");
    let (status, v) = d.api("POST", "/pools", Some(json!({"name": "bad", "templateID": "base", "runtime": "kvm"})));
    assert_eq!(status, 400, "{v}");
    assert_eq!(d.api("DELETE", "/pools/gv", None).0, 204);
    for (dd, id) in [(&d, &claimed.id), (&d2, &sb.id), (&d2, &native.id)] {
        assert_eq!(dd.api("DELETE", &format!("/sandboxes/{id}"), None).0, 204);
    }
}

#[test]
fn memory_snapshots_start_sandboxes_with_their_processes_running() {
    let d = Daemon::start_fresh("gvisor-snap");
    let src = d.create(json!({"templateID": "base", "runtime": "gvisor"}));
    assert_eq!(src.sh(COUNTER).exit_code, Some(0));
    assert_eq!(src.sh("echo in-memory > /tmp/mem").exit_code, Some(0));
    let (secret, _) = counter(&src);

    // A native sandbox's memory snapshot is its own runtime's (CRIU's) image.
    let native = d.create(json!({"templateID": "base", "runtime": "native"}));
    let (status, v) =
        d.api("POST", &format!("/sandboxes/{}/snapshots", native.id), Some(json!({"name": "x", "memory": true})));
    assert_eq!((status, &v["memory"]), (201, &json!(true)), "{v}");
    assert_eq!(d.api("DELETE", "/templates/x", None).0, 204);

    let (status, v) =
        d.api("POST", &format!("/sandboxes/{}/snapshots", src.id), Some(json!({"name": "gv-mem", "memory": true})));
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["memory"], true, "{v}");
    assert_eq!(counter(&src).0, secret, "the source lost its process");

    // Sandboxes of it start with the source's processes and memory; also after a restart, and
    // from a pool.
    let check = |sb: &warren_e2e::Sandbox| {
        assert_eq!(wait_for("its counter", Duration::from_secs(10), || Some(counter(sb))).0, secret);
        assert_eq!(sb.sh("cat /tmp/mem").stdout, "in-memory\n");
    };
    let a = d.create(json!({"templateID": "gv-mem", "runtime": "gvisor"}));
    check(&a);
    d.restart();
    let b = d.create(json!({"templateID": "gv-mem", "runtime": "gvisor"}));
    check(&b);
    let (status, v) = d.api(
        "POST",
        "/pools",
        Some(json!({"name": "gv-mem-pool", "templateID": "gv-mem", "runtime": "gvisor", "minReady": 1})),
    );
    assert_eq!(status, 201, "{v}");
    wait_for("the pool to fill", Duration::from_secs(60), || {
        (d.api("GET", "/pools/gv-mem-pool", None).1["ready"].as_u64() == Some(1)).then_some(())
    });
    let c = d.create(json!({"templateID": "gv-mem", "runtime": "gvisor"}));
    check(&c);

    // In use: refused with its users; once free, deleting it removes its memory image.
    let (status, v) = d.api("DELETE", "/templates/gv-mem", None);
    assert_eq!(status, 409, "{v}");
    assert_eq!(d.api("DELETE", "/pools/gv-mem-pool", None).0, 204);
    for id in [&a.id, &b.id, &c.id, &src.id, &native.id] {
        assert_eq!(d.api("DELETE", &format!("/sandboxes/{id}"), None).0, 204);
    }
    wait_for("the snapshot to be free", Duration::from_secs(30), || {
        (d.api("DELETE", "/templates/gv-mem", None).0 == 204).then_some(())
    });
    let left: Vec<String> = std::fs::read_dir(d.data_dir.join("images"))
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(left.iter().all(|n| !n.starts_with("copy-")), "memory images left: {left:?}");
}

/// The template's memory image on gVisor, once its warm-up ended (`None` while it runs).
fn template_image(d: &Daemon, id: &str) -> Option<serde_json::Value> {
    let (status, v) = d.api("GET", &format!("/templates/{id}"), None);
    assert_eq!(status, 200, "{v}");
    v["memorySnapshots"].as_array()?.iter().find(|s| s["runtime"] == "gvisor").cloned()
}

#[test]
fn templates_with_a_start_command_start_from_a_memory_image_on_gvisor() {
    let root = std::path::Path::new(warren_e2e::ROOT);
    let _ = std::fs::remove_file(root.join("gvisor-tpl/state.redb"));
    // On a daemon whose default runtime is gVisor, a template gets its image as soon as it is made
    // (elsewhere, once a sandbox of it is first started on gVisor).
    let d = Daemon::start_with(
        root,
        "gvisor-tpl",
        "default_runtime = \"gvisor\"\n[gvisor]\ntemplate_memory_snapshots = true\n",
    );
    // The start command notes where it ran: a sandbox restored from the image did not run it.
    let start = |version: &str| {
        format!(
            "echo {version} > /home/user/version; hostname > /home/user/started-in; echo x >> /home/user/starts; \
             exec python3 -m http.server 8082"
        )
    };
    let tpl = |version: &str| {
        json!({"templateID": "gv-web-e2e", "from": "base", "startCmd": start(version),
               "readyCmd": "bash -c '</dev/tcp/127.0.0.1/8082'", "readyTimeout": 30})
    };
    let (status, v) = d.api("POST", "/templates", Some(tpl("v1")));
    assert_eq!(status, 201, "{v}");
    let img = wait_for("the template's memory image", Duration::from_secs(120), || template_image(&d, "gv-web-e2e"));
    assert_eq!(img["status"], "ready", "{img}");

    let probe = "curl -s -o /dev/null -w '%{http_code}\\n' http://127.0.0.1:8082/; cat /home/user/version \
                 /home/user/started-in; wc -l < /home/user/starts";
    let check = |sb: &warren_e2e::Sandbox, version: &str| {
        let r = sb.sh(probe);
        let lines: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(lines.len(), 4, "{r:?}");
        assert_eq!((lines[0], lines[1], lines[3]), ("200", version, "1"), "{r:?}");
        assert_ne!(lines[2], sb.id, "the start command ran in the sandbox itself: {r:?}");
    };
    let a = d.create(json!({"templateID": "gv-web-e2e", "runtime": "gvisor"}));
    check(&a, "v1");
    // The native runtime keeps no memory: its sandboxes run the start command at boot.
    let n = d.create(json!({"templateID": "gv-web-e2e", "runtime": "native"}));
    assert_eq!(n.sh("cat /home/user/started-in").stdout.trim(), n.id);

    // The image is kept across restarts, and taken again when the start command changes.
    d.restart();
    let b = d.create(json!({"templateID": "gv-web-e2e", "runtime": "gvisor"}));
    check(&b, "v1");
    let (status, v) = d.api("POST", "/templates", Some(tpl("v2")));
    assert_eq!(status, 201, "{v}");
    let img = wait_for("the new memory image", Duration::from_secs(120), || template_image(&d, "gv-web-e2e"));
    assert_eq!(img["status"], "ready", "{img}");
    let c = d.create(json!({"templateID": "gv-web-e2e", "runtime": "gvisor"}));
    check(&c, "v2");
    check(&a, "v1");

    // A ready check that never passes: no image, and the template says why.
    let never = json!({"templateID": "gv-never-e2e", "from": "base", "startCmd": "sleep 1000",
                       "readyCmd": "false", "readyTimeout": 1});
    assert_eq!(d.api("POST", "/templates", Some(never)).0, 201);
    let img = wait_for("the failed warm-up", Duration::from_secs(60), || template_image(&d, "gv-never-e2e"));
    assert_eq!(img["status"], "failed", "{img}");
    assert!(img["error"].as_str().unwrap().contains("ready check"), "{img}");

    for sb in [&a, &b, &c, &n] {
        assert_eq!(d.api("DELETE", &format!("/sandboxes/{}", sb.id), None).0, 204);
    }
    assert_eq!(d.api("DELETE", "/templates/gv-web-e2e", None).0, 204);
    assert_eq!(d.api("DELETE", "/templates/gv-never-e2e", None).0, 204);
    let left: Vec<String> = std::fs::read_dir(d.data_dir.join("images"))
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "memory images left: {left:?}");
    let layers: Vec<String> = std::fs::read_dir(d.data_dir.join("layers"))
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(layers.iter().all(|l| !(l.starts_with('l') && l.len() == 17)), "frozen layers left: {layers:?}");
}

#[test]
fn a_full_disk_during_a_pause_and_a_corrupt_image_fail_cleanly() {
    let d = Daemon::start_fresh("gvisor-bad");
    let sb = d.create(json!({"templateID": "base", "runtime": "gvisor", "timeout": 600}));
    assert_eq!(sb.sh(COUNTER).exit_code, Some(0));
    let (secret, _) = counter(&sb);
    let state = |d: &Daemon| info(d, &sb.id)["warrenState"].as_str().unwrap().to_owned();

    // The disk fills up during the checkpoint: its image directory is a 4 MiB tmpfs.
    let img = d.data_dir.join("images").join(&sb.id);
    std::fs::create_dir_all(&img).unwrap();
    let mounted =
        std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"]).arg(&img).status();
    assert!(mounted.unwrap().success());
    let (status, v) = d.api("POST", &format!("/sandboxes/{}/pause", sb.id), Some(json!({})));
    let left = std::fs::read_dir(&img).map(|rd| rd.count()).unwrap_or(0);
    assert!(std::process::Command::new("umount").arg(&img).status().unwrap().success());
    assert_eq!(status, 500, "{v}");
    assert!(v["message"].as_str().unwrap().contains("checkpoint"), "{v}");
    assert_eq!(left, 0, "the partial image was left behind");
    // It keeps running with its processes and memory.
    assert_eq!(state(&d), "running");
    let (s, n) = wait_for("its counter", Duration::from_secs(10), || Some(counter(&sb)));
    assert_eq!(s, secret);
    wait_for("its counter to move on", Duration::from_secs(10), || (counter(&sb).1 > n).then_some(()));

    // A corrupt image: the wake is refused with the reason, the sandbox stays paused, the daemon
    // keeps serving, and a kill frees everything.
    assert_eq!(d.api("POST", &format!("/sandboxes/{}/pause", sb.id), Some(json!({}))).0, 204);
    assert_eq!(state(&d), "hibernated");
    std::fs::write(img.join("checkpoint.img"), b"not a checkpoint").unwrap();
    let (status, v) = d.api("POST", &format!("/sandboxes/{}/connect", sb.id), Some(json!({"timeout": 60})));
    assert!(status >= 400, "{status} {v}");
    assert!(v["message"].as_str().unwrap().contains("restoring"), "{v}");
    assert_eq!(state(&d), "hibernated");
    assert_eq!(d.api("GET", "/sandboxes", None).0, 200);
    let other = d.create(json!({"templateID": "base", "runtime": "gvisor"}));
    assert_eq!(other.sh("echo ok").stdout, "ok\n");
    for id in [&sb.id, &other.id] {
        assert_eq!(d.api("DELETE", &format!("/sandboxes/{id}"), None).0, 204);
    }
    // A kill answers once every process is dead; the image goes with the rest in the background.
    wait_for("its image to go", Duration::from_secs(20), || (!img.exists()).then_some(()));
    assert_eq!(runsc_processes(&sb.id), 0);
}
