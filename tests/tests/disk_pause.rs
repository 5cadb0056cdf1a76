//! Pause to disk (E2B's filesystem mode, `memory: false`): processes end and their memory is freed;
//! files, address, tokens and settings stay; connect (or traffic, with autoResume) boots the
//! sandbox again on the same files; it survives a daemon restart; fork, snapshot and kill work
//! on it.

use serde_json::json;
use warren_e2e::Daemon;

fn info(d: &Daemon, id: &str) -> serde_json::Value {
    let (status, v) = d.api("GET", &format!("/sandboxes/{id}"), None);
    assert_eq!(status, 200, "{v}");
    v
}

#[test]
fn a_sandbox_paused_to_disk_keeps_its_files_and_wakes_on_them() {
    let d = Daemon::start_fresh("disk-pause");
    let cg = |id: &str| std::path::Path::new("/sys/fs/cgroup/memory/warren-e2e-disk-pause").join(id);
    let sb = d.create(json!({"templateID": "base", "envVars": {"A": "1"}, "autoResume": {"enabled": true}}));
    let r = sb.sh("echo kept > /home/user/f && (nohup sleep 1000 >/dev/null 2>&1 &) && \
                   python3 -c 'import socket; print(socket.gethostbyname(socket.gethostname()))'");
    let address = r.stdout.trim().to_owned();
    assert!(!address.is_empty(), "{r:?}");
    assert!(cg(&sb.id).exists());

    let pause = |id: &str| d.api("POST", &format!("/sandboxes/{id}/pause"), Some(json!({"memory": false})));
    assert_eq!(pause(&sb.id).0, 204);
    let v = info(&d, &sb.id);
    assert_eq!((v["state"].as_str(), v["warrenState"].as_str()), (Some("paused"), Some("hibernated")), "{v}");
    assert!(!cg(&sb.id).exists(), "its cgroup (and so its memory) is still there");
    assert_eq!(pause(&sb.id).0, 409);
    assert_eq!(d.api("POST", &format!("/sandboxes/{}/pause", sb.id), Some(json!({}))).0, 409);
    assert_eq!(d.api("GET", &format!("/sandboxes/{}/stats", sb.id), None).0, 409);
    // Listed as paused.
    let (_, paused) = d.api("GET", "/sandboxes?state=paused", None);
    assert!(paused.as_array().unwrap().iter().any(|s| s["sandboxID"] == sb.id.as_str()));

    // Forks and snapshots take its files as they are.
    let (status, v) = d.api("POST", &format!("/sandboxes/{}/fork", sb.id), Some(json!({})));
    assert_eq!(status, 201, "{v}");
    let clone = v[0]["sandbox"]["sandboxID"].as_str().unwrap().to_owned();
    assert_eq!(info(&d, &sb.id)["warrenState"], "hibernated");

    // It survives a restart of the daemon.
    d.restart();
    assert_eq!(info(&d, &sb.id)["warrenState"], "hibernated");

    // Traffic wakes it (autoResume): same token, address, files and environment; fresh processes.
    let r = sb.sh("cat /home/user/f; echo $A; pgrep -x sleep || echo none; \
                   python3 -c 'import socket; print(socket.gethostbyname(socket.gethostname()))'");
    assert_eq!(r.stdout, format!("kept\n1\nnone\n{address}\n"), "{r:?}");
    assert_eq!(info(&d, &sb.id)["state"], "running");
    assert!(cg(&sb.id).exists());

    // Connect wakes it too (201), and a memory pause can be moved to disk.
    assert_eq!(d.api("POST", &format!("/sandboxes/{}/pause", sb.id), Some(json!({}))).0, 204);
    assert_eq!(pause(&sb.id).0, 204);
    assert_eq!(info(&d, &sb.id)["warrenState"], "hibernated");
    let (status, v) = d.api("POST", &format!("/sandboxes/{}/connect", sb.id), Some(json!({"timeout": 60})));
    assert_eq!(status, 201, "{v}");
    assert_eq!(sb.sh("cat /home/user/f").stdout, "kept\n");

    // Killing one on disk removes its layer.
    assert_eq!(pause(&sb.id).0, 204);
    assert_eq!(d.api("DELETE", &format!("/sandboxes/{}", sb.id), None).0, 204);
    warren_e2e::wait_for("its layer to go", std::time::Duration::from_secs(30), || {
        (!d.data_dir.join("layers").join(&sb.id).exists()).then_some(())
    });
    assert_eq!(d.api("DELETE", &format!("/sandboxes/{clone}"), None).0, 204);
}
