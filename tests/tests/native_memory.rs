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
    PathBuf::from(format!("/sys/fs/cgroup/memory/warren-e2e-{NAME}")).join(id)
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
    (status == 200).then(|| String::from_utf8_lossy(&body).trim().parse().ok()).flatten()
}

/// The nftables ruleset of the sandbox's network namespace, read from the host.
fn sandbox_ruleset(id: &str) -> String {
    let procs = std::fs::read_to_string(cgroup(id).join("cgroup.procs")).unwrap_or_default();
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
