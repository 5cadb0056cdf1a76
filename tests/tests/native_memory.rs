//! Memory pauses on the native runtime (CRIU): `pause {"memory": true}` saves a sandbox's processes
//! and memory to disk and frees them; `connect` restores them with their memory, files, address
//! and egress policy; it survives a daemon restart; what CRIU cannot save is refused with the
//! reason while the sandbox keeps running.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use warren_e2e::{wait_for, Daemon, Sandbox};

const NAME: &str = "native-memory";

fn info(d: &Daemon, id: &str) -> serde_json::Value {
    let (status, v) = d.api("GET", &format!("/sandboxes/{id}"), None);
    assert_eq!(status, 200, "{v}");
    v
}

fn cgroup(id: &str) -> PathBuf {
    cgroup_of(NAME, id)
}

/// The memory cgroup of sandbox `id` of the test daemon named `daemon`.
fn cgroup_of(daemon: &str, id: &str) -> PathBuf {
    PathBuf::from(format!("/sys/fs/cgroup/memory/warren-e2e-{daemon}")).join(id)
}

/// A Python process that holds a random secret in memory and counts in a file, and a Python
/// server on port 8000 whose answers count its requests (state only in its memory).
const PROCESSES: &str = r#"cat > /tmp/counter.py <<'EOF'
import os, time
secret = os.urandom(8).hex()
n = 0
while True:
    n += 1
    with open('/home/user/count.tmp', 'w') as f:
        f.write(f'{secret} {n}')
    os.replace('/home/user/count.tmp', '/home/user/count')
    time.sleep(0.02)
EOF
cat > /tmp/server.py <<'EOF'
import http.server
served = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global served
        served += 1
        self.send_response(200)
        self.end_headers()
        self.wfile.write(str(served).encode())
    def log_message(self, *a):
        pass
http.server.HTTPServer(('0.0.0.0', 8000), H).serve_forever()
EOF
(setsid python3 /tmp/counter.py >/dev/null 2>&1 </dev/null &)
(setsid python3 /tmp/server.py >/dev/null 2>&1 </dev/null &)
for _ in $(seq 500); do [ -s /home/user/count ] && break; sleep 0.01; done; cat /home/user/count"#;

fn counter(sb: &Sandbox) -> (String, u64) {
    let r = sb.sh("cat /home/user/count");
    let (secret, n) = r.stdout.trim().split_once(' ').unwrap_or_else(|| panic!("{r:?}"));
    (secret.to_owned(), n.parse().unwrap())
}

/// The body of a GET to port 8000 inside, through the proxy; `None` until something answers.
fn served(d: &Daemon, sb: &Sandbox) -> Option<u64> {
    let (status, body) = d.raw("GET", "/", &[("E2b-Sandbox-Id", &sb.id), ("E2b-Sandbox-Port", "8000")], b"");
    if status != 200 {
        eprintln!("port 8000 of {}: {status} {}", sb.id, String::from_utf8_lossy(&body));
    }
    (status == 200).then(|| String::from_utf8_lossy(&body).trim().parse().ok()).flatten()
}

/// The nftables ruleset of the sandbox's network namespace, read from the host.
fn sandbox_ruleset(id: &str) -> String {
    sandbox_ruleset_of(NAME, id)
}

fn sandbox_ruleset_of(daemon: &str, id: &str) -> String {
    let procs = std::fs::read_to_string(cgroup_of(daemon, id).join("cgroup.procs")).unwrap_or_default();
    let pid = procs.lines().next().unwrap_or_else(|| panic!("sandbox {id} has no process"));
    let out = std::process::Command::new("nsenter")
        .args([format!("--net=/proc/{pid}/ns/net").as_str(), "nft", "list", "ruleset"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn native_sandboxes_keep_processes_memory_and_network_across_a_memory_pause_and_restart() {
    let d = Daemon::start_fresh(NAME);
    let sb = d.create(json!({"templateID": "base", "envVars": {"A": "1"}}));
    assert_eq!(info(&d, &sb.id)["runtime"], "native");
    let first = sb.sh(PROCESSES);
    assert_eq!(first.exit_code, Some(0), "{first:?}");
    assert_eq!(sb.sh("echo in-memory > /tmp/mem && echo shm > /dev/shm/s").exit_code, Some(0));
    let address = sb.sh("python3 -c 'import socket; print(socket.gethostbyname(socket.gethostname()))'").stdout;
    assert_eq!(wait_for("the server inside", Duration::from_secs(20), || served(&d, &sb)), 1);
    assert_eq!(served(&d, &sb), Some(2));
    let (status, v) =
        d.api("PUT", &format!("/sandboxes/{}/network", sb.id), Some(json!({"denyOut": ["10.123.0.0/16"]})));
    assert_eq!(status, 204, "{v}");
    assert!(sandbox_ruleset(&sb.id).contains("10.123.0.0/16"));

    // A memory pause saves processes and memory and frees them.
    let pause = |body: serde_json::Value| d.api("POST", &format!("/sandboxes/{}/pause", sb.id), Some(body));
    let (status, v) = pause(json!({"memory": true}));
    assert_eq!(status, 204, "{v}");
    let v = info(&d, &sb.id);
    assert_eq!((v["state"].as_str(), v["warrenState"].as_str()), (Some("paused"), Some("hibernated")), "{v}");
    assert!(!cgroup(&sb.id).exists(), "its cgroup (and so its memory) is still there");
    let image = d.data_dir.join("images").join(&sb.id);
    assert!(image.join("warren-image.json").is_file(), "no image at {}", image.display());
    assert_eq!(pause(json!({"memory": true})).0, 409);
    assert_eq!(pause(json!({})).0, 409);
    let (secret, before) = {
        let text =
            std::fs::read_to_string(d.data_dir.join("layers").join(&sb.id).join("upper/home/user/count")).unwrap();
        let (s, n) = text.split_once(' ').unwrap();
        (s.to_owned(), n.parse::<u64>().unwrap())
    };

    // Connect restores them: the same processes carry on with their memory, on the same address,
    // behind the same egress rules.
    let (status, v) = d.api("POST", &format!("/sandboxes/{}/connect", sb.id), Some(json!({"timeout": 120})));
    assert_eq!(status, 201, "{v}");
    let after = wait_for("the counter to move on", Duration::from_secs(10), || {
        let (s, n) = counter(&sb);
        (n > before).then_some((s, n))
    });
    assert_eq!(after.0, secret, "a different process is counting");
    assert_eq!(served(&d, &sb), Some(3), "the server lost its state or its port");
    assert_eq!(sb.sh("cat /tmp/mem /dev/shm/s; echo $A").stdout, "in-memory\nshm\n1\n");
    let now = sb.sh("python3 -c 'import socket; print(socket.gethostbyname(socket.gethostname()))'").stdout;
    assert_eq!(now, address);
    assert!(sandbox_ruleset(&sb.id).contains("10.123.0.0/16"), "the egress rules were lost");
    assert!(cgroup(&sb.id).exists());
    // Commands run as before, as any user.
    assert_eq!(sb.sh_as("root", "id -u").stdout, "0\n");

    // Paused with its memory across a daemon restart, it still wakes with it, and again.
    assert_eq!(pause(json!({"memory": true})).0, 204);
    d.restart();
    assert_eq!(info(&d, &sb.id)["warrenState"], "hibernated");
    let (status, v) = d.api("POST", &format!("/sandboxes/{}/connect", sb.id), Some(json!({"timeout": 120})));
    assert_eq!(status, 201, "{v}");
    assert_eq!(counter(&sb).0, secret);
    assert_eq!(served(&d, &sb), Some(4));
    assert_eq!(pause(json!({"memory": true})).0, 204);
    let (status, v) = d.api("POST", &format!("/sandboxes/{}/connect", sb.id), Some(json!({"timeout": 120})));
    assert_eq!(status, 201, "{v}");
    assert_eq!(counter(&sb).0, secret);
    // Paused again at once, while its pages may still be coming in, it keeps all of its memory.
    let (status, v) = d.api("POST", &format!("/sandboxes/{}/connect", sb.id), Some(json!({"timeout": 120})));
    assert_eq!(status, 200, "{v}");
    assert_eq!(pause(json!({"memory": true})).0, 204);
    assert_eq!(d.api("POST", &format!("/sandboxes/{}/connect", sb.id), Some(json!({"timeout": 120}))).0, 201);
    assert_eq!(counter(&sb).0, secret);
    assert_eq!(served(&d, &sb), Some(5), "the server lost its state");

    // A plain pause still freezes in place; a memory pause of a paused sandbox is refused.
    assert_eq!(pause(json!({})).0, 204);
    assert_eq!(info(&d, &sb.id)["warrenState"], "paused");
    assert_eq!(pause(json!({"memory": true})).0, 409);
    assert_eq!(d.api("POST", &format!("/sandboxes/{}/connect", sb.id), Some(json!({}))).0, 201);

    // Kill leaves nothing: no cgroup, image or layer.
    assert_eq!(d.api("DELETE", &format!("/sandboxes/{}", sb.id), None).0, 204);
    wait_for("its layer, image and cgroup to go", Duration::from_secs(30), || {
        let gone = !d.data_dir.join("layers").join(&sb.id).exists() && !image.exists() && !cgroup(&sb.id).exists();
        gone.then_some(())
    });
}

#[test]
fn what_criu_cannot_save_is_refused_and_the_sandbox_keeps_running() {
    let d = Daemon::start_fresh(&format!("{NAME}-bad"));
    let sb = d.create(json!({"templateID": "base"}));
    // A listening socket with a connection that was closed before it was accepted: CRIU cannot
    // tell what that connection sent, so it refuses to save the process.
    let held = sb.sh("cat > /tmp/held.py <<'EOF'\n\
import socket, time\n\
s = socket.socket(socket.AF_UNIX)\n\
s.bind('/tmp/l.sock')\n\
s.listen(5)\n\
c = socket.socket(socket.AF_UNIX)\n\
c.connect('/tmp/l.sock')\n\
c.close()\n\
open('/tmp/held', 'w').write('1')\n\
time.sleep(3600)\n\
EOF\n\
(setsid python3 /tmp/held.py >/dev/null 2>&1 </dev/null &)\n\
for _ in $(seq 500); do [ -s /tmp/held ] && break; sleep 0.01; done; cat /tmp/held");
    assert_eq!(held.stdout, "1", "{held:?}");
    let (status, v) = d.api("POST", &format!("/sandboxes/{}/pause", sb.id), Some(json!({"memory": true})));
    assert_eq!(status, 409, "{v}");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(message.contains("keeps running") && message.contains("in-flight"), "{v}");
    assert!(!message.contains("RLIMIT"), "the reason is buried in noise: {v}");
    // It runs on as it was: same process, commands answer, and it can be paused in place.
    assert_eq!(info(&d, &sb.id)["state"], "running");
    assert_eq!(sb.sh("pgrep -x python3 | wc -l").stdout, "1\n");
    assert!(!d.data_dir.join("images").join(&sb.id).exists(), "the failed image was left behind");
    assert_eq!(d.api("POST", &format!("/sandboxes/{}/pause", sb.id), Some(json!({}))).0, 204);
    assert_eq!(d.api("POST", &format!("/sandboxes/{}/connect", sb.id), Some(json!({}))).0, 201);
    // Once the process is gone, the sandbox can be saved.
    assert_eq!(sb.sh("pkill -x python3; echo done").stdout, "done\n");
    // Unless the disk fills up during the dump (the images directory is a 4 MiB tmpfs; the
    // sandbox holds 32 MiB): refused with the reason, nothing left behind, still running.
    let holder = "(setsid python3 -c \"import os,time; b=os.urandom(32<<20); open('/tmp/big','w').write('1'); \
                  time.sleep(3600)\" >/dev/null 2>&1 </dev/null &); \
                  for _ in $(seq 500); do [ -s /tmp/big ] && break; sleep 0.01; done; cat /tmp/big && echo ok";
    assert_eq!(sb.sh(holder).stdout, "1ok\n");
    let images = d.data_dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let mounted =
        std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"]).arg(&images).status();
    assert!(mounted.unwrap().success());
    let (status, v) = d.api("POST", &format!("/sandboxes/{}/pause", sb.id), Some(json!({"memory": true})));
    let left = std::fs::read_dir(&images).map(|rd| rd.count()).unwrap_or(0);
    assert!(std::process::Command::new("umount").arg(&images).status().unwrap().success());
    // The host's disk, not the caller's input: a 500 as on gVisor, with CRIU's reason.
    assert_eq!(status, 500, "{v}");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(message.contains("keeps running") && message.contains("No space left"), "{v}");
    assert_eq!(left, 0, "the partial image was left behind");
    assert_eq!(info(&d, &sb.id)["state"], "running");
    assert_eq!(sb.sh("pgrep -x python3 | wc -l").stdout, "1\n");
    assert_eq!(sb.sh("pkill -x python3; echo done").stdout, "done\n");
    let (status, v) = d.api("POST", &format!("/sandboxes/{}/pause", sb.id), Some(json!({"memory": true})));
    assert_eq!(status, 204, "{v}");
    assert_eq!(d.api("POST", &format!("/sandboxes/{}/pause", sb.id), Some(json!({"memory": "yes"}))).0, 400);
    // A damaged image is refused with what is wrong, and the sandbox can still be killed.
    let image = d.data_dir.join("images").join(&sb.id);
    std::fs::write(image.join("warren-image.json"), b"{\"version\": 99}").unwrap();
    let (status, v) = d.api("POST", &format!("/sandboxes/{}/connect", sb.id), Some(json!({"timeout": 60})));
    assert!(status >= 400, "{status} {v}");
    assert!(v["message"].as_str().unwrap_or_default().contains("warren-image.json"), "{v}");
    assert_eq!(d.api("DELETE", &format!("/sandboxes/{}", sb.id), None).0, 204);
    assert_eq!(d.api("POST", "/sandboxes/inope/pause", Some(json!({"memory": true}))).0, 404);
}

#[test]
fn native_forks_and_snapshots_carry_the_source_processes_and_memory() {
    let d = Daemon::start_fresh(&format!("{NAME}-fork"));
    let src = d.create(json!({"templateID": "base", "envVars": {"SEED": "7"}}));
    assert_eq!(src.sh(PROCESSES).exit_code, Some(0));
    assert_eq!(src.sh("echo in-memory > /tmp/mem").exit_code, Some(0));
    let (secret, _) = counter(&src);
    assert_eq!(wait_for("the server inside", Duration::from_secs(20), || served(&d, &src)), 1);
    let address = |sb: &Sandbox| {
        sb.sh("python3 -c 'import socket; print(socket.gethostbyname(socket.gethostname()))'").stdout.trim().to_owned()
    };
    let src_address = address(&src);
    let (status, v) =
        d.api("PUT", &format!("/sandboxes/{}/network", src.id), Some(json!({"denyOut": ["10.124.0.0/16"]})));
    assert_eq!(status, 204, "{v}");

    let (status, v) = d.api("POST", &format!("/sandboxes/{}/fork", src.id), Some(json!({"count": 2})));
    assert_eq!(status, 201, "{v}");
    let clones: Vec<Sandbox> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Sandbox {
            id: c["sandbox"]["sandboxID"].as_str().unwrap_or_else(|| panic!("{v}")).to_owned(),
            token: c["sandbox"]["envdAccessToken"].as_str().unwrap_or_default().to_owned(),
            url: d.url(),
            http: d.http.clone(),
        })
        .collect();
    let images = std::fs::read_dir(d.data_dir.join("images")).unwrap();
    assert!(
        images.flatten().all(|e| !e.file_name().to_string_lossy().starts_with("copy-")),
        "the fork's memory image was left behind"
    );
    let mut addresses = std::collections::BTreeSet::from([src_address.clone()]);
    for c in &clones {
        // The clone's processes carry on from the source's memory, under its own name and address,
        // and it is told whose clone it is.
        assert_eq!(counter(c).0, secret, "the clone's counter is not the source's process");
        assert_eq!(served(&d, c), Some(2), "the clone's server did not keep the source's state");
        let r = c.sh("cat /tmp/mem; hostname; echo $WARREN_FORKED_FROM $SEED");
        assert_eq!(r.stdout, format!("in-memory\n{}\n{} 7\n", c.id, src.id), "{r:?}");
        addresses.insert(address(c));
        assert!(
            sandbox_ruleset_of(&format!("{NAME}-fork"), &c.id).contains("10.124.0.0/16"),
            "the clone lost its source's egress rules"
        );
        // Nothing of the source's address stays on the clone's eth0 (it carried it while restored).
        let own = c.sh("grep -B1 '/32 host' /proc/net/fib_trie | grep -o '10\\.[0-9.]*' | sort -u | wc -l").stdout;
        assert_eq!(own.trim(), "1", "the clone holds more than its own address");
    }
    assert_eq!(addresses.len(), 3, "clones share an address: {addresses:?}");
    // They diverge: each server counts on its own, and the source carries on.
    assert_eq!(served(&d, &clones[0]), Some(3));
    assert_eq!(served(&d, &clones[1]), Some(3));
    assert_eq!(served(&d, &src), Some(2));
    let (s, n) = counter(&src);
    assert_eq!(s, secret);
    wait_for("the source's counter to move", Duration::from_secs(10), || (counter(&src).1 > n).then_some(()));

    // A fork of a clone.
    let (status, v) = d.api("POST", &format!("/sandboxes/{}/fork", clones[0].id), Some(json!({})));
    assert_eq!(status, 201, "{v}");
    let grandchild = Sandbox {
        id: v[0]["sandbox"]["sandboxID"].as_str().unwrap_or_else(|| panic!("{v}")).to_owned(),
        token: v[0]["sandbox"]["envdAccessToken"].as_str().unwrap_or_default().to_owned(),
        url: d.url(),
        http: d.http.clone(),
    };
    assert_eq!(counter(&grandchild).0, secret);
    assert_eq!(served(&d, &grandchild), Some(4));

    // A fork of the files only starts fresh processes on them (/tmp is a directory of the disk, so
    // its files come along).
    let (status, v) = d.api("POST", &format!("/sandboxes/{}/fork", src.id), Some(json!({"count": 1, "memory": false})));
    assert_eq!(status, 201, "{v}");
    let files_only = Sandbox {
        id: v[0]["sandbox"]["sandboxID"].as_str().unwrap_or_else(|| panic!("{v}")).to_owned(),
        token: v[0]["sandbox"]["envdAccessToken"].as_str().unwrap_or_default().to_owned(),
        url: d.url(),
        http: d.http.clone(),
    };
    assert_eq!(
        files_only.sh("pgrep -x python3 || echo none; cat /tmp/mem 2>/dev/null || echo no-tmp").stdout,
        "none
in-memory
"
    );
    assert_eq!(d.api("DELETE", &format!("/sandboxes/{}", files_only.id), None).0, 204);

    // A memory snapshot starts sandboxes with the source's processes running.
    let (status, v) = d.api(
        "POST",
        &format!("/sandboxes/{}/snapshots", src.id),
        Some(json!({"name": "native-mem-snap", "memory": true})),
    );
    assert_eq!(status, 201, "{v}");
    let from_snapshot = d.create(json!({"templateID": "native-mem-snap"}));
    assert_eq!(counter(&from_snapshot).0, secret);
    assert_eq!(from_snapshot.sh("hostname").stdout, format!("{}\n", from_snapshot.id));

    for sb in clones.iter().chain([&grandchild, &from_snapshot, &src]) {
        assert_eq!(d.api("DELETE", &format!("/sandboxes/{}", sb.id), None).0, 204);
    }
    assert_eq!(d.api("DELETE", "/templates/native-mem-snap", None).0, 204);
    wait_for("every layer and image to go", Duration::from_secs(30), || {
        let empty = |dir: &str| std::fs::read_dir(d.data_dir.join(dir)).map(|rd| rd.count() == 0).unwrap_or(true);
        (empty("images") && empty("layers/.frozen")).then_some(())
    });
}

/// The template's memory image for native sandboxes, once its warm-up ended.
fn template_image(d: &Daemon, id: &str) -> Option<serde_json::Value> {
    let (status, v) = d.api("GET", &format!("/templates/{id}"), None);
    assert_eq!(status, 200, "{v}");
    v["memorySnapshots"].as_array()?.iter().find(|s| s["runtime"] == "native").cloned()
}

#[test]
fn templates_with_a_start_command_start_from_a_memory_image_on_native() {
    let root = std::path::Path::new(warren_e2e::ROOT);
    let _ = std::fs::remove_file(root.join(format!("{NAME}-tpl/state.redb")));
    let d = Daemon::start_with(root, &format!("{NAME}-tpl"), "[gvisor]\ntemplate_memory_snapshots = true\n");
    // The start command notes where it ran: a sandbox restored from the image did not run it.
    let start = "hostname > /home/user/started-in; echo x >> /home/user/starts; exec python3 -m http.server 8082";
    let tpl = json!({"templateID": "nat-web-e2e", "from": "base", "startCmd": start,
                     "readyCmd": "bash -c '</dev/tcp/127.0.0.1/8082'", "readyTimeout": 30});
    let (status, v) = d.api("POST", "/templates", Some(tpl));
    assert_eq!(status, 201, "{v}");
    // The first sandbox boots cold (and runs the start command); the image is taken meanwhile.
    let first = d.create(json!({"templateID": "nat-web-e2e"}));
    let img = wait_for("the template's memory image", Duration::from_secs(120), || template_image(&d, "nat-web-e2e"));
    assert_eq!(img["status"], "ready", "{img}");
    let sb = d.create(json!({"templateID": "nat-web-e2e"}));
    // Its server answers at once, through the proxy and inside, and it never ran the start command.
    let (status, _) = d.raw("GET", "/", &[("E2b-Sandbox-Id", &sb.id), ("E2b-Sandbox-Port", "8082")], b"");
    assert_eq!(status, 200);
    let r = sb.sh("curl -s -o /dev/null -w '%{http_code}\\n' http://127.0.0.1:8082/; cat /home/user/started-in; \
                   wc -l < /home/user/starts; hostname");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{r:?}");
    assert_eq!((lines[0], lines[2], lines[3]), ("200", "1", sb.id.as_str()), "{r:?}");
    assert_ne!(lines[1], sb.id, "the start command ran in the sandbox itself: {r:?}");
    for s in [&first, &sb] {
        assert_eq!(d.api("DELETE", &format!("/sandboxes/{}", s.id), None).0, 204);
    }
    assert_eq!(d.api("DELETE", "/templates/nat-web-e2e", None).0, 204);
    wait_for("the template's image to go", Duration::from_secs(30), || {
        let left = std::fs::read_dir(d.data_dir.join("images")).map(|rd| rd.count()).unwrap_or(0);
        (left == 0).then_some(())
    });
}
