//! The embedded state store (redb): sandboxes as versioned JSON records, written in one durable
//! transaction per change, so a crash never loses an acknowledged state. The sandbox log lives in
//! the same database, so a state change and the log line describing it commit together.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};

use crate::events::LogEntry;

const SANDBOXES: TableDefinition<&str, &[u8]> = TableDefinition::new("sandboxes_v1");
const POOLS: TableDefinition<&str, &[u8]> = TableDefinition::new("pools_v1");
/// Key id → JSON key record (the key's SHA-256, never the key itself).
const API_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_keys_v1");
/// Snapshot id → JSON snapshot record (root template and frozen layers).
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots_v1");
/// "template@runtime" → JSON template memory image record (frozen layer and image of a warmed-up
/// sandbox of the template).
const TEMPLATE_IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("template_images_v1");
/// (sandbox id, sequence) → JSON [`LogEntry`]. The sequence is the entry's time in microseconds,
/// bumped past the previous one, so a range over one sandbox reads its log in order.
const LOG: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("sandbox_log_v1");

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

/// Readable records with their keys, and the keys of unreadable ones.
pub type Readable<T> = (Vec<(String, T)>, Vec<String>);

pub struct Store {
    db: Database,
    /// Last log sequence handed out (keeps sequences unique within this process).
    last_seq: AtomicU64,
}

/// One change in a [`Store::write`] transaction.
pub enum Op<'a> {
    Put { kind: Kind, key: &'a str, value: Vec<u8> },
    Delete { kind: Kind, key: &'a str },
    Log { sandbox: &'a str, entry: &'a LogEntry },
}

impl<'a> Op<'a> {
    pub fn put<T: Serialize>(kind: Kind, key: &'a str, value: &T) -> Self {
        Op::Put { kind, key, value: serde_json::to_vec(value).expect("records serialize") }
    }
}

#[derive(Clone, Copy)]
pub enum Kind {
    Sandbox,
    Pool,
    ApiKey,
    Snapshot,
    TemplateImage,
}

impl Kind {
    fn table(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            Kind::Sandbox => SANDBOXES,
            Kind::Pool => POOLS,
            Kind::ApiKey => API_KEYS,
            Kind::Snapshot => SNAPSHOTS,
            Kind::TemplateImage => TEMPLATE_IMAGES,
        }
    }
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db =
            Database::create(path).map_err(|source| StoreError::Open { path: path.display().to_string(), source })?;
        let w = db.begin_write().map_err(txn)?;
        w.open_table(SANDBOXES).map_err(txn)?;
        w.open_table(POOLS).map_err(txn)?;
        w.open_table(API_KEYS).map_err(txn)?;
        w.open_table(SNAPSHOTS).map_err(txn)?;
        w.open_table(TEMPLATE_IMAGES).map_err(txn)?;
        w.open_table(LOG).map_err(txn)?;
        w.commit().map_err(txn)?;
        Ok(Store { db, last_seq: AtomicU64::new(0) })
    }

    pub fn put<T: Serialize>(&self, kind: Kind, key: &str, value: &T) -> Result<(), StoreError> {
        self.write(vec![Op::put(kind, key, value)])
    }

    pub fn delete(&self, kind: Kind, key: &str) -> Result<(), StoreError> {
        self.write(vec![Op::Delete { kind, key }])
    }

    /// Applies every change in one durable transaction: all or none.
    pub fn write(&self, ops: Vec<Op<'_>>) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(txn)?;
        {
            let mut sandboxes = w.open_table(SANDBOXES).map_err(txn)?;
            let mut pools = w.open_table(POOLS).map_err(txn)?;
            let mut keys = w.open_table(API_KEYS).map_err(txn)?;
            let mut snapshots = w.open_table(SNAPSHOTS).map_err(txn)?;
            let mut template_images = w.open_table(TEMPLATE_IMAGES).map_err(txn)?;
            let mut log = w.open_table(LOG).map_err(txn)?;
            for op in ops {
                match op {
                    Op::Put { kind, key, value } => {
                        let t = match kind {
                            Kind::Sandbox => &mut sandboxes,
                            Kind::Pool => &mut pools,
                            Kind::ApiKey => &mut keys,
                            Kind::Snapshot => &mut snapshots,
                            Kind::TemplateImage => &mut template_images,
                        };
                        t.insert(key, value.as_slice()).map_err(txn)?;
                    }
                    Op::Delete { kind, key } => {
                        let t = match kind {
                            Kind::Sandbox => &mut sandboxes,
                            Kind::Pool => &mut pools,
                            Kind::ApiKey => &mut keys,
                            Kind::Snapshot => &mut snapshots,
                            Kind::TemplateImage => &mut template_images,
                        };
                        t.remove(key).map_err(txn)?;
                    }
                    Op::Log { sandbox, entry } => {
                        let bytes = serde_json::to_vec(entry).expect("log entries serialize");
                        let mut seq = self.next_seq(entry.at_ms);
                        // A sequence from a previous run can be ahead of the clock: never overwrite it.
                        while log.get((sandbox, seq)).map_err(txn)?.is_some() {
                            seq = self.next_seq(entry.at_ms);
                        }
                        log.insert((sandbox, seq), bytes.as_slice()).map_err(txn)?;
                    }
                }
            }
        }
        w.commit().map_err(txn)
    }

    fn next_seq(&self, at_ms: u64) -> u64 {
        let want = at_ms.saturating_mul(1000);
        let prev = self.last_seq.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| Some(want.max(l + 1))).unwrap();
        want.max(prev + 1)
    }

    /// The sandbox's log entries from `from_ms` on (oldest first), or up to `to_ms` (newest first)
    /// when `backward`; at most `limit`, keeping those that pass `keep`.
    pub fn read_log(
        &self,
        sandbox: &str,
        cursor_ms: u64,
        backward: bool,
        limit: usize,
        keep: impl Fn(&LogEntry) -> bool,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let r = self.db.begin_read().map_err(txn)?;
        let t = r.open_table(LOG).map_err(txn)?;
        let cursor = cursor_ms.saturating_mul(1000);
        let mut range = if backward {
            t.range((sandbox, 0)..=(sandbox, cursor.saturating_add(999))).map_err(txn)?
        } else {
            t.range((sandbox, cursor)..=(sandbox, u64::MAX)).map_err(txn)?
        };
        let mut out = Vec::new();
        loop {
            let item = if backward { range.next_back() } else { range.next() };
            let Some(item) = item else { break };
            let (k, v) = item.map_err(txn)?;
            let entry: LogEntry = serde_json::from_slice(v.value())
                .map_err(|source| StoreError::Corrupt { key: format!("{}/{}", k.value().0, k.value().1), source })?;
            if keep(&entry) {
                out.push(entry);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Whether any log entry of the sandbox is kept.
    pub fn has_log(&self, sandbox: &str) -> Result<bool, StoreError> {
        let r = self.db.begin_read().map_err(txn)?;
        let t = r.open_table(LOG).map_err(txn)?;
        let mut range = t.range((sandbox, 0)..=(sandbox, u64::MAX)).map_err(txn)?;
        Ok(range.next().is_some())
    }

    /// Deletes the log of every sandbox not in `live` whose newest entry is older than
    /// `before_ms`. Returns how many sandboxes' logs went.
    pub fn prune_logs(&self, before_ms: u64, live: &dyn Fn(&str) -> bool) -> Result<usize, StoreError> {
        let mut stale: Vec<String> = Vec::new();
        {
            let r = self.db.begin_read().map_err(txn)?;
            let t = r.open_table(LOG).map_err(txn)?;
            let mut newest: Option<(String, u64)> = None;
            for item in t.iter().map_err(txn)? {
                let (k, _) = item.map_err(txn)?;
                let (id, seq) = k.value();
                match &mut newest {
                    Some((cur, s)) if cur == id => *s = seq,
                    _ => {
                        if let Some((cur, s)) = newest.take() {
                            if s / 1000 < before_ms && !live(&cur) {
                                stale.push(cur);
                            }
                        }
                        newest = Some((id.to_owned(), seq));
                    }
                }
            }
            if let Some((cur, s)) = newest {
                if s / 1000 < before_ms && !live(&cur) {
                    stale.push(cur);
                }
            }
        }
        if stale.is_empty() {
            return Ok(0);
        }
        let w = self.db.begin_write().map_err(txn)?;
        {
            let mut t = w.open_table(LOG).map_err(txn)?;
            for id in &stale {
                t.retain_in((id.as_str(), 0)..=(id.as_str(), u64::MAX), |_, _| false).map_err(txn)?;
            }
        }
        w.commit().map_err(txn)?;
        Ok(stale.len())
    }

    pub fn all<T: DeserializeOwned>(&self, kind: Kind) -> Result<Vec<T>, StoreError> {
        Ok(self.all_keyed(kind)?.into_iter().map(|(_, v)| v).collect())
    }

    /// Every readable record of a kind with its key. An unreadable one (damaged, or written by a
    /// newer Warren) is left in the store untouched and reported, so one bad record neither stops
    /// the daemon nor gets overwritten.
    pub fn all_keyed<T: DeserializeOwned>(&self, kind: Kind) -> Result<Vec<(String, T)>, StoreError> {
        Ok(self.all_readable(kind)?.0)
    }

    /// Like [`Store::all_keyed`], with the keys of the records that could not be read.
    pub fn all_readable<T: DeserializeOwned>(&self, kind: Kind) -> Result<Readable<T>, StoreError> {
        let r = self.db.begin_read().map_err(txn)?;
        let t = r.open_table(kind.table()).map_err(txn)?;
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for item in t.iter().map_err(txn)? {
            let (k, v) = item.map_err(txn)?;
            match serde_json::from_slice(v.value()) {
                Ok(rec) => out.push((k.value().to_owned(), rec)),
                Err(e) => {
                    let key = k.value().to_owned();
                    tracing::warn!(key = %key, error = %e, "skipping an unreadable record (left in the store as it is)");
                    bad.push(key);
                }
            }
        }
        Ok((out, bad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_record_is_skipped_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.redb")).unwrap();
        store.put(Kind::Snapshot, "good", &serde_json::json!({"n": 1})).unwrap();
        store.write(vec![Op::Put { kind: Kind::Snapshot, key: "bad", value: b"{not json".to_vec() }]).unwrap();
        let (ok, bad) = store.all_readable::<serde_json::Value>(Kind::Snapshot).unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(bad, vec!["bad".to_owned()]);
        // Still there for someone to look at.
        assert_eq!(store.all_readable::<serde_json::Value>(Kind::Snapshot).unwrap().1, vec!["bad".to_owned()]);
    }

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

    #[test]
    fn log_reads_in_order_both_ways_and_prunes_ended_sandboxes() {
        use crate::events::{Level, LogEntry};
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("state.redb")).unwrap();
        // Two entries in one millisecond keep their order; another sandbox's entries stay apart.
        let entries: Vec<LogEntry> = [(1000, "a"), (1000, "b"), (2000, "c")]
            .iter()
            .map(|(t, m)| LogEntry::warren(*t, Level::Info, *m, &[]))
            .collect();
        let other = LogEntry::warren(1500, Level::Info, "other", &[]);
        s.write(entries.iter().map(|e| Op::Log { sandbox: "x", entry: e }).collect()).unwrap();
        s.write(vec![Op::Log { sandbox: "y", entry: &other }]).unwrap();
        let msgs = |v: Vec<LogEntry>| v.into_iter().map(|e| e.message).collect::<Vec<_>>();
        assert_eq!(msgs(s.read_log("x", 0, false, 10, |_| true).unwrap()), ["a", "b", "c"]);
        assert_eq!(msgs(s.read_log("x", 1001, false, 10, |_| true).unwrap()), ["c"]);
        assert_eq!(msgs(s.read_log("x", 1000, true, 10, |_| true).unwrap()), ["b", "a"]);
        assert_eq!(msgs(s.read_log("x", u64::MAX / 1000, true, 1, |_| true).unwrap()), ["c"]);
        assert_eq!(msgs(s.read_log("x", 0, false, 10, |e| e.message != "b").unwrap()), ["a", "c"]);
        // "x" is live and "y" ended long ago: only "y" goes.
        assert_eq!(s.prune_logs(1_000_000, &|id| id == "x").unwrap(), 1);
        assert!(s.has_log("x").unwrap() && !s.has_log("y").unwrap());
    }
}
