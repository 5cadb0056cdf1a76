"""Starts a real `warren serve` on a free loopback port for the Python test suites.

Each daemon gets its own data directory, run directory, cgroup parent and network, and shares the
templates directory of the Rust end-to-end tests, so `base` is built once per machine.
"""

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.request

ROOT = "/var/lib/warren-e2e"
REPO = os.path.join(os.path.dirname(__file__), "../..")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(what, timeout, probe):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def call(method, url, key=None, body=None):
    """(status, parsed JSON or None) of one request; never raises for an HTTP error status."""
    headers = {"X-API-KEY": key} if key else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None
    except OSError:
        return None, None


@contextlib.contextmanager
def daemon(name, bridge, cidr, extra="", fresh=False):
    """Yields {url, key, port, data} of a running daemon whose `base` template is ready. `fresh`
    starts from an empty state store (what earlier runs left is swept at start)."""
    binary = os.environ.get("WARREN_BIN", os.path.join(REPO, "target/warren/bin/warren"))
    data = os.path.join(ROOT, name)
    os.makedirs(data, exist_ok=True)
    if fresh and os.path.exists(os.path.join(data, "state.redb")):
        os.remove(os.path.join(data, "state.redb"))
    port = free_port()
    config = os.path.join(data, "config.toml")
    # WARREN_E2E_RUNTIME runs a suite on another runtime (every sandbox it creates gets it).
    runtime = os.environ.get("WARREN_E2E_RUNTIME")
    top = f'default_runtime = "{runtime}"\n' if runtime else ""
    with open(config, "w") as f:
        f.write(
            f'data_dir = "{data}"\nrun_dir = "/run/warren-e2e/{name}"\nlisten = "127.0.0.1:{port}"\n{top}'
            f'[native]\ncgroup_parent = "warren-e2e-{name}"\nstorage_size_gb = 64\n'
            f'[templates]\ndir = "{ROOT}/templates"\n'
            f'[network]\nbridge = "{bridge}"\ncidr = "{cidr}"\n{extra}'
        )
    log_path = os.path.join(data, "daemon.log")
    proc = subprocess.Popen([binary, "serve", "--config", config], stdout=subprocess.DEVNULL, stderr=open(log_path, "w"))
    url = f"http://127.0.0.1:{port}"
    try:
        wait("the daemon", 60, lambda: proc.poll() is not None or call("GET", url + "/health")[0] == 200)
        assert proc.poll() is None, open(log_path).read()
        key = open(os.path.join(data, "api_key")).read().strip()
        wait("the base template", 1200, lambda: (call("GET", url + "/templates/base", key)[1] or {}).get("status") == "ready")
        yield {"url": url, "key": key, "port": port, "data": data, "log": log_path}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
