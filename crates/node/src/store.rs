//! The embedded state store (redb): sandboxes as versioned JSON records, written in one durable
//! transaction per change, so a crash never loses an acknowledged state.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};

const SANDBOXES: TableDefinition<&str, &[u8]> = TableDefinition::new("sandboxes_v1");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("opening the state store at {path}: {source}")]
    Open { path: String, source: redb::DatabaseError },
    #[error("state store transaction: {0}")]
    Txn(String),
    #[error("record {key} in the state store is corrupt: {source}")]
    Corrupt { key: String, source: serde_json::Error },
}

fn txn<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Txn(e.to_string())
}

pub struct Store {
    db: Database,
}

#[derive(Clone, Copy)]
pub enum Kind {
    Sandbox,
}

impl Kind {
    fn table(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            Kind::Sandbox => SANDBOXES,
        }
    }
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db =
            Database::create(path).map_err(|source| StoreError::Open { path: path.display().to_string(), source })?;
        let w = db.begin_write().map_err(txn)?;
        w.open_table(SANDBOXES).map_err(txn)?;
        w.commit().map_err(txn)?;
        Ok(Store { db })
    }

    pub fn put<T: Serialize>(&self, kind: Kind, key: &str, value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).expect("records serialize");
        let w = self.db.begin_write().map_err(txn)?;
        {
            let mut t = w.open_table(kind.table()).map_err(txn)?;
            t.insert(key, bytes.as_slice()).map_err(txn)?;
        }
        w.commit().map_err(txn)
    }

    pub fn delete(&self, kind: Kind, key: &str) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(txn)?;
        {
            let mut t = w.open_table(kind.table()).map_err(txn)?;
            t.remove(key).map_err(txn)?;
        }
        w.commit().map_err(txn)
    }

    pub fn all<T: DeserializeOwned>(&self, kind: Kind) -> Result<Vec<T>, StoreError> {
        let r = self.db.begin_read().map_err(txn)?;
        let t = r.open_table(kind.table()).map_err(txn)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(txn)? {
            let (k, v) = item.map_err(txn)?;
            let rec = serde_json::from_slice(v.value())
                .map_err(|source| StoreError::Corrupt { key: k.value().to_owned(), source })?;
            out.push(rec);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let s = Store::open(&path).unwrap();
            s.put(Kind::Sandbox, "a", &serde_json::json!({"x": 1})).unwrap();
            s.put(Kind::Sandbox, "b", &serde_json::json!({"x": 2})).unwrap();
            s.delete(Kind::Sandbox, "a").unwrap();
        }
        let s = Store::open(&path).unwrap();
        let all: Vec<serde_json::Value> = s.all(Kind::Sandbox).unwrap();
        assert_eq!(all, vec![serde_json::json!({"x": 2})]);
    }
}
