#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for a bounded time each: the Connect framing
# and protobuf/JSON transcoding, request messages as the agent parses them, and /files path
# resolution. Usage: scripts/fuzz.sh [seconds per target, default 60].
# Needs the nightly toolchain (libFuzzer's sanitizer flags); installs cargo-fuzz from crates.io.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal >/dev/null 2>&1 || {
        echo "fuzz.sh: the nightly Rust toolchain is missing and could not be installed (cargo-fuzz needs it)" >&2
        exit 1
    }
fi
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz@0.13.2
cd fuzz
cargo +nightly fuzz build -O
for target in $(cargo +nightly fuzz list); do
    corpus="corpus/$target"
    mkdir -p "$corpus"
    echo "fuzzing $target for ${secs}s"
    # Seeds are read, never written; what the run learns stays in fuzz/corpus (not committed).
    log="corpus/$target.log"
    if ! cargo +nightly fuzz run -O "$target" "$corpus" "seeds/$target" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 >"$log" 2>&1; then
        tail -40 "$log" >&2
        echo "fuzz.sh: $target found a failing input (see fuzz/artifacts/$target)" >&2
        exit 1
    fi
    grep -E "^Done" "$log" || true
done
