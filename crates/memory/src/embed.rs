//! Local embeddings: a collection configured with a model has the text of records written
//! without a vector, and the text of queries asked without one, turned into vectors in process.
//!
//! Models are directories under the store's models directory, named as collections name them,
//! each holding a sentence-transformers export of a BERT-family encoder (`config.json`,
//! `model.safetensors`, `tokenizer.json`, optionally `1_Pooling/config.json` and
//! `sentence_bert_config.json`). A model is loaded once, on first use, and shared. Running one
//! needs the `embed` feature (candle on the CPU); a build without it refuses such collections
//! with a message saying so, rather than storing records that would never be found by vector.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::MemoryError;

/// Whether this build can run models (the `embed` feature).
pub const SUPPORTED: bool = cfg!(feature = "embed");

/// Texts embedded in one forward pass: larger batches pad more (to the longest text of the batch)
/// for little gain on two cores.
pub const BATCH: usize = 16;

/// The models a store can use.
pub struct Models {
    dir: Option<PathBuf>,
    loaded: Mutex<HashMap<String, Arc<Model>>>,
}

impl Models {
    pub fn new(dir: Option<PathBuf>) -> Models {
        Models { dir, loaded: Mutex::new(HashMap::new()) }
    }

    /// The names of the models in the models directory (for error messages).
    pub fn available(&self) -> Vec<String> {
        let Some(dir) = &self.dir else { return Vec::new() };
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("config.json").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    /// The model `name`, loaded on first use.
    pub fn get(&self, name: &str) -> Result<Arc<Model>, MemoryError> {
        if let Some(m) = self.loaded.lock().unwrap().get(name) {
            return Ok(m.clone());
        }
        let valid = !name.is_empty()
            && name.len() <= 128
            && !name.starts_with('.')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        let dir = match &self.dir {
            Some(d) if valid && d.join(name).join("config.json").is_file() => d.join(name),
            _ => {
                let available = self.available();
                return Err(MemoryError::UnknownModel {
                    name: name.to_string(),
                    dir: self.dir.as_ref().map_or("(no models directory is set)".into(), |d| d.display().to_string()),
                    available: if available.is_empty() { "none".into() } else { available.join(", ") },
                });
            }
        };
        // Loaded outside the map's lock (a few hundred milliseconds); two first uses at once may
        // both load, and the second is dropped.
        let model = Arc::new(Model::load(name, &dir)?);
        Ok(self.loaded.lock().unwrap().entry(name.to_string()).or_insert(model).clone())
    }
}

#[cfg(feature = "embed")]
pub use with_candle::Model;
#[cfg(not(feature = "embed"))]
pub use without_candle::Model;

#[cfg(not(feature = "embed"))]
mod without_candle {
    use super::*;

    /// Never made: this build cannot run models.
    pub struct Model {
        name: String,
        dim: usize,
    }

    impl Model {
        pub fn load(name: &str, _dir: &Path) -> Result<Model, MemoryError> {
            Err(MemoryError::EmbeddingUnsupported { model: name.to_string() })
        }

        pub fn name(&self) -> &str {
            &self.name
        }

        pub fn dimension(&self) -> usize {
            self.dim
        }

        pub fn embed(&self, _texts: &[&str]) -> Result<Vec<Vec<f32>>, MemoryError> {
            Ok(Vec::new())
        }
    }
}

#[cfg(feature = "embed")]
mod with_candle {
    use candle_core::{DType, Device, Tensor, D};
    use candle_nn::VarBuilder;
    use candle_transformers::models::bert::{BertModel, Config};
    use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

    use super::*;

    fn model_error(name: &str, detail: impl std::fmt::Display) -> MemoryError {
        MemoryError::Embedding { model: name.to_string(), detail: detail.to_string() }
    }

    /// How token vectors become one sentence vector (sentence-transformers' pooling module).
    #[derive(Clone, Copy)]
    enum Pooling {
        Mean,
        Cls,
    }

    pub struct Model {
        name: String,
        bert: BertModel,
        tokenizer: Tokenizer,
        pooling: Pooling,
        dim: usize,
    }

    fn read_json(name: &str, path: &Path) -> Result<serde_json::Value, MemoryError> {
        let text = std::fs::read_to_string(path).map_err(|e| model_error(name, format!("{}: {e}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| model_error(name, format!("{}: {e}", path.display())))
    }

    impl Model {
        pub fn load(name: &str, dir: &Path) -> Result<Model, MemoryError> {
            let config: Config = serde_json::from_value(read_json(name, &dir.join("config.json"))?)
                .map_err(|e| model_error(name, format!("config.json is not a BERT configuration: {e}")))?;
            let weights = dir.join("model.safetensors");
            // SAFETY: the weights are mapped read-only from a file of the models directory, which
            // only the host's administrator writes.
            let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &Device::Cpu) }
                .map_err(|e| model_error(name, format!("{}: {e}", weights.display())))?;
            let bert = BertModel::load(vb, &config).map_err(|e| model_error(name, e))?;
            let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
                .map_err(|e| model_error(name, format!("tokenizer.json: {e}")))?;
            // Texts longer than the model was trained on are cut (sentence-transformers does the
            // same); padding only to the longest text of a batch.
            let max_len = dir
                .join("sentence_bert_config.json")
                .is_file()
                .then(|| read_json(name, &dir.join("sentence_bert_config.json")))
                .transpose()?
                .and_then(|c| c["max_seq_length"].as_u64())
                .map_or(config.max_position_embeddings, |n| n as usize)
                .min(config.max_position_embeddings);
            tokenizer
                .with_truncation(Some(TruncationParams { max_length: max_len, ..Default::default() }))
                .map_err(|e| model_error(name, e))?;
            tokenizer
                .with_padding(Some(PaddingParams { strategy: PaddingStrategy::BatchLongest, ..Default::default() }));
            let pooling_file = dir.join("1_Pooling/config.json");
            let pooling = if pooling_file.is_file() && read_json(name, &pooling_file)?["pooling_mode_cls_token"] == true
            {
                Pooling::Cls
            } else {
                Pooling::Mean
            };
            Ok(Model { name: name.to_string(), bert, tokenizer, pooling, dim: config.hidden_size })
        }

        pub fn name(&self) -> &str {
            &self.name
        }

        pub fn dimension(&self) -> usize {
            self.dim
        }

        /// Unit vectors for `texts`, in order. Batches are made of texts of similar length: a
        /// batch is padded to its longest text, and the padding is computed like real tokens.
        pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, MemoryError> {
            let mut order: Vec<usize> = (0..texts.len()).collect();
            order.sort_by_key(|&i| texts[i].len());
            let mut out = vec![Vec::new(); texts.len()];
            for chunk in order.chunks(BATCH) {
                let batch: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
                let vectors = self.embed_batch(&batch).map_err(|e| model_error(&self.name, e))?;
                for (&i, v) in chunk.iter().zip(vectors) {
                    out[i] = v;
                }
            }
            Ok(out)
        }

        fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, Box<dyn std::error::Error + Send + Sync>> {
            let encodings = self.tokenizer.encode_batch(texts.to_vec(), true)?;
            let rows = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> candle_core::Result<Tensor> {
                let rows: Vec<Tensor> =
                    encodings.iter().map(|e| Tensor::new(f(e), &Device::Cpu)).collect::<candle_core::Result<_>>()?;
                Tensor::stack(&rows, 0)
            };
            let ids = rows(&|e| e.get_ids())?;
            let types = rows(&|e| e.get_type_ids())?;
            let mask = rows(&|e| e.get_attention_mask())?;
            let hidden = self.bert.forward(&ids, &types, Some(&mask))?;
            let pooled = match self.pooling {
                Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
                Pooling::Mean => {
                    // Padding tokens count for nothing.
                    let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                    let summed = hidden.broadcast_mul(&m)?.sum(1)?;
                    summed.broadcast_div(&m.sum(1)?.clamp(1e-9, f32::MAX)?)?
                }
            };
            let norm = pooled.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f32::MAX)?;
            Ok(pooled.broadcast_div(&norm)?.to_vec2::<f32>()?)
        }
    }
}

#[cfg(all(test, feature = "embed"))]
mod tests {
    use super::*;

    /// The model the project's scripts install (`scripts/models.sh`).
    fn models() -> Models {
        let dir = std::env::var_os("WARREN_MODELS_DIR").map(PathBuf::from).unwrap_or("/opt/warren/models".into());
        Models::new(Some(dir))
    }

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn sentences_that_mean_the_same_lie_closer_than_ones_that_do_not() {
        let m = models().get("all-MiniLM-L6-v2").expect("scripts/models.sh installs all-MiniLM-L6-v2");
        assert_eq!(m.dimension(), 384);
        let texts = [
            "A man is eating food.",
            "A man is eating a piece of bread.",
            "A man is riding a horse.",
            "The deployment failed because the database password expired",
            "login to postgres was rejected: credentials out of date",
        ];
        let v = m.embed(&texts).unwrap();
        assert_eq!(v.len(), 5);
        for x in &v {
            assert!((cos(x, x) - 1.0).abs() < 1e-4, "unit length");
        }
        assert!(cos(&v[0], &v[1]) > cos(&v[0], &v[2]) + 0.2);
        assert!(cos(&v[3], &v[4]) > cos(&v[3], &v[2]) + 0.2);
        // A text alone and in a batch of longer ones (padded) come out the same.
        let alone = m.embed(&[texts[2]]).unwrap();
        assert!(cos(&alone[0], &v[2]) > 0.9999);
    }

    #[test]
    fn unknown_and_malformed_model_names_are_refused_with_the_models_there_are() {
        let ms = models();
        for bad in ["nope", "../etc", "", ".hidden", "a/b"] {
            let e = ms.get(bad).err().expect("refused").to_string();
            assert!(e.contains("all-MiniLM-L6-v2"), "{e}");
        }
    }
}
