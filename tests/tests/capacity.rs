//! Capacity: a storm of creates against a small node is served up to its limit and refused
//! clearly beyond it (503, `Should-Retry: false`, the limit named), leaks nothing and leaves the
//! daemon responsive; a host short of memory refuses new sandboxes the same way.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use warren_e2e::{wait_for, Daemon, ROOT};

fn cgroup_children(parent: &str) -> usize {
    std::fs::read_dir(format!("/sys/fs/cgroup/memory/{parent}"))
        .map(|rd| rd.flatten().filter(|e| e.path().is_dir()).count())
        .unwrap_or(0)
}

#[test]
fn a_storm_of_creates_is_served_up_to_the_limit_and_refused_clearly_beyond() {
    let d = Daemon::start_with(Path::new(ROOT), "capacity", "[sandbox]\nmax_sandboxes = 4\nmax_concurrent_boots = 2\n");
    // Sandboxes an earlier run left would count against the limit.
    for s in d.api("GET", "/sandboxes", None).1.as_array().unwrap() {
        d.api("DELETE", &format!("/sandboxes/{}", s["sandboxID"].as_str().unwrap()), None);
    }
    let created = std::sync::Mutex::new(Vec::new());
    let refused = AtomicUsize::new(0);
    let healthy = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..30 {
            s.spawn(|| {
                for _ in 0..10 {
                    let (status, headers, v) =
                        d.api_with_headers("POST", "/sandboxes", Some(json!({"templateID": "base"})));
                    match status {
                        201 => created.lock().unwrap().push(v["sandboxID"].as_str().unwrap().to_owned()),
                        503 => {
                            assert!(v["message"].as_str().unwrap().contains("maximum of 4"), "{v}");
                            assert_eq!(headers.get("should-retry").map(String::as_str), Some("false"));
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("unexpected {other}: {v}"),
                    }
                }
            });
        }
        // The daemon keeps answering while the storm lasts.
        s.spawn(|| {
            for _ in 0..20 {
                if ureq::get(&format!("{}/health", d.url())).timeout(Duration::from_secs(2)).call().is_ok() {
                    healthy.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    });
    let created = created.into_inner().unwrap();
    assert_eq!(created.len(), 4, "exactly the limit is served");
    assert_eq!(refused.into_inner(), 300 - 4);
    assert_eq!(healthy.into_inner(), 20);
    for id in &created {
        assert_eq!(d.api("DELETE", &format!("/sandboxes/{id}"), None).0, 204);
    }
    wait_for("every sandbox's cgroup to go", Duration::from_secs(20), || {
        (cgroup_children("warren-e2e-capacity") == 0).then_some(())
    });
    d.kill9();
}

#[test]
fn a_host_short_of_memory_refuses_new_sandboxes() {
    let d = Daemon::start_with(Path::new(ROOT), "capacity-mem", "[sandbox]\nmin_free_memory_mb = 100000000\n");
    let (status, headers, v) = d.api_with_headers("POST", "/sandboxes", Some(json!({"templateID": "base"})));
    assert_eq!(status, 503, "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains("short of memory") && msg.contains("sandbox.min_free_memory_mb"), "{msg}");
    assert_eq!(headers.get("should-retry").map(String::as_str), Some("false"));
    assert_eq!(cgroup_children("warren-e2e-capacity-mem"), 0);
    d.kill9();
}
