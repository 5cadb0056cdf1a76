#!/usr/bin/env bash
# The first README command: install what Warren needs, build it, and run `warren serve` in the
# foreground (the base template is built on first start). Extra arguments go to `warren serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "warren needs root (namespaces, cgroups, mounts): run it with sudo" >&2
    exit 1
fi
scripts/deps.sh
scripts/build.sh
exec target/warren/bin/warren serve "$@"
