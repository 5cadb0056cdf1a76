//! `warren memory …`: the agent memory store from the command line.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use http::Method;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Value};

use crate::client::Client;
use crate::commands::Output;

#[derive(Subcommand)]
pub enum MemoryCmd {
    /// Create a collection (idempotent for the same settings).
    Create {
        name: String,
        /// Vector length; 0 for a text-only collection (or the model's, with --model).
        #[arg(long, default_value_t = 0)]
        dimension: u32,
        /// Embed text written or queried without a vector with this model of the daemon's
        /// models directory (e.g. all-MiniLM-L6-v2).
        #[arg(long)]
        model: Option<String>,
        /// cosine, dot or l2.
        #[arg(long, default_value = "cosine")]
        distance: String,
        /// Keep f32 vectors beside the int8 ones (exact re-ranking, 4x the vector storage).
        #[arg(long)]
        keep_float_vectors: bool,
    },
    /// List collections.
    Ls,
    /// Delete a collection and everything in it.
    Drop { name: String },
    /// Insert or replace one record (`--file` for many: JSON lines of records).
    Put {
        collection: String,
        #[command(flatten)]
        scope: ScopeArgs,
        /// The record's id (required without --file).
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        text: Option<String>,
        /// The vector as a JSON array.
        #[arg(long)]
        vector: Option<String>,
        /// Metadata as a JSON object.
        #[arg(long)]
        metadata: Option<String>,
        #[arg(long)]
        importance: Option<f32>,
        /// A file of records, one JSON object per line (`id`, `text`, `vector`, `metadata`, …).
        #[arg(long, conflicts_with_all = ["id", "text", "vector", "metadata", "importance"])]
        file: Option<std::path::PathBuf>,
    },
    /// Show one record.
    Get {
        collection: String,
        id: String,
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Delete one record.
    Rm {
        collection: String,
        id: String,
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Recall records by text, vector or both.
    Query {
        collection: String,
        #[command(flatten)]
        scope: ScopeArgs,
        #[arg(long)]
        text: Option<String>,
        /// The query vector as a JSON array.
        #[arg(long)]
        vector: Option<String>,
        /// A metadata filter as JSON, e.g. '{"kind": {"in": ["fact", "note"]}}'.
        #[arg(long)]
        filter: Option<String>,
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// How the channels are fused, as JSON, e.g. '{"method": "linear", "weights": {"text": 0.8,
        /// "vector": 0.2}}' (default: RRF, k 60, equal weights).
        #[arg(long)]
        fusion: Option<String>,
        /// How many candidates the vector graph search keeps (default 128; 256 in tenants of
        /// 250,000 records or more).
        #[arg(long)]
        ef: Option<usize>,
        /// Show each hit's per-channel ranks and scores.
        #[arg(long)]
        explain: bool,
    },
}

#[derive(Args)]
pub struct ScopeArgs {
    /// Whose memory (required).
    #[arg(long)]
    tenant: String,
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    agent: Option<String>,
    #[arg(long)]
    app: Option<String>,
}

impl ScopeArgs {
    fn json(&self) -> Value {
        let mut s = json!({"tenant": self.tenant});
        for (k, v) in [("user", &self.user), ("agent", &self.agent), ("app", &self.app)] {
            if let Some(v) = v {
                s[k] = json!(v);
            }
        }
        s
    }

    fn query_string(&self) -> String {
        let enc = |v: &str| utf8_percent_encode(v, NON_ALPHANUMERIC).to_string();
        let mut q = format!("tenant={}", enc(&self.tenant));
        for (k, v) in [("user", &self.user), ("agent", &self.agent), ("app", &self.app)] {
            if let Some(v) = v {
                q.push_str(&format!("&{k}={}", enc(v)));
            }
        }
        q
    }
}

fn parse_json(what: &str, s: &str) -> Result<Value> {
    serde_json::from_str(s).with_context(|| format!("--{what} is not valid JSON"))
}

fn seg(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

pub async fn memory(client: &Client, out: &Output, cmd: MemoryCmd) -> Result<i32> {
    const BASE: &str = "/v1/memory/collections";
    match cmd {
        MemoryCmd::Create { name, dimension, model, distance, keep_float_vectors } => {
            let mut body = json!({"name": name, "dimension": dimension, "distance": distance,
                                  "keepFloatVectors": keep_float_vectors});
            if let Some(m) = model {
                body["embeddingModel"] = json!(m);
            }
            let v: Value = client.json(Method::POST, BASE, Some(body)).await?;
            out.print(&v, || println!("{name}"));
        }
        MemoryCmd::Ls => {
            let v: Vec<Value> = client.json(Method::GET, BASE, None).await?;
            out.print(&v, || {
                crate::commands::table(
                    &["NAME", "DIMENSION", "DISTANCE", "MODEL", "RECORDS"],
                    v.iter()
                        .map(|c| {
                            ["name", "dimension", "distance", "embeddingModel", "records"]
                                .iter()
                                .map(|k| match &c[*k] {
                                    Value::Null => "-".to_owned(),
                                    x => x.to_string().trim_matches('"').to_owned(),
                                })
                                .collect()
                        })
                        .collect(),
                )
            });
        }
        MemoryCmd::Drop { name } => {
            client.call(Method::DELETE, &format!("{BASE}/{}", seg(&name)), None).await?;
        }
        MemoryCmd::Put { collection, scope, id, text, vector, metadata, importance, file } => {
            let records: Vec<Value> = match file {
                Some(path) => {
                    let body = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                    body.lines()
                        .enumerate()
                        .filter(|(_, l)| !l.trim().is_empty())
                        .map(|(i, l)| parse_json(&format!("file line {}", i + 1), l))
                        .collect::<Result<_>>()?
                }
                None => {
                    let Some(id) = id else { bail!("give the record an --id (or records in --file)") };
                    let mut r = json!({"id": id});
                    if let Some(t) = text {
                        r["text"] = json!(t);
                    }
                    if let Some(v) = vector {
                        r["vector"] = parse_json("vector", &v)?;
                    }
                    if let Some(m) = metadata {
                        r["metadata"] = parse_json("metadata", &m)?;
                    }
                    if let Some(i) = importance {
                        r["importance"] = json!(i);
                    }
                    vec![r]
                }
            };
            let mut total = 0;
            // Large files go in batches the daemon accepts.
            for chunk in records.chunks(5000) {
                let body = json!({"scope": scope.json(), "records": chunk});
                let v: Value =
                    client.json(Method::POST, &format!("{BASE}/{}/records", seg(&collection)), Some(body)).await?;
                total += v["upserted"].as_u64().unwrap_or(0);
            }
            out.print(&json!({"upserted": total}), || eprintln!("{total} records written"));
        }
        MemoryCmd::Get { collection, id, scope } => {
            let path = format!("{BASE}/{}/records/{}?{}", seg(&collection), seg(&id), scope.query_string());
            let v: Value = client.json(Method::GET, &path, None).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        MemoryCmd::Rm { collection, id, scope } => {
            let path = format!("{BASE}/{}/records/{}?{}", seg(&collection), seg(&id), scope.query_string());
            client.call(Method::DELETE, &path, None).await?;
        }
        MemoryCmd::Query { collection, scope, text, vector, filter, limit, fusion, ef, explain } => {
            let mut body = json!({"scope": scope.json(), "limit": limit, "explain": explain});
            if let Some(t) = text {
                body["text"] = json!(t);
            }
            if let Some(v) = vector {
                body["vector"] = parse_json("vector", &v)?;
            }
            if let Some(f) = filter {
                body["filter"] = parse_json("filter", &f)?;
            }
            if let Some(f) = fusion {
                body["fusion"] = parse_json("fusion", &f)?;
            }
            if let Some(ef) = ef {
                body["ef"] = json!(ef);
            }
            let v: Value = client.json(Method::POST, &format!("{BASE}/{}/query", seg(&collection)), Some(body)).await?;
            out.print(&v, || {
                for h in v["hits"].as_array().into_iter().flatten() {
                    let r = &h["record"];
                    let text = r["text"].as_str().unwrap_or("");
                    let short: String = text.chars().take(80).collect();
                    println!(
                        "{:.4}  {}  {}",
                        h["score"].as_f64().unwrap_or(0.0),
                        r["id"].as_str().unwrap_or(""),
                        short
                    );
                    if explain {
                        println!("        {}", h["explain"]);
                    }
                }
            });
        }
    }
    Ok(0)
}
