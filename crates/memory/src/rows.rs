//! The row store: records in redb, compressed, with a change log that the derived indexes
//! (full text; vectors are rebuilt from the rows) replay after a crash.
//!
//! On-disk format (version 1), one redb file:
//! - `collections_v1`: `"{owner}/{name}"` → JSON [`CollectionRow`].
//! - `rows_v1`: `(collection number, record number)` → [`encode`]d record.
//! - `changes_v1`: change number → `(collection number, record number)`, kept until the text
//!   index has committed past it.
//! - `meta_v1`: `"seq"` (the last change number), `"format"` (1).

use std::collections::BTreeMap;

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::MemoryError;
use crate::types::{CollectionSpec, Scope};

pub const COLLECTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("collections_v1");
pub const ROWS: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("rows_v1");
pub const CHANGES: TableDefinition<u64, (u32, u64)> = TableDefinition::new("changes_v1");
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta_v1");

pub const FORMAT: u64 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectionRow {
    pub number: u32,
    pub spec: CollectionSpec,
    pub created_at_ms: u64,
}

/// A record as stored (its vector apart, uncompressed: quantised codes do not compress).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StoredRow {
    pub id: String,
    pub scope: Scope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub importance: f32,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// Set when deleted (or expired); the row is purged some time later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at_ms: Option<u64>,
}

/// How a record's vector is kept.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredVector {
    None,
    /// Scale (f32) then int8 codes.
    Int8(Vec<u8>),
    /// Little-endian f32 values, then the int8 form as above.
    Float(Vec<u8>),
}

const ROW_VERSION: u8 = 1;
const ZSTD_LEVEL: i32 = 3;

/// `[version][vector kind][json length: u32 LE][zstd(json)][vector bytes]`.
pub fn encode(row: &StoredRow, vector: &StoredVector) -> Result<Vec<u8>, MemoryError> {
    let json = serde_json::to_vec(row).map_err(|e| MemoryError::Storage(e.to_string()))?;
    let packed = zstd::bulk::compress(&json, ZSTD_LEVEL)?;
    let (kind, vbytes): (u8, &[u8]) = match vector {
        StoredVector::None => (0, &[]),
        StoredVector::Int8(b) => (1, b),
        StoredVector::Float(b) => (2, b),
    };
    let mut out = Vec::with_capacity(6 + packed.len() + vbytes.len());
    out.push(ROW_VERSION);
    out.push(kind);
    out.extend_from_slice(&(packed.len() as u32).to_le_bytes());
    out.extend_from_slice(&packed);
    out.extend_from_slice(vbytes);
    Ok(out)
}

pub fn decode(bytes: &[u8]) -> Result<(StoredRow, StoredVector), MemoryError> {
    let corrupt = |why: &str| MemoryError::Storage(format!("a stored record is unreadable ({why})"));
    if bytes.len() < 6 || bytes[0] != ROW_VERSION {
        return Err(corrupt("unknown format"));
    }
    let len = u32::from_le_bytes(bytes[2..6].try_into().expect("4 bytes")) as usize;
    let packed = bytes.get(6..6 + len).ok_or_else(|| corrupt("truncated"))?;
    // Records are capped well below this (text and metadata limits).
    let json = zstd::bulk::decompress(packed, 16 * 1024 * 1024).map_err(|_| corrupt("bad compression"))?;
    let row: StoredRow = serde_json::from_slice(&json).map_err(|_| corrupt("bad fields"))?;
    let rest = bytes[6 + len..].to_vec();
    let vector = match bytes[1] {
        0 => StoredVector::None,
        1 => StoredVector::Int8(rest),
        2 => StoredVector::Float(rest),
        _ => return Err(corrupt("unknown vector kind")),
    };
    Ok((row, vector))
}

/// Reads a meta counter (0 when absent).
pub fn meta<T: ReadableTable<&'static str, u64>>(t: &T, key: &str) -> Result<u64, MemoryError> {
    Ok(t.get(key)?.map(|v| v.value()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_damage_is_reported() {
        let row = StoredRow {
            id: "r1".into(),
            scope: Scope { tenant: "t".into(), user: Some("u".into()), agent: None, app: None },
            text: Some("the cat sat on the mat ".repeat(20)),
            metadata: [("kind".to_string(), serde_json::json!("note"))].into(),
            importance: 0.5,
            created_at_ms: 1,
            updated_at_ms: 2,
            expires_at_ms: None,
            deleted_at_ms: None,
        };
        let v = StoredVector::Int8(vec![0, 0, 128, 63, 1, 2, 255]);
        let bytes = encode(&row, &v).unwrap();
        assert!(bytes.len() < 200, "repetitive text compresses: {}", bytes.len());
        assert_eq!(decode(&bytes).unwrap(), (row, v));
        assert!(decode(&bytes[..10]).is_err());
        assert!(decode(b"\x09\x00\x00\x00\x00\x00").unwrap_err().to_string().contains("unknown format"));
    }
}
