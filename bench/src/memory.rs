//! The memory store, in process: ingest rate, query latency per channel, ANN recall against exact
//! f32 neighbours, bytes on disk against raw JSON + f32, and retrieval quality on a known-item set.
//!
//! Corpus: WordNet's glosses (Debian's `wordnet-base`), one record per synset. Vectors are
//! synthetic (no embedding model here): clustered 384-d vectors, and each known-item query's
//! vector is its record's vector plus noise of the same length, so that the vector channel is
//! good but not perfect. Known-item queries: the synset's lemmas as text ("physical entity"),
//! the record being the one to find.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use warren_memory::types::{CollectionSpec, Distance, Limits, QueryRequest, RecordInput, Scope, UpsertRequest};
use warren_memory::MemoryStore;

use crate::{series, Series};

#[derive(Serialize)]
pub struct MemoryBench {
    pub docs: usize,
    pub dimension: usize,
    pub tenants: usize,
    pub ingest_docs_per_sec: f64,
    pub bytes_on_disk: u64,
    /// Of which the row store (redb) and the text indexes (tantivy).
    pub bytes_rows: u64,
    pub bytes_text: u64,
    pub raw_bytes: u64,
    pub storage_ratio: f64,
    pub bm25: Series,
    pub vector: Series,
    pub hybrid: Series,
    pub ann_recall_at_10: f64,
    pub quality_docs: usize,
    pub quality_queries: usize,
    pub quality: Vec<Quality>,
}

#[derive(Serialize)]
pub struct Quality {
    pub channel: &'static str,
    pub mrr_at_10: f64,
    pub ndcg_at_10: f64,
    pub recall_at_100: f64,
}

struct Synset {
    lemmas: String,
    gloss: String,
}

/// Every synset of WordNet's four data files.
fn wordnet() -> Result<Vec<Synset>> {
    let mut out = Vec::new();
    for part in ["noun", "verb", "adj", "adv"] {
        let path = format!("/usr/share/wordnet/data.{part}");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{path} (scripts/deps.sh installs wordnet-base)"))?;
        for line in text.lines().filter(|l| !l.starts_with("  ")) {
            let Some((head, gloss)) = line.split_once(" | ") else { continue };
            let f: Vec<&str> = head.split(' ').collect();
            let Some(count) = f.get(3).and_then(|c| usize::from_str_radix(c, 16).ok()) else { continue };
            let lemmas: Vec<String> =
                (0..count).filter_map(|i| f.get(4 + 2 * i)).map(|w| w.replace('_', " ")).collect();
            out.push(Synset { lemmas: lemmas.join(" "), gloss: gloss.trim().to_owned() });
        }
    }
    if out.len() < 1000 {
        bail!("WordNet's data files hold only {} synsets", out.len());
    }
    Ok(out)
}

/// A small deterministic generator (xorshift) with normal draws (Box-Muller).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        (-2.0 * self.uniform().ln()).sqrt() * (std::f32::consts::TAU * self.uniform()).cos()
    }
}

fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

/// `n` unit vectors around 1,000 random centres (embeddings cluster by topic).
fn clustered(n: usize, dim: usize, rng: &mut Rng) -> Vec<Vec<f32>> {
    let centres: Vec<Vec<f32>> = (0..1000)
        .map(|_| {
            let mut c: Vec<f32> = (0..dim).map(|_| rng.normal()).collect();
            normalize(&mut c);
            c
        })
        .collect();
    (0..n)
        .map(|_| {
            let c = &centres[(rng.next() % 1000) as usize];
            let mut v: Vec<f32> = c.iter().map(|x| x + 0.6 * rng.normal() / (dim as f32).sqrt()).collect();
            normalize(&mut v);
            v
        })
        .collect()
}

fn noisy(v: &[f32], rng: &mut Rng) -> Vec<f32> {
    let dim = v.len() as f32;
    let mut q: Vec<f32> = v.iter().map(|x| x + 2.0 * rng.normal() / dim.sqrt()).collect();
    normalize(&mut q);
    q
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn scope(t: usize) -> Scope {
    Scope { tenant: format!("tenant-{t}"), ..Scope::default() }
}

/// Loads `texts` with `vectors` into collection `name` in batches; returns the seconds taken and
/// the raw size (JSON rows + f32 vectors).
fn ingest(m: &MemoryStore, name: &str, texts: &[String], vectors: &[Vec<f32>], tenants: usize) -> Result<(f64, u64)> {
    let dim = vectors[0].len();
    m.create_collection(
        "bench",
        CollectionSpec {
            name: name.into(),
            dimension: dim as u32,
            distance: Distance::Cosine,
            keep_float_vectors: false,
        },
    )?;
    let t = Instant::now();
    let mut raw = 0u64;
    for t_i in 0..tenants {
        let docs: Vec<usize> = (t_i..texts.len()).step_by(tenants).collect();
        for chunk in docs.chunks(1000) {
            let records: Vec<RecordInput> = chunk
                .iter()
                .map(|&i| RecordInput {
                    id: format!("d{i}"),
                    text: Some(texts[i].clone()),
                    vector: Some(vectors[i].clone()),
                    metadata: [("source".to_string(), serde_json::json!("wordnet"))].into(),
                    importance: None,
                    expires_at_ms: None,
                })
                .collect();
            for r in &records {
                let row = serde_json::json!({"id": r.id, "scope": scope(t_i), "text": r.text, "metadata": r.metadata});
                raw += serde_json::to_vec(&row)?.len() as u64 + 4 * dim as u64;
            }
            m.upsert("bench", name, &UpsertRequest { scope: Some(scope(t_i)), records })?;
        }
    }
    m.flush()?;
    Ok((t.elapsed().as_secs_f64(), raw))
}

fn rank_of(hits: &warren_memory::types::QueryResponse, id: &str) -> Option<usize> {
    hits.hits.iter().position(|h| h.record.id == id).map(|p| p + 1)
}

pub fn measure(root: &Path, docs: usize, dim: usize, tenants: usize, queries: usize) -> Result<MemoryBench> {
    let dir = root.join("memory-bench");
    let _ = std::fs::remove_dir_all(&dir);
    let synsets = wordnet()?;
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let m = MemoryStore::open(&dir, Limits::default())?;

    // Scale: `docs` records, texts cycling through WordNet's glosses.
    let texts: Vec<String> = (0..docs).map(|i| synsets[i % synsets.len()].gloss.clone()).collect();
    let vectors = clustered(docs, dim, &mut rng);
    let (secs, raw) = ingest(&m, "scale", &texts, &vectors, tenants)?;
    let bytes_on_disk = dir_bytes(&dir);
    let bytes_rows = std::fs::metadata(dir.join("memory.redb")).map(|m| m.len()).unwrap_or(0);
    let bytes_text = dir_bytes(&dir.join("text"));

    let words: Vec<&str> =
        ["water", "small", "person", "music", "animal", "light", "move", "plant", "law", "color"].to_vec();
    let (mut bm25, mut vec_lat, mut hybrid) = (Vec::new(), Vec::new(), Vec::new());
    let (mut found, mut wanted) = (0usize, 0usize);
    for i in 0..queries {
        let target = (rng.next() as usize) % docs;
        let tenant = target % tenants;
        let qv = noisy(&vectors[target], &mut rng);
        let base = QueryRequest { scope: Some(scope(tenant)), limit: 10, ..QueryRequest::default() };
        let q = QueryRequest {
            text: Some(format!("{} {}", words[i % words.len()], words[(i + 3) % words.len()])),
            ..base.clone()
        };
        let t = Instant::now();
        m.query("bench", "scale", &q)?;
        bm25.push(t.elapsed());
        let q = QueryRequest { vector: Some(qv.clone()), ..base.clone() };
        let t = Instant::now();
        let got = m.query("bench", "scale", &q)?;
        vec_lat.push(t.elapsed());
        // Exact f32 neighbours of the query within its tenant.
        let mut exact: Vec<(f32, usize)> = (tenant..docs)
            .step_by(tenants)
            .map(|d| (-vectors[d].iter().zip(&qv).map(|(a, b)| a * b).sum::<f32>(), d))
            .collect();
        exact.select_nth_unstable_by(9, |a, b| a.0.total_cmp(&b.0));
        let truth: Vec<String> = exact[..10].iter().map(|(_, d)| format!("d{d}")).collect();
        found += got.hits.iter().filter(|h| truth.contains(&h.record.id)).count();
        wanted += 10;
        let q = QueryRequest {
            text: Some(synsets[target % synsets.len()].lemmas.clone()),
            vector: Some(qv),
            decay: Some(warren_memory::types::Decay { half_life_secs: 30.0 * 86400.0, floor: 0.5 }),
            ..base
        };
        let t = Instant::now();
        m.query("bench", "scale", &q)?;
        hybrid.push(t.elapsed());
    }

    // Quality: one record per synset (no repeated texts), one tenant, known-item queries.
    let g = synsets.len().min(docs.max(1000));
    let gtexts: Vec<String> = synsets[..g].iter().map(|s| s.gloss.clone()).collect();
    let gvectors = clustered(g, dim, &mut rng);
    ingest(&m, "quality", &gtexts, &gvectors, 1)?;
    let nq = queries.min(g);
    let mut stats = [(0.0f64, 0.0f64, 0usize); 3];
    for _ in 0..nq {
        let target = (rng.next() as usize) % g;
        let id = format!("d{target}");
        let text = synsets[target].lemmas.clone();
        let qv = noisy(&gvectors[target], &mut rng);
        let base = QueryRequest { scope: Some(scope(0)), limit: 100, ..QueryRequest::default() };
        let asks = [
            QueryRequest { text: Some(text.clone()), ..base.clone() },
            QueryRequest { vector: Some(qv.clone()), ..base.clone() },
            QueryRequest { text: Some(text), vector: Some(qv), ..base },
        ];
        for (k, q) in asks.iter().enumerate() {
            if let Some(r) = rank_of(&m.query("bench", "quality", q)?, &id) {
                if r <= 10 {
                    stats[k].0 += 1.0 / r as f64;
                    stats[k].1 += 1.0 / (r as f64 + 1.0).log2();
                }
                stats[k].2 += 1;
            }
        }
    }
    let quality = ["bm25", "vector", "hybrid"]
        .iter()
        .zip(stats)
        .map(|(c, (mrr, ndcg, hit))| Quality {
            channel: c,
            mrr_at_10: mrr / nq as f64,
            ndcg_at_10: ndcg / nq as f64,
            recall_at_100: hit as f64 / nq as f64,
        })
        .collect();
    drop(m);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(MemoryBench {
        docs,
        dimension: dim,
        tenants,
        ingest_docs_per_sec: docs as f64 / secs,
        bytes_on_disk,
        bytes_rows,
        bytes_text,
        raw_bytes: raw,
        storage_ratio: bytes_on_disk as f64 / raw as f64,
        bm25: series("memory: BM25 top-10", bm25),
        vector: series("memory: vector top-10", vec_lat),
        hybrid: series("memory: hybrid + RRF + decay top-10", hybrid),
        ann_recall_at_10: found as f64 / wanted.max(1) as f64,
        quality_docs: g,
        quality_queries: nq,
        quality,
    })
}
