//! The sandbox log: lifecycle events the daemon records (in the same store transaction as the
//! state change they describe) and the lines the sandbox's agent writes, served as E2B's sandbox
//! logs. Agent lines are read from the agent's log while the sandbox lives and copied into the
//! store when it is killed, so the log outlives the sandbox for the configured retention.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s.to_ascii_lowercase().as_str() {
            "debug" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "warn" | "warning" => Some(Level::Warn),
            "error" => Some(Level::Error),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    pub at_ms: u64,
    pub level: Level,
    pub message: String,
    /// Structured context; `source` is `warren` (the daemon) or `agent` (written inside the sandbox).
    pub fields: BTreeMap<String, String>,
}

impl LogEntry {
    /// A line recorded by the daemon.
    pub fn warren(at_ms: u64, level: Level, message: impl Into<String>, fields: &[(&str, String)]) -> LogEntry {
        let mut f: BTreeMap<String, String> = fields.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        f.insert("source".into(), "warren".into());
        LogEntry { at_ms, level, message: message.into(), fields: f }
    }
}

/// Longest agent line kept; the agent log is written from inside the sandbox and is not trusted.
const MAX_LINE: usize = 4096;

/// Parses the tail of an agent log (`<unix seconds.millis> <level> <message>` per line). Lines that
/// do not parse are kept as they are, stamped `fallback_ms`; a partial first line (the tail cut
/// it) is dropped.
pub fn parse_agent_log(tail: &[u8], cut: bool, fallback_ms: u64) -> Vec<LogEntry> {
    let text = String::from_utf8_lossy(tail);
    let mut lines = text.split('\n');
    if cut {
        lines.next();
    }
    let mut out = Vec::new();
    for line in lines {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let mut line = line.to_owned();
        if line.len() > MAX_LINE {
            let mut end = MAX_LINE;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
        }
        let mut parts = line.splitn(3, ' ');
        let ts = parts.next().and_then(|t| t.parse::<f64>().ok()).filter(|t| t.is_finite() && *t >= 0.0);
        let level = parts.next().and_then(Level::parse);
        let fields = BTreeMap::from([("source".to_owned(), "agent".to_owned())]);
        let entry = match (ts, level, parts.next()) {
            (Some(ts), Some(level), Some(msg)) => {
                LogEntry { at_ms: (ts * 1000.0) as u64, level, message: msg.to_owned(), fields }
            }
            _ => LogEntry { at_ms: fallback_ms, level: Level::Info, message: line, fields },
        };
        out.push(entry);
    }
    out
}

/// What a log reader asks for.
#[derive(Debug, Clone)]
pub struct LogQuery {
    /// Milliseconds since the epoch: the first instant read going forward, the last going backward.
    pub cursor_ms: Option<u64>,
    pub backward: bool,
    pub limit: usize,
    /// Lowest level returned.
    pub min_level: Level,
    /// Only entries whose message contains this text.
    pub search: Option<String>,
}

impl LogQuery {
    pub fn keeps(&self, e: &LogEntry) -> bool {
        e.level >= self.min_level && self.search.as_deref().is_none_or(|s| e.message.contains(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_lines_parse_and_garbage_is_kept_verbatim() {
        let tail =
            b"ial line\n1700000000.250 info warren-agent: agent ready\nnot a log line\n\n1700000001.000 warn x y\n";
        let got = parse_agent_log(tail, true, 42);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].at_ms, 1_700_000_000_250);
        assert_eq!(got[0].level, Level::Info);
        assert_eq!(got[0].message, "warren-agent: agent ready");
        assert_eq!((got[1].at_ms, got[1].message.as_str()), (42, "not a log line"));
        assert_eq!((got[2].level, got[2].message.as_str()), (Level::Warn, "x y"));
        assert!(got.iter().all(|e| e.fields["source"] == "agent"));
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        let line = "é".repeat(MAX_LINE);
        let got = parse_agent_log(line.as_bytes(), false, 1);
        assert!(got[0].message.len() <= MAX_LINE && got[0].message.starts_with('é'));
    }

    #[test]
    fn query_filters_by_level_and_text() {
        let q = LogQuery {
            cursor_ms: None,
            backward: false,
            limit: 10,
            min_level: Level::Warn,
            search: Some("disk".into()),
        };
        let e = |level, m: &str| LogEntry::warren(1, level, m, &[]);
        assert!(q.keeps(&e(Level::Error, "disk full")));
        assert!(!q.keeps(&e(Level::Info, "disk full")));
        assert!(!q.keeps(&e(Level::Error, "memory")));
    }
}
