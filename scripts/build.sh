#!/usr/bin/env bash
# Builds `warren` and the static `warren-agent` (release) into target/warren/bin.
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
# `embed`: the memory store runs sentence-embedding models (candle, pure Rust) on the CPU.
cargo build --release --locked -p warren --features embed
# The agent runs inside every template, whatever its libc, and is resident in every sandbox: link it
# statically, against musl when rustup can provide that target (its RSS is ~1.4 MiB against ~2.1
# MiB with a static glibc), otherwise against glibc. The `agent` profile favours size.
musl="${host%%-*}-unknown-linux-musl"
if rustup target list --installed 2>/dev/null | grep -qx "$musl" || timeout 300 rustup target add "$musl" >/dev/null 2>&1; then
    cargo build --profile agent --locked -p warren-agent --target "$musl"
    agent="target/$musl/agent/warren-agent"
else
    echo "build.sh: the $musl target is not available; linking the agent statically against glibc" >&2
    # Passing --target keeps these flags off build scripts and proc macros.
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --profile agent --locked -p warren-agent --target "$host"
    agent="target/$host/agent/warren-agent"
fi
mkdir -p target/warren/bin
# Copy then rename: running sandboxes keep the old agent inode (it is busy and cannot be rewritten).
for pair in "target/release/warren:warren" "$agent:warren-agent"; do
    src=${pair%%:*} name=${pair##*:}
    install -m 0755 "$src" "target/warren/bin/.$name.new"
    mv -f "target/warren/bin/.$name.new" "target/warren/bin/$name"
done
