//! The memory store's API types, as the HTTP API reads and writes them (camelCase JSON).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::MemoryError;

/// How vectors of a collection are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Distance {
    /// 1 − cosine similarity (vectors are normalised when written).
    #[default]
    Cosine,
    /// Negative dot product.
    Dot,
    /// Squared Euclidean distance.
    L2,
}

/// `POST /v1/memory/collections`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CollectionSpec {
    pub name: String,
    /// Length of every vector; 0 for a text-only collection.
    #[serde(default)]
    pub dimension: u32,
    #[serde(default)]
    pub distance: Distance,
    /// Keep full-precision vectors beside the int8 ones (exact re-ranking against them, at four
    /// times the vector storage). Off: re-ranking compares the f32 query with the int8 vectors.
    #[serde(default)]
    pub keep_float_vectors: bool,
    /// A model of the daemon's models directory (e.g. `all-MiniLM-L6-v2`): the text of records
    /// written without a vector, and of queries asked without one, is embedded with it.
    /// `dimension` may then be left out (it is the model's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<String>,
}

/// A collection as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CollectionInfo {
    #[serde(flatten)]
    pub spec: CollectionSpec,
    pub created_at_ms: u64,
    /// Live (not deleted, not expired) records, over every tenant.
    pub records: u64,
}

/// Whose memory: every read and write names one. The tenant partitions the indexes; user, agent
/// and app, when given, narrow a query to the records written with the same values.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scope {
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
}

impl Scope {
    pub fn check(&self) -> Result<(), MemoryError> {
        let parts = [Some(&self.tenant), self.user.as_ref(), self.agent.as_ref(), self.app.as_ref()];
        if self.tenant.is_empty() {
            return Err(MemoryError::MissingScope);
        }
        for p in parts.into_iter().flatten() {
            if p.is_empty() || p.len() > 256 || p.contains('\0') {
                return Err(MemoryError::BadScope { value: p.clone() });
            }
        }
        Ok(())
    }

    /// The record key's scope part: a record's identity is its scope and its id.
    pub(crate) fn key(&self, id: &str) -> String {
        let o = |s: &Option<String>| s.clone().unwrap_or_default();
        format!("{}\0{}\0{}\0{}\0{}", self.tenant, o(&self.user), o(&self.agent), o(&self.app), id)
    }

    /// Whether a record written under `row` is visible to a query under `self`.
    pub(crate) fn covers(&self, row: &Scope) -> bool {
        let narrow = |q: &Option<String>, r: &Option<String>| q.is_none() || q == r;
        self.tenant == row.tenant
            && narrow(&self.user, &row.user)
            && narrow(&self.agent, &row.agent)
            && narrow(&self.app, &row.app)
    }
}

/// One record to upsert.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordInput {
    /// The caller's id; an upsert with an existing id (in the same scope) replaces the record.
    pub id: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub vector: Option<Vec<f32>>,
    #[serde(default)]
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// 0 to 1; weighs the record up in queries that ask for it.
    #[serde(default)]
    pub importance: Option<f32>,
    /// Milliseconds since the epoch after which the record is gone.
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
}

/// `POST /v1/memory/collections/{name}/records`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpsertRequest {
    pub scope: Option<Scope>,
    pub records: Vec<RecordInput>,
}

/// A stored record as returned.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub id: String,
    pub scope: Scope,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// As stored: dequantised int8, or the f32 values when the collection keeps them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
    pub metadata: BTreeMap<String, serde_json::Value>,
    pub importance: f32,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

/// A metadata filter. Conditions on one field: `{"field": value}` (equality) or
/// `{"field": {"in": [...]}}`, `{"field": {"gte": 1, "lt": 5}}` (numbers, or times as
/// milliseconds); `and` / `or` / `not` combine. The record's own `createdAtMs`, `updatedAtMs`,
/// `expiresAtMs` and `importance` can be filtered like metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Filter(pub serde_json::Map<String, serde_json::Value>);

/// How the two channels' rankings are fused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FusionMethod {
    /// Reciprocal-rank fusion: Σ weight / (k + rank), ranks from 1.
    #[default]
    Rrf,
    /// Weighted sum of each channel's scores, min-max normalised within the window.
    Linear,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Fusion {
    pub method: FusionMethod,
    pub k: f32,
    /// Weight of the text channel and of the vector channel.
    pub weights: ChannelWeights,
    /// How many of each channel's best results take part (at least the limit).
    pub window: usize,
}

impl Default for Fusion {
    fn default() -> Self {
        Fusion { method: FusionMethod::Rrf, k: 60.0, weights: ChannelWeights::default(), window: 100 }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ChannelWeights {
    pub text: f32,
    pub vector: f32,
}

impl Default for ChannelWeights {
    fn default() -> Self {
        ChannelWeights { text: 1.0, vector: 1.0 }
    }
}

/// Applied after fusion: the score is multiplied by `0.5^(age / halfLife)` (never below
/// `floor`), age counted from the record's last update.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Decay {
    pub half_life_secs: f64,
    #[serde(default)]
    pub floor: f32,
}

/// `POST /v1/memory/collections/{name}/query`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryRequest {
    pub scope: Option<Scope>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub vector: Option<Vec<f32>>,
    #[serde(default)]
    pub filter: Filter,
    #[serde(default = "default_limit")]
    pub limit: usize,
    #[serde(default)]
    pub fusion: Fusion,
    /// How many candidates the vector graph search keeps (HNSW's ef; at least the window):
    /// broader finds more of the true nearest records and costs more. Default 128, and 256 in a
    /// tenant of 250,000 records or more.
    #[serde(default)]
    pub ef: Option<usize>,
    #[serde(default)]
    pub decay: Option<Decay>,
    /// The score is multiplied by `1 + importanceWeight × importance`.
    #[serde(default)]
    pub importance_weight: f32,
    /// Return each hit's per-channel ranks and scores.
    #[serde(default)]
    pub explain: bool,
    /// Return the records' vectors too.
    #[serde(default)]
    pub include_vectors: bool,
}

fn default_limit() -> usize {
    10
}

/// One channel's view of a hit.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChannelHit {
    /// From 1.
    pub rank: usize,
    /// BM25 score, or the vector distance (smaller is closer).
    pub score: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Explain {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<ChannelHit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<ChannelHit>,
    pub fused: f32,
    pub decay: f32,
    pub importance: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Hit {
    pub score: f32,
    pub record: Record,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain: Option<Explain>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueryResponse {
    pub hits: Vec<Hit>,
    pub took_us: u64,
}

/// Limits on what a write or a query may carry.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_text_bytes: usize,
    pub max_metadata_bytes: usize,
    pub max_dimension: u32,
    pub max_records_per_upsert: usize,
    pub max_limit: usize,
    pub max_window: usize,
    /// How long a deleted record is kept (soft-deleted) before it is purged.
    pub purge_after_secs: u64,
    /// Size at which a value-log segment is sealed (compaction works a segment at a time).
    pub value_segment_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_text_bytes: 64 * 1024,
            max_metadata_bytes: 16 * 1024,
            max_dimension: 4096,
            max_records_per_upsert: 10_000,
            max_limit: 1000,
            max_window: 10_000,
            purge_after_secs: 24 * 3600,
            value_segment_bytes: 64 * 1024 * 1024,
        }
    }
}
