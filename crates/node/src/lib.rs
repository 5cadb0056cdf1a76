//! The node engine. It owns every sandbox on this host (invariant 2): the HTTP layer sends it
//! [`engine::Command`]-style calls and gets typed errors back; it drives a [`warren_runtime::Runtime`]
//! and persists every state change in the [`store`] before acknowledging it (invariant 3).

pub mod addresses;
pub mod agent_client;
pub mod egress;
pub mod engine;
pub mod error;
pub mod events;
pub mod fork;
pub mod host;
pub mod keys;
pub mod lifecycle;
pub mod pools;
pub mod snapshots;
pub mod store;
pub mod telemetry;
pub mod template_images;
pub mod templates;
pub mod timeline;

pub use engine::{CreateRequest, Engine};
pub use error::NodeError;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// RFC 3339 text of a Unix-milliseconds instant.
pub fn rfc3339(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Milliseconds since the epoch of an RFC 3339 time, if it is one (and not before the epoch).
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Random bytes as lowercase hex (API keys, access tokens).
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::getrandom(&mut b).expect("the kernel's random source");
    b.iter().map(|x| format!("{x:02x}")).collect()
}
