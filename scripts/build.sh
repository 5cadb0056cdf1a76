#!/usr/bin/env bash
# Builds `warren` and the static `warren-agent` (release) into target/warren/bin.
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --locked -p warren
# The agent runs inside every template, whatever its libc: link it statically. Passing --target
# keeps these flags off build scripts and proc macros.
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -p warren-agent --target "$host"
mkdir -p target/warren/bin
install -m 0755 target/release/warren target/warren/bin/warren
install -m 0755 "target/$host/release/warren-agent" target/warren/bin/warren-agent
