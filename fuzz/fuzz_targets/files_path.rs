//! `/files` and filesystem paths: whatever the caller sends, the resolved path is absolute, free
//! of `.` and `..`, and an absolute path without them resolves to itself.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use warren_protocol::filesystem::resolve_path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // "home\npath", or the path alone with the usual home.
    let (home, path) = text.split_once('\n').unwrap_or(("/home/user", text));
    let Ok(p) = resolve_path(path, home) else {
        assert!(path.is_empty() || path.contains('\0'), "{path:?} refused");
        return;
    };
    assert!(p.is_absolute(), "{path:?} → {p:?}");
    assert!(
        p.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_))),
        "{path:?} → {p:?} keeps . or .."
    );
    let plain = path.starts_with('/')
        && Path::new(path).components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if plain {
        let want: Vec<_> = Path::new(path).components().collect();
        assert_eq!(p.components().collect::<Vec<_>>(), want, "{path:?}");
    }
});
