"""Starts a real `warren serve` (tests/pyharness) and points the unmodified E2B SDK at it."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../pyharness"))
from warren_daemon import daemon  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def warren():
    # A pass on another runtime (WARREN_E2E_RUNTIME) gets a daemon, bridge and subnet of its own.
    runtime = os.environ.get("WARREN_E2E_RUNTIME")
    name, bridge, cidr = ("e2b-sdk", "wtsdk", "10.249.0.0/24")
    if runtime:
        name, bridge, cidr = (f"e2b-sdk-{runtime}", "wtsdkg", "10.245.0.0/24")
    with daemon(name, bridge, cidr) as d:
        os.environ.update(E2B_API_KEY=d["key"], E2B_API_URL=d["url"], E2B_SANDBOX_URL=d["url"])
        yield d
