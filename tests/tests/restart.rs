//! Restart safety: `kill -9` of the daemon leaves running sandboxes running; the next start
//! re-attaches them, cleans up the ones that died meanwhile, and leaks no cgroup, layer, mount or
//! process.

use std::time::Duration;

use serde_json::json;
use warren_e2e::{wait_for, Daemon};

fn cgroup_children(parent: &str) -> Vec<String> {
    std::fs::read_dir(format!("/sys/fs/cgroup/memory/{parent}"))
        .map(|rd| {
            rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
        })
        .unwrap_or_default()
}

/// Host processes that live in one of this daemon's sandbox cgroups.
fn processes_in(parent: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_to_string(e.path().join("cgroup")).is_ok_and(|c| c.contains(&format!("/{parent}/"))))
        .count()
}

#[test]
fn kill_9_restart_reattaches_live_sandboxes_and_cleans_dead_ones() {
    let d = Daemon::start("restart");
    let parent = "warren-e2e-restart";
    let keep = d.create(json!({"templateID": "base"}));
    let doomed = d.create(json!({"templateID": "base"}));
    assert_eq!(keep.sh("echo state > /tmp/state && echo ok").stdout, "ok\n");
    let doomed_pid = doomed.sh_as("root", "echo $$").stdout;
    assert!(!doomed_pid.is_empty());
    let paused = d.create(json!({"templateID": "base"}));
    assert_eq!(paused.sh("echo frozen > /tmp/p && echo ok").stdout, "ok\n");
    assert_eq!(d.api("POST", &format!("/sandboxes/{}/pause", paused.id), Some(json!({}))).0, 204);
    // A pool's ready sandbox is kept across the restart, not booted again.
    d.api("DELETE", "/pools/kept", None);
    let spec = json!({"name": "kept", "templateID": "base", "memoryMB": 200, "minReady": 1});
    assert_eq!(d.api("POST", "/pools", Some(spec)).0, 201);
    wait_for("the pool to fill", Duration::from_secs(60), || {
        (d.api("GET", "/pools/kept", None).1["ready"] == 1).then_some(())
    });
    let before: std::collections::BTreeSet<String> = cgroup_children(parent).into_iter().collect();

    d.kill9();
    // While the daemon is down, one sandbox dies (its init is killed from the host).
    let init_of_doomed = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|c| c.contains(&format!("{parent}/{}", doomed.id)))
        })
        .expect("the doomed sandbox's processes");
    unsafe { libc::kill(init_of_doomed, libc::SIGKILL) };
    d.restart();

    let (status, _) = d.api("GET", &format!("/sandboxes/{}", keep.id), None);
    assert_eq!(status, 200, "the live sandbox is re-attached");
    let pool = d.api("GET", "/pools/kept", None).1;
    assert_eq!((pool["ready"].as_u64(), pool["creating"].as_u64()), (Some(1), Some(0)), "{pool}");
    let after: std::collections::BTreeSet<String> = cgroup_children(parent).into_iter().collect();
    assert!(after.is_subset(&before), "no new sandbox was booted: {after:?} vs {before:?}");
    let claimed = d.create(json!({"templateID": "base", "memoryMB": 200}));
    assert!(before.contains(&claimed.id), "the claim got the sandbox booted before the restart");
    assert_eq!(d.api("DELETE", "/pools/kept", None).0, 204);
    assert_eq!(d.api("DELETE", &format!("/sandboxes/{}", claimed.id), None).0, 204);
    assert_eq!(keep.sh("cat /tmp/state").stdout, "state\n", "its state survived");
    assert_eq!(d.api("GET", &format!("/sandboxes/{}", doomed.id), None).0, 404, "the dead one is gone");
    // A paused sandbox stays paused across the restart and resumes with its state.
    assert_eq!(d.api("GET", &format!("/sandboxes/{}", paused.id), None).1["state"], "paused");
    assert_eq!(d.api("POST", &format!("/sandboxes/{}/connect", paused.id), Some(json!({}))).0, 201);
    assert_eq!(paused.sh("cat /tmp/p").stdout, "frozen\n");
    assert_eq!(d.api("DELETE", &format!("/sandboxes/{}", paused.id), None).0, 204);
    wait_for("the dead sandbox's cgroup to go", Duration::from_secs(10), || {
        (!cgroup_children(parent).contains(&doomed.id)).then_some(())
    });
    wait_for("the dead sandbox's layer to go", Duration::from_secs(10), || {
        (!d.data_dir.join("layers").join(&doomed.id).exists()).then_some(())
    });

    // Stopping everything leaves nothing behind.
    assert_eq!(d.api("DELETE", &format!("/sandboxes/{}", keep.id), None).0, 204);
    // Teardown finishes in the background, promptly.
    wait_for("every cgroup and layer to go", Duration::from_secs(10), || {
        let layers = std::fs::read_dir(d.data_dir.join("layers")).unwrap().count();
        (cgroup_children(parent).is_empty() && layers == 0).then_some(())
    });
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("overlay") || !mounts.contains(&keep.id), "overlay mount leaked into the host");
    wait_for("sandbox processes to exit", Duration::from_secs(10), || (processes_in(parent) == 0).then_some(()));
    d.kill9();
}
