//! Request bodies in the JSON codec, as the agent parses them: any text either parses into the
//! typed message or is refused; whatever parses encodes to protobuf and back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_protocol::{filesystem as fs, process as pr, proto};

fn check<T: serde::de::DeserializeOwned + serde::Serialize>(name: &str, data: &[u8]) {
    let Ok(msg) = serde_json::from_slice::<T>(data) else { return };
    let v = serde_json::to_value(&msg).expect("a parsed message serializes");
    let bytes = proto::encode(name, &v).unwrap_or_else(|e| panic!("{name}: parsed {v} but cannot encode it: {e}"));
    let back = proto::decode(name, &bytes).unwrap_or_else(|e| panic!("{name}: own encoding does not decode: {e}"));
    let _: T = serde_json::from_value(back.clone()).unwrap_or_else(|e| panic!("{name}: {back} does not parse: {e}"));
}

fuzz_target!(|data: &[u8]| {
    check::<pr::StartRequest>("process.StartRequest", data);
    check::<pr::ConnectRequest>("process.ConnectRequest", data);
    check::<pr::SendInputRequest>("process.SendInputRequest", data);
    check::<pr::StreamInputRequest>("process.StreamInputRequest", data);
    check::<pr::SendSignalRequest>("process.SendSignalRequest", data);
    check::<pr::CloseStdinRequest>("process.CloseStdinRequest", data);
    check::<pr::UpdateRequest>("process.UpdateRequest", data);
    check::<fs::PathRequest>("filesystem.PathRequest", data);
    check::<fs::MoveRequest>("filesystem.MoveRequest", data);
    check::<fs::ListDirRequest>("filesystem.ListDirRequest", data);
    check::<fs::WatchDirRequest>("filesystem.WatchDirRequest", data);
    check::<fs::WatcherIdRequest>("filesystem.WatcherIdRequest", data);
});
