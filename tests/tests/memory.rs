//! The memory store through the daemon's API and CLI: collections, upserts, recall by text,
//! vector and both, scopes and teams, bad input, and a kill -9 in the middle of an ingest.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use warren_e2e::{wait_for, Daemon, ROOT};

const C: &str = "/v1/memory/collections";

fn fresh(name: &str) -> Daemon {
    let _ = std::fs::remove_dir_all(Path::new(ROOT).join(name).join("memory"));
    Daemon::start_fresh(name)
}

fn ids(v: &Value) -> Vec<String> {
    v["hits"].as_array().unwrap().iter().map(|h| h["record"]["id"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn recall_by_text_vector_and_both_within_a_scope() {
    let d = fresh("memory");
    let (s, v) = d.api("POST", C, Some(json!({"name": "notes", "dimension": 3})));
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["distance"], "cosine");
    let records = json!([
        {"id": "a", "text": "the deploy failed: disk full on build-7", "vector": [1, 0, 0], "metadata": {"kind": "incident"}},
        {"id": "b", "text": "lunch: two pizzas", "vector": [0, 1, 0], "metadata": {"kind": "chat"}},
        {"id": "c", "text": "cleanup script frees disk on build hosts", "vector": [0.9, 0.1, 0], "metadata": {"kind": "howto"}},
    ]);
    let (s, v) =
        d.api("POST", &format!("{C}/notes/records"), Some(json!({"scope": {"tenant": "acme"}, "records": records})));
    assert_eq!((s, v["upserted"].as_u64()), (200, Some(3)), "{v}");
    // Another tenant's record with the same words.
    let other =
        json!({"scope": {"tenant": "globex"}, "records": [{"id": "x", "text": "disk full", "vector": [1, 0, 0]}]});
    assert_eq!(d.api("POST", &format!("{C}/notes/records"), Some(other)).0, 200);

    let q = |body: Value| {
        let (s, v) = d.api("POST", &format!("{C}/notes/query"), Some(body));
        assert_eq!(s, 200, "{v}");
        v
    };
    assert_eq!(ids(&q(json!({"scope": {"tenant": "acme"}, "text": "disk"}))).len(), 2);
    assert_eq!(ids(&q(json!({"scope": {"tenant": "acme"}, "vector": [0, 1, 0], "limit": 1}))), vec!["b"]);
    let v = q(json!({"scope": {"tenant": "acme"}, "text": "disk full", "vector": [1, 0, 0], "explain": true,
                     "filter": {"kind": {"in": ["incident", "howto"]}}}));
    assert_eq!(ids(&v), vec!["a", "c"]);
    assert_eq!(v["hits"][0]["explain"]["vector"]["rank"], 1);
    assert!(v["hits"][0]["explain"]["text"]["score"].as_f64().unwrap() > 0.0);
    assert_eq!(ids(&q(json!({"scope": {"tenant": "globex"}, "text": "disk"}))), vec!["x"]);
    assert!(ids(&q(json!({"scope": {"tenant": "nobody"}, "text": "disk"}))).is_empty());

    // Get and delete by id, with the scope as query parameters.
    let (s, v) = d.api("GET", &format!("{C}/notes/records/a?tenant=acme"), None);
    assert_eq!((s, v["text"].as_str()), (200, Some("the deploy failed: disk full on build-7")));
    assert_eq!(d.api("GET", &format!("{C}/notes/records/a?tenant=globex"), None).0, 404);
    assert_eq!(d.api("DELETE", &format!("{C}/notes/records/a?tenant=acme"), None).0, 204);
    assert_eq!(d.api("DELETE", &format!("{C}/notes/records/a?tenant=acme"), None).0, 404);
    assert_eq!(ids(&q(json!({"scope": {"tenant": "acme"}, "text": "disk"}))), vec!["c"]);

    // Another team's key sees none of it.
    let (_, k) = d.api("POST", "/keys", Some(json!({"team": "memory-other", "name": "t"})));
    let other = k["key"].as_str().unwrap().to_owned();
    assert_eq!(d.api_as(&other, "GET", C, None).1, json!([]));
    let (s, v) = d.api_as(
        &other,
        "POST",
        &format!("{C}/notes/query"),
        Some(json!({"scope": {"tenant": "acme"}, "text": "disk"})),
    );
    assert_eq!(s, 404, "{v}");

    // The CLI.
    let out = d.cli(&[
        "memory",
        "put",
        "notes",
        "--tenant",
        "acme",
        "--id",
        "d",
        "--text",
        "disk quota raised",
        "--vector",
        "[0,0,1]",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = d.cli(&["--json", "memory", "query", "notes", "--tenant", "acme", "--text", "quota"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&v), vec!["d"]);
    let out = d.cli(&[
        "--json",
        "memory",
        "query",
        "notes",
        "--tenant",
        "acme",
        "--text",
        "quota",
        "--vector",
        "[0,0,1]",
        "--fusion",
        r#"{"method": "linear", "weights": {"text": 0.8, "vector": 0.2}}"#,
        "--ef",
        "64",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&v)[0], "d");
    let out = d.cli(&["memory", "query", "notes", "--tenant", "acme", "--text", "quota", "--ef", "0"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ef must be 1 to"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Everything survives a restart.
    d.restart();
    let mut got = ids(&q(json!({"scope": {"tenant": "acme"}, "text": "disk"})));
    got.sort();
    assert_eq!(got, vec!["c", "d"]);
    let (_, v) = d.api("GET", &format!("{C}/notes"), None);
    assert_eq!(v["records"], 4, "c and d of acme, x of globex");
}

#[test]
fn bad_input_is_refused_with_the_reason() {
    let d = fresh("memory-bad");
    assert_eq!(d.api("POST", C, Some(json!({"name": "v", "dimension": 4}))).0, 201);
    let bad = |path: &str, body: Value, want: u16, says: &str| {
        let (s, v) = d.api("POST", path, Some(body.clone()));
        assert_eq!(s, want, "{body} → {v}");
        let msg = v["message"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{body} → {msg}");
    };
    let rec = format!("{C}/v/records");
    let query = format!("{C}/v/query");
    let scope = json!({"tenant": "t"});
    bad(C, json!({"name": "v", "dimension": 8}), 409, "already exists");
    bad(C, json!({"name": "a/b"}), 400, "bad collection name");
    bad(C, json!({"name": "x", "dimensions": 3}), 400, "unknown field");
    bad(&rec, json!({"records": [{"id": "a", "text": "x"}]}), 400, "no scope");
    bad(&rec, json!({"scope": scope, "records": [{"id": "a", "vector": [1, 2]}]}), 400, "has 2 values");
    bad(&rec, json!({"scope": scope, "records": [{"id": "a", "vector": [1, 2, 3, "NaN"]}]}), 400, "invalid JSON");
    bad(&rec, json!({"scope": scope, "records": [{"id": "a", "text": "x".repeat(70_000)}]}), 400, "over the limit");
    bad(&format!("{C}/nope/records"), json!({"scope": scope, "records": []}), 404, "no collection");
    bad(&query, json!({"text": "x"}), 400, "no scope");
    bad(&query, json!({"scope": scope, "text": "x", "limit": 0}), 400, "limit must be 1 to 1000");
    bad(&query, json!({"scope": scope, "text": "x", "limit": 100_000}), 400, "limit must be 1 to 1000");
    bad(&query, json!({"scope": scope, "text": "x", "filter": {"nosuch": 1}}), 400, "no record has the field");
    bad(&query, json!({"scope": scope, "vector": [1, 2, 3]}), 400, "takes 4");
    assert_eq!(d.api("GET", &format!("{C}/v/records/a"), None).0, 400, "a get without a tenant");
    // The daemon still serves.
    assert_eq!(d.api("GET", C, None).0, 200);
    // Concurrent upserts of one id: one record, the last write.
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (url, key) = (d.url(), d.key());
            std::thread::spawn(move || {
                let body =
                    json!({"scope": {"tenant": "t"}, "records": [{"id": "same", "text": format!("version {i}")}]});
                let r = post(&url, &key, &format!("{C}/v/records"), &body);
                assert_eq!(r, 200);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (_, v) = d.api("GET", &format!("{C}/v"), None);
    assert_eq!(v["records"], 1);
}

/// A collection naming an embedding model: text written and asked without vectors is embedded by
/// the daemon, so a question that shares no word with the record it wants still finds it.
#[test]
fn a_collection_with_a_model_embeds_text_written_and_asked_without_vectors() {
    let d = fresh("memory-embed");
    let (s, v) = d.api("POST", C, Some(json!({"name": "mind", "embeddingModel": "all-MiniLM-L6-v2"})));
    assert_eq!(s, 201, "{v}");
    assert_eq!((v["dimension"].as_u64(), v["embeddingModel"].as_str()), (Some(384), Some("all-MiniLM-L6-v2")));
    let records = json!([
        {"id": "db", "text": "The deployment failed because the database password expired"},
        {"id": "lunch", "text": "We ordered two pizzas for the team lunch"},
        {"id": "cat", "text": "The cat sleeps on the sofa all afternoon"},
        // A vector given is kept as it is.
        {"id": "given", "text": "an unrelated note", "vector": vec![0.05f32; 384]},
    ]);
    let (s, v) =
        d.api("POST", &format!("{C}/mind/records"), Some(json!({"scope": {"tenant": "t"}, "records": records})));
    assert_eq!((s, v["upserted"].as_u64()), (200, Some(4)), "{v}");
    let (s, v) = d.api(
        "POST",
        &format!("{C}/mind/query"),
        Some(json!({"scope": {"tenant": "t"}, "text": "login to postgres rejected: credentials out of date",
                    "limit": 2, "explain": true})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(ids(&v)[0], "db", "{v}");
    assert_eq!(v["hits"][0]["explain"]["vector"]["rank"], 1, "found by meaning: {v}");
    assert!(v["hits"][0]["explain"]["text"].is_null(), "no word in common: {v}");
    // The same spec again is the same collection; a model and a dimension that disagree are not.
    assert_eq!(d.api("POST", C, Some(json!({"name": "mind", "embeddingModel": "all-MiniLM-L6-v2"}))).0, 201);
    let (s, v) = d.api("POST", C, Some(json!({"name": "m2", "dimension": 3, "embeddingModel": "all-MiniLM-L6-v2"})));
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("384"), "{v}");
    for bad in ["nope", "../../etc", ".hidden"] {
        let (s, v) = d.api("POST", C, Some(json!({"name": "m3", "embeddingModel": bad})));
        assert_eq!(s, 400, "{v}");
        let msg = v["message"].as_str().unwrap();
        assert!(msg.contains("no embedding model") && msg.contains("all-MiniLM-L6-v2"), "{msg}");
    }
}

/// A POST that reports a broken connection as status 0 instead of failing.
fn post(url: &str, key: &str, path: &str, body: &Value) -> u16 {
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", "content-type: application/json"])
        .arg("-H")
        .arg(format!("x-api-key: {key}"))
        .arg("--data-binary")
        .arg(body.to_string())
        .arg(format!("{url}{path}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

/// A kill -9 while batches are being written: after the restart every acknowledged record is
/// there and findable by text and vector, and nothing is there twice.
#[test]
fn a_kill_during_an_ingest_loses_no_acknowledged_record() {
    let d = fresh("memory-crash");
    assert_eq!(d.api("POST", C, Some(json!({"name": "log", "dimension": 2}))).0, 201);
    let acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (url, key, acked, stop) = (d.url(), d.key(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut batch = 0;
            while !stop.load(Ordering::SeqCst) {
                let records: Vec<Value> = (0..50)
                    .map(|i| {
                        let n = batch * 50 + i;
                        json!({"id": format!("r{n}"), "text": format!("entry{n} shared"), "vector": [n as f32, 1.0]})
                    })
                    .collect();
                let body = json!({"scope": {"tenant": "t"}, "records": records});
                // The daemon dies under this call sooner or later: no panic on a broken connection.
                if post(&url, &key, &format!("{C}/log/records"), &body) != 200 {
                    break;
                }
                batch += 1;
                acked.store(batch * 50, Ordering::SeqCst);
            }
        })
    };
    wait_for("some batches", Duration::from_secs(30), || (acked.load(Ordering::SeqCst) >= 500).then_some(()));
    d.kill9();
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let n = acked.load(Ordering::SeqCst);
    d.restart();
    let (_, v) = d.api("GET", &format!("{C}/log"), None);
    let stored = v["records"].as_u64().unwrap() as usize;
    assert!(stored >= n && stored <= n + 50, "{stored} records for {n} acknowledged");
    for i in [0, n / 2, n - 1] {
        let (s, v) = d.api(
            "POST",
            &format!("{C}/log/query"),
            Some(json!({"scope": {"tenant": "t"}, "text": format!("entry{i}"), "limit": 5})),
        );
        assert_eq!((s, ids(&v)), (200, vec![format!("r{i}")]), "{v}");
        let (_, v) = d.api(
            "POST",
            &format!("{C}/log/query"),
            Some(json!({"scope": {"tenant": "t"}, "vector": [i as f32, 1.0], "limit": 1})),
        );
        assert!(!ids(&v).is_empty());
    }
    let (_, v) = d.api(
        "POST",
        &format!("{C}/log/query"),
        Some(json!({"scope": {"tenant": "t"}, "text": "shared", "limit": 1000})),
    );
    let mut seen = ids(&v);
    let total = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), total, "a record is there twice");
    assert_eq!(total, stored.min(1000));
}

#[test]
fn a_store_that_cannot_be_opened_answers_503_with_the_reason_and_sandboxes_still_work() {
    let name = "memory-broken";
    let dir = Path::new(ROOT).join(name).join("memory");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("memory.redb"), b"not a redb file, whatever it once was").unwrap();
    let d = Daemon::start_fresh(name);
    let (s, v) = d.api("GET", C, None);
    assert_eq!(s, 503, "{v}");
    assert!(v["message"].as_str().unwrap().contains("could not be opened"), "{v}");
    assert!(v["message"].as_str().unwrap().contains("memory-broken/memory"), "names the store's directory: {v}");
    let (s, v) = d.api("GET", "/sandboxes", None);
    assert_eq!(s, 200, "the sandbox API is up: {v}");
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}
