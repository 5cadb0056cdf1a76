//! The row store: records in the value log (`values.rs`), located through redb, compressed, with
//! a change log that the derived indexes (full text; vectors are rebuilt from the rows) replay
//! after a crash.
//!
//! On-disk format (version 2): one redb file and the value log's segments.
//! - `collections_v1`: `"{owner}/{name}"` → JSON [`CollectionRow`].
//! - `rows_v2`: `(collection number, record number)` → `(segment, offset, length, deleted at ms
//!   or 0)`: where the [`encode`]d record is in the value log, and whether it is deleted (a
//!   delete rewrites only this entry).
//! - `dicts_v1`: collection number → its zstd dictionary, trained on its first records.
//! - `changes_v1`: change number → `(collection number, record number)`, kept until the text
//!   index has committed past it.
//! - `meta_v1`: `"seq"` (the last change number), `"collections"`, `"format"` (2).
//!
//! Version 1 kept the encoded records in redb (`rows_v1`, same key, the bytes as value); opening
//! such a store moves them into the value log.

use std::collections::BTreeMap;

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::MemoryError;
use crate::types::{CollectionSpec, Scope};

pub const COLLECTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("collections_v1");
pub const ROWS: TableDefinition<(u32, u64), (u32, u64, u32, u64)> = TableDefinition::new("rows_v2");
/// Format 1's rows, read once to move them.
pub const ROWS_V1: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("rows_v1");
pub const DICTS: TableDefinition<u32, &[u8]> = TableDefinition::new("dicts_v1");
pub const CHANGES: TableDefinition<u64, (u32, u64)> = TableDefinition::new("changes_v1");
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta_v1");

pub const FORMAT: u64 = 2;

/// A `rows_v2` entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowEntry {
    pub ptr: crate::values::Ptr,
    /// When the record was deleted (or found expired), ms since the epoch; 0 while live.
    pub deleted_at_ms: u64,
}

impl RowEntry {
    pub fn from_value(v: (u32, u64, u32, u64)) -> RowEntry {
        RowEntry { ptr: crate::values::Ptr { segment: v.0, offset: v.1, len: v.2 }, deleted_at_ms: v.3 }
    }

    pub fn value(&self) -> (u32, u64, u32, u64) {
        (self.ptr.segment, self.ptr.offset, self.ptr.len, self.deleted_at_ms)
    }

    pub fn live(&self) -> bool {
        self.deleted_at_ms == 0
    }
}

/// A collection's compression dictionary, ready for both directions.
pub struct Dict {
    enc: zstd::dict::EncoderDictionary<'static>,
    dec: zstd::dict::DecoderDictionary<'static>,
}

/// Records in a collection before its dictionary is trained, and the dictionary's size. Small
/// JSON records share most of their bytes (field names, scope, common words): a dictionary
/// trained on the first ones roughly halves what zstd alone keeps of them.
pub const DICT_TRAIN_AT: usize = 1000;
const DICT_BYTES: usize = 16 * 1024;

impl Dict {
    pub fn new(bytes: &[u8]) -> Dict {
        Dict {
            enc: zstd::dict::EncoderDictionary::copy(bytes, ZSTD_LEVEL),
            dec: zstd::dict::DecoderDictionary::copy(bytes),
        }
    }

    /// A dictionary trained on sample records ([`row_json`]); `None` when zstd finds too little
    /// in them to build one.
    pub fn train(samples: &[Vec<u8>]) -> Option<Vec<u8>> {
        zstd::dict::from_samples(samples, DICT_BYTES).ok()
    }
}

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
    /// Format 1 only: when deleted (format 2 keeps it in the row entry, see [`RowEntry`]).
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

/// Record layout versions: the JSON compressed by zstd alone, or with the collection's dictionary.
const PLAIN: u8 = 1;
const WITH_DICT: u8 = 2;
const ZSTD_LEVEL: i32 = 3;

/// What a record's JSON is before compression (also a dictionary training sample).
pub fn row_json(row: &StoredRow) -> Vec<u8> {
    serde_json::to_vec(row).expect("a row serializes")
}

/// Encodes records of one collection, reusing one compression context (making one per record
/// cost a few percent of an ingest).
pub struct Encoder<'d> {
    compressor: zstd::bulk::Compressor<'d>,
    layout: u8,
}

impl<'d> Encoder<'d> {
    pub fn new(dict: Option<&'d Dict>) -> Result<Encoder<'d>, MemoryError> {
        Ok(match dict {
            Some(d) => {
                Encoder { compressor: zstd::bulk::Compressor::with_prepared_dictionary(&d.enc)?, layout: WITH_DICT }
            }
            None => Encoder { compressor: zstd::bulk::Compressor::new(ZSTD_LEVEL)?, layout: PLAIN },
        })
    }

    /// `[layout][vector kind][compressed length: u32 LE][zstd(json)][vector bytes]`.
    pub fn encode(&mut self, row: &StoredRow, vector: &StoredVector) -> Result<Vec<u8>, MemoryError> {
        let packed = self.compressor.compress(&row_json(row))?;
        let (kind, vbytes): (u8, &[u8]) = match vector {
            StoredVector::None => (0, &[]),
            StoredVector::Int8(b) => (1, b),
            StoredVector::Float(b) => (2, b),
        };
        let mut out = Vec::with_capacity(6 + packed.len() + vbytes.len());
        out.push(self.layout);
        out.push(kind);
        out.extend_from_slice(&(packed.len() as u32).to_le_bytes());
        out.extend_from_slice(&packed);
        out.extend_from_slice(vbytes);
        Ok(out)
    }
}

/// One record encoded on its own (see [`Encoder::encode`]), for tests.
#[cfg(test)]
pub fn encode(row: &StoredRow, vector: &StoredVector, dict: Option<&Dict>) -> Result<Vec<u8>, MemoryError> {
    Encoder::new(dict)?.encode(row, vector)
}

pub fn decode(bytes: &[u8], dict: Option<&Dict>) -> Result<(StoredRow, StoredVector), MemoryError> {
    let corrupt = |why: &str| MemoryError::Storage(format!("a stored record is unreadable ({why})"));
    if bytes.len() < 6 || !matches!(bytes[0], PLAIN | WITH_DICT) {
        return Err(corrupt("unknown format"));
    }
    let len = u32::from_le_bytes(bytes[2..6].try_into().expect("4 bytes")) as usize;
    let packed = bytes.get(6..6 + len).ok_or_else(|| corrupt("truncated"))?;
    // Records are capped well below this (text and metadata limits).
    const MAX: usize = 16 * 1024 * 1024;
    let json = match (bytes[0], dict) {
        (PLAIN, _) => zstd::bulk::decompress(packed, MAX),
        (_, Some(d)) => zstd::bulk::Decompressor::with_prepared_dictionary(&d.dec)?.decompress(packed, MAX),
        (_, None) => return Err(corrupt("compressed with a dictionary the collection does not have")),
    }
    .map_err(|_| corrupt("bad compression"))?;
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
        let bytes = encode(&row, &v, None).unwrap();
        assert!(bytes.len() < 200, "repetitive text compresses: {}", bytes.len());
        assert_eq!(decode(&bytes, None).unwrap(), (row.clone(), v.clone()));
        assert!(decode(&bytes[..10], None).is_err());
        assert!(decode(b"\x09\x00\x00\x00\x00\x00", None).unwrap_err().to_string().contains("unknown format"));

        // With a dictionary trained on similar records: smaller, and unreadable without it.
        let samples: Vec<Vec<u8>> = (0..500)
            .map(|i| {
                let mut r = row.clone();
                r.id = format!("note-{i}");
                r.text = Some(format!("user {i} asked about the weather in city number {}", i * 7));
                row_json(&r)
            })
            .collect();
        let dict = Dict::new(&Dict::train(&samples).expect("enough samples"));
        let mut r = row.clone();
        r.text = Some("user 9999 asked about the weather in city number 12".into());
        let plain = encode(&r, &StoredVector::None, None).unwrap();
        let packed = encode(&r, &StoredVector::None, Some(&dict)).unwrap();
        assert!(packed.len() * 3 < plain.len() * 2, "{} vs {}", packed.len(), plain.len());
        assert_eq!(decode(&packed, Some(&dict)).unwrap().0, r);
        assert!(decode(&packed, None).unwrap_err().to_string().contains("dictionary"));
        assert!(Dict::train(&samples[..2]).is_none(), "two samples train nothing");
    }
}
