#!/usr/bin/env bash
# The second README command: the whole test suite. Installs what it needs, checks formatting and
# lints, runs the unit tests, builds the release binaries and runs the end-to-end tests against a
# real daemon (as root: namespaces, cgroups and mounts are part of what is tested).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "the test suite needs root (it starts real sandboxes): run it with sudo" >&2
    exit 1
fi
scripts/deps.sh
# Sandboxes outlive their daemon by design (a restart adopts them), so the test daemons leave some
# running; the next start of each sweeps them, but until then they take CPU from whatever runs
# next on this host. At the end, however the suite ends, every process in a test daemon's cgroups
# is thawed and killed (the next start of that daemon clears away the rest).
end_test_sandboxes() {
    local h cg
    for h in /sys/fs/cgroup/freezer /sys/fs/cgroup/unified /sys/fs/cgroup; do
        for cg in $(find "$h"/warren-e2e-* -name cgroup.freeze -o -name freezer.state 2>/dev/null); do
            case "$cg" in
                *cgroup.freeze) echo 0 > "$cg" ;;
                *) echo THAWED > "$cg" ;;
            esac 2>/dev/null || true
        done
    done
    for h in /sys/fs/cgroup/pids /sys/fs/cgroup/unified /sys/fs/cgroup; do
        find "$h"/warren-e2e-* -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    done
}
trap end_test_sandboxes EXIT
echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== unit tests"
cargo test --locked --workspace --exclude warren-e2e
echo "== fuzzing (bounded; scripts/fuzz.sh runs longer on demand)"
scripts/fuzz.sh 30
echo "== release build"
scripts/build.sh
echo "== local embeddings (the embed feature the release build turned on)"
cargo clippy --locked -p warren-memory --features embed --all-targets -- -D warnings
cargo test --release --locked -p warren-memory --features embed -- embed::
echo "== end-to-end tests"
WARREN_BIN="$PWD/target/warren/bin/warren" cargo test --locked -p warren-e2e -- --test-threads 4
echo "== the core and lifecycle suites again, on the gvisor runtime"
# Skipped there, by design (docs/runtimes.md): the sandbox sees gVisor's own uid map, not the
# host's; running out of memory or pids ends the whole gVisor sandbox rather than one process;
# and a pause saves memory to disk instead of freezing in place.
WARREN_E2E_RUNTIME=gvisor WARREN_BIN="$PWD/target/warren/bin/warren" cargo test --locked -p warren-e2e \
    --test sandboxes --test lifecycle -- --test-threads 3 \
    --skip isolation_basics --skip limits_memory_pids_disk_are_contained \
    --skip fork_bomb_is_contained_and_killable --skip pause_freezes_and_connect_resumes
echo "== E2B compatibility: the unmodified Python (sync + async) and JS SDKs"
python3 -m venv target/e2b-venv
target/e2b-venv/bin/pip install --quiet --disable-pip-version-check -r tests/e2b_sdk/requirements.txt
WARREN_BIN="$PWD/target/warren/bin/warren" target/e2b-venv/bin/python -m pytest -q -p no:cacheprovider tests/e2b_sdk
echo "== the E2B Python SDK suite again, on the gvisor runtime"
# Skipped there (docs/runtimes.md): a port reached through the proxy and egress rules (gVisor
# sandboxes have no network on this host) and file metadata (gVisor keeps no user xattrs).
WARREN_E2E_RUNTIME=gvisor WARREN_BIN="$PWD/target/warren/bin/warren" target/e2b-venv/bin/python -m pytest -q \
    -p no:cacheprovider tests/e2b_sdk/test_sync.py tests/e2b_sdk/test_async.py \
    -k "not get_host and not update_network and not test_files_gzip_and_metadata"
echo "== API robustness: schemathesis drives the OpenAPI document; no input may cause a 5xx"
python3 -m venv target/schema-venv
target/schema-venv/bin/pip install --quiet --disable-pip-version-check -r tests/api_schema/requirements.txt
WARREN_BIN="$PWD/target/warren/bin/warren" target/schema-venv/bin/python -m pytest -q -p no:cacheprovider tests/api_schema
echo "== benchmark smoke run (figures in BENCHMARKS.md come from a full run)"
cargo build --release --locked -p warren-bench
target/release/warren-bench --root /var/lib/warren-e2e --iterations 5 --out target/bench-smoke.json \
    --sdk-python target/e2b-venv/bin/python --sustain-secs 3 --density 50 --claims-per-client 2 --fork-count 20 --proxy-secs 2 --server-iterations 0 --gvisor-mib 32 \
    --native-fork-count 10 --native-fork-mib 16 \
    --memory-docs 3000 --memory-queries 50
