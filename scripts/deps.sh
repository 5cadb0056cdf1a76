#!/usr/bin/env bash
# Installs the Debian packages Warren needs on a host (idempotent; quiet when all are present).
#   mmdebstrap   builds template root filesystems
#   btrfs-progs  formats the writable-layer store (per-sandbox subvolumes with quotas)
#   crun         the baseline the benchmark compares against
#   python3-venv the E2B SDK test suite's virtualenv
#   nftables     the sandbox network's rules (one table per daemon); iproute2 sets up veths
#   nginx, wrk   the proxy benchmark's baseline and load generator
#   wordnet-base the memory store benchmark's corpus (WordNet's glosses)
#   runsc        the gvisor runtime, from bookworm-backports: its 2024 build brings the systrap
#                platform and a checkpoint that can leave the sandbox running (docs/runtimes.md)
#   criu         4.1.1 built from Debian's source into /opt/warren/criu (scripts/criu.sh)
set -euo pipefail
need=()
for pkg in mmdebstrap btrfs-progs crun curl ca-certificates python3-venv nftables iproute2 nginx-light wrk wordnet-base; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
    echo "installing: ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! dpkg-query -W -f='${Version}' runsc 2>/dev/null | grep -q '^0.0~2024'; then
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    if [ "$codename" = bookworm ]; then
        list=/etc/apt/sources.list.d/warren-bookworm-backports.list
        if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
            echo "deb http://deb.debian.org/debian bookworm-backports main" > "$list"
        fi
        echo "installing: runsc (bookworm-backports)" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends -t bookworm-backports runsc >/dev/null
    else
        # Newer Debian releases carry a recent runsc in their main suite.
        dpkg-query -W -f='${Status}' runsc 2>/dev/null | grep -q "install ok installed" || {
            export DEBIAN_FRONTEND=noninteractive
            apt-get install -y -qq --no-install-recommends runsc >/dev/null
        }
    fi
fi
# CRIU ≥ 4 for memory snapshots of native sandboxes, built once into /opt/warren/criu.
"$(dirname "$0")/criu.sh"
# The sentence-embedding model collections may name (embeddingModel), into /opt/warren/models.
"$(dirname "$0")/models.sh"
