//! Warm pools through the HTTP API and the CLI: claims, refill, per-claim settings, fallback when
//! empty, resize, removal, burst quota and bad input. Each test uses its own memory size, so the
//! pools (one per shape) of concurrent tests do not collide.

use std::time::Duration;

use serde_json::{json, Value};
use warren_e2e::{shared, wait_for, Daemon};

fn daemon() -> &'static Daemon {
    shared("pools")
}

fn pool(d: &Daemon, name: &str) -> Value {
    let (status, v) = d.api("GET", &format!("/pools/{name}"), None);
    assert_eq!(status, 200, "{v}");
    v
}

fn wait_ready(d: &Daemon, name: &str, n: u64) {
    wait_for(&format!("pool {name} to hold {n} ready sandboxes"), Duration::from_secs(60), || {
        (pool(d, name)["ready"].as_u64() == Some(n)).then_some(())
    });
}

/// Creates a pool, replacing one of the same name a previous run may have left in the data dir.
fn create_pool(d: &Daemon, spec: Value) -> Value {
    let name = spec["name"].as_str().unwrap().to_owned();
    d.api("DELETE", &format!("/pools/{name}"), None);
    let (status, v) = d.api("POST", "/pools", Some(spec));
    assert_eq!(status, 201, "{v}");
    v
}

fn logs(d: &Daemon, id: &str) -> Vec<String> {
    let (status, v) = d.api("GET", &format!("/v2/sandboxes/{id}/logs"), None);
    assert_eq!(status, 200, "{v}");
    v["logs"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap().to_owned()).collect()
}

fn cgroup_quota(id: &str) -> Option<i64> {
    let v1 = format!("/sys/fs/cgroup/cpu/warren-e2e-pools/{id}/cpu.cfs_quota_us");
    std::fs::read_to_string(v1).ok().and_then(|s| s.trim().parse().ok())
}

#[test]
fn claims_come_from_the_pool_with_per_claim_settings_and_it_refills() {
    let d = daemon();
    let v = create_pool(d, json!({"name": "claims", "templateID": "base", "memoryMB": 300, "minReady": 2}));
    assert_eq!(v["maxSize"], 2, "maxSize defaults to minReady");
    wait_ready(d, "claims", 2);
    // Sandboxes an earlier run left behind may still count as in use.
    let in_use_before = pool(d, "claims")["inUse"].as_u64().unwrap();

    let sb = d.create(json!({
        "templateID": "base", "memoryMB": 300, "timeout": 77,
        "envVars": {"CLAIM_VAR": "yes"}, "metadata": {"who": "claimer"}, "user": "root",
    }));
    assert!(logs(d, &sb.id).iter().any(|m| m == "sandbox claimed from pool claims"), "{:?}", logs(d, &sb.id));
    assert_eq!(sb.sh("echo $CLAIM_VAR; id -un").stdout, "yes\nroot\n");
    let (_, info) = d.api("GET", &format!("/sandboxes/{}", sb.id), None);
    assert_eq!(info["metadata"], json!({"who": "claimer"}));
    assert_eq!(info["memoryMB"], 300);
    // Only claimed sandboxes are listed; ready ones are the pool's.
    let listed = d.api("GET", "/sandboxes", None).1;
    let listed = listed.as_array().unwrap();
    assert!(listed.iter().any(|s| s["sandboxID"] == sb.id.as_str()));
    assert!(listed.iter().all(|s| s["warrenState"] != "ready"), "{listed:?}");
    let p = pool(d, "claims");
    assert_eq!((p["claims"].as_u64(), p["inUse"].as_u64()), (Some(1), Some(in_use_before + 1)));
    wait_ready(d, "claims", 2);

    // A user that does not exist is the caller's mistake: 400, and the sandbox goes back.
    let (status, v) =
        d.api("POST", "/sandboxes", Some(json!({"templateID": "base", "memoryMB": 300, "user": "nobody-here"})));
    assert_eq!(status, 400, "{v}");
    assert_eq!(pool(d, "claims")["ready"], 2);

    // A different shape does not touch the pool.
    let cold = d.create(json!({"templateID": "base", "memoryMB": 301}));
    assert!(logs(d, &cold.id).iter().any(|m| m == "sandbox created"));
    assert_eq!(pool(d, "claims")["claims"], 1);

    // Removing the pool kills its ready sandboxes and leaves the claimed one alone.
    assert_eq!(d.api("DELETE", "/pools/claims", None).0, 204);
    assert_eq!(d.api("GET", "/pools/claims", None).0, 404);
    assert_eq!(sb.sh("echo alive").stdout, "alive\n");
    for id in [&sb.id, &cold.id] {
        assert_eq!(d.api("DELETE", &format!("/sandboxes/{id}"), None).0, 204);
    }
}

#[test]
fn an_empty_pool_falls_back_cold_or_fails_fast() {
    let d = daemon();
    // minReady 0 and maxSize 0: the pool never holds a sandbox.
    let spec = json!({"name": "empty", "templateID": "base", "memoryMB": 310, "minReady": 0, "maxSize": 0,
                      "onEmpty": "fail", "emptyWaitMs": 50});
    create_pool(d, spec);
    let (status, v) = d.api("POST", "/sandboxes", Some(json!({"templateID": "base", "memoryMB": 310})));
    assert_eq!(status, 503, "{v}");
    assert!(v["message"].as_str().unwrap().contains("no ready sandbox"), "{v}");
    assert_eq!(pool(d, "empty")["emptyClaims"], 1);

    let (status, v) = d.api("PATCH", "/pools/empty", Some(json!({"onEmpty": "cold"})));
    assert_eq!(status, 200, "{v}");
    let sb = d.create(json!({"templateID": "base", "memoryMB": 310}));
    assert_eq!(sb.sh("echo cold").stdout, "cold\n");
    // Cold creates of the pool's shape count as its demand.
    assert!(pool(d, "empty")["inUse"].as_u64() >= Some(1));
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
    assert_eq!(d.api("DELETE", "/pools/empty", None).0, 204);
}

#[test]
fn resize_grows_and_shrinks_and_demand_raises_the_target() {
    let d = daemon();
    let spec = json!({"name": "sized", "templateID": "base", "memoryMB": 320, "minReady": 1, "maxSize": 4});
    create_pool(d, spec);
    wait_ready(d, "sized", 1);
    let (status, v) = d.api("PATCH", "/pools/sized", Some(json!({"minReady": 3})));
    assert_eq!(status, 200, "{v}");
    wait_ready(d, "sized", 3);
    // Shrinking below what is ready releases sandboxes (a resize does not wait).
    assert_eq!(d.api("PATCH", "/pools/sized", Some(json!({"minReady": 1, "maxSize": 1}))).0, 200);
    wait_ready(d, "sized", 1);

    // Half free: with two in use, the pool aims at two ready (bounded by maxSize 4).
    let (status, v) = d.api("PATCH", "/pools/sized", Some(json!({"maxSize": 4, "targetFreeFraction": 0.5})));
    assert_eq!(status, 200, "{v}");
    let a = d.create(json!({"templateID": "base", "memoryMB": 320}));
    let b = d.create(json!({"templateID": "base", "memoryMB": 320}));
    wait_for("the target to follow demand", Duration::from_secs(30), || {
        let p = pool(d, "sized");
        (p["inUse"].as_u64() >= Some(2) && p["target"].as_u64() >= Some(2) && p["ready"].as_u64() >= Some(2))
            .then_some(())
    });
    for s in [&a, &b] {
        d.api("DELETE", &format!("/sandboxes/{}", s.id), None);
    }
    assert_eq!(d.api("DELETE", "/pools/sized", None).0, 204);
}

#[test]
fn burst_raises_the_cpu_quota_for_the_first_seconds() {
    let d = daemon();
    let spec = json!({"name": "burst", "templateID": "base", "memoryMB": 330, "cpuCount": 1, "minReady": 1,
                      "burst": {"cpuCount": 2, "secs": 2}});
    create_pool(d, spec);
    wait_ready(d, "burst", 1);
    let sb = d.create(json!({"templateID": "base", "memoryMB": 330, "cpuCount": 1}));
    if let Some(q) = cgroup_quota(&sb.id) {
        assert_eq!(q, 200_000, "two CPUs during the burst");
        wait_for("the quota to drop back", Duration::from_secs(10), || {
            (cgroup_quota(&sb.id) == Some(100_000)).then_some(())
        });
    }
    wait_for("the burst-over log line", Duration::from_secs(10), || {
        logs(d, &sb.id).iter().any(|m| m.starts_with("burst over")).then_some(())
    });
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
    assert_eq!(d.api("DELETE", "/pools/burst", None).0, 204);
}

#[test]
fn bad_pools_get_clear_errors() {
    let d = daemon();
    let bad = |body: Value, want: u16, text: &str| {
        let (status, v) = d.api("POST", "/pools", Some(body.clone()));
        assert_eq!(status, want, "{body} → {v}");
        assert!(v["message"].as_str().unwrap_or("").contains(text), "{body} → {v}");
    };
    bad(json!({"name": "x", "templateID": "base", "minReady": 3, "maxSize": 1}), 400, "larger than maxSize");
    bad(json!({"name": "Bad/Name", "templateID": "base"}), 400, "lowercase");
    bad(json!({"name": "x", "templateID": "no-such-template"}), 404, "does not exist");
    bad(json!({"name": "x", "templateID": "base", "cpuCount": 999}), 400, "cpuCount");
    bad(json!({"name": "x", "templateID": "base", "memoryMB": 340, "runtime": "firecracker"}), 400, "not available");
    bad(json!({"name": "x", "templateID": "base", "targetFreeFraction": 0.5}), 400, "maxSize is required");
    bad(json!({"name": "x", "templateID": "base", "maxSize": 1, "targetFreeFraction": 1.5}), 400, "targetFreeFraction");
    bad(json!({"name": "x", "templateID": "base", "surprise": 1}), 400, "unknown field");
    bad(json!({"name": "x", "templateID": "base", "maxSize": 100000}), 400, "max_sandboxes");

    create_pool(d, json!({"name": "dup", "templateID": "base", "memoryMB": 350}));
    bad(json!({"name": "dup", "templateID": "base", "memoryMB": 351}), 409, "already exists");
    bad(json!({"name": "dup2", "templateID": "base", "memoryMB": 350}), 409, "already serves this shape");
    let (status, v) = d.api("PATCH", "/pools/dup", Some(json!({"templateID": "other"})));
    assert_eq!(status, 400, "the shape cannot change: {v}");
    assert_eq!(d.api("PATCH", "/pools/nope", Some(json!({"minReady": 1}))).0, 404);
    assert_eq!(d.api("DELETE", "/pools/nope", None).0, 404);
    assert_eq!(d.api("DELETE", "/pools/dup", None).0, 204);
}

#[test]
fn cli_manages_pools() {
    let d = daemon();
    let ok = |args: &[&str]| {
        let out = d.cli(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    d.api("DELETE", "/pools/viacli", None);
    let created = ok(&["pool", "create", "viacli", "--memory", "360", "--min-ready", "1", "--max-size", "2"]);
    assert!(created.contains("viacli") && created.contains("360 MiB"), "{created}");
    wait_ready(d, "viacli", 1);
    assert!(ok(&["pool", "list"]).contains("viacli"));
    let info: Value = serde_json::from_str(&ok(&["--json", "pool", "info", "viacli"])).unwrap();
    assert_eq!(info[0]["ready"], 1);
    ok(&["pool", "resize", "viacli", "--min-ready", "2"]);
    wait_ready(d, "viacli", 2);
    ok(&["pool", "rm", "viacli"]);
    let out = d.cli(&["pool", "info", "viacli"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn prometheus_and_the_resource_timeline_report_what_happens() {
    let d = daemon();
    create_pool(d, json!({"name": "observed", "templateID": "base", "memoryMB": 370, "minReady": 1}));
    wait_ready(d, "observed", 1);
    let sb = d.create(json!({"templateID": "base", "memoryMB": 370}));
    let (status, text) = d.raw("GET", "/metrics", &[("Authorization", &format!("Bearer {}", d.key()))], b"");
    assert_eq!(status, 200);
    let text = String::from_utf8(text).unwrap();
    for want in [
        "warren_sandboxes{state=\"running\"}",
        "warren_pool_ready{team=\"default\",pool=\"observed\"}",
        "warren_pool_claims_total{team=\"default\",pool=\"observed\"} 1",
        "warren_claim_duration_seconds_count",
        "warren_cold_create_duration_seconds_bucket",
    ] {
        assert!(text.contains(want), "missing {want} in:\n{text}");
    }
    assert_eq!(d.raw("GET", "/metrics", &[], b"").0, 401, "metrics need the API key");

    // One sample a second: wait for a few, with memory and disk figures in them.
    assert_eq!(sb.sh("head -c 3000000 /dev/urandom > /home/user/blob && echo ok").stdout, "ok\n");
    let points = wait_for("three timeline samples", Duration::from_secs(20), || {
        let (_, v) = d.api("GET", &format!("/sandboxes/{}/metrics", sb.id), None);
        let pts = v.as_array().cloned().unwrap_or_default();
        (pts.len() >= 3 && pts.last().unwrap()["diskUsed"].as_u64() > Some(2_900_000)).then_some(pts)
    });
    let last = points.last().unwrap();
    assert_eq!(last["memTotal"], 370u64 * 1024 * 1024);
    assert!(last["memUsed"].as_u64() > Some(0), "{last}");
    let t0 = points[0]["timestampUnix"].as_u64().unwrap();
    let (_, later) = d.api("GET", &format!("/sandboxes/{}/metrics?start={}", sb.id, t0 + 1), None);
    assert!(later.as_array().unwrap().iter().all(|p| p["timestampUnix"].as_u64() > Some(t0)));
    assert_eq!(d.api("GET", &format!("/sandboxes/{}/metrics?start=10&end=5", sb.id), None).0, 400);
    let (_, many) = d.api("GET", &format!("/sandboxes/metrics?sandbox_ids={},inope", sb.id), None);
    assert!(many["sandboxes"][&sb.id]["memUsed"].as_u64() > Some(0), "{many}");
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
    assert_eq!(d.api("DELETE", "/pools/observed", None).0, 204);
}
