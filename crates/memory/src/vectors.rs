//! Approximate nearest neighbours over int8 scalar-quantised vectors: an HNSW graph (Malkov &
//! Yashunin) per tenant partition, searched with the partition's candidate bitmap so that a
//! filter is applied during the search rather than to its results, with exact re-ranking of the
//! best candidates and brute force when few candidates are allowed.
//!
//! Each vector is stored as `i8` codes with one scale (`v ≈ code × scale`); cosine collections
//! normalise before quantising, so their distance is a dot product.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use roaring::{RoaringBitmap, RoaringTreemap};

use crate::types::Distance;

/// Neighbours kept per node above layer 0 (twice that at layer 0).
const M: usize = 16;
/// Candidate list size while inserting.
const EF_CONSTRUCTION: usize = 100;

/// A vector quantised to int8 with its scale.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    pub codes: Vec<i8>,
    pub scale: f32,
}

impl Quantized {
    /// Quantises `v` symmetrically: the largest magnitude becomes ±127.
    pub fn from_f32(v: &[f32]) -> Quantized {
        let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        if max == 0.0 {
            return Quantized { codes: vec![0; v.len()], scale: 0.0 };
        }
        let scale = max / 127.0;
        Quantized { codes: v.iter().map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8).collect(), scale }
    }

    pub fn to_f32(&self) -> Vec<f32> {
        self.codes.iter().map(|&c| c as f32 * self.scale).collect()
    }

    /// The stored form: the scale (little-endian f32) then the codes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.codes.len());
        out.extend_from_slice(&self.scale.to_le_bytes());
        out.extend(self.codes.iter().map(|&c| c as u8));
        out
    }

    pub fn from_bytes(b: &[u8]) -> Option<Quantized> {
        let scale = f32::from_le_bytes(b.get(..4)?.try_into().ok()?);
        Some(Quantized { codes: b[4..].iter().map(|&c| c as i8).collect(), scale })
    }
}

/// Prepares a query or a stored vector for `distance`: cosine vectors are normalised (a zero
/// vector stays zero).
pub fn prepare(distance: Distance, v: &[f32]) -> Vec<f32> {
    match distance {
        Distance::Cosine => {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm == 0.0 {
                v.to_vec()
            } else {
                v.iter().map(|x| x / norm).collect()
            }
        }
        Distance::Dot | Distance::L2 => v.to_vec(),
    }
}

/// Portable int8 kernels: sixteen independent lanes, which the compiler vectorises (a plain
/// iterator sum keeps one serial accumulator).
fn dot_i8_portable(a: &[i8], b: &[i8]) -> i32 {
    lanes16(a, b, |x, y| x as i32 * y as i32)
}

fn l2_i8_portable(a: &[i8], b: &[i8]) -> i32 {
    lanes16(a, b, |x, y| (x as i32 - y as i32) * (x as i32 - y as i32))
}

#[inline(always)]
fn lanes16(a: &[i8], b: &[i8], term: impl Fn(i8, i8) -> i32) -> i32 {
    let mut acc = [0i32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: i32 = ca.remainder().iter().zip(cb.remainder()).map(|(&x, &y)| term(x, y)).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += term(x[i], y[i]);
        }
    }
    acc.iter().sum::<i32>() + tail
}

/// AVX2 kernels, chosen at run time when the CPU has AVX2 (graph building spends most of its
/// time here): sixteen codes widened to i16, multiplied and summed pairwise into eight i32 lanes
/// by one `vpmaddwd` (the portable loop widens to i32 and multiplies lane by lane).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Loads codes `i..i + 16` of `v` widened to i16.
    #[target_feature(enable = "avx2")]
    fn load16(v: &[i8], i: usize) -> __m256i {
        assert!(i + 16 <= v.len());
        // SAFETY: the sixteen bytes are in bounds (asserted); the load is unaligned.
        _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(v.as_ptr().add(i) as *const __m128i) })
    }

    #[target_feature(enable = "avx2")]
    fn sum8(acc: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
        let s = _mm_hadd_epi32(s, s);
        _mm_cvtsi128_si32(_mm_hadd_epi32(s, s))
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn dot(a: &[i8], b: &[i8]) -> i32 {
        let n = a.len().min(b.len()) / 16 * 16;
        let mut acc = _mm256_setzero_si256();
        for i in (0..n).step_by(16) {
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(load16(a, i), load16(b, i)));
        }
        sum8(acc) + super::dot_i8_portable(&a[n..], &b[n..])
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn l2(a: &[i8], b: &[i8]) -> i32 {
        let n = a.len().min(b.len()) / 16 * 16;
        let mut acc = _mm256_setzero_si256();
        for i in (0..n).step_by(16) {
            // Differences of two i8 fit an i16.
            let d = _mm256_sub_epi16(load16(a, i), load16(b, i));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(d, d));
        }
        sum8(acc) + super::l2_i8_portable(&a[n..], &b[n..])
    }
}

fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { avx2::dot(a, b) };
    }
    dot_i8_portable(a, b)
}

fn l2_i8(a: &[i8], b: &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { avx2::l2(a, b) };
    }
    l2_i8_portable(a, b)
}

/// Smaller is closer, for every distance (dot products are negated).
fn quantized_distance(distance: Distance, a: &[i8], sa: f32, b: &[i8], sb: f32) -> f32 {
    match distance {
        Distance::Cosine | Distance::Dot => -(dot_i8(a, b) as f32) * sa * sb,
        // Codes of different scales are not comparable directly: dequantise on the fly.
        Distance::L2 if sa == sb => l2_i8(a, b) as f32 * sa * sa,
        Distance::L2 => a
            .iter()
            .zip(b)
            .map(|(&x, &y)| {
                let d = x as f32 * sa - y as f32 * sb;
                d * d
            })
            .sum(),
    }
}

/// The distance of an f32 query to a stored vector, as a user reads it: cosine distance
/// (1 − cos), negative dot product, or squared Euclidean distance.
pub fn exact_distance(distance: Distance, query: &[f32], v: &[f32]) -> f32 {
    match distance {
        Distance::Cosine => 1.0 - query.iter().zip(v).map(|(a, b)| a * b).sum::<f32>(),
        Distance::Dot => -query.iter().zip(v).map(|(a, b)| a * b).sum::<f32>(),
        Distance::L2 => query.iter().zip(v).map(|(a, b)| (a - b) * (a - b)).sum(),
    }
}

/// Nodes seen by a search: a mark per node, cleared by moving to the next epoch (a search
/// visits a few hundred nodes of possibly millions; clearing a bitmap of them all would cost more).
#[derive(Default)]
struct Visited {
    marks: Vec<u32>,
    epoch: u32,
}

impl Visited {
    fn reset(&mut self, nodes: usize) {
        if self.marks.len() < nodes {
            self.marks.resize(nodes, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.fill(0);
            self.epoch = 1;
        }
    }

    /// Marks `n`; false when it was already marked.
    fn insert(&mut self, n: u32) -> bool {
        let m = &mut self.marks[n as usize];
        let fresh = *m != self.epoch;
        *m = self.epoch;
        fresh
    }
}

thread_local! {
    static VISITED: std::cell::RefCell<Visited> = std::cell::RefCell::new(Visited::default());
}

#[derive(Clone, Copy, PartialEq)]
struct Scored {
    dist: f32,
    node: u32,
}

impl Eq for Scored {}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.dist.total_cmp(&other.dist).then(self.node.cmp(&other.node))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

struct Node {
    doc: u64,
    /// Neighbours per layer, layer 0 first.
    links: Vec<Vec<u32>>,
}

/// One partition's graph. Nodes are never removed in place: a replaced or deleted document's node
/// becomes a tombstone that searches route through but never return; [`Hnsw::compact`] rebuilds
/// without them once they are many.
pub struct Hnsw {
    /// The distance users asked for.
    distance: Distance,
    /// The distance the graph is built on: dot products go through the usual reduction of
    /// maximum inner product to nearest neighbour (each vector gains a coordinate
    /// `sqrt(phi² − |v|²)`, queries a 0), because negative dot products are no metric and HNSW
    /// navigates them badly.
    metric: Distance,
    dim: usize,
    /// The reduction's extra coordinate per node (kept apart from the int8 codes, whose scale
    /// it would swamp).
    extra: Vec<f32>,
    /// The norm bound of the reduction; raised 5 % past a longer vector when one comes (and the
    /// graph rebuilt: the longest vectors come early, so this happens a handful of times).
    phi: f32,
    nodes: Vec<Node>,
    codes: Vec<i8>,
    scales: Vec<f32>,
    /// Full-precision copies for re-ranking, when the collection keeps them.
    floats: Option<Vec<f32>>,
    by_doc: HashMap<u64, u32>,
    dead: RoaringTreemap,
    entry: Option<u32>,
    top: usize,
    /// Deterministic level draws (xorshift): a rebuilt graph is the same graph.
    rng: u64,
    /// Live nodes of a loaded graph still waiting for their vectors ([`Hnsw::restore_vector`]).
    missing: RoaringBitmap,
}

/// A search's answer: documents with their exact distance, closest first.
pub type Neighbours = Vec<(u64, f32)>;

impl Hnsw {
    pub fn new(distance: Distance, dim: usize, keep_floats: bool) -> Hnsw {
        let metric = if distance == Distance::Dot { Distance::L2 } else { distance };
        Hnsw {
            distance,
            metric,
            dim,
            extra: Vec::new(),
            phi: 0.0,
            nodes: Vec::new(),
            codes: Vec::new(),
            scales: Vec::new(),
            floats: keep_floats.then(Vec::new),
            by_doc: HashMap::new(),
            dead: RoaringTreemap::new(),
            entry: None,
            top: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
            missing: RoaringBitmap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.by_doc.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_doc.is_empty()
    }

    pub fn tombstones(&self) -> u64 {
        self.dead.len()
    }

    fn codes(&self, n: u32) -> &[i8] {
        &self.codes[n as usize * self.dim..(n as usize + 1) * self.dim]
    }

    fn dist_nodes(&self, a: u32, b: u32) -> f32 {
        let d = quantized_distance(
            self.metric,
            self.codes(a),
            self.scales[a as usize],
            self.codes(b),
            self.scales[b as usize],
        );
        match self.extra.is_empty() {
            true => d,
            false => d + (self.extra[a as usize] - self.extra[b as usize]).powi(2),
        }
    }

    fn dist_query(&self, q: &Quantized, n: u32) -> f32 {
        let d = quantized_distance(self.metric, &q.codes, q.scale, self.codes(n), self.scales[n as usize]);
        match self.extra.is_empty() {
            true => d,
            false => d + self.extra[n as usize].powi(2),
        }
    }

    fn random_level(&mut self) -> usize {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let u = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        let ml = 1.0 / (M as f64).ln();
        ((-(u.max(f64::MIN_POSITIVE)).ln() * ml) as usize).min(16)
    }

    /// Adds (or replaces) `doc`'s vector, already [`prepare`]d.
    pub fn insert(&mut self, doc: u64, v: &[f32]) {
        self.remove(doc);
        if self.distance == Distance::Dot {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > self.phi {
                self.rebuild(1.05 * norm.max(1e-6));
            }
            self.extra.push((self.phi * self.phi - norm * norm).max(0.0).sqrt());
        }
        self.insert_prepared(doc, v);
    }

    /// Rebuilds the graph from its live vectors under a new norm bound.
    fn rebuild(&mut self, phi: f32) {
        let mut live: Vec<(u64, Vec<f32>)> = self.by_doc.iter().map(|(&doc, &n)| (doc, self.vector(n))).collect();
        live.sort_by_key(|(d, _)| *d);
        let mut fresh = Hnsw::new(self.distance, self.dim, self.floats.is_some());
        fresh.phi = phi;
        for (doc, v) in live {
            fresh.insert(doc, &v);
        }
        *self = fresh;
    }

    fn insert_prepared(&mut self, doc: u64, v: &[f32]) {
        let q = Quantized::from_f32(v);
        let node = self.nodes.len() as u32;
        let level = self.random_level();
        self.codes.extend_from_slice(&q.codes);
        self.scales.push(q.scale);
        if let Some(f) = &mut self.floats {
            f.extend_from_slice(v);
        }
        self.nodes.push(Node { doc, links: vec![Vec::new(); level + 1] });
        self.by_doc.insert(doc, node);
        let Some(mut ep) = self.entry else {
            self.entry = Some(node);
            self.top = level;
            return;
        };
        let mut ep_dist = self.dist_nodes(node, ep);
        for layer in (level + 1..=self.top).rev() {
            (ep, ep_dist) = self.greedy(|s, n| s.dist_nodes(node, n), ep, ep_dist, layer);
        }
        for layer in (0..=level.min(self.top)).rev() {
            let found = self.search_layer(|s, n| s.dist_nodes(node, n), ep, ep_dist, EF_CONSTRUCTION, layer);
            let cap = if layer == 0 { 2 * M } else { M };
            let chosen = self.select(node, &found, cap);
            for &Scored { node: other, .. } in &chosen {
                self.nodes[other as usize].links[layer].push(node);
                if self.nodes[other as usize].links[layer].len() > cap {
                    self.shrink(other, layer, cap);
                }
            }
            self.nodes[node as usize].links[layer] = chosen.iter().map(|s| s.node).collect();
            if let Some(best) = found.first() {
                (ep, ep_dist) = (best.node, best.dist);
            }
        }
        if level > self.top {
            self.top = level;
            self.entry = Some(node);
        }
    }

    /// The neighbour-selection heuristic: a candidate is kept unless it is closer to an already
    /// kept neighbour than to `node`, which keeps links spread out (recall on clustered data).
    fn select(&self, node: u32, sorted: &[Scored], cap: usize) -> Vec<Scored> {
        let mut kept: Vec<Scored> = Vec::with_capacity(cap);
        for c in sorted {
            if c.node == node {
                continue;
            }
            if kept.iter().all(|k| self.dist_nodes(c.node, k.node) > c.dist) {
                kept.push(*c);
                if kept.len() == cap {
                    break;
                }
            }
        }
        kept
    }

    fn shrink(&mut self, node: u32, layer: usize, cap: usize) {
        let mut scored: Vec<Scored> = self.nodes[node as usize].links[layer]
            .iter()
            .map(|&n| Scored { dist: self.dist_nodes(node, n), node: n })
            .collect();
        scored.sort();
        let kept = self.select(node, &scored, cap);
        self.nodes[node as usize].links[layer] = kept.iter().map(|s| s.node).collect();
    }

    fn greedy(&self, dist: impl Fn(&Self, u32) -> f32, mut ep: u32, mut ep_dist: f32, layer: usize) -> (u32, f32) {
        loop {
            let mut moved = false;
            for &n in &self.nodes[ep as usize].links[layer] {
                let d = dist(self, n);
                if d < ep_dist {
                    (ep, ep_dist, moved) = (n, d, true);
                }
            }
            if !moved {
                return (ep, ep_dist);
            }
        }
    }

    /// Best-first search of one layer; returns up to `ef` nodes, closest first (tombstones
    /// included: they still route).
    fn search_layer(
        &self,
        dist: impl Fn(&Self, u32) -> f32,
        ep: u32,
        ep_dist: f32,
        ef: usize,
        layer: usize,
    ) -> Vec<Scored> {
        VISITED.with_borrow_mut(|v| self.search_layer_marked(v, dist, ep, ep_dist, ef, layer))
    }

    fn search_layer_marked(
        &self,
        visited: &mut Visited,
        dist: impl Fn(&Self, u32) -> f32,
        ep: u32,
        ep_dist: f32,
        ef: usize,
        layer: usize,
    ) -> Vec<Scored> {
        visited.reset(self.nodes.len());
        visited.insert(ep);
        let start = Scored { dist: ep_dist, node: ep };
        let mut frontier = BinaryHeap::from([std::cmp::Reverse(start)]);
        let mut best = BinaryHeap::from([start]);
        while let Some(std::cmp::Reverse(c)) = frontier.pop() {
            if best.len() >= ef && c.dist > best.peek().map_or(f32::INFINITY, |b| b.dist) {
                break;
            }
            for &n in &self.nodes[c.node as usize].links[layer] {
                if !visited.insert(n) {
                    continue;
                }
                let d = dist(self, n);
                if best.len() < ef || d < best.peek().map_or(f32::INFINITY, |b| b.dist) {
                    let s = Scored { dist: d, node: n };
                    frontier.push(std::cmp::Reverse(s));
                    best.push(s);
                    if best.len() > ef {
                        best.pop();
                    }
                }
            }
        }
        best.into_sorted_vec()
    }

    /// Makes `doc` unfindable (its node stays as a tombstone until [`Hnsw::compact`]).
    pub fn remove(&mut self, doc: u64) -> bool {
        match self.by_doc.remove(&doc) {
            Some(n) => {
                self.dead.insert(n as u64);
                true
            }
            None => false,
        }
    }

    /// The stored vector of node `n` as the index holds it (f32 when kept, dequantised otherwise).
    fn vector(&self, n: u32) -> Vec<f32> {
        match &self.floats {
            Some(f) => f[n as usize * self.dim..(n as usize + 1) * self.dim].to_vec(),
            None => {
                let s = self.scales[n as usize];
                self.codes(n).iter().map(|&c| c as f32 * s).collect()
            }
        }
    }

    /// The `k` documents closest to `query` (already [`prepare`]d) among `allowed`; graph search
    /// with `ef` candidates, unless `allowed` holds at most `brute_force_below` documents of this
    /// graph, which are then all compared. Candidates are re-ranked by their exact distance to
    /// the f32 query.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        allowed: &RoaringTreemap,
        brute_force_below: u64,
    ) -> Neighbours {
        if k == 0 || self.by_doc.is_empty() {
            return Vec::new();
        }
        let rerank = |nodes: Vec<u32>| -> Neighbours {
            let mut out: Neighbours = nodes
                .into_iter()
                .map(|n| (self.nodes[n as usize].doc, exact_distance(self.distance, query, &self.vector(n))))
                .collect();
            out.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            out.truncate(k);
            out
        };
        if allowed.len() <= brute_force_below {
            let nodes = allowed.iter().filter_map(|d| self.by_doc.get(&d).copied()).collect();
            return rerank(nodes);
        }
        let q = Quantized::from_f32(query);
        let Some(mut ep) = self.entry else { return Vec::new() };
        let mut ep_dist = self.dist_query(&q, ep);
        for layer in (1..=self.top).rev() {
            (ep, ep_dist) = self.greedy(|s, n| s.dist_query(&q, n), ep, ep_dist, layer);
        }
        // A selective filter leaves fewer allowed nodes among those visited: widen the search
        // by the inverse of the share allowed (bounded).
        let share = (allowed.len() as f64 / self.by_doc.len().max(1) as f64).clamp(0.01, 1.0);
        // Reduced dot-product vectors all lie on one sphere, crowded: search them wider.
        let ef = if self.distance == Distance::Dot { ef * 3 } else { ef };
        let ef = ((ef.max(k) as f64 / share) as usize).min(4096);
        let found = self.search_layer(|s, n| s.dist_query(&q, n), ep, ep_dist, ef, 0);
        let want = (k * 4).max(40);
        let nodes: Vec<u32> = found
            .into_iter()
            .filter(|s| !self.dead.contains(s.node as u64) && allowed.contains(self.nodes[s.node as usize].doc))
            .take(want)
            .map(|s| s.node)
            .collect();
        rerank(nodes)
    }

    /// Exact nearest neighbours by comparing every allowed document (the reference for recall).
    pub fn exact(&self, query: &[f32], k: usize, allowed: &RoaringTreemap) -> Neighbours {
        self.search(query, k, 0, allowed, u64::MAX)
    }

    /// Rebuilds the graph from the live nodes when tombstones are at least a third of it.
    pub fn compact_if_needed(&mut self) {
        if self.dead.len() * 3 < self.nodes.len() as u64 || self.dead.is_empty() {
            return;
        }
        self.rebuild(self.phi);
    }
}

/// Saving and loading. A saved graph holds its structure and its tombstones' vectors, not its
/// live nodes' vectors: the rows hold those, and a load reads every row anyway.
impl Hnsw {
    /// Appends the graph to `out`.
    pub fn save(&self, out: &mut Vec<u8>) {
        let dim = self.dim;
        out.extend_from_slice(&self.phi.to_le_bytes());
        out.extend_from_slice(&self.entry.unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&(self.top as u32).to_le_bytes());
        out.extend_from_slice(&self.rng.to_le_bytes());
        out.extend_from_slice(&(self.nodes.len() as u32).to_le_bytes());
        for n in &self.nodes {
            out.extend_from_slice(&n.doc.to_le_bytes());
            out.push(n.links.len() as u8);
            for l in &n.links {
                out.extend_from_slice(&(l.len() as u32).to_le_bytes());
                for x in l {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
        out.extend_from_slice(&self.dead.len().to_le_bytes());
        for d in &self.dead {
            let n = d as usize;
            out.extend_from_slice(&(n as u32).to_le_bytes());
            out.extend_from_slice(&self.scales[n].to_le_bytes());
            if !self.extra.is_empty() {
                out.extend_from_slice(&self.extra[n].to_le_bytes());
            }
            out.extend(self.codes(n as u32).iter().map(|&c| c as u8));
            if let Some(f) = &self.floats {
                for x in &f[n * dim..(n + 1) * dim] {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
    }

    /// A graph saved by [`Hnsw::save`], read from `r`. Its live nodes have no vectors until
    /// [`Hnsw::restore_vector`] gives them theirs and [`Hnsw::finish_restore`] ends the load.
    pub fn load(distance: Distance, dim: usize, keep_floats: bool, r: &mut Bytes) -> Result<Hnsw, String> {
        let mut g = Hnsw::new(distance, dim, keep_floats);
        g.phi = r.f32()?;
        let entry = r.u32()?;
        g.top = r.u32()? as usize;
        g.rng = r.u64()?;
        let n = r.u32()? as usize;
        // Each node takes at least nine bytes: a count past what is left is damage, not a size
        // to allocate for.
        if n.saturating_mul(9) > r.left() {
            return Err(format!("{n} nodes in {} bytes", r.left()));
        }
        g.nodes.reserve_exact(n);
        for _ in 0..n {
            let doc = r.u64()?;
            let layers = r.u8()? as usize;
            let mut links = Vec::with_capacity(layers);
            for _ in 0..layers {
                let len = r.u32()? as usize;
                if len > 2 * M || len.saturating_mul(4) > r.left() {
                    return Err(format!("a node with {len} neighbours"));
                }
                let mut l = Vec::with_capacity(len);
                for _ in 0..len {
                    let x = r.u32()?;
                    if x as usize >= n {
                        return Err(format!("a link to node {x} of {n}"));
                    }
                    l.push(x);
                }
                links.push(l);
            }
            g.nodes.push(Node { doc, links });
        }
        g.codes = vec![0; n * dim];
        g.scales = vec![0.0; n];
        if distance == Distance::Dot {
            g.extra = vec![0.0; n];
        }
        if let Some(f) = &mut g.floats {
            f.resize(n * dim, 0.0);
        }
        let dead = r.u64()?;
        if dead > n as u64 {
            return Err(format!("{dead} tombstones of {n} nodes"));
        }
        for _ in 0..dead {
            let node = r.u32()? as usize;
            if node >= n {
                return Err(format!("tombstone {node} of {n} nodes"));
            }
            g.scales[node] = r.f32()?;
            if !g.extra.is_empty() {
                g.extra[node] = r.f32()?;
            }
            for (c, b) in g.codes[node * dim..(node + 1) * dim].iter_mut().zip(r.take(dim)?) {
                *c = *b as i8;
            }
            if let Some(f) = &mut g.floats {
                for x in &mut f[node * dim..(node + 1) * dim] {
                    *x = r.f32()?;
                }
            }
            g.dead.insert(node as u64);
        }
        // A search indexes a neighbour's links at the layer it came by: every link must reach a
        // node that has that layer.
        for node in &g.nodes {
            for (layer, l) in node.links.iter().enumerate() {
                if let Some(x) = l.iter().find(|&&x| g.nodes[x as usize].links.len() <= layer) {
                    return Err(format!("a link at layer {layer} to node {x}, which is not on it"));
                }
            }
        }
        for (i, node) in g.nodes.iter().enumerate() {
            if !g.dead.contains(i as u64) {
                if g.by_doc.insert(node.doc, i as u32).is_some() {
                    return Err(format!("document {} has two live nodes", node.doc));
                }
                g.missing.insert(i as u32);
            }
        }
        g.entry = match entry {
            u32::MAX if n == 0 => None,
            e if (e as usize) < n && g.nodes[e as usize].links.len() > g.top => Some(e),
            e => return Err(format!("entry point {e} of {n} nodes at layer {}", g.top)),
        };
        Ok(g)
    }

    /// Gives `doc`'s node of a loaded graph its vector (already [`prepare`]d); false when the
    /// graph has no live node for `doc`.
    pub fn restore_vector(&mut self, doc: u64, v: &[f32]) -> bool {
        let Some(&n) = self.by_doc.get(&doc) else { return false };
        let (n, dim) = (n as usize, self.dim);
        let q = Quantized::from_f32(v);
        self.codes[n * dim..(n + 1) * dim].copy_from_slice(&q.codes);
        self.scales[n] = q.scale;
        if let Some(f) = &mut self.floats {
            f[n * dim..(n + 1) * dim].copy_from_slice(v);
        }
        if !self.extra.is_empty() {
            let norm2 = v.iter().map(|x| x * x).sum::<f32>();
            self.extra[n] = (self.phi * self.phi - norm2).max(0.0).sqrt();
        }
        self.missing.remove(n as u32);
        true
    }

    /// Ends a load: live nodes whose vector never came (their records went after the save)
    /// become tombstones. Returns how many did.
    pub fn finish_restore(&mut self) -> u64 {
        let missing = std::mem::take(&mut self.missing);
        for n in &missing {
            self.by_doc.remove(&self.nodes[n as usize].doc);
            self.dead.insert(n as u64);
        }
        missing.len()
    }
}

/// A cursor over saved bytes; running out is an error, never a panic.
pub struct Bytes<'a>(pub &'a [u8]);

impl<'a> Bytes<'a> {
    pub fn left(&self) -> usize {
        self.0.len()
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err(format!("cut short: {n} bytes wanted, {} left", self.0.len()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    pub fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    pub fn f32(&mut self) -> Result<f32, String> {
        Ok(f32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: &mut u64) -> f32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn clustered(n: usize, dim: usize, seed: &mut u64) -> Vec<Vec<f32>> {
        let centres: Vec<Vec<f32>> = (0..20).map(|_| (0..dim).map(|_| rng(seed)).collect()).collect();
        (0..n).map(|i| centres[i % 20].iter().map(|c| c + 0.3 * rng(seed)).collect()).collect()
    }

    #[test]
    fn int8_kernels_agree_with_plain_arithmetic() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 56) as u8 as i8
        };
        for len in [0, 1, 15, 16, 17, 100, 384, 385] {
            let a: Vec<i8> = (0..len).map(|_| next()).collect();
            let mut b: Vec<i8> = (0..len).map(|_| next()).collect();
            if len > 0 {
                b[0] = -128;
            }
            let dot: i32 = a.iter().zip(&b).map(|(&x, &y)| x as i32 * y as i32).sum();
            let l2: i32 = a.iter().zip(&b).map(|(&x, &y)| (x as i32 - y as i32).pow(2)).sum();
            assert_eq!((dot_i8(&a, &b), l2_i8(&a, &b)), (dot, l2), "length {len}");
            assert_eq!((dot_i8_portable(&a, &b), l2_i8_portable(&a, &b)), (dot, l2), "length {len}");
        }
    }

    #[test]
    fn quantisation_round_trips_within_a_step() {
        let v = [0.5f32, -1.0, 0.25, 0.0];
        let q = Quantized::from_f32(&v);
        assert_eq!(q.codes[1], -127);
        for (a, b) in v.iter().zip(q.to_f32()) {
            assert!((a - b).abs() <= q.scale / 2.0 + 1e-6);
        }
        assert_eq!(Quantized::from_bytes(&q.to_bytes()), Some(q));
        assert_eq!(Quantized::from_f32(&[0.0, 0.0]).scale, 0.0);
    }

    #[test]
    fn graph_search_finds_what_brute_force_finds() {
        let mut seed = 7;
        let dim = 32;
        let data = clustered(3000, dim, &mut seed);
        for distance in [Distance::Cosine, Distance::L2, Distance::Dot] {
            let mut h = Hnsw::new(distance, dim, false);
            let mut all = RoaringTreemap::new();
            for (i, v) in data.iter().enumerate() {
                h.insert(i as u64, &prepare(distance, v));
                all.insert(i as u64);
            }
            let (mut hit, mut total) = (0, 0);
            for q in clustered(50, dim, &mut seed) {
                let q = prepare(distance, &q);
                let exact: Vec<u64> = h.exact(&q, 10, &all).iter().map(|x| x.0).collect();
                let approx: Vec<u64> = h.search(&q, 10, 64, &all, 0).iter().map(|x| x.0).collect();
                hit += approx.iter().filter(|d| exact.contains(d)).count();
                total += exact.len();
            }
            let recall = hit as f64 / total as f64;
            assert!(recall >= 0.9, "{distance:?}: recall@10 {recall}");
        }
    }

    #[test]
    fn filters_deletes_and_replacements_are_respected() {
        let mut seed = 11;
        let dim = 16;
        let data = clustered(2000, dim, &mut seed);
        let mut h = Hnsw::new(Distance::L2, dim, true);
        for (i, v) in data.iter().enumerate() {
            h.insert(i as u64, v);
        }
        // Only even documents allowed; 0..100 deleted; 100 replaced by a copy of the query.
        let mut allowed = RoaringTreemap::new();
        for d in (0..2000u64).step_by(2) {
            allowed.insert(d);
        }
        for d in 0..100 {
            h.remove(d);
        }
        let q = data[1500].clone();
        h.insert(100, &q);
        for brute in [0, u64::MAX] {
            let got = h.search(&q, 10, 64, &allowed, brute);
            assert_eq!(got[0].0, 100, "the replacement is the closest");
            assert!(got[0].1.abs() < 1e-6, "re-ranked with the exact vector: {}", got[0].1);
            assert!(got.iter().all(|(d, _)| d % 2 == 0 && *d >= 100), "{got:?}");
        }
        assert_eq!(h.len(), 1900);
        h.compact_if_needed();
        assert_eq!(h.tombstones(), 101);
        for d in 100..800 {
            h.remove(d);
        }
        h.compact_if_needed();
        assert_eq!((h.len(), h.tombstones()), (1200, 0));
        let got = h.search(&data[1500], 5, 64, &allowed, 0);
        assert_eq!(got[0].0, 1500);
    }

    #[test]
    fn a_saved_graph_loads_to_the_same_searches() {
        let mut seed = 13;
        let dim = 16;
        let data = clustered(2500, dim, &mut seed);
        for (distance, floats) in [(Distance::Cosine, false), (Distance::Dot, false), (Distance::L2, true)] {
            let mut h = Hnsw::new(distance, dim, floats);
            let mut all = RoaringTreemap::new();
            for (i, v) in data.iter().enumerate() {
                h.insert(i as u64, &prepare(distance, v));
                all.insert(i as u64);
            }
            // Tombstones travel with their vectors: documents 0..50 replaced, 50..100 deleted.
            for d in 0..100u64 {
                h.remove(d);
                all.remove(d);
            }
            for d in 0..50u64 {
                h.insert(d, &prepare(distance, &data[d as usize + 1000]));
                all.insert(d);
            }
            let mut bytes = Vec::new();
            h.save(&mut bytes);
            let mut r = Bytes(&bytes);
            let mut loaded = Hnsw::load(distance, dim, floats, &mut r).unwrap();
            assert_eq!(r.left(), 0);
            for d in all.iter() {
                let v = if d < 50 { &data[d as usize + 1000] } else { &data[d as usize] };
                assert!(loaded.restore_vector(d, &prepare(distance, v)), "{distance:?}: document {d}");
            }
            assert!(!loaded.restore_vector(75, &prepare(distance, &data[75])), "a deleted document has no node");
            assert_eq!(loaded.finish_restore(), 0);
            assert_eq!((loaded.len(), loaded.tombstones()), (h.len(), h.tombstones()));
            for q in clustered(30, dim, &mut seed) {
                let q = prepare(distance, &q);
                assert_eq!(loaded.search(&q, 10, 64, &all, 0), h.search(&q, 10, 64, &all, 0), "{distance:?}");
            }
            // A node whose record went after the save becomes a tombstone at the load's end.
            let mut r = Bytes(&bytes);
            let mut partial = Hnsw::load(distance, dim, floats, &mut r).unwrap();
            for d in all.iter().filter(|&d| d != 200) {
                let v = if d < 50 { &data[d as usize + 1000] } else { &data[d as usize] };
                partial.restore_vector(d, &prepare(distance, v));
            }
            assert_eq!(partial.finish_restore(), 1);
            assert!(partial.search(&prepare(distance, &data[200]), 10, 64, &all, 0).iter().all(|x| x.0 != 200));
        }
    }

    #[test]
    fn damaged_graph_bytes_are_refused_not_trusted() {
        let mut seed = 17;
        let data = clustered(300, 8, &mut seed);
        let mut h = Hnsw::new(Distance::Cosine, 8, false);
        for (i, v) in data.iter().enumerate() {
            h.insert(i as u64, &prepare(Distance::Cosine, v));
        }
        let mut bytes = Vec::new();
        h.save(&mut bytes);
        for cut in [0, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(Hnsw::load(Distance::Cosine, 8, false, &mut Bytes(&bytes[..cut])).is_err(), "cut at {cut}");
        }
        // A link to a node past the end, and a node count larger than the bytes could hold.
        let mut bad = bytes.clone();
        let first_link = 4 + 4 + 4 + 8 + 4 + 8 + 1 + 4;
        bad[first_link..first_link + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Hnsw::load(Distance::Cosine, 8, false, &mut Bytes(&bad)).err().unwrap().contains("link"));
        let mut bad = bytes.clone();
        bad[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Hnsw::load(Distance::Cosine, 8, false, &mut Bytes(&bad)).is_err());
    }
}
