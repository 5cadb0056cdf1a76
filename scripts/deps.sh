#!/usr/bin/env bash
# Installs the Debian packages Warren needs on a host (idempotent; quiet when all are present).
#   mmdebstrap   builds template root filesystems
#   btrfs-progs  formats the writable-layer store (per-sandbox subvolumes with quotas)
#   crun         the baseline the benchmark compares against
#   python3-venv the E2B SDK test suite's virtualenv
#   nftables     the sandbox network's rules (one table per daemon); iproute2 sets up veths
#   nginx, wrk   the proxy benchmark's baseline and load generator
set -euo pipefail
need=()
for pkg in mmdebstrap btrfs-progs crun curl ca-certificates python3-venv nftables iproute2 nginx-light wrk; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
    echo "installing: ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
