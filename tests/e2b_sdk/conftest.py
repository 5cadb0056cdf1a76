"""Starts a real `warren serve` on a free loopback port and points the unmodified E2B SDK at it.

The daemon gets its own data directory, run directory and cgroup parent and shares the templates
directory of the Rust end-to-end tests, so `base` is built once per machine.
"""

import json
import os
import socket
import subprocess
import time
import urllib.request

import pytest

ROOT = "/var/lib/warren-e2e"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what, timeout, probe):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _get(url, key=None):
    req = urllib.request.Request(url, headers={"X-API-KEY": key} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None
    except OSError:
        return None, None


@pytest.fixture(scope="session", autouse=True)
def warren():
    binary = os.environ.get("WARREN_BIN", os.path.join(os.path.dirname(__file__), "../../target/warren/bin/warren"))
    data = os.path.join(ROOT, "e2b-sdk")
    os.makedirs(data, exist_ok=True)
    port = _free_port()
    config = os.path.join(data, "config.toml")
    with open(config, "w") as f:
        f.write(
            f'data_dir = "{data}"\nrun_dir = "/run/warren-e2e/e2b-sdk"\nlisten = "127.0.0.1:{port}"\n'
            f'[native]\ncgroup_parent = "warren-e2e-e2b-sdk"\nstorage_size_gb = 64\n'
            f'[templates]\ndir = "{ROOT}/templates"\n'
            f'[network]\nbridge = "wtsdk"\ncidr = "10.249.0.0/24"\n'
        )
    log = open(os.path.join(data, "daemon.log"), "w")
    proc = subprocess.Popen([binary, "serve", "--config", config], stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait("the daemon", 60, lambda: proc.poll() is None and _get(url + "/health")[0] == 200 or proc.poll() is not None)
        assert proc.poll() is None, open(os.path.join(data, "daemon.log")).read()
        key = open(os.path.join(data, "api_key")).read().strip()
        _wait("the base template", 1200, lambda: (_get(url + "/templates/base", key)[1] or {}).get("status") == "ready")
        os.environ.update(E2B_API_KEY=key, E2B_API_URL=url, E2B_SANDBOX_URL=url)
        yield {"url": url, "key": key, "port": port}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
