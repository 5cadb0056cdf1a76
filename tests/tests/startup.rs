//! Templates with a start command and a ready check: every sandbox of the template is handed out
//! with its server already answering — cold, from a pool, forked and from a snapshot — and a
//! check that never passes fails the create cleanly.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::json;
use warren_e2e::{wait_for, Daemon};

/// GET / on `port` of the sandbox through Warren's Host routing; the status code.
fn get(d: &Daemon, id: &str, port: u16) -> u16 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET / HTTP/1.1\r\nHost: {port}-{id}.localhost:{}\r\nConnection: close\r\n\r\n", d.port).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[test]
fn sandboxes_are_handed_out_with_their_server_up() {
    let d = Daemon::start_fresh("startup");
    let tpl = json!({
        "templateID": "web-e2e",
        "from": "base",
        "startCmd": "cd /home/user && echo hello > index.html && exec python3 -m http.server 8081",
        "readyCmd": "bash -c '</dev/tcp/127.0.0.1/8081'",
        "readyTimeout": 30,
    });
    let (status, v) = d.api("POST", "/templates", Some(tpl));
    assert_eq!(status, 201, "{v}");
    assert_eq!((v["status"].as_str(), v["from"].as_str()), (Some("ready"), Some("base")), "{v}");

    // Cold: the first request after the create answers, no polling.
    let sb = d.create(json!({"templateID": "web-e2e"}));
    assert_eq!(get(&d, &sb.id, 8081), 200);
    assert_eq!(sb.sh("cat /home/user/index.html").stdout, "hello\n");

    // From a pool: the server was started before the claim.
    d.api("DELETE", "/pools/webwarm", None);
    let pool = json!({"name": "webwarm", "templateID": "web-e2e", "memoryMB": 352, "minReady": 1});
    assert_eq!(d.api("POST", "/pools", Some(pool)).0, 201);
    wait_for("the pool to fill", Duration::from_secs(60), || {
        (d.api("GET", "/pools/webwarm", None).1["ready"] == 1).then_some(())
    });
    let claimed = d.create(json!({"templateID": "web-e2e", "memoryMB": 352}));
    assert_eq!(get(&d, &claimed.id, 8081), 200);

    // Forks and snapshots start fresh processes: the start command runs again.
    let (status, v) = d.api("POST", &format!("/sandboxes/{}/fork", sb.id), Some(json!({})));
    assert_eq!(status, 201, "{v}");
    let clone = v[0]["sandbox"]["sandboxID"].as_str().unwrap().to_owned();
    assert_eq!(get(&d, &clone, 8081), 200);
    let (status, v) = d.api("POST", &format!("/sandboxes/{}/snapshots", sb.id), Some(json!({})));
    assert_eq!(status, 201, "{v}");
    let snap = v["snapshotID"].as_str().unwrap().to_owned();
    let from_snap = d.create(json!({"templateID": snap}));
    assert_eq!(get(&d, &from_snap.id, 8081), 200);

    // A ready check that never passes fails the create and leaves nothing behind.
    let never = json!({"templateID": "never-ready-e2e", "from": "base", "startCmd": "sleep 1000",
                       "readyCmd": "false", "readyTimeout": 1});
    assert_eq!(d.api("POST", "/templates", Some(never)).0, 201);
    let before = d.api("GET", "/sandboxes", None).1.as_array().unwrap().len();
    let (status, v) = d.try_create(json!({"templateID": "never-ready-e2e"})).err().unwrap();
    assert_eq!(status, 409, "{v}");
    assert!(v["message"].as_str().unwrap().contains("ready check did not pass within 1 s"), "{v}");
    assert_eq!(d.api("GET", "/sandboxes", None).1.as_array().unwrap().len(), before);

    // Bad input.
    for (body, want) in [
        (json!({"templateID": "x-e2e", "from": "base", "readyCmd": "true"}), 400),
        (json!({"templateID": "x-e2e", "from": "no-such-template"}), 404),
        (json!({"templateID": "x-e2e", "from": "base", "packages": ["curl"]}), 400),
        (json!({"templateID": "x-e2e", "from": "base", "startCmd": "", "readyCmd": "true"}), 400),
        (json!({"templateID": "x-e2e", "from": "base", "startCmd": "true", "readyTimeout": 0}), 400),
        (json!({"templateID": "base", "from": "base"}), 400),
        (json!({"templateID": "web-e2e", "from": "never-ready-e2e"}), 201),
    ] {
        let (status, v) = d.api("POST", "/templates", Some(body.clone()));
        assert_eq!(status, want, "{body}: {v}");
    }
    // Templates others stand on cannot be removed.
    assert_eq!(d.api("DELETE", "/templates/never-ready-e2e", None).0, 409);

    for id in [&sb.id, &claimed.id, &clone, &from_snap.id] {
        assert_eq!(d.api("DELETE", &format!("/sandboxes/{id}"), None).0, 204);
    }
    assert_eq!(d.api("DELETE", "/pools/webwarm", None).0, 204);
    wait_for("the snapshot to be deletable", Duration::from_secs(30), || {
        (d.api("DELETE", &format!("/templates/{snap}"), None).0 == 204).then_some(())
    });
    assert_eq!(d.api("DELETE", "/templates/web-e2e", None).0, 204);
    assert_eq!(d.api("DELETE", "/templates/never-ready-e2e", None).0, 204);
}
