//! Connect envelopes arriving in arbitrary chunks, and their payloads transcoded from protobuf:
//! no input may panic, buffer without bound, or transcode to something that does not transcode back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_protocol::connect::{Codec, Decoder, MAX_MESSAGE};
use warren_protocol::proto;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    let mut d = Decoder::default();
    let mut frames = Vec::new();
    for piece in rest.chunks(chunk) {
        d.push(piece);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    assert!(f.payload.len() <= MAX_MESSAGE);
                    frames.push(f);
                }
                Ok(None) => break,
                // A refused frame ends the stream (the server answers with an error).
                Err(_) => return,
            }
        }
    }
    for f in frames {
        for (name, _) in proto::MESSAGES {
            let Ok(v) = proto::decode(name, &f.payload) else { continue };
            // Whatever decodes re-encodes, and the re-encoding is a fixed point.
            let once = proto::encode(name, &v).unwrap_or_else(|e| panic!("{name}: {v} does not re-encode: {e}"));
            let again = proto::decode(name, &once).unwrap_or_else(|e| panic!("{name}: re-encoding does not decode: {e}"));
            assert_eq!(proto::encode(name, &again).unwrap(), once, "{name}: not a fixed point");
        }
        let _ = Codec::Proto.request_json("process.StartRequest", &f.payload);
    }
});
