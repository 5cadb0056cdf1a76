use std::collections::{BTreeMap, HashMap};

use serde_json::json;

use super::*;

fn scope(t: &str) -> Scope {
    Scope { tenant: t.into(), ..Scope::default() }
}

fn rec(id: &str, text: &str, vector: Option<Vec<f32>>) -> RecordInput {
    RecordInput {
        id: id.into(),
        text: Some(text.into()),
        vector,
        metadata: BTreeMap::new(),
        importance: None,
        expires_at_ms: None,
    }
}

fn spec(name: &str, dim: u32) -> CollectionSpec {
    CollectionSpec {
        name: name.into(),
        dimension: dim,
        distance: Distance::Cosine,
        keep_float_vectors: false,
        embedding_model: None,
    }
}

fn query(s: Scope) -> QueryRequest {
    QueryRequest { scope: Some(s), limit: 10, ..QueryRequest::default() }
}

fn ids(r: &QueryResponse) -> Vec<String> {
    r.hits.iter().map(|h| h.record.id.clone()).collect()
}

#[test]
fn text_vector_and_hybrid_recall_with_explain() {
    let dir = tempfile::tempdir().unwrap();
    let m = MemoryStore::open(dir.path(), Limits::default()).unwrap();
    m.create_collection("team", spec("notes", 3)).unwrap();
    let up = UpsertRequest {
        scope: Some(scope("acme")),
        records: vec![
            rec("a", "the deploy failed because the disk was full", Some(vec![1.0, 0.0, 0.0])),
            rec("b", "lunch order: two pizzas", Some(vec![0.0, 1.0, 0.0])),
            rec("c", "disk cleanup script for the build hosts", Some(vec![0.9, 0.1, 0.0])),
        ],
    };
    assert_eq!(m.upsert("team", "notes", &up).unwrap(), 3);

    let mut q = query(scope("acme"));
    q.text = Some("deploying disk".into());
    let r = m.query("team", "notes", &q).unwrap();
    assert_eq!(ids(&r)[0], "a", "stemming: deploying ~ deploy");
    assert!(!ids(&r).contains(&"b".to_string()));

    let mut q = query(scope("acme"));
    q.vector = Some(vec![0.0, 1.0, 0.05]);
    q.include_vectors = true;
    let r = m.query("team", "notes", &q).unwrap();
    assert_eq!(ids(&r), vec!["b", "c", "a"]);
    let v = r.hits[0].record.vector.as_ref().unwrap();
    assert!((v[1] - 1.0).abs() < 0.01, "dequantised: {v:?}");

    let mut q = query(scope("acme"));
    q.text = Some("disk".into());
    q.vector = Some(vec![1.0, 0.0, 0.0]);
    q.explain = true;
    let r = m.query("team", "notes", &q).unwrap();
    assert_eq!(ids(&r)[0], "a");
    let e = r.hits[0].explain.as_ref().unwrap();
    assert_eq!(e.vector.unwrap().rank, 1);
    assert!(e.text.is_some());
    let expected = 1.0 / (60.0 + e.text.unwrap().rank as f32) + 1.0 / 61.0;
    assert!((e.fused - expected).abs() < 1e-6, "{e:?}");
    assert!((r.hits[0].score - e.fused).abs() < 1e-6, "no decay or importance asked");
}

#[test]
fn bad_input_gets_a_clear_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let m = MemoryStore::open(dir.path(), Limits::default()).unwrap();
    let err = |r: Result<usize, MemoryError>| r.unwrap_err().to_string();
    assert!(m.create_collection("t", spec("bad name", 3)).unwrap_err().to_string().contains("bad collection name"));
    assert!(m.create_collection("t", spec("big", 100_000)).unwrap_err().to_string().contains("dimension"));
    m.create_collection("t", spec("c", 3)).unwrap();
    m.create_collection("t", spec("c", 3)).unwrap();
    assert!(m.create_collection("t", spec("c", 4)).unwrap_err().is_conflict());
    let up = |records: Vec<RecordInput>| UpsertRequest { scope: Some(scope("x")), records };
    assert!(err(m.upsert("t", "c", &UpsertRequest { scope: None, records: vec![] })).contains("no scope"));
    assert!(err(m.upsert("t", "nope", &up(vec![]))).contains("no collection"));
    assert!(err(m.upsert("t", "c", &up(vec![rec("a", "x", Some(vec![1.0]))]))).contains("has 1 values"));
    assert!(err(m.upsert("t", "c", &up(vec![rec("a", "x", Some(vec![1.0, f32::NAN, 0.0]))]))).contains("NaN"));
    assert!(err(m.upsert("t", "c", &up(vec![rec("a", &"x".repeat(70_000), None)]))).contains("split it"));
    let mut r = rec("a", "x", None);
    r.importance = Some(2.0);
    assert!(err(m.upsert("t", "c", &up(vec![r]))).contains("importance"));
    let mut r = rec("a", "x", None);
    r.metadata.insert("importance".into(), json!(1));
    assert!(err(m.upsert("t", "c", &up(vec![r]))).contains("reserved"));
    // Nothing of a refused batch was written.
    assert_eq!(m.collection_info("t", "c").unwrap().records, 0);

    let q = |f: &dyn Fn(&mut QueryRequest)| {
        let mut q = query(scope("x"));
        q.text = Some("x".into());
        f(&mut q);
        m.query("t", "c", &q).unwrap_err().to_string()
    };
    assert!(q(&|q| q.scope = None).contains("no scope"));
    assert!(q(&|q| q.scope = Some(scope(""))).contains("no scope"));
    assert!(q(&|q| q.limit = 0).contains("limit must be 1 to 1000"));
    assert!(q(&|q| q.limit = 100_000).contains("limit must be 1 to 1000"));
    assert!(q(&|q| q.text = None).contains("text, a vector or both"));
    assert!(q(&|q| q.vector = Some(vec![f32::INFINITY, 0.0, 0.0])).contains("NaN or infinity"));
    assert!(q(&|q| q.filter = Filter(json!({"nosuch": 1}).as_object().unwrap().clone())).contains("no record has"));
    assert!(q(&|q| q.decay = Some(Decay { half_life_secs: 0.0, floor: 0.0 })).contains("halfLifeSecs"));
    assert!(q(&|q| q.fusion.window = 1_000_000).contains("fusion.window"));
    assert!(q(&|q| q.ef = Some(0)).contains("ef must be 1 to 10000"));
    assert!(q(&|q| q.ef = Some(1_000_000)).contains("ef must be 1 to 10000"));
    // Another owner does not see the collection.
    assert!(m.collection_info("other", "c").unwrap_err().is_not_found());
    m.create_collection("t", spec("textonly", 0)).unwrap();
    let mut qq = query(scope("x"));
    qq.vector = Some(vec![1.0]);
    assert!(m.query("t", "textonly", &qq).unwrap_err().to_string().contains("query it by text"));
}

#[test]
fn upserts_replace_deletes_hide_expiry_and_decay_apply() {
    let dir = tempfile::tempdir().unwrap();
    let m = MemoryStore::open(dir.path(), Limits { purge_after_secs: 0, ..Limits::default() }).unwrap();
    m.create_collection("t", spec("c", 2)).unwrap();
    let s = scope("x");
    let put =
        |records: Vec<RecordInput>| m.upsert("t", "c", &UpsertRequest { scope: Some(s.clone()), records }).unwrap();
    put(vec![rec("a", "apple pie", Some(vec![1.0, 0.0])), rec("b", "apple tart", Some(vec![0.0, 1.0]))]);
    let created = m.get("t", "c", Some(&s), "a").unwrap().created_at_ms;
    // Same id again (twice in one batch too): replaced, not duplicated.
    put(vec![rec("a", "banana bread", Some(vec![0.0, 1.0])), rec("a", "cherry cake", Some(vec![0.0, 1.0]))]);
    let a = m.get("t", "c", Some(&s), "a").unwrap();
    assert_eq!((a.text.as_deref(), a.created_at_ms), (Some("cherry cake"), created));
    assert_eq!(m.collection_info("t", "c").unwrap().records, 2);
    let mut q = query(s.clone());
    q.text = Some("apple".into());
    assert_eq!(ids(&m.query("t", "c", &q).unwrap()), vec!["b"]);
    q.text = Some("cherry".into());
    assert_eq!(ids(&m.query("t", "c", &q).unwrap()), vec!["a"]);

    assert_eq!(m.delete("t", "c", Some(&s), &["a".into(), "zzz".into()]).unwrap(), 1);
    assert!(m.get("t", "c", Some(&s), "a").unwrap_err().is_not_found());
    assert!(m.query("t", "c", &q).unwrap().hits.is_empty());
    let mut vq = query(s.clone());
    vq.vector = Some(vec![0.0, 1.0]);
    assert_eq!(ids(&m.query("t", "c", &vq).unwrap()), vec!["b"]);

    // Expired records are gone from reads and queries.
    let mut e = rec("e", "apple expired", Some(vec![0.0, 1.0]));
    e.expires_at_ms = Some(now_ms() + 200);
    put(vec![e]);
    q.text = Some("apple".into());
    let mut got = ids(&m.query("t", "c", &q).unwrap());
    got.sort();
    assert_eq!(got, vec!["b", "e"]);
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    while m.get("t", "c", Some(&s), "e").is_ok() {
        assert!(Instant::now() < deadline, "never expired");
        std::thread::yield_now();
    }
    assert_eq!(ids(&m.query("t", "c", &q).unwrap()), vec!["b"]);

    // Deleted and expired rows are purged; an upsert brings a deleted id back.
    assert_eq!(m.purge().unwrap(), 2);
    put(vec![rec("a", "apple again", None)]);
    let mut got = ids(&m.query("t", "c", &q).unwrap());
    got.sort();
    assert_eq!(got, vec!["a", "b"]);

    // Importance and decay weigh after fusion.
    let mut hi = rec("h", "plum", None);
    hi.importance = Some(1.0);
    put(vec![hi, rec("l", "plum", None)]);
    let mut q = query(s.clone());
    q.text = Some("plum".into());
    q.importance_weight = 1.0;
    q.explain = true;
    let r = m.query("t", "c", &q).unwrap();
    assert_eq!(ids(&r)[0], "h");
    assert!((r.hits[0].explain.as_ref().unwrap().importance - 2.0).abs() < 1e-6);
    let updated = m.get("t", "c", Some(&s), "h").unwrap().updated_at_ms;
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    while now_ms() < updated + 20 {
        assert!(Instant::now() < deadline, "the clock stands still");
        std::thread::yield_now();
    }
    q.decay = Some(Decay { half_life_secs: 1e-3, floor: 0.1 });
    let r = m.query("t", "c", &q).unwrap();
    assert!((r.hits[0].explain.as_ref().unwrap().decay - 0.1).abs() < 1e-6, "old enough to reach the floor");
}

/// Random tenants, users, filters, upserts and deletes, checked against a plain model: a query
/// never returns another tenant's or user's record, a deleted one, or one failing the filter.
#[test]
fn queries_never_cross_scopes_or_return_deleted_rows() {
    let dir = tempfile::tempdir().unwrap();
    let m = MemoryStore::open(dir.path(), Limits::default()).unwrap();
    m.create_collection("t", spec("c", 4)).unwrap();
    let mut seed = 0x1234_5678u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let tenants = ["t0", "t1", "t2"];
    let users = [None, Some("u0"), Some("u1")];
    let words = ["alpha", "beta", "gamma", "delta"];
    // (tenant, user, id) → (kind, word)
    let mut model: HashMap<(String, Option<String>, String), (u64, String)> = HashMap::new();
    for round in 0..400 {
        let t = tenants[next(3) as usize];
        let u = users[next(3) as usize].map(String::from);
        let s = Scope { tenant: t.into(), user: u.clone(), ..Scope::default() };
        let id = format!("r{}", next(30));
        match next(10) {
            0..=5 => {
                let kind = next(3);
                let word = words[next(4) as usize].to_string();
                let mut r = rec(&id, &format!("{word} memory"), Some((0..4).map(|_| next(100) as f32 + 1.0).collect()));
                r.metadata.insert("kind".into(), json!(kind));
                m.upsert("t", "c", &UpsertRequest { scope: Some(s), records: vec![r] }).unwrap();
                model.insert((t.into(), u, id), (kind, word));
            }
            6..=7 => {
                m.delete("t", "c", Some(&s), std::slice::from_ref(&id)).unwrap();
                model.remove(&(t.into(), u, id));
            }
            _ => {
                let kind = next(3);
                let word = words[next(4) as usize];
                let mut q = query(s.clone());
                q.limit = 1000;
                q.fusion.window = 1000;
                match next(3) {
                    0 => q.text = Some(word.into()),
                    1 => q.vector = Some(vec![1.0, 2.0, 3.0, 4.0]),
                    _ => {
                        q.text = Some(word.into());
                        q.vector = Some(vec![4.0, 3.0, 2.0, 1.0]);
                    }
                }
                let filtered = next(2) == 0 && round > 20;
                if filtered {
                    q.filter = Filter(json!({"kind": kind}).as_object().unwrap().clone());
                }
                let r = m.query("t", "c", &q).unwrap();
                for h in &r.hits {
                    let rs = &h.record.scope;
                    assert_eq!(rs.tenant, t, "another tenant's record");
                    if u.is_some() {
                        assert_eq!(rs.user, u, "another user's record");
                    }
                    let k = (rs.tenant.clone(), rs.user.clone(), h.record.id.clone());
                    let (mkind, _) =
                        model.get(&k).unwrap_or_else(|| panic!("deleted or unknown record returned: {k:?}"));
                    if filtered {
                        assert_eq!(*mkind, kind, "the filter was not applied");
                    }
                }
                // Vector-only queries see every visible record (limit above the population).
                if q.text.is_none() {
                    let visible = model
                        .iter()
                        .filter(|((mt, mu, _), (mk, _))| {
                            mt == t && (u.is_none() || *mu == u) && (!filtered || *mk == kind)
                        })
                        .count();
                    assert_eq!(r.hits.len(), visible, "round {round}");
                }
            }
        }
    }
}

#[test]
fn a_reopened_store_has_everything_a_dropped_one_had() {
    let dir = tempfile::tempdir().unwrap();
    {
        let m = MemoryStore::open(dir.path(), Limits::default()).unwrap();
        m.create_collection("t", spec("c", 2)).unwrap();
        let s = Some(scope("x"));
        let at = |i: usize| vec![(i as f32 * 0.1).cos(), (i as f32 * 0.1).sin()];
        let records = (0..50).map(|i| rec(&format!("r{i}"), &format!("word{i} common"), Some(at(i)))).collect();
        m.upsert("t", "c", &UpsertRequest { scope: s.clone(), records }).unwrap();
        m.delete("t", "c", s.as_ref(), &["r3".into()]).unwrap();
        // Dropped without a flush: the text index never committed.
    }
    let m = MemoryStore::open(dir.path(), Limits::default()).unwrap();
    assert_eq!(m.collection_info("t", "c").unwrap().records, 49);
    let mut q = query(scope("x"));
    q.text = Some("word7".into());
    assert_eq!(ids(&m.query("t", "c", &q).unwrap()), vec!["r7"]);
    q.text = Some("word3".into());
    assert!(m.query("t", "c", &q).unwrap().hits.is_empty(), "the delete was replayed");
    let mut q = query(scope("x"));
    q.text = Some("common".into());
    q.limit = 200;
    assert_eq!(m.query("t", "c", &q).unwrap().hits.len(), 49, "the window grows to the limit");
    let mut q = query(scope("x"));
    q.vector = Some(vec![0.7f32.cos(), 0.7f32.sin()]);
    assert_eq!(ids(&m.query("t", "c", &q).unwrap())[0], "r7");
    m.delete_collection("t", "c").unwrap();
    assert!(m.list_collections("t").is_empty());
    drop(m);
    let m = MemoryStore::open(dir.path(), Limits::default()).unwrap();
    assert!(m.list_collections("t").is_empty());
}

#[test]
fn a_dictionary_is_trained_and_kept_and_rewrites_and_purges_free_space() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { purge_after_secs: 0, ..Limits::default() };
    let text =
        |i: usize, v: usize| format!("note {i} version {v}: the build on host {} failed at step {}", i % 17, i % 5);
    let batch = |v: usize| UpsertRequest {
        scope: Some(scope("acme")),
        records: (0..1500).map(|i| rec(&format!("n{i}"), &text(i, v), None)).collect(),
    };
    let m = MemoryStore::open(dir.path(), limits).unwrap();
    m.create_collection("t", spec("c", 0)).unwrap();
    // Small batches first: the dictionary is trained from stored records once enough exist.
    for chunk in batch(0).records.chunks(300) {
        m.upsert("t", "c", &UpsertRequest { scope: Some(scope("acme")), records: chunk.to_vec() }).unwrap();
    }
    assert!(m.collection("t", "c").unwrap().dict().is_some(), "trained at {} records", rows::DICT_TRAIN_AT);
    let (_, live_before) = m.value_log_sizes();
    // Rewriting every record leaves the old bytes as garbage; they stay until purged...
    for v in 1..4 {
        m.upsert("t", "c", &batch(v)).unwrap();
    }
    let (total, live) = m.value_log_sizes();
    assert!(live < live_before * 2 && total > live * 3, "live {live} of {total} (first pass {live_before})");
    assert_eq!(m.get("t", "c", Some(&scope("acme")), "n7").unwrap().text.unwrap(), text(7, 3));
    drop(m);

    let m = MemoryStore::open(dir.path(), limits).unwrap();
    assert_eq!(
        m.get("t", "c", Some(&scope("acme")), "n7").unwrap().text.unwrap(),
        text(7, 3),
        "the dictionary was kept"
    );
    // Deleted records go at the purge; rewritten ones are not counted live after a reopen.
    m.delete("t", "c", Some(&scope("acme")), &(0..750).map(|i| format!("n{i}")).collect::<Vec<_>>()).unwrap();
    m.purge().unwrap();
    let (_, live_after) = m.value_log_sizes();
    assert!(live_after * 3 < live_before * 2, "{live_after} vs {live_before}");
    let mut q = query(scope("acme"));
    q.text = Some("host".into());
    q.limit = 1000;
    assert_eq!(m.query("t", "c", &q).unwrap().hits.len(), 750);
}

#[test]
fn sparse_value_segments_are_compacted_without_losing_records() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { purge_after_secs: 0, value_segment_bytes: 64 * 1024, ..Limits::default() };
    let m = MemoryStore::open(dir.path(), limits).unwrap();
    m.create_collection("t", spec("c", 4)).unwrap();
    let text = |r: usize, i: usize| format!("round {r} record {i} {}", "payload ".repeat(i % 50));
    for round in 0..12 {
        let records = (0..1000)
            .map(|i| rec(&format!("r{round}-{i}"), &text(round, i), Some(vec![1.0, 0.0, 0.0, i as f32])))
            .collect();
        m.upsert("t", "c", &UpsertRequest { scope: Some(scope("a")), records }).unwrap();
    }
    let (total, _) = m.value_log_sizes();
    assert!(total > 4 * 64 * 1024, "several segments: {total}");
    let doomed: Vec<String> = (0..11).flat_map(|r| (0..1000).map(move |i| format!("r{r}-{i}"))).collect();
    m.delete("t", "c", Some(&scope("a")), &doomed).unwrap();
    m.purge().unwrap();
    let (total_after, live) = m.value_log_sizes();
    assert!(total_after * 4 < total, "{total_after} of {total}, live {live}");
    assert_eq!(m.collection_info("t", "c").unwrap().records, 1000);
    assert_eq!(m.get("t", "c", Some(&scope("a")), "r11-999").unwrap().text.unwrap(), text(11, 999));
    drop(m);
    let m = MemoryStore::open(dir.path(), limits).unwrap();
    assert_eq!(m.get("t", "c", Some(&scope("a")), "r11-5").unwrap().text.unwrap(), text(11, 5));
    let mut q = query(scope("a"));
    q.vector = Some(vec![1.0, 0.0, 0.0, 7.0]);
    assert!(ids(&m.query("t", "c", &q).unwrap())[..3].contains(&"r11-7".to_string()), "vectors were moved too");
}

#[test]
fn a_format_1_store_is_moved_to_the_value_log_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        // What a format-1 store holds: records in redb itself.
        let db = redb::Database::create(dir.path().join("memory.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let row = CollectionRow { number: 1, spec: spec("c", 0), created_at_ms: 5 };
            tx.open_table(rows::COLLECTIONS)
                .unwrap()
                .insert("t/c", serde_json::to_vec(&row).unwrap().as_slice())
                .unwrap();
            let mut old = tx.open_table(rows::ROWS_V1).unwrap();
            for (doc, deleted) in [(0u64, None), (1, Some(9u64))] {
                let r = StoredRow {
                    id: format!("r{doc}"),
                    scope: scope("x"),
                    text: Some(format!("old record {doc}")),
                    metadata: BTreeMap::new(),
                    importance: 0.0,
                    created_at_ms: 1,
                    updated_at_ms: 1,
                    expires_at_ms: None,
                    deleted_at_ms: deleted,
                };
                old.insert((1, doc), rows::encode(&r, &StoredVector::None, None).unwrap().as_slice()).unwrap();
            }
            let mut meta = tx.open_table(rows::META).unwrap();
            meta.insert("format", 1).unwrap();
            meta.insert("collections", 1).unwrap();
        }
        tx.commit().unwrap();
    }
    let m = MemoryStore::open(dir.path(), Limits::default()).unwrap();
    assert_eq!(m.get("t", "c", Some(&scope("x")), "r0").unwrap().text.unwrap(), "old record 0");
    assert!(m.get("t", "c", Some(&scope("x")), "r1").is_err(), "a deleted record stays deleted");
    let mut q = query(scope("x"));
    q.text = Some("record".into());
    assert_eq!(ids(&m.query("t", "c", &q).unwrap()), vec!["r0"], "the text index is rebuilt");
    drop(m);
    let m = MemoryStore::open(dir.path(), Limits::default()).unwrap();
    assert_eq!(m.collection_info("t", "c").unwrap().records, 1);
}

/// `n` records of tenant `t` with 8-d vectors drawn from `seed`, ids `{prefix}{i}`.
fn vector_records(prefix: &str, n: usize, seed: &mut u64) -> Vec<RecordInput> {
    let mut next = || {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    (0..n).map(|i| rec(&format!("{prefix}{i}"), "x", Some((0..8).map(|_| next()).collect()))).collect()
}

/// How many of `records` come first when asked with their own vector, and whether any of the
/// `gone` ids is returned.
fn self_recall(m: &MemoryStore, t: &str, records: &[RecordInput], gone: &[String]) -> usize {
    let mut found = 0;
    for r in records {
        let mut q = query(scope(t));
        q.vector = r.vector.clone();
        let got = ids(&m.query("t", "c", &q).unwrap());
        assert!(!got.iter().any(|g| gone.contains(g)), "a deleted or replaced record came back: {got:?}");
        found += usize::from(got.first() == Some(&r.id));
    }
    found
}

#[test]
fn saved_vector_graphs_are_read_and_later_changes_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed = 99u64;
    // Above the brute-force threshold, so that queries go through the graph.
    let mut a = vector_records("a", 2500, &mut seed);
    let b = vector_records("b", 300, &mut seed);
    {
        let m = MemoryStore::open(dir.path(), Limits::default()).unwrap();
        m.create_collection("t", spec("c", 8)).unwrap();
        for chunk in a.chunks(500) {
            m.upsert("t", "c", &UpsertRequest { scope: Some(scope("a")), records: chunk.to_vec() }).unwrap();
        }
        m.upsert("t", "c", &UpsertRequest { scope: Some(scope("b")), records: b.clone() }).unwrap();
        m.checkpoint().unwrap();
        assert!(graphs::path(dir.path(), m.collection("t", "c").unwrap().number).exists());
        // After the save: 100 new, 50 moved to new vectors, 50 deleted; then a purge, which
        // must keep the change records the saved graphs need. Dropped without a save, like a
        // crash.
        let new = vector_records("new", 100, &mut seed);
        let moved = vector_records("a", 50, &mut seed);
        m.upsert("t", "c", &UpsertRequest { scope: Some(scope("a")), records: new.clone() }).unwrap();
        m.upsert("t", "c", &UpsertRequest { scope: Some(scope("a")), records: moved.clone() }).unwrap();
        let deleted: Vec<String> = (2000..2050).map(|i| format!("a{i}")).collect();
        m.delete("t", "c", Some(&scope("a")), &deleted).unwrap();
        m.flush_text().unwrap();
        m.purge().unwrap();
        a.splice(0..50, moved);
        a.retain(|r| !deleted.contains(&r.id));
        a.extend(new);
        let gone = deleted.clone();
        assert!(self_recall(&m, "a", &a, &gone) >= a.len() * 99 / 100);
    }
    let deleted: Vec<String> = (2000..2050).map(|i| format!("a{i}")).collect();
    let m = MemoryStore::open(dir.path(), Limits::default()).unwrap();
    {
        let c = m.collection("t", "c").unwrap();
        assert!(c.graphs.lock().unwrap().seq.is_some(), "the saved graphs were read");
        assert_eq!(c.state.read().unwrap().unsaved, 200, "100 new + 50 moved + 50 deleted replayed");
    }
    let found = self_recall(&m, "a", &a, &deleted);
    assert!(found >= a.len() * 99 / 100, "{found} of {} found by their own vector", a.len());
    assert!(self_recall(&m, "b", &b, &[]) >= b.len() * 99 / 100);
    // The replayed changes are saved at the next checkpoint, and a clean reopen replays none.
    m.checkpoint().unwrap();
    drop(m);
    let m = MemoryStore::open(dir.path(), Limits::default()).unwrap();
    assert_eq!(m.collection("t", "c").unwrap().state.read().unwrap().unsaved, 0);
    assert!(self_recall(&m, "a", &a, &deleted) >= a.len() * 99 / 100);
}

#[test]
fn damaged_or_foreign_saved_graphs_are_rebuilt_from_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed = 5u64;
    let a = vector_records("a", 2300, &mut seed);
    let number = {
        let m = MemoryStore::open(dir.path(), Limits::default()).unwrap();
        m.create_collection("t", spec("c", 8)).unwrap();
        m.upsert("t", "c", &UpsertRequest { scope: Some(scope("a")), records: a.clone() }).unwrap();
        m.checkpoint().unwrap();
        m.collection("t", "c").unwrap().number
    };
    let path = graphs::path(dir.path(), number);
    let good = std::fs::read(&path).unwrap();
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a flipped bit", flipped),
        ("a cut file", good[..good.len() / 3].to_vec()),
        ("an empty file", Vec::new()),
        ("another file", b"WRNGRAPH not really".to_vec()),
    ];
    for (what, bytes) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let m = MemoryStore::open(dir.path(), Limits::default()).unwrap();
        let c = m.collection("t", "c").unwrap();
        assert!(c.graphs.lock().unwrap().seq.is_none(), "{what}: not trusted");
        assert_eq!(m.collection_info("t", "c").unwrap().records, 2300, "{what}");
        assert!(self_recall(&m, "a", &a[..300], &[]) >= 297, "{what}: rebuilt from the rows");
    }
    // Deleting the collection deletes its graphs.
    std::fs::write(&path, &good).unwrap();
    let m = MemoryStore::open(dir.path(), Limits::default()).unwrap();
    assert!(m.collection("t", "c").unwrap().graphs.lock().unwrap().seq.is_some());
    m.delete_collection("t", "c").unwrap();
    assert!(!path.exists());
}
