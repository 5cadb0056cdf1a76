//! Forks and snapshots (filesystem mode on the native runtime): clones start from the source's disk
//! state while the source keeps running; clones and source diverge independently; forks of forks
//! stack; snapshots serve as templates and pools and outlive their sandbox; frozen layers go when
//! nothing uses them; bad input is refused.

use std::time::Duration;

use serde_json::{json, Value};
use warren_e2e::{wait_for, Daemon, Sandbox};

fn fork(d: &Daemon, id: &str, body: Value) -> (u16, Value) {
    d.api("POST", &format!("/sandboxes/{id}/fork"), Some(body))
}

/// The clones of a successful fork call, as sandboxes the harness can drive.
fn clones(d: &Daemon, v: &Value) -> Vec<Sandbox> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let sb = &e["sandbox"];
            assert!(sb.is_object(), "a clone failed: {e}");
            Sandbox {
                id: sb["sandboxID"].as_str().unwrap().to_owned(),
                token: sb["envdAccessToken"].as_str().unwrap().to_owned(),
                url: d.url(),
                http: d.http.clone(),
            }
        })
        .collect()
}

fn frozen_layers(d: &Daemon) -> usize {
    std::fs::read_dir(d.data_dir.join("layers/.frozen")).map(|rd| rd.count()).unwrap_or(0)
}

#[test]
fn clones_share_the_source_disk_state_and_diverge() {
    let d = Daemon::start_fresh("fork");
    let src = d.create(json!({"templateID": "base", "metadata": {"role": "src"}, "envVars": {"SEED": "7"}}));
    let r = src.sh(
        "echo v1 > /home/user/state.txt && mkdir -p /home/user/dir/sub && echo deep > /home/user/dir/sub/f && echo ok",
    );
    assert_eq!(r.stdout, "ok\n", "{r:?}");
    // A template file deleted in the source (an overlay whiteout) stays deleted in its clones.
    assert_eq!(src.sh_as("root", "rm /etc/issue && echo ok").stdout, "ok\n");

    let (status, v) = fork(&d, &src.id, json!({"count": 3, "timeout": 120}));
    assert_eq!(status, 201, "{v}");
    let kids = clones(&d, &v);
    assert_eq!(kids.len(), 3);
    // The source is untouched and keeps running; later writes are its own.
    assert_eq!(src.sh("cat /home/user/state.txt; echo v2 > /home/user/state.txt").stdout, "v1\n");
    let mut addresses = std::collections::BTreeSet::new();
    for k in &kids {
        assert_ne!(k.id, src.id);
        let r = k.sh("cat /home/user/state.txt /home/user/dir/sub/f; test -e /etc/issue && echo issue; \
             echo \"$WARREN_FORKED_FROM $SEED $(hostname)\"; \
             python3 -c 'import socket; print(socket.gethostbyname(socket.gethostname()))'");
        let lines: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(lines[..2], ["v1", "deep"], "{r:?}");
        assert_eq!(lines[2], format!("{} 7 {}", src.id, k.id), "{r:?}");
        addresses.insert(lines[3].to_owned());
        let (_, info) = d.api("GET", &format!("/sandboxes/{}", k.id), None);
        assert_eq!(info["metadata"]["role"], "src", "{info}");
        assert_eq!(info["templateID"], "base");
    }
    assert_eq!(addresses.len(), 3, "clones share an address: {addresses:?}");
    // Clones diverge from each other.
    assert_eq!(kids[0].sh("echo mine > /home/user/state.txt; cat /home/user/state.txt").stdout, "mine\n");
    assert_eq!(kids[1].sh("cat /home/user/state.txt").stdout, "v1\n");
    assert_eq!(src.sh("cat /home/user/state.txt").stdout, "v2\n");

    // A fork of a fork sees both generations' changes.
    let (status, v) = fork(&d, &kids[0].id, json!({}));
    assert_eq!(status, 201, "{v}");
    let grandkid = clones(&d, &v).remove(0);
    let r = grandkid.sh("cat /home/user/state.txt /home/user/dir/sub/f; echo $WARREN_FORKED_FROM");
    assert_eq!(r.stdout, format!("mine\ndeep\n{}\n", kids[0].id), "{r:?}");

    // A paused source forks as it is and stays paused.
    assert_eq!(d.api("POST", &format!("/sandboxes/{}/pause", src.id), Some(json!({}))).0, 204);
    let (status, v) = fork(&d, &src.id, json!({"count": 1}));
    assert_eq!(status, 201, "{v}");
    let from_paused = clones(&d, &v).remove(0);
    assert_eq!(from_paused.sh("cat /home/user/state.txt").stdout, "v2\n");
    assert_eq!(d.api("GET", &format!("/sandboxes/{}", src.id), None).1["state"], "paused");

    // Bad input.
    for (body, want) in [
        (json!({"count": 0}), 400),
        (json!({"count": 101}), 400),
        (json!({"count": "two"}), 400),
        (json!({"timeout": 0}), 400),
    ] {
        let (status, v) = fork(&d, &src.id, body.clone());
        assert_eq!(status, want, "{body}: {v}");
    }
    assert_eq!(fork(&d, "inosuchsandbox000000", json!({})).0, 404);

    // Killing everything frees the frozen layers.
    assert!(frozen_layers(&d) >= 3);
    for id in [&src.id, &grandkid.id, &from_paused.id].into_iter().chain(kids.iter().map(|k| &k.id)) {
        assert_eq!(d.api("DELETE", &format!("/sandboxes/{id}"), None).0, 204);
    }
    wait_for("the frozen layers to be removed", Duration::from_secs(30), || (frozen_layers(&d) == 0).then_some(()));
    // A killed source cannot be forked.
    assert_eq!(fork(&d, &src.id, json!({})).0, 404);
}

#[test]
fn a_clone_survives_a_restart_and_keeps_its_layers() {
    let d = Daemon::start_fresh("fork-restart");
    let src = d.create(json!({"templateID": "base"}));
    assert_eq!(src.sh("echo kept > /home/user/k && echo ok").stdout, "ok\n");
    let (status, v) = fork(&d, &src.id, json!({"count": 1, "timeout": 300}));
    assert_eq!(status, 201, "{v}");
    let kid = clones(&d, &v).remove(0);
    // The source goes; its clone still needs the frozen layer.
    assert_eq!(d.api("DELETE", &format!("/sandboxes/{}", src.id), None).0, 204);
    d.restart();
    assert_eq!(kid.sh("cat /home/user/k").stdout, "kept\n");
    assert_eq!(frozen_layers(&d), 1);
    assert_eq!(d.api("DELETE", &format!("/sandboxes/{}", kid.id), None).0, 204);
    wait_for("the frozen layer to be removed", Duration::from_secs(30), || (frozen_layers(&d) == 0).then_some(()));
}

#[test]
fn snapshots_serve_as_templates_and_pools() {
    let d = Daemon::start_fresh("snapshots");
    let src = d.create(json!({"templateID": "base"}));
    assert_eq!(src.sh("echo one > /home/user/s.txt && echo ok").stdout, "ok\n");
    let snap = |body: Value| d.api("POST", &format!("/sandboxes/{}/snapshots", src.id), Some(body));
    // Names are template ids, unique per daemon; one of the team's snapshots takes the new state.
    let (status, v) = snap(json!({"name": "e2e-snap"}));
    assert_eq!(status, 201, "{v}");
    assert_eq!(v, json!({"snapshotID": "e2e-snap", "names": ["e2e-snap"], "memory": false}));
    let first = d.create(json!({"templateID": "e2e-snap"}));
    assert_eq!(src.sh("echo two > /home/user/s.txt && echo ok").stdout, "ok\n");
    assert_eq!(snap(json!({"name": "e2e-snap"})).0, 201);
    assert_eq!(first.sh("cat /home/user/s.txt").stdout, "one\n", "a running sandbox keeps its snapshot's state");
    let second = d.create(json!({"templateID": "e2e-snap"}));
    assert_eq!(second.sh("cat /home/user/s.txt").stdout, "two\n");
    let (_, info) = d.api("GET", &format!("/sandboxes/{}", second.id), None);
    assert_eq!(info["templateID"], "e2e-snap");
    for (body, want) in
        [(json!({"name": "base"}), 409), (json!({"name": "Not A Name"}), 400), (json!({"memory": "yes"}), 400)]
    {
        let (status, v) = snap(body.clone());
        assert_eq!(status, want, "{body}: {v}");
    }
    assert_eq!(d.api("POST", "/sandboxes/inosuchsandbox000000/snapshots", Some(json!({}))).0, 404);
    let (status, unnamed) = snap(json!({}));
    assert_eq!(status, 201, "{unnamed}");
    let unnamed = unnamed["snapshotID"].as_str().unwrap().to_owned();

    // Listing, filtered by sandbox and name.
    let (status, list) = d.api("GET", &format!("/snapshots?sandboxID={}", src.id), None);
    assert_eq!(status, 200);
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|s| s["snapshotID"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{list}");
    assert!(ids.contains(&"e2e-snap") && ids.contains(&unnamed.as_str()));
    assert_eq!(d.api("GET", "/snapshots?name=e2e-snap", None).1.as_array().unwrap().len(), 1);
    let (status, headers, page) = d.api_with_headers("GET", "/snapshots?limit=1", None);
    assert_eq!((status, page.as_array().unwrap().len()), (200, 1));
    assert!(headers.contains_key("x-next-token"), "{headers:?}");

    // A fork of a sandbox made from a snapshot stacks on it.
    let (status, v) = d.api("POST", &format!("/sandboxes/{}/fork", second.id), Some(json!({})));
    assert_eq!(status, 201, "{v}");
    let clone_id = v[0]["sandbox"]["sandboxID"].as_str().unwrap().to_owned();

    // A pool of pre-warmed sandboxes of the snapshot.
    d.api("DELETE", "/pools/snapwarm", None);
    let spec = json!({"name": "snapwarm", "templateID": "e2e-snap", "memoryMB": 320, "minReady": 1});
    assert_eq!(d.api("POST", "/pools", Some(spec)).0, 201);
    wait_for("the snapshot pool to fill", Duration::from_secs(60), || {
        (d.api("GET", "/pools/snapwarm", None).1["ready"] == 1).then_some(())
    });
    let claimed = d.create(json!({"templateID": "e2e-snap", "memoryMB": 320}));
    assert_eq!(d.api("GET", "/pools/snapwarm", None).1["claims"], 1);
    assert_eq!(claimed.sh("cat /home/user/s.txt").stdout, "two\n");

    // In use: deleting it is refused with the list of users.
    let (status, v) = d.api("DELETE", "/templates/e2e-snap", None);
    assert_eq!(status, 409, "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains(&second.id) && msg.contains(&clone_id) && msg.contains("snapwarm"), "{msg}");
    // The base template under it cannot go either.
    assert_eq!(d.api("DELETE", "/templates/base", None).0, 409);
    for id in [&first.id, &second.id, &clone_id, &claimed.id, &src.id] {
        assert_eq!(d.api("DELETE", &format!("/sandboxes/{id}"), None).0, 204);
    }
    assert_eq!(d.api("DELETE", "/pools/snapwarm", None).0, 204);
    // A refill boot still running when its pool went is released when it ends.
    wait_for("the snapshot to be deletable", Duration::from_secs(30), || {
        let (status, v) = d.api("DELETE", "/templates/e2e-snap", None);
        assert!(status == 204 || status == 409, "{status} {v}");
        (status == 204).then_some(())
    });
    assert_eq!(d.api("DELETE", "/templates/e2e-snap", None).0, 404);
    assert_eq!(d.try_create(json!({"templateID": "e2e-snap"})).err().map(|e| e.0), Some(404));

    // The unnamed snapshot outlives its sandbox and a restart.
    d.restart();
    let later = d.create(json!({"templateID": unnamed}));
    assert_eq!(later.sh("cat /home/user/s.txt").stdout, "two\n");
    assert_eq!(d.api("DELETE", &format!("/sandboxes/{}", later.id), None).0, 204);

    // A snapshot whose layer was removed behind Warren's back is refused clearly, and can be deleted.
    let frozen = d.data_dir.join("layers/.frozen");
    let layer = std::fs::read_dir(&frozen).unwrap().next().unwrap().unwrap().path();
    let out = std::process::Command::new("btrfs").args(["subvolume", "delete"]).arg(&layer).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (status, v) = d.try_create(json!({"templateID": unnamed})).err().unwrap();
    assert_eq!(status, 409, "{v}");
    assert!(v["message"].as_str().unwrap().contains("is damaged"), "{v}");
    assert_eq!(d.api("DELETE", &format!("/templates/{unnamed}"), None).0, 204);
    wait_for("every frozen layer to be removed", Duration::from_secs(30), || (frozen_layers(&d) == 0).then_some(()));
}
