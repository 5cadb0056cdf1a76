//! Lifecycle policies: pause on timeout, resume on traffic (concurrent wakes merge), pause when
//! idle, and what a paused sandbox without auto-resume answers.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warren_e2e::{shared, wait_for, Daemon, Sandbox};

fn daemon() -> &'static Daemon {
    shared("lifecycle")
}

fn info(d: &Daemon, id: &str) -> Value {
    let (status, v) = d.api("GET", &format!("/sandboxes/{id}"), None);
    assert_eq!(status, 200, "{v}");
    v
}

fn wait_state(d: &Daemon, sb: &Sandbox, state: &str, within: Duration) {
    wait_for(&format!("sandbox {} to be {state}", sb.id), within, || (info(d, &sb.id)["state"] == state).then_some(()));
}

fn log_messages(d: &Daemon, id: &str) -> Vec<(String, Value)> {
    let (_, v) = d.api("GET", &format!("/v2/sandboxes/{id}/logs"), None);
    v["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["message"].as_str().unwrap().to_owned(), e["fields"].clone()))
        .collect()
}

#[test]
fn timeout_pauses_when_asked_and_connect_resumes_with_state() {
    let d = daemon();
    let sb = d.create(json!({"templateID": "base", "timeout": 1, "autoPause": true}));
    assert_eq!(info(d, &sb.id)["lifecycle"], json!({"autoResume": false, "onTimeout": "pause"}));
    assert_eq!(sb.sh("echo kept > /tmp/k && echo ok").stdout, "ok\n");
    wait_state(d, &sb, "paused", Duration::from_secs(10));
    let paused = log_messages(d, &sb.id).into_iter().find(|(m, _)| m == "sandbox paused").expect("a pause entry");
    assert_eq!(paused.1["reason"], "timeout");
    // Without autoResume, traffic to a paused sandbox is refused clearly.
    let (status, body) = d.raw(
        "POST",
        "/process.Process/List",
        &[("E2b-Sandbox-Id", &sb.id), ("X-Access-Token", &sb.token), ("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    assert_eq!(d.api("POST", &format!("/sandboxes/{}/connect", sb.id), Some(json!({"timeout": 60}))).0, 201);
    assert_eq!(sb.sh("cat /tmp/k").stdout, "kept\n");
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
}

#[test]
fn a_timeout_pause_without_memory_keeps_the_files_only() {
    let d = daemon();
    let sb = d.create(json!({"templateID": "base", "timeout": 1, "autoPause": true, "autoPauseMemory": false}));
    assert_eq!(info(d, &sb.id)["pauseMode"], Value::Null, "a running sandbox has no pause mode");
    let r = sb.run(
        json!({"process": {"cmd": "/bin/bash", "args": ["-c", "echo kept > /home/user/k; sleep 600"]}, "tag": "sleeper", "stdin": false}),
        &[("Connect-Timeout-Ms", "300")],
    );
    assert!(r.error.is_some(), "the sleeper keeps running past the stream's deadline");
    wait_state(d, &sb, "paused", Duration::from_secs(10));
    let v = info(d, &sb.id);
    assert_eq!((v["pauseMode"].as_str(), v["warrenState"].as_str()), (Some("filesystem"), Some("hibernated")), "{v}");
    assert_eq!(d.api("POST", &format!("/sandboxes/{}/connect", sb.id), Some(json!({"timeout": 60}))).0, 201);
    assert_eq!(sb.sh("cat /home/user/k; pgrep -x sleep || echo no-sleeper").stdout, "kept\nno-sleeper\n");
    // A pause keeping the memory says so.
    assert_eq!(d.api("POST", &format!("/sandboxes/{}/pause", sb.id), None).0, 204);
    assert_eq!(info(d, &sb.id)["pauseMode"], "full");
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
}

#[test]
fn traffic_resumes_a_paused_sandbox_once_for_many_concurrent_requests() {
    let d = daemon();
    let sb = d.create(json!({"templateID": "base", "autoPause": true, "autoResume": {"enabled": true}}));
    assert_eq!(info(d, &sb.id)["lifecycle"]["autoResume"], true);
    assert_eq!(sb.sh("echo 1 > /tmp/n && echo ok").stdout, "ok\n");
    assert_eq!(d.api("POST", &format!("/sandboxes/{}/pause", sb.id), Some(json!({}))).0, 204);
    // A request without the token does not wake it.
    let (status, _) = d.raw("POST", "/process.Process/List", &[("E2b-Sandbox-Id", &sb.id)], b"{}");
    assert_eq!(status, 401);
    assert_eq!(info(d, &sb.id)["state"], "paused");

    let outs: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8).map(|_| s.spawn(|| sb.sh("cat /tmp/n").stdout)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(outs.iter().all(|o| o == "1\n"), "{outs:?}");
    assert_eq!(info(d, &sb.id)["state"], "running");
    let resumes: Vec<_> = log_messages(d, &sb.id).into_iter().filter(|(m, _)| m == "sandbox resumed").collect();
    assert_eq!(resumes.len(), 1, "concurrent wakes merge into one: {resumes:?}");
    assert_eq!(resumes[0].1["reason"], "traffic");
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
}

#[test]
fn idle_sandboxes_pause_once_their_processes_are_done() {
    let d = daemon();
    let sb = d.create(json!({"templateID": "base", "idleTimeout": 1}));
    assert_eq!(info(d, &sb.id)["lifecycle"]["idleTimeout"], 1);
    // A background process keeps it awake until it ends, however quiet the API is.
    let started = Instant::now();
    assert_eq!(sb.sh("sleep 3 >/dev/null 2>&1 & echo started").stdout, "started\n");
    wait_state(d, &sb, "paused", Duration::from_secs(20));
    assert!(started.elapsed() >= Duration::from_secs(3), "paused after {:?}, while sleep ran", started.elapsed());
    let paused = log_messages(d, &sb.id).into_iter().find(|(m, _)| m == "sandbox paused").expect("a pause entry");
    assert_eq!(paused.1["reason"], "idle");
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
}

#[test]
fn pools_hand_their_idle_policy_to_claims_and_bad_values_are_refused() {
    let d = daemon();
    d.api("DELETE", "/pools/idle", None);
    let spec = json!({"name": "idle", "templateID": "base", "memoryMB": 290, "minReady": 1, "idleTimeout": 600});
    assert_eq!(d.api("POST", "/pools", Some(spec)).0, 201);
    wait_for("the pool to fill", Duration::from_secs(60), || {
        (d.api("GET", "/pools/idle", None).1["ready"] == 1).then_some(())
    });
    let sb = d.create(json!({"templateID": "base", "memoryMB": 290}));
    assert_eq!(info(d, &sb.id)["lifecycle"]["idleTimeout"], 600);
    let own = d.create(json!({"templateID": "base", "memoryMB": 290, "idleTimeout": 30}));
    assert_eq!(info(d, &own.id)["lifecycle"]["idleTimeout"], 30);
    let (status, v) = d.api("POST", "/sandboxes", Some(json!({"templateID": "base", "idleTimeout": 0})));
    assert_eq!(status, 400, "{v}");
    for s in [&sb, &own] {
        d.api("DELETE", &format!("/sandboxes/{}", s.id), None);
    }
    assert_eq!(d.api("DELETE", "/pools/idle", None).0, 204);
    // A killed sandbox cannot be resumed.
    assert_eq!(d.api("POST", &format!("/sandboxes/{}/connect", sb.id), Some(json!({}))).0, 404);
}

#[test]
fn connect_without_memory_reboots_a_paused_sandbox_from_its_files() {
    let d = daemon();
    let sb = d.create(json!({"templateID": "base"}));
    let r = sb.run(
        json!({"process": {"cmd": "/bin/bash", "args": ["-c", "echo kept > /home/user/k; sleep 600"]}, "tag": "sleeper", "stdin": false}),
        &[("Connect-Timeout-Ms", "300")],
    );
    assert!(r.error.is_some(), "the sleeper keeps running past the stream's deadline");
    assert_eq!(d.api("POST", &format!("/sandboxes/{}/pause", sb.id), None).0, 204);
    let saved_to_disk = info(d, &sb.id)["warrenState"] == "hibernated";
    let (status, v) =
        d.api("POST", &format!("/v2/sandboxes/{}/connect", sb.id), Some(json!({"timeout": 60, "memory": false})));
    if saved_to_disk {
        // Runtimes whose pause saves the memory to disk (gVisor) cannot come back without it yet:
        // refused with the reason, and the sandbox is still there to be restored.
        assert_eq!(status, 400, "{v}");
        assert!(v["message"].as_str().unwrap().contains("memory saved to disk"), "{v}");
        assert_eq!(d.api("POST", &format!("/sandboxes/{}/connect", sb.id), Some(json!({"timeout": 60}))).0, 201);
        assert_eq!(sb.sh("cat /home/user/k").stdout, "kept\n");
    } else {
        assert_eq!(status, 201, "{v}");
        assert_eq!(sb.sh("cat /home/user/k; pgrep -x sleep || echo no-sleeper").stdout, "kept\nno-sleeper\n");
    }
    // A running sandbox ignores it.
    let (status, v) = d.api("POST", &format!("/sandboxes/{}/connect", sb.id), Some(json!({"memory": false})));
    assert_eq!(status, 200, "{v}");
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
}
