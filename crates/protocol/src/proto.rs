//! The protobuf codec of the sandbox protocol. Messages are described once, as data ([`MESSAGES`],
//! field numbers and names from E2B's `process.proto` and `filesystem.proto`), and transcoded
//! between the protobuf wire format and their proto3-JSON form, so the agent keeps a single set of
//! typed messages (the JSON ones) and serves both codecs.

use base64::Engine;
use serde_json::{Map, Number, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Str,
    Bytes,
    Bool,
    U32,
    I64,
    S32,
    Enum(&'static [(&'static str, i32)]),
    Msg(&'static str),
    /// `map<string, string>`.
    Map,
    /// `google.protobuf.Timestamp` (RFC 3339 in JSON).
    Timestamp,
}

#[derive(Debug)]
pub struct Field {
    pub num: u32,
    pub json: &'static str,
    pub ty: Ty,
    pub repeated: bool,
}

const fn f(num: u32, json: &'static str, ty: Ty) -> Field {
    Field { num, json, ty, repeated: false }
}

const fn rep(num: u32, json: &'static str, ty: Ty) -> Field {
    Field { num, json, ty, repeated: true }
}

const SIGNAL: &[(&str, i32)] = &[("SIGNAL_UNSPECIFIED", 0), ("SIGNAL_SIGTERM", 15), ("SIGNAL_SIGKILL", 9)];
const FILE_TYPE: &[(&str, i32)] =
    &[("FILE_TYPE_UNSPECIFIED", 0), ("FILE_TYPE_FILE", 1), ("FILE_TYPE_DIRECTORY", 2), ("FILE_TYPE_SYMLINK", 3)];
const EVENT_TYPE: &[(&str, i32)] = &[
    ("EVENT_TYPE_UNSPECIFIED", 0),
    ("EVENT_TYPE_CREATE", 1),
    ("EVENT_TYPE_WRITE", 2),
    ("EVENT_TYPE_REMOVE", 3),
    ("EVENT_TYPE_RENAME", 4),
    ("EVENT_TYPE_CHMOD", 5),
];

use Ty::*;

/// Every message of the protocol (oneof members are plain optional fields: at most one is set).
pub static MESSAGES: &[(&str, &[Field])] = &[
    ("process.PTY", &[f(1, "size", Msg("process.PTY.Size"))]),
    ("process.PTY.Size", &[f(1, "cols", U32), f(2, "rows", U32)]),
    ("process.ProcessConfig", &[f(1, "cmd", Str), rep(2, "args", Str), f(3, "envs", Map), f(4, "cwd", Str)]),
    ("process.ListRequest", &[]),
    ("process.ProcessInfo", &[f(1, "config", Msg("process.ProcessConfig")), f(2, "pid", U32), f(3, "tag", Str)]),
    ("process.ListResponse", &[rep(1, "processes", Msg("process.ProcessInfo"))]),
    (
        "process.StartRequest",
        &[
            f(1, "process", Msg("process.ProcessConfig")),
            f(2, "pty", Msg("process.PTY")),
            f(3, "tag", Str),
            f(4, "stdin", Bool),
        ],
    ),
    ("process.UpdateRequest", &[f(1, "process", Msg("process.ProcessSelector")), f(2, "pty", Msg("process.PTY"))]),
    ("process.UpdateResponse", &[]),
    (
        "process.ProcessEvent",
        &[
            f(1, "start", Msg("process.ProcessEvent.StartEvent")),
            f(2, "data", Msg("process.ProcessEvent.DataEvent")),
            f(3, "end", Msg("process.ProcessEvent.EndEvent")),
            f(4, "keepalive", Msg("process.Empty")),
        ],
    ),
    ("process.ProcessEvent.StartEvent", &[f(1, "pid", U32)]),
    ("process.ProcessEvent.DataEvent", &[f(1, "stdout", Bytes), f(2, "stderr", Bytes), f(3, "pty", Bytes)]),
    (
        "process.ProcessEvent.EndEvent",
        &[f(1, "exitCode", S32), f(2, "exited", Bool), f(3, "status", Str), f(4, "error", Str)],
    ),
    ("process.StartResponse", &[f(1, "event", Msg("process.ProcessEvent"))]),
    ("process.ConnectResponse", &[f(1, "event", Msg("process.ProcessEvent"))]),
    (
        "process.SendInputRequest",
        &[f(1, "process", Msg("process.ProcessSelector")), f(2, "input", Msg("process.ProcessInput"))],
    ),
    ("process.SendInputResponse", &[]),
    ("process.ProcessInput", &[f(1, "stdin", Bytes), f(2, "pty", Bytes)]),
    (
        "process.StreamInputRequest",
        &[
            f(1, "start", Msg("process.StreamInputRequest.StartEvent")),
            f(2, "data", Msg("process.StreamInputRequest.DataEvent")),
            f(3, "keepalive", Msg("process.Empty")),
        ],
    ),
    ("process.StreamInputRequest.StartEvent", &[f(1, "process", Msg("process.ProcessSelector"))]),
    ("process.StreamInputRequest.DataEvent", &[f(2, "input", Msg("process.ProcessInput"))]),
    ("process.StreamInputResponse", &[]),
    ("process.SendSignalRequest", &[f(1, "process", Msg("process.ProcessSelector")), f(2, "signal", Enum(SIGNAL))]),
    ("process.SendSignalResponse", &[]),
    ("process.CloseStdinRequest", &[f(1, "process", Msg("process.ProcessSelector"))]),
    ("process.CloseStdinResponse", &[]),
    ("process.ConnectRequest", &[f(1, "process", Msg("process.ProcessSelector"))]),
    ("process.ProcessSelector", &[f(1, "pid", U32), f(2, "tag", Str)]),
    ("process.Empty", &[]),
    ("filesystem.MoveRequest", &[f(1, "source", Str), f(2, "destination", Str)]),
    ("filesystem.EntryResponse", &[f(1, "entry", Msg("filesystem.EntryInfo"))]),
    ("filesystem.PathRequest", &[f(1, "path", Str)]),
    ("filesystem.Empty", &[]),
    (
        "filesystem.EntryInfo",
        &[
            f(1, "name", Str),
            f(2, "type", Enum(FILE_TYPE)),
            f(3, "path", Str),
            f(4, "size", I64),
            f(5, "mode", U32),
            f(6, "permissions", Str),
            f(7, "owner", Str),
            f(8, "group", Str),
            f(9, "modifiedTime", Timestamp),
            f(10, "symlinkTarget", Str),
            f(11, "metadata", Map),
            f(12, "isSymlink", Bool),
        ],
    ),
    ("filesystem.ListDirRequest", &[f(1, "path", Str), f(2, "depth", U32)]),
    ("filesystem.ListDirResponse", &[rep(1, "entries", Msg("filesystem.EntryInfo"))]),
    (
        "filesystem.WatchDirRequest",
        &[f(1, "path", Str), f(2, "recursive", Bool), f(3, "includeEntry", Bool), f(4, "allowNetworkMounts", Bool)],
    ),
    (
        "filesystem.FilesystemEvent",
        &[f(1, "name", Str), f(2, "type", Enum(EVENT_TYPE)), f(3, "entry", Msg("filesystem.EntryInfo"))],
    ),
    (
        "filesystem.WatchDirResponse",
        &[
            f(1, "start", Msg("filesystem.Empty")),
            f(2, "filesystem", Msg("filesystem.FilesystemEvent")),
            f(3, "keepalive", Msg("filesystem.Empty")),
        ],
    ),
    ("filesystem.CreateWatcherResponse", &[f(1, "watcherId", Str)]),
    ("filesystem.WatcherIdRequest", &[f(1, "watcherId", Str)]),
    ("filesystem.GetWatcherEventsResponse", &[rep(1, "events", Msg("filesystem.FilesystemEvent"))]),
];

/// (request message, response message) of each method, by `/<service>/<method>`.
pub fn method_types(service: &str, method: &str) -> Option<(&'static str, &'static str)> {
    Some(match (service, method) {
        ("process.Process", "List") => ("process.ListRequest", "process.ListResponse"),
        ("process.Process", "Connect") => ("process.ConnectRequest", "process.ConnectResponse"),
        ("process.Process", "Start") => ("process.StartRequest", "process.StartResponse"),
        ("process.Process", "Update") => ("process.UpdateRequest", "process.UpdateResponse"),
        ("process.Process", "StreamInput") => ("process.StreamInputRequest", "process.StreamInputResponse"),
        ("process.Process", "SendInput") => ("process.SendInputRequest", "process.SendInputResponse"),
        ("process.Process", "SendSignal") => ("process.SendSignalRequest", "process.SendSignalResponse"),
        ("process.Process", "CloseStdin") => ("process.CloseStdinRequest", "process.CloseStdinResponse"),
        ("filesystem.Filesystem", "Stat" | "MakeDir") => ("filesystem.PathRequest", "filesystem.EntryResponse"),
        ("filesystem.Filesystem", "Move") => ("filesystem.MoveRequest", "filesystem.EntryResponse"),
        ("filesystem.Filesystem", "ListDir") => ("filesystem.ListDirRequest", "filesystem.ListDirResponse"),
        ("filesystem.Filesystem", "Remove") => ("filesystem.PathRequest", "filesystem.Empty"),
        ("filesystem.Filesystem", "WatchDir") => ("filesystem.WatchDirRequest", "filesystem.WatchDirResponse"),
        ("filesystem.Filesystem", "CreateWatcher") => {
            ("filesystem.WatchDirRequest", "filesystem.CreateWatcherResponse")
        }
        ("filesystem.Filesystem", "GetWatcherEvents") => {
            ("filesystem.WatcherIdRequest", "filesystem.GetWatcherEventsResponse")
        }
        ("filesystem.Filesystem", "RemoveWatcher") => ("filesystem.WatcherIdRequest", "filesystem.Empty"),
        _ => return None,
    })
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("unknown protobuf message {0}")]
    UnknownMessage(String),
    #[error("truncated protobuf message")]
    Truncated,
    #[error("field {field} has wire type {wire}, expected {expected}")]
    WireType { field: String, wire: u8, expected: u8 },
    #[error("field {field}: {reason}")]
    Value { field: String, reason: String },
    #[error("protobuf messages nest deeper than {0} levels")]
    TooDeep(usize),
}

const MAX_DEPTH: usize = 32;

fn fields(name: &str) -> Result<&'static [Field], ProtoError> {
    MESSAGES.iter().find(|(n, _)| *n == name).map(|(_, f)| *f).ok_or_else(|| ProtoError::UnknownMessage(name.into()))
}

fn read_varint(buf: &mut &[u8]) -> Result<u64, ProtoError> {
    let mut v = 0u64;
    for shift in (0..70).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or(ProtoError::Truncated)?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(ProtoError::Truncated)
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], ProtoError> {
    if buf.len() < n {
        return Err(ProtoError::Truncated);
    }
    let (a, b) = buf.split_at(n);
    *buf = b;
    Ok(a)
}

fn rfc3339(secs: i64, nanos: i64) -> Value {
    let t = time::OffsetDateTime::from_unix_timestamp(secs).ok().map(|t| t + time::Duration::nanoseconds(nanos));
    t.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .map(Value::String)
        .unwrap_or(Value::Null)
}

/// Protobuf bytes of message `name` → its proto3-JSON value.
pub fn decode(name: &str, bytes: &[u8]) -> Result<Value, ProtoError> {
    decode_depth(name, bytes, 0)
}

fn decode_depth(name: &str, mut buf: &[u8], depth: usize) -> Result<Value, ProtoError> {
    if depth > MAX_DEPTH {
        return Err(ProtoError::TooDeep(MAX_DEPTH));
    }
    let fs = fields(name)?;
    let mut obj = Map::new();
    while !buf.is_empty() {
        let key = read_varint(&mut buf)?;
        let (num, wire) = ((key >> 3) as u32, (key & 7) as u8);
        let Some(field) = fs.iter().find(|f| f.num == num) else {
            // Unknown fields are skipped, as protobuf requires.
            match wire {
                0 => {
                    read_varint(&mut buf)?;
                }
                1 => {
                    take(&mut buf, 8)?;
                }
                2 => {
                    let n = read_varint(&mut buf)? as usize;
                    take(&mut buf, n)?;
                }
                5 => {
                    take(&mut buf, 4)?;
                }
                _ => return Err(ProtoError::WireType { field: num.to_string(), wire, expected: 2 }),
            }
            continue;
        };
        let want = match field.ty {
            Bool | U32 | I64 | S32 | Enum(_) => 0,
            _ => 2,
        };
        if wire != want {
            return Err(ProtoError::WireType { field: field.json.into(), wire, expected: want });
        }
        let value = if want == 0 {
            let v = read_varint(&mut buf)?;
            match field.ty {
                Bool => Value::Bool(v != 0),
                U32 => Value::Number(Number::from(v as u32)),
                I64 => Value::String((v as i64).to_string()),
                S32 => Value::Number(Number::from(((v >> 1) as i32) ^ -((v & 1) as i32))),
                Enum(values) => {
                    let n = v as i32;
                    values
                        .iter()
                        .find(|(_, x)| *x == n)
                        .map(|(s, _)| Value::String((*s).into()))
                        .unwrap_or(Value::from(n))
                }
                _ => unreachable!("varint types only"),
            }
        } else {
            let n = read_varint(&mut buf)? as usize;
            let data = take(&mut buf, n)?;
            match field.ty {
                Str => Value::String(
                    String::from_utf8(data.to_vec())
                        .map_err(|_| ProtoError::Value { field: field.json.into(), reason: "not UTF-8".into() })?,
                ),
                Bytes => Value::String(base64::engine::general_purpose::STANDARD.encode(data)),
                Msg(m) => decode_depth(m, data, depth + 1)?,
                Timestamp => {
                    let mut d = data;
                    let (mut secs, mut nanos) = (0i64, 0i64);
                    while !d.is_empty() {
                        let k = read_varint(&mut d)?;
                        let v = read_varint(&mut d)?;
                        match k >> 3 {
                            1 => secs = v as i64,
                            2 => nanos = v as i32 as i64,
                            _ => {}
                        }
                    }
                    rfc3339(secs, nanos)
                }
                Map => {
                    let mut d = data;
                    let (mut k, mut v) = (String::new(), String::new());
                    while !d.is_empty() {
                        let key = read_varint(&mut d)?;
                        let len = read_varint(&mut d)? as usize;
                        let s = String::from_utf8(take(&mut d, len)?.to_vec()).unwrap_or_default();
                        if key >> 3 == 1 {
                            k = s;
                        } else {
                            v = s;
                        }
                    }
                    let entry = obj.entry(field.json).or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(m) = entry {
                        m.insert(k, Value::String(v));
                    }
                    continue;
                }
                _ => unreachable!("length-delimited types only"),
            }
        };
        if field.repeated {
            let entry = obj.entry(field.json).or_insert_with(|| Value::Array(vec![]));
            if let Value::Array(a) = entry {
                a.push(value);
            }
        } else {
            obj.insert(field.json.into(), value);
        }
    }
    Ok(Value::Object(obj))
}

/// A proto3-JSON value of message `name` → protobuf bytes.
pub fn encode(name: &str, value: &Value) -> Result<Vec<u8>, ProtoError> {
    let mut out = Vec::new();
    encode_into(name, value, &mut out, 0)?;
    Ok(out)
}

fn bad(field: &Field, reason: &str) -> ProtoError {
    ProtoError::Value { field: field.json.into(), reason: reason.into() }
}

fn encode_into(name: &str, value: &Value, out: &mut Vec<u8>, depth: usize) -> Result<(), ProtoError> {
    if depth > MAX_DEPTH {
        return Err(ProtoError::TooDeep(MAX_DEPTH));
    }
    let fs = fields(name)?;
    let Some(obj) = value.as_object() else {
        return if value.is_null() {
            Ok(())
        } else {
            Err(ProtoError::Value { field: name.into(), reason: "not an object".into() })
        };
    };
    for field in fs {
        let Some(v) = obj.get(field.json) else { continue };
        if v.is_null() {
            continue;
        }
        let items: Vec<&Value> = match (field.repeated, v) {
            (true, Value::Array(a)) => a.iter().collect(),
            (true, _) => return Err(bad(field, "expected an array")),
            (false, v) => vec![v],
        };
        for item in items {
            encode_field(field, item, out, depth)?;
        }
    }
    Ok(())
}

fn encode_field(field: &Field, v: &Value, out: &mut Vec<u8>, depth: usize) -> Result<(), ProtoError> {
    let varint = |out: &mut Vec<u8>, x: u64| {
        write_varint(out, u64::from(field.num) << 3);
        write_varint(out, x);
    };
    let delimited = |out: &mut Vec<u8>, data: &[u8]| {
        write_varint(out, (u64::from(field.num) << 3) | 2);
        write_varint(out, data.len() as u64);
        out.extend_from_slice(data);
    };
    match field.ty {
        Bool => varint(out, v.as_bool().ok_or_else(|| bad(field, "expected a bool"))? as u64),
        U32 => varint(
            out,
            v.as_u64().filter(|x| *x <= u64::from(u32::MAX)).ok_or_else(|| bad(field, "expected a uint32"))?,
        ),
        I64 => {
            let n = match v {
                Value::String(s) => s.parse::<i64>().map_err(|_| bad(field, "expected an int64"))?,
                _ => v.as_i64().ok_or_else(|| bad(field, "expected an int64"))?,
            };
            varint(out, n as u64)
        }
        S32 => {
            let n = v.as_i64().and_then(|x| i32::try_from(x).ok()).ok_or_else(|| bad(field, "expected an int32"))?;
            varint(out, ((n << 1) ^ (n >> 31)) as u32 as u64)
        }
        Enum(values) => {
            let n = match v {
                Value::String(s) => values.iter().find(|(name, _)| name == s).map(|(_, n)| *n),
                _ => v.as_i64().map(|n| n as i32),
            }
            .ok_or_else(|| bad(field, "unknown enum value"))?;
            varint(out, n as i64 as u64)
        }
        Str => delimited(out, v.as_str().ok_or_else(|| bad(field, "expected a string"))?.as_bytes()),
        Bytes => {
            let s = v.as_str().ok_or_else(|| bad(field, "expected base64"))?;
            let data = base64::engine::general_purpose::STANDARD.decode(s).map_err(|_| bad(field, "invalid base64"))?;
            delimited(out, &data)
        }
        Msg(m) => {
            let mut inner = Vec::new();
            encode_into(m, v, &mut inner, depth + 1)?;
            delimited(out, &inner)
        }
        Timestamp => {
            let s = v.as_str().ok_or_else(|| bad(field, "expected an RFC 3339 timestamp"))?;
            let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map_err(|_| bad(field, "expected an RFC 3339 timestamp"))?;
            let mut inner = Vec::new();
            write_varint(&mut inner, 1 << 3);
            write_varint(&mut inner, t.unix_timestamp() as u64);
            write_varint(&mut inner, 2 << 3);
            write_varint(&mut inner, u64::from(t.nanosecond()));
            delimited(out, &inner)
        }
        Map => {
            let m = v.as_object().ok_or_else(|| bad(field, "expected an object"))?;
            for (k, val) in m {
                let val = val.as_str().ok_or_else(|| bad(field, "map values must be strings"))?;
                let mut inner = Vec::new();
                for (num, s) in [(1u64, k.as_str()), (2, val)] {
                    write_varint(&mut inner, (num << 3) | 2);
                    write_varint(&mut inner, s.len() as u64);
                    inner.extend_from_slice(s.as_bytes());
                }
                delimited(out, &inner)
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn roundtrip(name: &str, v: Value) {
        let bytes = encode(name, &v).unwrap();
        assert_eq!(decode(name, &bytes).unwrap(), v, "{name}");
    }

    #[test]
    fn every_message_type_is_described_once_and_resolves() {
        for (name, fs) in MESSAGES {
            assert_eq!(MESSAGES.iter().filter(|(n, _)| n == name).count(), 1, "{name}");
            for f in *fs {
                if let Msg(m) = f.ty {
                    fields(m).unwrap();
                }
            }
        }
    }

    #[test]
    fn start_request_and_events_roundtrip() {
        roundtrip(
            "process.StartRequest",
            json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", "echo hi"], "envs": {"A": "1"}, "cwd": "/tmp"}, "stdin": true, "tag": "t"}),
        );
        roundtrip("process.StartResponse", json!({"event": {"data": {"stdout": "aGkK"}}}));
        roundtrip(
            "process.StartResponse",
            json!({"event": {"end": {"exitCode": -1, "exited": true, "status": "exit status 255"}}}),
        );
        roundtrip("process.SendSignalRequest", json!({"process": {"pid": 7}, "signal": "SIGNAL_SIGKILL"}));
        roundtrip(
            "filesystem.ListDirResponse",
            json!({"entries": [{"name": "a", "type": "FILE_TYPE_FILE", "path": "/a", "size": "5", "mode": 420, "modifiedTime": "2026-01-02T03:04:05.000000006Z"}]}),
        );
    }

    #[test]
    fn known_wire_bytes() {
        // StartEvent{pid: 150} inside ProcessEvent.start (field 1) inside StartResponse.event (field 1).
        let bytes = encode("process.StartResponse", &json!({"event": {"start": {"pid": 150}}})).unwrap();
        assert_eq!(bytes, vec![0x0a, 0x05, 0x0a, 0x03, 0x08, 0x96, 0x01]);
        // sint32 zig-zag: -1 → 1.
        let bytes = encode("process.ProcessEvent.EndEvent", &json!({"exitCode": -1})).unwrap();
        assert_eq!(bytes, vec![0x08, 0x01]);
    }

    #[test]
    fn hostile_bytes_are_errors_not_panics() {
        for bad in [&[0x0a, 0xff][..], &[0x0a, 0x05, 0x01], &[0xff; 11], &[0x08], &[0x0b]] {
            let _ = decode("process.StartRequest", bad);
        }
        let mut deep = vec![];
        for _ in 0..100 {
            let mut next = vec![0x0a, deep.len() as u8];
            next.extend_from_slice(&deep);
            deep = next;
            if deep.len() > 120 {
                break;
            }
        }
        let _ = decode("process.PTY", &deep);
        assert!(decode("nope", &[]).is_err());
    }
}
