//! Connect protocol framing: the 5-byte envelope (flags, big-endian length) of streaming calls, the
//! end-of-stream message, and the error codes with their HTTP statuses.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

pub const FLAG_COMPRESSED: u8 = 0x01;
pub const FLAG_END_STREAM: u8 = 0x02;
/// Upper bound on one enveloped message; larger frames are refused rather than buffered.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Connect error codes used by the agent (the wire names are snake_case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl Code {
    /// The HTTP status a unary error travels with.
    pub fn http_status(self) -> u16 {
        match self {
            Code::Canceled => 499,
            Code::Unknown | Code::Internal | Code::DataLoss => 500,
            Code::InvalidArgument | Code::OutOfRange => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::FailedPrecondition => 400,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
            Code::Unauthenticated => 401,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Error {
    pub code: Code,
    pub message: String,
}

impl Error {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Error { code, message: message.into() }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

/// The JSON body of the end-of-stream envelope.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EndStream {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Error>,
}

/// Wraps one message in an envelope.
pub fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(flags);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

/// A JSON message in a data envelope.
pub fn json_envelope<T: Serialize>(msg: &T) -> Bytes {
    envelope(0, &serde_json::to_vec(msg).expect("protocol messages serialize"))
}

/// The end-of-stream envelope, optionally carrying an error.
pub fn end_envelope(error: Option<Error>) -> Bytes {
    envelope(FLAG_END_STREAM, &serde_json::to_vec(&EndStream { error }).expect("serializes"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub flags: u8,
    pub payload: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("enveloped message of {0} bytes is larger than the {MAX_MESSAGE}-byte limit")]
    TooLarge(usize),
    #[error("compressed messages are not supported (no Connect-Content-Encoding was negotiated)")]
    Compressed,
}

/// Incremental envelope decoder for request and response bodies that arrive in arbitrary chunks.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete frame, if one has fully arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let flags = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_MESSAGE {
            return Err(FrameError::TooLarge(len));
        }
        if flags & FLAG_COMPRESSED != 0 {
            return Err(FrameError::Compressed);
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        self.buf.advance(5);
        let payload = self.buf.split_to(len).freeze();
        Ok(Some(Frame { flags, payload }))
    }

    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_chunks_reassemble() {
        let a = json_envelope(&serde_json::json!({"a": 1}));
        let b = end_envelope(None);
        let all: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        let mut d = Decoder::default();
        let mut frames = vec![];
        for chunk in all.chunks(3) {
            d.push(chunk);
            while let Some(f) = d.next_frame().unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(&frames[0].payload[..], br#"{"a":1}"#);
        assert_eq!(frames[1].flags, FLAG_END_STREAM);
        assert_eq!(&frames[1].payload[..], b"{}");
        assert!(!d.has_partial());
    }

    #[test]
    fn oversized_frames_are_refused_before_buffering() {
        let mut d = Decoder::default();
        d.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(d.next_frame(), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn error_end_stream_shape() {
        let e = end_envelope(Some(Error::new(Code::NotFound, "no such process")));
        assert_eq!(&e[5..], br#"{"error":{"code":"not_found","message":"no such process"}}"#);
    }
}

/// The message codec of a call, chosen by its Content-Type. Errors (unary bodies and end-of-stream
/// messages) are JSON under both codecs, as the Connect protocol specifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Json,
    Proto,
}

impl Codec {
    /// `(codec, streaming)` for a request Content-Type, or `None` for an unsupported one.
    pub fn from_content_type(ct: &str) -> Option<(Codec, bool)> {
        let ct = ct.split(';').next().unwrap_or("").trim();
        match ct {
            "application/json" | "" => Some((Codec::Json, false)),
            "application/proto" => Some((Codec::Proto, false)),
            "application/connect+json" => Some((Codec::Json, true)),
            "application/connect+proto" => Some((Codec::Proto, true)),
            _ => None,
        }
    }

    pub fn content_type(self, streaming: bool) -> &'static str {
        match (self, streaming) {
            (Codec::Json, false) => "application/json",
            (Codec::Proto, false) => "application/proto",
            (Codec::Json, true) => "application/connect+json",
            (Codec::Proto, true) => "application/connect+proto",
        }
    }

    /// A request message in this codec → its JSON form (what the typed messages parse).
    pub fn request_json(self, message: &str, payload: &[u8]) -> Result<Bytes, Error> {
        match self {
            Codec::Json => Ok(Bytes::copy_from_slice(payload)),
            Codec::Proto => {
                let v = crate::proto::decode(message, payload)
                    .map_err(|e| Error::new(Code::InvalidArgument, format!("invalid protobuf message: {e}")))?;
                Ok(Bytes::from(serde_json::to_vec(&v).expect("serializes")))
            }
        }
    }

    /// A response message in this codec.
    pub fn encode<T: Serialize>(self, message: &str, msg: &T) -> Bytes {
        match self {
            Codec::Json => Bytes::from(serde_json::to_vec(msg).expect("protocol messages serialize")),
            Codec::Proto => {
                let v = serde_json::to_value(msg).expect("protocol messages serialize");
                // Our own messages always fit the schema; a failure here is a bug worth a loud log.
                Bytes::from(crate::proto::encode(message, &v).unwrap_or_else(|e| panic!("encoding {message}: {e}")))
            }
        }
    }

    /// A response message wrapped in a data envelope.
    pub fn envelope<T: Serialize>(self, message: &str, msg: &T) -> Bytes {
        envelope(0, &self.encode(message, msg))
    }
}
