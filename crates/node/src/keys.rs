//! API keys and the teams they belong to. The daemon makes one admin key for the `default` team on
//! first start (the `api_key` file in the data directory, which the local CLI reads); admin keys
//! make more keys, each scoped to one team. Only a key's SHA-256 is stored, so a copy of the state
//! store does not hand out working keys.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::info;
use warren_types::api::ApiKeyInfo;
use warren_types::Team;

use crate::store::{Kind, Store};
use crate::{now_ms, random_hex, rfc3339, NodeError};

const KEY_RECORD_VERSION: u32 = 1;
/// The id of the key in the data directory's `api_key` file.
pub const BOOTSTRAP_KEY_ID: &str = "bootstrap";
/// Keys a daemon holds at most (each costs a map entry; the bound stops a runaway script).
const MAX_KEYS: usize = 10_000;

/// Who is calling: what their key may see and do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub team: Team,
    pub admin: bool,
    pub key_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyRecord {
    version: u32,
    id: String,
    team: Team,
    name: String,
    admin: bool,
    /// Hex SHA-256 of the key.
    sha256: String,
    prefix: String,
    created_at_ms: u64,
}

impl KeyRecord {
    fn info(&self) -> ApiKeyInfo {
        ApiKeyInfo {
            id: self.id.clone(),
            team: self.team.to_string(),
            name: self.name.clone(),
            admin: self.admin,
            created_at: rfc3339(self.created_at_ms),
            prefix: self.prefix.clone(),
            key: None,
        }
    }
}

pub struct ApiKeys {
    store: Arc<Store>,
    /// By SHA-256 of the key: looking a key up by its digest reveals nothing about the key through
    /// timing, unlike comparing keys themselves.
    by_digest: RwLock<HashMap<[u8; 32], KeyRecord>>,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Where the bootstrap key lives.
pub fn bootstrap_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("api_key")
}

/// Reads the bootstrap key, creating it (mode 0600) on first start.
fn bootstrap_key(data_dir: &Path) -> Result<String, NodeError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = bootstrap_key_path(data_dir);
    let io =
        |e: std::io::Error| NodeError::InvalidConfig { detail: format!("the API key file {}: {e}", path.display()) };
    if let Ok(k) = std::fs::read_to_string(&path) {
        let k = k.trim().to_owned();
        if !k.is_empty() {
            return Ok(k);
        }
    }
    let key = new_secret();
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path).map_err(io)?;
    std::io::Write::write_all(&mut f, key.as_bytes()).map_err(io)?;
    info!(path = %path.display(), "created the admin API key");
    Ok(key)
}

/// Keys look like E2B's (`e2b_` and lowercase hex) because E2B SDKs 2.25–2.46 refuse any other
/// format before sending a request. Keys made before this format keep working.
fn new_secret() -> String {
    format!("e2b_{}", random_hex(24))
}

impl ApiKeys {
    /// Loads the stored keys and the bootstrap key (made on first start).
    pub fn open(data_dir: &Path, store: Arc<Store>) -> Result<ApiKeys, NodeError> {
        let mut by_digest = HashMap::new();
        let stored: Vec<KeyRecord> = store.all(Kind::ApiKey)?;
        for rec in stored.into_iter().filter(|r| r.version == KEY_RECORD_VERSION) {
            if let Some(d) = parse_hex(&rec.sha256) {
                by_digest.insert(d, rec);
            }
        }
        let boot = bootstrap_key(data_dir)?;
        by_digest.retain(|_, r| r.id != BOOTSTRAP_KEY_ID);
        by_digest.insert(
            digest(&boot),
            KeyRecord {
                version: KEY_RECORD_VERSION,
                id: BOOTSTRAP_KEY_ID.into(),
                team: Team::default(),
                name: "the data directory's api_key file".into(),
                admin: true,
                sha256: hex(&digest(&boot)),
                prefix: boot.chars().take(8).collect(),
                created_at_ms: 0,
            },
        );
        Ok(ApiKeys { store, by_digest: RwLock::new(by_digest) })
    }

    /// The caller a key stands for, if it is a key of this daemon.
    pub fn verify(&self, key: &str) -> Option<Caller> {
        if key.is_empty() || key.len() > 256 {
            return None;
        }
        let map = self.by_digest.read().unwrap();
        map.get(&digest(key)).map(|r| Caller { team: r.team.clone(), admin: r.admin, key_id: r.id.clone() })
    }

    /// Makes a key for `team`; the answer is the only place the secret ever appears.
    pub fn create(&self, team: &str, name: &str, admin: bool) -> Result<ApiKeyInfo, NodeError> {
        let team = Team::parse(team)?;
        if name.len() > 200 || name.chars().any(char::is_control) {
            return Err(NodeError::OutOfRange {
                field: "name",
                value: name.chars().take(40).collect(),
                allowed: "at most 200 printable characters".into(),
            });
        }
        let secret = new_secret();
        let d = digest(&secret);
        let rec = KeyRecord {
            version: KEY_RECORD_VERSION,
            id: format!("key_{}", random_hex(8)),
            team,
            name: name.to_owned(),
            admin,
            sha256: hex(&d),
            prefix: secret.chars().take(8).collect(),
            created_at_ms: now_ms(),
        };
        let mut map = self.by_digest.write().unwrap();
        if map.len() >= MAX_KEYS {
            return Err(NodeError::OutOfRange {
                field: "keys",
                value: map.len().to_string(),
                allowed: format!("at most {MAX_KEYS} keys per daemon; remove unused ones"),
            });
        }
        // Written before it is usable: a key that works was never lost by a crash.
        self.store.put(Kind::ApiKey, &rec.id, &rec)?;
        map.insert(d, rec.clone());
        info!(key = %rec.id, team = %rec.team, admin, "API key created");
        Ok(ApiKeyInfo { key: Some(secret), ..rec.info() })
    }

    pub fn list(&self) -> Vec<ApiKeyInfo> {
        let mut v: Vec<ApiKeyInfo> = self.by_digest.read().unwrap().values().map(KeyRecord::info).collect();
        v.sort_by(|a, b| (&a.team, &a.id).cmp(&(&b.team, &b.id)));
        v
    }

    /// Revokes a key at once: the next request that carries it is refused.
    pub fn revoke(&self, id: &str) -> Result<(), NodeError> {
        if id == BOOTSTRAP_KEY_ID {
            return Err(NodeError::Rejected {
                detail: "the bootstrap key cannot be revoked through the API; replace the data directory's api_key \
                         file and restart the daemon instead"
                    .into(),
            });
        }
        let mut map = self.by_digest.write().unwrap();
        let digest = map.iter().find(|(_, r)| r.id == id).map(|(d, _)| *d);
        let Some(d) = digest else {
            return Err(NodeError::KeyNotFound { id: id.chars().take(64).collect() });
        };
        self.store.delete(Kind::ApiKey, id)?;
        map.remove(&d);
        info!(key = %id, "API key revoked");
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn new_keys_have_the_format_e2b_sdks_check() {
        let k = super::new_secret();
        let hex = k.strip_prefix("e2b_").expect("e2b_ prefix");
        assert_eq!(hex.len(), 48);
        assert!(hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{k}");
    }

    use super::*;

    fn keys(dir: &Path) -> ApiKeys {
        let store = Arc::new(Store::open(&dir.join("state.redb")).unwrap());
        ApiKeys::open(dir, store).unwrap()
    }

    #[test]
    fn keys_are_scoped_stored_hashed_and_revocable() {
        let dir = tempfile::tempdir().unwrap();
        let boot = std::fs::read_to_string({
            let k = keys(dir.path());
            drop(k);
            bootstrap_key_path(dir.path())
        })
        .unwrap();
        let k = keys(dir.path());
        let admin = k.verify(&boot).unwrap();
        assert_eq!((admin.team.as_str(), admin.admin), ("default", true));
        let made = k.create("blue", "ci", false).unwrap();
        let secret = made.key.clone().unwrap();
        assert_eq!(k.verify(&secret).unwrap().team.as_str(), "blue");
        assert!(k.verify("wrn_nope").is_none());
        assert!(k.verify("").is_none());
        drop(k);

        // Only the digest is stored; the key works after a restart.
        let raw = std::fs::read(dir.path().join("state.redb")).unwrap();
        assert!(!raw.windows(secret.len()).any(|w| w == secret.as_bytes()));
        let k = keys(dir.path());
        assert!(!k.verify(&secret).unwrap().admin);
        assert!(k.list().iter().all(|i| i.key.is_none()));
        k.revoke(&made.id).unwrap();
        assert!(k.verify(&secret).is_none());
        assert!(matches!(k.revoke(&made.id), Err(NodeError::KeyNotFound { .. })));
        assert!(k.revoke(BOOTSTRAP_KEY_ID).is_err());
        assert!(k.create("Bad Team", "", false).is_err());
    }
}
