//! Teams: API keys scoped to a team see and touch only that team's sandboxes, pools and templates
//! (404 for everything else, exactly as if it did not exist); admin keys manage keys; revoked keys
//! stop working at once; ownership survives a restart.

use std::time::Duration;

use serde_json::{json, Value};
use warren_e2e::{wait_for, Daemon};

fn new_key(d: &Daemon, team: &str, admin: bool) -> (String, String) {
    let (status, v) =
        d.api("POST", "/keys", Some(json!({"team": team, "name": format!("{team} tests"), "admin": admin})));
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["team"], team);
    (v["id"].as_str().unwrap().to_owned(), v["key"].as_str().unwrap().to_owned())
}

/// Every control-plane call that names a sandbox, as (method, path, body).
fn sandbox_calls(id: &str) -> Vec<(&'static str, String, Option<Value>)> {
    vec![
        ("GET", format!("/sandboxes/{id}"), None),
        ("POST", format!("/sandboxes/{id}/timeout"), Some(json!({"timeout": 100}))),
        ("POST", format!("/sandboxes/{id}/refreshes"), Some(json!({"duration": 10}))),
        ("POST", format!("/sandboxes/{id}/pause"), Some(json!({}))),
        ("POST", format!("/sandboxes/{id}/resume"), Some(json!({}))),
        ("POST", format!("/sandboxes/{id}/connect"), Some(json!({"timeout": 100}))),
        ("POST", format!("/v2/sandboxes/{id}/connect"), Some(json!({"timeout": 100}))),
        ("GET", format!("/sandboxes/{id}/metrics"), None),
        ("GET", format!("/sandboxes/{id}/stats"), None),
        ("GET", format!("/sandboxes/{id}/logs"), None),
        ("GET", format!("/v2/sandboxes/{id}/logs"), None),
        ("PUT", format!("/sandboxes/{id}/network"), Some(json!({"denyOut": ["198.18.0.1"]}))),
        ("POST", format!("/sandboxes/{id}/fork"), Some(json!({"count": 1}))),
        ("POST", format!("/sandboxes/{id}/snapshots"), Some(json!({"name": "x"}))),
        ("DELETE", format!("/sandboxes/{id}"), None),
    ]
}

#[test]
fn teams_see_and_touch_only_their_own() {
    // Teams' keys are new on every run, so an earlier run's sandboxes and pools could not be
    // cleaned up through the API: start from an empty store (the start sweeps their leftovers).
    let d = Daemon::start_fresh("teams");
    let (_, blue) = new_key(&d, "blue", false);
    let (red_id, red) = new_key(&d, "red", false);

    // Keys: admin only, never shown again, bad input refused.
    let (status, v) = d.api_as(&blue, "POST", "/keys", Some(json!({"team": "blue"})));
    assert_eq!(status, 403, "{v}");
    assert!(v["message"].as_str().unwrap().contains("admin key"), "{v}");
    assert_eq!(d.api_as(&blue, "GET", "/keys", None).0, 403);
    let (status, keys) = d.api("GET", "/keys", None);
    assert_eq!(status, 200);
    let listed = keys.as_array().unwrap();
    assert!(listed.iter().any(|k| k["id"] == red_id.as_str() && k["team"] == "red"));
    assert!(listed.iter().all(|k| k.get("key").is_none()), "{keys}");
    assert!(!keys.to_string().contains(&red), "a secret is listed");
    for bad in [json!({"team": "Red Team"}), json!({"team": ""}), json!({}), json!({"team": "x", "extra": 1})] {
        assert_eq!(d.api("POST", "/keys", Some(bad.clone())).0, 400, "{bad}");
    }
    assert_eq!(d.api("DELETE", "/keys/bootstrap", None).0, 400);
    assert_eq!(d.api("DELETE", "/keys/key_nope", None).0, 404);
    assert_eq!(d.api_as("wrn_not_a_key", "GET", "/sandboxes", None).0, 401);

    // Sandboxes: blue's is invisible to red on every call, the proxy included.
    let (sb, _) = d.try_create_as(&blue, json!({"templateID": "base", "metadata": {"who": "blue"}})).unwrap();
    for (method, path, body) in sandbox_calls(&sb.id) {
        let (status, v) = d.api_as(&red, method, &path, body);
        assert_eq!(status, 404, "{method} {path} with another team's key: {v}");
    }
    // The admin key is the default team's: it does not see other teams' sandboxes either.
    assert_eq!(d.api("GET", &format!("/sandboxes/{}", sb.id), None).0, 404);
    let (_, list) = d.api_as(&red, "GET", "/sandboxes", None);
    assert!(list.as_array().unwrap().iter().all(|s| s["sandboxID"] != sb.id.as_str()), "{list}");
    let (_, list) = d.api_as(&blue, "GET", "/sandboxes", None);
    assert!(list.as_array().unwrap().iter().any(|s| s["sandboxID"] == sb.id.as_str()), "{list}");
    let (_, many) = d.api_as(&red, "GET", &format!("/sandboxes/metrics?sandbox_ids={}", sb.id), None);
    assert_eq!(many["sandboxes"], json!({}), "{many}");
    let envd = |key: &str| {
        d.raw(
            "POST",
            "/process.Process/List",
            &[
                ("E2b-Sandbox-Id", &sb.id),
                ("E2b-Sandbox-Port", "49983"),
                ("X-API-KEY", key),
                ("Content-Type", "application/json"),
            ],
            b"{}",
        )
        .0
    };
    assert_eq!(envd(&red), 401, "another team's key reached the sandbox's agent");
    assert_eq!(envd(&blue), 200);
    assert_eq!(sb.sh("echo mine").stdout, "mine\n");

    // Idempotency keys are per team.
    let create = |key: &str| {
        let r = d
            .http
            .post(&format!("{}/sandboxes", d.url()))
            .set("X-API-KEY", key)
            .set("Idempotency-Key", "same-key")
            .send_json(json!({"templateID": "base"}))
            .unwrap();
        r.into_json::<Value>().unwrap()["sandboxID"].as_str().unwrap().to_owned()
    };
    let (b1, b2, r1) = (create(&blue), create(&blue), create(&red));
    assert_eq!(b1, b2);
    assert_ne!(b1, r1, "another team got the first team's sandbox for the same Idempotency-Key");
    assert_eq!(d.api_as(&red, "GET", &format!("/sandboxes/{r1}"), None).0, 200);

    // Pools: names are per team, shapes are per team, claims stay within the team.
    let spec = json!({"name": "warm", "templateID": "base", "memoryMB": 300, "minReady": 1});
    assert_eq!(d.api_as(&blue, "POST", "/pools", Some(spec.clone())).0, 201);
    assert_eq!(d.api_as(&red, "GET", "/pools/warm", None).0, 404);
    assert_eq!(d.api_as(&red, "PATCH", "/pools/warm", Some(json!({"minReady": 0}))).0, 404);
    assert_eq!(d.api_as(&red, "DELETE", "/pools/warm", None).0, 404);
    let (status, v) =
        d.api_as(&red, "POST", "/pools", Some(json!({"name": "x", "templateID": "base", "team": "blue"})));
    assert_eq!(status, 400, "{v}");
    wait_for("blue's pool to fill", Duration::from_secs(60), || {
        (d.api_as(&blue, "GET", "/pools/warm", None).1["ready"] == 1).then_some(())
    });
    let (redsb, _) = d.try_create_as(&red, json!({"templateID": "base", "memoryMB": 300})).unwrap();
    let (_, pool) = d.api_as(&blue, "GET", "/pools/warm", None);
    assert_eq!(pool["claims"], 0, "red's create claimed from blue's pool: {pool}");
    assert_eq!(d.api_as(&red, "POST", "/pools", Some(spec)).0, 201, "red cannot reuse the pool name");
    let (_, pools) = d.api_as(&red, "GET", "/pools", None);
    assert_eq!(pools.as_array().unwrap().len(), 1, "{pools}");
    assert_eq!(pools[0]["team"], "red");
    let (blue_claim, _) = d.try_create_as(&blue, json!({"templateID": "base", "memoryMB": 300})).unwrap();
    assert_eq!(d.api_as(&blue, "GET", "/pools/warm", None).1["claims"], 1);

    // Templates: a team's own is invisible to others and its id cannot be taken; public ones are
    // shared but only admins remove them.
    let (status, v) = d.api_as(
        &blue,
        "POST",
        "/templates",
        Some(json!({"templateID": "blue-only", "packages": ["warren-no-such-package"]})),
    );
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["team"], "blue");
    assert_eq!(d.api_as(&red, "GET", "/templates/blue-only", None).0, 404);
    assert_eq!(d.api_as(&red, "GET", "/templates/blue-only/build", None).0, 404);
    assert_eq!(d.api_as(&red, "DELETE", "/templates/blue-only", None).0, 404);
    let (status, v) = d.api_as(&red, "POST", "/templates", Some(json!({"templateID": "blue-only"})));
    assert_eq!(status, 409, "{v}");
    let (_, red_templates) = d.api_as(&red, "GET", "/templates", None);
    let ids: Vec<&str> = red_templates.as_array().unwrap().iter().map(|t| t["templateID"].as_str().unwrap()).collect();
    assert!(ids.contains(&"base") && !ids.contains(&"blue-only"), "{ids:?}");
    assert_eq!(d.try_create_as(&red, json!({"templateID": "blue-only"})).err().map(|e| e.0), Some(404));
    let (status, v) = d.api_as(&red, "POST", "/templates", Some(json!({"templateID": "red-pub", "public": true})));
    assert_eq!(status, 403, "{v}");
    assert_eq!(d.api_as(&red, "DELETE", "/templates/base", None).0, 403);
    wait_for("the bad build to fail", Duration::from_secs(600), || {
        (d.api_as(&blue, "GET", "/templates/blue-only", None).1["status"] == "failed").then_some(())
    });
    assert_eq!(d.api_as(&blue, "DELETE", "/templates/blue-only", None).0, 204);

    // Host-wide metrics are for admins.
    assert_eq!(d.api_as(&blue, "GET", "/metrics", None).0, 403);
    assert_eq!(d.raw("GET", "/metrics", &[("Authorization", &format!("Bearer {}", d.key()))], b"").0, 200);

    // Ownership and keys survive a restart; a revoked key stops at once.
    d.restart();
    assert_eq!(d.api_as(&blue, "GET", &format!("/sandboxes/{}", sb.id), None).0, 200);
    assert_eq!(d.api_as(&red, "GET", &format!("/sandboxes/{}", sb.id), None).0, 404);
    assert_eq!(d.api_as(&red, "GET", &format!("/sandboxes/{}", redsb.id), None).0, 200);
    assert_eq!(d.api_as(&red, "GET", "/pools/warm", None).1["team"], "red");
    assert_eq!(d.api("DELETE", &format!("/keys/{red_id}"), None).0, 204);
    let (status, v) = d.api_as(&red, "GET", "/sandboxes", None);
    assert_eq!(status, 401, "{v}");
    assert!(v["message"].as_str().unwrap().contains("revoked"), "{v}");

    // The CLI manages keys too; a key it makes works at once.
    let out = d.cli(&["key", "create", "--team", "green", "--name", "cli"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let green = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(d.api_as(&green, "GET", "/sandboxes", None), (200, json!([])));
    let out = d.cli(&["key", "list"]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("green") && table.contains("blue") && !table.contains(&green), "{table}");

    for id in [&sb.id, &b1, &blue_claim.id] {
        d.api_as(&blue, "DELETE", &format!("/sandboxes/{id}"), None);
    }
    // A log outlives its sandbox, and stays its team's.
    let logs = format!("/v2/sandboxes/{}/logs", sb.id);
    assert_eq!(d.api_as(&blue, "GET", &logs, None).0, 200);
    assert_eq!(d.api_as(&green, "GET", &logs, None).0, 404);
    assert_eq!(d.api("GET", &logs, None).0, 404);
    d.api_as(&blue, "DELETE", "/pools/warm", None);
}
