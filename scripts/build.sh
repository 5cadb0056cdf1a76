#!/usr/bin/env bash
# Builds `warren` and the static `warren-agent` (release) into target/warren/bin.
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --locked -p warren
# The agent runs inside every template, whatever its libc: link it statically. Passing --target
# keeps these flags off build scripts and proc macros. The `agent` profile favours size: the agent
# is resident in every sandbox.
RUSTFLAGS="-C target-feature=+crt-static" cargo build --profile agent --locked -p warren-agent --target "$host"
mkdir -p target/warren/bin
# Copy then rename: running sandboxes keep the old agent inode (it is busy and cannot be rewritten).
for pair in "target/release/warren:warren" "target/$host/agent/warren-agent:warren-agent"; do
    src=${pair%%:*} name=${pair##*:}
    install -m 0755 "$src" "target/warren/bin/.$name.new"
    mv -f "target/warren/bin/.$name.new" "target/warren/bin/$name"
done
