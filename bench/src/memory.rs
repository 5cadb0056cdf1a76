//! The memory store, in process: ingest rate, query latency per channel, ANN recall against exact
//! f32 neighbours, bytes on disk against raw JSON + f32, and retrieval quality on a known-item set.
//!
//! Corpus: WordNet's glosses (Debian's `wordnet-base`), one record per synset (cycled past
//! WordNet's 117,659 for larger runs).
//!
//! For scale (latency, ANN recall, bytes) the vectors are synthetic unit vectors around 1,000
//! random centres (embeddings cluster by topic): a model would take hours to embed a million
//! texts on two cores. For quality they come from a real model when one is given
//! (`--memory-model all-MiniLM-L6-v2`, built with `--features embed`), else from a stand-in that
//! behaves like a model where it matters for fusion: a text's vector is the idf-weighted sum of its words' vectors, and a word's
//! vector is its own random direction plus the random directions of every WordNet synset it is a
//! lemma of, so synonyms lie close together. It matches meaning through synonyms (which BM25
//! cannot) and blurs exact rare words (which BM25 keeps).
//!
//! Known-item queries paraphrase a gloss the way someone recalls a memory: about half its content
//! words, each kept one replaced by a synonym two times in five. The record to find is the gloss.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use warren_memory::embed::Model;
use warren_memory::types::{
    ChannelWeights, CollectionSpec, Distance, Fusion, FusionMethod, Limits, QueryRequest, RecordInput, Scope,
    UpsertRequest,
};
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
    /// The saved vector graphs.
    pub bytes_graphs: u64,
    /// The flush ending the ingest: the text index's commit and every graph's save.
    pub flush_secs: f64,
    /// Opening the store again, graphs read from their files.
    pub reopen_secs: f64,
    /// Opening it without the graphs' files (rebuilt from the rows).
    pub rebuild_secs: f64,
    pub raw_bytes: u64,
    pub storage_ratio: f64,
    pub bm25: Series,
    pub vector: Series,
    /// The same vector queries with graph search breadth `other_ef`.
    pub vector_other_ef: Series,
    pub other_ef: usize,
    pub hybrid: Series,
    /// Against held-out queries of the records' own distribution.
    pub ann_recall_at_10: f64,
    /// The same with `other_ef`.
    pub ann_recall_at_10_other_ef: f64,
    /// Against far queries (see `noisy`).
    pub ann_recall_at_10_far: f64,
    pub quality_docs: usize,
    pub quality_queries: usize,
    /// Where the known-item set's vectors came from: a model's name or "stand-in".
    pub quality_model: String,
    /// The model's speed embedding the known-item records (batches of the store's size).
    pub embed_texts_per_sec: Option<f64>,
    /// The linear fusion's text weight (the vector's is one minus it), chosen on the dev queries.
    pub linear_text_weight: f32,
    pub quality: Vec<Quality>,
}

/// A graph search breadth measured beside the default one (at a million records the default is
/// 256: this shows what it buys).
const OTHER_EF: usize = 128;

/// The grid the linear fusion's text weight is chosen from.
const LINEAR_TEXT_WEIGHTS: [f32; 5] = [0.5, 0.6, 0.7, 0.8, 0.9];

/// How large a run is.
pub struct Sizes {
    pub docs: usize,
    pub dim: usize,
    pub tenants: usize,
    pub queries: usize,
    /// Known-item records (0: `docs`, up to WordNet's synsets).
    pub quality_docs: usize,
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

/// Unit vectors around 1,000 random centres (embeddings cluster by topic).
struct Clusters {
    centres: Vec<Vec<f32>>,
}

impl Clusters {
    fn new(dim: usize, rng: &mut Rng) -> Clusters {
        let centres = (0..1000)
            .map(|_| {
                let mut c: Vec<f32> = (0..dim).map(|_| rng.normal()).collect();
                normalize(&mut c);
                c
            })
            .collect();
        Clusters { centres }
    }

    /// A point of cluster `c`: a record's vector, or a held-out query from the same distribution
    /// (as a new memory's embedding relates to the stored ones; ANN benchmarks hold out queries
    /// from the dataset the same way).
    fn point(&self, c: usize, rng: &mut Rng) -> Vec<f32> {
        let centre = &self.centres[c];
        let scale = 0.6 / (centre.len() as f32).sqrt();
        let mut v: Vec<f32> = centre.iter().map(|x| x + scale * rng.normal()).collect();
        normalize(&mut v);
        v
    }
}

/// A far query near `v`: noise twice as long as the vector (cosine ≈ 0.45 to it), so that its
/// true neighbours are set apart from the rest of the cluster by little more than noise.
fn noisy(v: &[f32], rng: &mut Rng) -> Vec<f32> {
    let dim = v.len() as f32;
    let mut q: Vec<f32> = v.iter().map(|x| x + 2.0 * rng.normal() / dim.sqrt()).collect();
    normalize(&mut q);
    q
}

/// Words that carry no meaning of their own (left out of embeddings and paraphrases).
const STOPWORDS: &[&str] = &[
    "the",
    "and",
    "for",
    "that",
    "with",
    "which",
    "from",
    "this",
    "are",
    "was",
    "has",
    "have",
    "its",
    "into",
    "not",
    "but",
    "any",
    "one",
    "who",
    "used",
    "such",
    "being",
    "their",
    "other",
    "than",
    "more",
    "some",
    "especially",
];

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.len() >= 3)
        .map(str::to_ascii_lowercase)
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .collect()
}

fn seed_of(s: &str) -> u64 {
    // FNV-1a: a stable seed per word (std's hasher is randomised per process).
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3)) | 1
}

/// The stand-in embedding model (see the module comment).
struct Embedder {
    dim: usize,
    /// Synsets each single-word lemma belongs to (at most eight: the commonest senses first).
    senses: std::collections::HashMap<String, Vec<u32>>,
    /// Lemmas of each synset, for paraphrasing.
    lemmas: Vec<Vec<String>>,
    idf: std::collections::HashMap<String, f32>,
    cache: std::collections::HashMap<String, Vec<f32>>,
}

impl Embedder {
    fn new(synsets: &[Synset], dim: usize) -> Embedder {
        let mut senses: std::collections::HashMap<String, Vec<u32>> = Default::default();
        let mut lemmas = Vec::with_capacity(synsets.len());
        let mut df: std::collections::HashMap<String, u32> = Default::default();
        for (i, s) in synsets.iter().enumerate() {
            let ls: Vec<String> = s.lemmas.split(' ').map(str::to_ascii_lowercase).filter(|l| l.len() >= 3).collect();
            for l in &ls {
                let e = senses.entry(l.clone()).or_default();
                if e.len() < 8 && !e.contains(&(i as u32)) {
                    e.push(i as u32);
                }
            }
            lemmas.push(ls);
            let mut seen = std::collections::HashSet::new();
            for w in words(&s.gloss) {
                if seen.insert(w.clone()) {
                    *df.entry(w).or_default() += 1;
                }
            }
        }
        let n = synsets.len() as f32;
        let idf = df.into_iter().map(|(w, d)| (w, (n / d as f32).ln().max(0.1))).collect();
        Embedder { dim, senses, lemmas, idf, cache: Default::default() }
    }

    fn direction(&self, seed: u64) -> Vec<f32> {
        let mut rng = Rng(seed);
        let mut v: Vec<f32> = (0..self.dim).map(|_| rng.normal()).collect();
        normalize(&mut v);
        v
    }

    fn word(&mut self, w: &str) -> Vec<f32> {
        if let Some(v) = self.cache.get(w) {
            return v.clone();
        }
        let mut v = self.direction(seed_of(w));
        for &s in self.senses.get(w).map(Vec::as_slice).unwrap_or_default() {
            let d = self.direction(seed_of(&format!("synset {s}")));
            v.iter_mut().zip(d).for_each(|(a, b)| *a += b);
        }
        normalize(&mut v);
        self.cache.insert(w.to_owned(), v.clone());
        v
    }

    fn embed(&mut self, text: &str) -> Vec<f32> {
        let mut v = vec![0.0f32; self.dim];
        for w in words(text) {
            let weight = self.idf.get(&w).copied().unwrap_or(3.0);
            v.iter_mut().zip(self.word(&w)).for_each(|(a, b)| *a += weight * b);
        }
        normalize(&mut v);
        v
    }

    /// About half of `gloss`'s content words, each kept one replaced by a synonym (another lemma
    /// of one of its synsets) two times in five.
    fn paraphrase(&self, gloss: &str, rng: &mut Rng) -> String {
        let ws = words(gloss);
        let mut out = Vec::new();
        for w in &ws {
            if rng.uniform() < 0.5 {
                continue;
            }
            let synonyms: Vec<&String> = self
                .senses
                .get(w)
                .into_iter()
                .flatten()
                .flat_map(|&s| &self.lemmas[s as usize])
                .filter(|l| *l != w)
                .collect();
            if !synonyms.is_empty() && rng.uniform() < 0.4 {
                out.push(synonyms[(rng.next() % synonyms.len() as u64) as usize].clone());
            } else {
                out.push(w.clone());
            }
        }
        if out.is_empty() {
            out.extend(ws.first().cloned());
        }
        out.join(" ")
    }
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
/// Seconds (all of it, and the final flush alone) and raw bytes.
fn ingest(
    m: &MemoryStore,
    name: &str,
    texts: &[String],
    vectors: &[Vec<f32>],
    tenants: usize,
) -> Result<(f64, u64, f64)> {
    let dim = vectors[0].len();
    m.create_collection(
        "bench",
        CollectionSpec {
            name: name.into(),
            dimension: dim as u32,
            distance: Distance::Cosine,
            keep_float_vectors: false,
            embedding_model: None,
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
    // The text index's commit and the graphs' save, as the daemon's upkeep does them.
    let f = Instant::now();
    m.flush()?;
    Ok((t.elapsed().as_secs_f64(), raw, f.elapsed().as_secs_f64()))
}

/// The ids of the 10 records of `tenant` closest to `q` by exact f32 dot product.
fn exact_top10(vectors: &[Vec<f32>], q: &[f32], tenant: usize, tenants: usize) -> Vec<String> {
    let mut exact: Vec<(f32, usize)> = (tenant..vectors.len())
        .step_by(tenants)
        .map(|d| (-vectors[d].iter().zip(q).map(|(a, b)| a * b).sum::<f32>(), d))
        .collect();
    exact.select_nth_unstable_by(9, |a, b| a.0.total_cmp(&b.0));
    exact[..10].iter().map(|(_, d)| format!("d{d}")).collect()
}

fn hits_in_truth(got: &warren_memory::types::QueryResponse, truth: &[String]) -> usize {
    got.hits.iter().filter(|h| truth.contains(&h.record.id)).count()
}

fn rank_of(hits: &warren_memory::types::QueryResponse, id: &str) -> Option<usize> {
    hits.hits.iter().position(|h| h.record.id == id).map(|p| p + 1)
}

pub fn measure(root: &Path, sizes: &Sizes, model: Option<&Model>) -> Result<MemoryBench> {
    let Sizes { docs, dim, tenants, queries, quality_docs } = *sizes;
    let dir = root.join("memory-bench");
    let _ = std::fs::remove_dir_all(&dir);
    let synsets = wordnet()?;
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut m = MemoryStore::open(&dir, Limits::default())?;

    // Scale: `docs` records, texts cycling through WordNet's glosses.
    let texts: Vec<String> = (0..docs).map(|i| synsets[i % synsets.len()].gloss.clone()).collect();
    let clusters = Clusters::new(dim, &mut rng);
    let cluster_of: Vec<usize> = (0..docs).map(|_| (rng.next() % 1000) as usize).collect();
    let vectors: Vec<Vec<f32>> = cluster_of.iter().map(|&c| clusters.point(c, &mut rng)).collect();
    let (secs, raw, flush_secs) = ingest(&m, "scale", &texts, &vectors, tenants)?;
    // A restart, which reads the saved graphs; then one without them, which rebuilds them.
    m.checkpoint()?;
    drop(m);
    let t = Instant::now();
    m = MemoryStore::open(&dir, Limits::default())?;
    let reopen_secs = t.elapsed().as_secs_f64();
    let bytes_graphs = dir_bytes(&dir.join("graphs"));
    drop(m);
    let saved = dir.join("graphs.saved");
    std::fs::rename(dir.join("graphs"), &saved)?;
    let t = Instant::now();
    m = MemoryStore::open(&dir, Limits::default())?;
    let rebuild_secs = t.elapsed().as_secs_f64();
    drop(m);
    let _ = std::fs::remove_dir_all(dir.join("graphs"));
    std::fs::rename(&saved, dir.join("graphs"))?;
    m = MemoryStore::open(&dir, Limits::default())?;
    let bytes_on_disk = dir_bytes(&dir);
    let bytes_rows = std::fs::metadata(dir.join("memory.redb")).map(|m| m.len()).unwrap_or(0);
    let bytes_text = dir_bytes(&dir.join("text"));

    let words: Vec<&str> =
        ["water", "small", "person", "music", "animal", "light", "move", "plant", "law", "color"].to_vec();
    let (mut bm25, mut vec_lat, mut other_lat, mut hybrid) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut found, mut found_other, mut wanted) = (0usize, 0usize, 0usize);
    for i in 0..queries {
        let target = (rng.next() as usize) % docs;
        let tenant = target % tenants;
        let qv = clusters.point(cluster_of[target], &mut rng);
        let base = QueryRequest { scope: Some(scope(tenant)), limit: 10, ..QueryRequest::default() };
        let q = QueryRequest {
            text: Some(format!("{} {}", words[i % words.len()], words[(i + 3) % words.len()])),
            ..base.clone()
        };
        let t = Instant::now();
        m.query("bench", "scale", &q)?;
        bm25.push(t.elapsed());
        // The default search and the other one, each first every other time (the first pays
        // for bringing the neighbourhood's vectors into the cache).
        let truth = exact_top10(&vectors, &qv, tenant, tenants);
        let asks = [(None, &mut vec_lat, &mut found), (Some(OTHER_EF), &mut other_lat, &mut found_other)];
        let mut asks: Vec<_> = asks.into_iter().collect();
        if i % 2 == 1 {
            asks.reverse();
        }
        for (ef, lat, hits) in asks {
            let q = QueryRequest { vector: Some(qv.clone()), ef, ..base.clone() };
            let t = Instant::now();
            let got = m.query("bench", "scale", &q)?;
            lat.push(t.elapsed());
            *hits += hits_in_truth(&got, &truth);
        }
        wanted += 10;
        let q = QueryRequest {
            text: Some(texts[target].split(' ').step_by(2).collect::<Vec<_>>().join(" ")),
            vector: Some(qv),
            decay: Some(warren_memory::types::Decay { half_life_secs: 30.0 * 86400.0, floor: 0.5 }),
            ..base
        };
        let t = Instant::now();
        m.query("bench", "scale", &q)?;
        hybrid.push(t.elapsed());
    }

    // Far queries: recall only (a tenth as many; the exact answers cost a scan each).
    let (mut far_found, mut far_wanted) = (0usize, 0usize);
    for _ in 0..(queries / 10).max(10) {
        let target = (rng.next() as usize) % docs;
        let tenant = target % tenants;
        let qv = noisy(&vectors[target], &mut rng);
        let q = QueryRequest { scope: Some(scope(tenant)), limit: 10, vector: Some(qv.clone()), ..Default::default() };
        far_found += hits_in_truth(&m.query("bench", "scale", &q)?, &exact_top10(&vectors, &qv, tenant, tenants));
        far_wanted += 10;
    }

    // Quality: one record per synset (no repeated texts), one tenant, known-item queries.
    let g = synsets.len().min(if quality_docs > 0 { quality_docs } else { docs.max(1000) });
    let gtexts: Vec<String> = synsets[..g].iter().map(|s| s.gloss.clone()).collect();
    let mut standin = Embedder::new(&synsets, dim);
    let mut embed_texts_per_sec = None;
    let gvectors: Vec<Vec<f32>> = match model {
        Some(model) => {
            let t = Instant::now();
            let texts: Vec<&str> = gtexts.iter().map(String::as_str).collect();
            let v = model.embed(&texts)?;
            embed_texts_per_sec = Some(g as f64 / t.elapsed().as_secs_f64());
            v
        }
        None => gtexts.iter().map(|t| standin.embed(t)).collect(),
    };
    ingest(&m, "quality", &gtexts, &gvectors, 1)?;
    // At least 1,000 known items: with fewer, channel differences of a few points are noise. The
    // first half of the queries (dev) chooses the linear fusion's text weight from a grid; every
    // figure reported comes from the second half (test), which took no part in the choice.
    let nq = queries.max(1000).min(g);
    let dev = nq / 2;
    let mut asks_per_query = vec![Fusion::default(); 3];
    asks_per_query.extend(LINEAR_TEXT_WEIGHTS.iter().map(|&w| Fusion {
        method: FusionMethod::Linear,
        weights: ChannelWeights { text: w, vector: 1.0 - w },
        ..Fusion::default()
    }));
    // Per ask: [dev, test] × (reciprocal rank, gain, found in 100).
    let mut stats = vec![[(0.0f64, 0.0f64, 0usize); 2]; asks_per_query.len()];
    for n in 0..nq {
        let target = (rng.next() as usize) % g;
        let id = format!("d{target}");
        let text = standin.paraphrase(&gtexts[target], &mut rng);
        let qv = match model {
            Some(model) => model.embed(&[&text])?.pop().context("the model gave no vector")?,
            None => standin.embed(&text),
        };
        let base = QueryRequest { scope: Some(scope(0)), limit: 100, ..QueryRequest::default() };
        for (k, fusion) in asks_per_query.iter().enumerate() {
            let q = QueryRequest {
                text: (k != 1).then(|| text.clone()),
                vector: (k != 0).then(|| qv.clone()),
                fusion: fusion.clone(),
                ..base.clone()
            };
            if let Some(r) = rank_of(&m.query("bench", "quality", &q)?, &id) {
                let s = &mut stats[k][usize::from(n >= dev)];
                if r <= 10 {
                    s.0 += 1.0 / r as f64;
                    s.1 += 1.0 / (r as f64 + 1.0).log2();
                }
                s.2 += 1;
            }
        }
    }
    let best =
        (3..asks_per_query.len()).max_by(|&a, &b| stats[a][0].1.total_cmp(&stats[b][0].1).then(b.cmp(&a))).unwrap_or(3);
    let tested = (nq - dev).max(1) as f64;
    let quality = [("bm25", 0), ("vector", 1), ("hybrid-rrf", 2), ("hybrid-linear", best)]
        .into_iter()
        .map(|(channel, k)| {
            let (mrr, ndcg, hit) = stats[k][1];
            Quality { channel, mrr_at_10: mrr / tested, ndcg_at_10: ndcg / tested, recall_at_100: hit as f64 / tested }
        })
        .collect();
    let linear_text_weight = LINEAR_TEXT_WEIGHTS[best - 3];
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
        bytes_graphs,
        flush_secs,
        reopen_secs,
        rebuild_secs,
        raw_bytes: raw,
        storage_ratio: bytes_on_disk as f64 / raw as f64,
        bm25: series("memory: BM25 top-10", bm25),
        vector: series("memory: vector top-10", vec_lat),
        vector_other_ef: series(&format!("memory: vector top-10, ef {OTHER_EF}"), other_lat),
        other_ef: OTHER_EF,
        hybrid: series("memory: hybrid + RRF + decay top-10", hybrid),
        ann_recall_at_10: found as f64 / wanted.max(1) as f64,
        ann_recall_at_10_other_ef: found_other as f64 / wanted.max(1) as f64,
        ann_recall_at_10_far: far_found as f64 / far_wanted.max(1) as f64,
        quality_docs: g,
        quality_queries: nq - dev,
        linear_text_weight,
        quality_model: model.map_or("stand-in".to_string(), |m| m.name().to_string()),
        embed_texts_per_sec,
        quality,
    })
}
