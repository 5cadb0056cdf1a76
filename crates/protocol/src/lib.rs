//! The sandbox protocol. Warren's agent speaks E2B's envd protocol so that every E2B SDK works
//! unchanged: Connect RPC over HTTP/1.1 for `process.Process` and `filesystem.Filesystem`, with the
//! JSON codec (proto3 JSON mapping: lowerCamelCase names, enums by name, bytes as base64, 64-bit
//! integers as strings) and the protobuf codec (`proto.rs` transcodes), and enveloped streams.

pub mod connect;
pub mod filesystem;
pub mod process;
pub mod proto;

/// Serde helpers for proto3 JSON scalar mappings.
pub mod pbjson {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    /// `bytes` fields: standard base64 (URL-safe accepted on input, as protojson does).
    pub mod bytes {
        use super::*;
        pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            let s = Option::<String>::deserialize(d)?.unwrap_or_default();
            let cleaned = s.trim_end_matches('=').replace('-', "+").replace('_', "/");
            base64::engine::general_purpose::STANDARD_NO_PAD.decode(cleaned).map_err(serde::de::Error::custom)
        }
    }

    /// `int64`/`uint64` fields: written as strings, read from strings or numbers.
    pub mod int64 {
        use super::*;
        pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&v.to_string())
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
            #[derive(Deserialize)]
            #[serde(untagged)]
            enum N {
                S(String),
                I(i64),
            }
            match Option::<N>::deserialize(d)? {
                None => Ok(0),
                Some(N::I(i)) => Ok(i),
                Some(N::S(s)) => s.parse().map_err(serde::de::Error::custom),
            }
        }
    }
}
