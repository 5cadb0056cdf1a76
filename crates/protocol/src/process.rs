//! `process.Process` messages (E2B envd `process/process.proto`) in their proto3-JSON form.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::pbjson;

pub const SERVICE: &str = "process.Process";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ProcessConfig {
    pub cmd: String,
    pub args: Vec<String>,
    pub envs: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PtySize {
    pub cols: u32,
    pub rows: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Pty {
    pub size: Option<PtySize>,
}

/// `oneof selector { uint32 pid; string tag; }`
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ProcessSelector {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StartRequest {
    pub process: Option<ProcessConfig>,
    pub pty: Option<Pty>,
    pub tag: Option<String>,
    /// Absent means "keep stdin open" (clients older than envd 0.3.0 never send it).
    pub stdin: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectRequest {
    pub process: Option<ProcessSelector>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ListRequest {}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ProcessInfo {
    pub config: Option<ProcessConfig>,
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ListResponse {
    pub processes: Vec<ProcessInfo>,
}

/// `oneof input { bytes stdin; bytes pty; }`
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ProcessInput {
    #[serde(with = "opt_bytes", skip_serializing_if = "Option::is_none")]
    pub stdin: Option<Vec<u8>>,
    #[serde(with = "opt_bytes", skip_serializing_if = "Option::is_none")]
    pub pty: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SendInputRequest {
    pub process: Option<ProcessSelector>,
    pub input: Option<ProcessInput>,
}

/// One message of the `StreamInput` client stream: `oneof event { start, data, keepalive }`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamInputRequest {
    pub start: Option<StreamInputStart>,
    pub data: Option<StreamInputData>,
    pub keepalive: Option<Empty>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamInputStart {
    pub process: Option<ProcessSelector>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamInputData {
    pub input: Option<ProcessInput>,
}

/// `enum Signal`: accepted by name or by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Signal {
    #[default]
    Unspecified,
    Term,
    Kill,
}

impl Serialize for Signal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            Signal::Unspecified => "SIGNAL_UNSPECIFIED",
            Signal::Term => "SIGNAL_SIGTERM",
            Signal::Kill => "SIGNAL_SIGKILL",
        })
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        match &v {
            serde_json::Value::String(s) if s == "SIGNAL_SIGTERM" => Ok(Signal::Term),
            serde_json::Value::String(s) if s == "SIGNAL_SIGKILL" => Ok(Signal::Kill),
            serde_json::Value::String(s) if s == "SIGNAL_UNSPECIFIED" => Ok(Signal::Unspecified),
            serde_json::Value::Number(n) if n.as_u64() == Some(15) => Ok(Signal::Term),
            serde_json::Value::Number(n) if n.as_u64() == Some(9) => Ok(Signal::Kill),
            serde_json::Value::Number(n) if n.as_u64() == Some(0) => Ok(Signal::Unspecified),
            serde_json::Value::Null => Ok(Signal::Unspecified),
            other => Err(serde::de::Error::custom(format!("unknown signal {other}"))),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SendSignalRequest {
    pub process: Option<ProcessSelector>,
    pub signal: Signal,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CloseStdinRequest {
    pub process: Option<ProcessSelector>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct UpdateRequest {
    pub process: Option<ProcessSelector>,
    pub pty: Option<Pty>,
}

/// `ProcessEvent`: `oneof event { start, data, end, keepalive }`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum ProcessEvent {
    Start(StartEvent),
    Data(DataEvent),
    End(EndEvent),
    Keepalive(Empty),
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Empty {}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StartEvent {
    pub pid: u32,
}

/// `oneof output { bytes stdout; bytes stderr; bytes pty; }`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum DataEvent {
    Stdout(#[serde(with = "pbjson::bytes")] Vec<u8>),
    Stderr(#[serde(with = "pbjson::bytes")] Vec<u8>),
    Pty(#[serde(with = "pbjson::bytes")] Vec<u8>),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct EndEvent {
    pub exit_code: i32,
    pub exited: bool,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `StartResponse` / `ConnectResponse`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventResponse {
    pub event: ProcessEvent,
}

mod opt_bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => crate::pbjson::bytes::serialize(b, s),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        crate::pbjson::bytes::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keepalive_is_an_empty_message() {
        assert!(serde_json::from_str::<StreamInputRequest>(r#"{"keepalive": {}}"#).unwrap().keepalive.is_some());
        // Found by fuzzing: anything else was accepted and could not be encoded back.
        assert!(serde_json::from_str::<StreamInputRequest>(r#"{"keepalive": ""}"#).is_err());
    }

    #[test]
    fn events_use_proto3_json_oneof_shape() {
        let e = EventResponse { event: ProcessEvent::Data(DataEvent::Stdout(b"hello\n".to_vec())) };
        assert_eq!(serde_json::to_string(&e).unwrap(), r#"{"event":{"data":{"stdout":"aGVsbG8K"}}}"#);
        let end = EventResponse {
            event: ProcessEvent::End(EndEvent {
                exit_code: 1,
                exited: true,
                status: "exit status 1".into(),
                error: None,
            }),
        };
        assert_eq!(
            serde_json::to_string(&end).unwrap(),
            r#"{"event":{"end":{"exitCode":1,"exited":true,"status":"exit status 1"}}}"#
        );
        let ka = EventResponse { event: ProcessEvent::Keepalive(Empty {}) };
        assert_eq!(serde_json::to_string(&ka).unwrap(), r#"{"event":{"keepalive":{}}}"#);
    }

    #[test]
    fn start_request_as_the_sdk_sends_it() {
        let r: StartRequest = serde_json::from_str(
            r#"{"process":{"cmd":"/bin/bash","args":["-l","-c","echo hi"],"envs":{"A":"1"},"cwd":"/tmp"},"stdin":false}"#,
        )
        .unwrap();
        let p = r.process.unwrap();
        assert_eq!(p.args, vec!["-l", "-c", "echo hi"]);
        assert_eq!(r.stdin, Some(false));
    }

    #[test]
    fn signals_by_name_or_number() {
        let r: SendSignalRequest = serde_json::from_str(r#"{"process":{"pid":5},"signal":"SIGNAL_SIGKILL"}"#).unwrap();
        assert_eq!(r.signal, Signal::Kill);
        let r: SendSignalRequest = serde_json::from_str(r#"{"process":{"tag":"x"},"signal":15}"#).unwrap();
        assert_eq!(r.signal, Signal::Term);
        assert!(serde_json::from_str::<SendSignalRequest>(r#"{"signal":"SIGNAL_NOPE"}"#).is_err());
    }

    #[test]
    fn input_bytes_decode_from_base64() {
        let r: SendInputRequest = serde_json::from_str(r#"{"process":{"pid":1},"input":{"stdin":"aGk="}}"#).unwrap();
        assert_eq!(r.input.unwrap().stdin.unwrap(), b"hi");
    }
}
