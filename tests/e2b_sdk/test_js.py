"""The unmodified E2B JS SDK (tests/e2b_js/suite.mjs), against the same daemon."""

import os
import subprocess

JS = os.path.join(os.path.dirname(__file__), "..", "e2b_js")


def test_js_sdk():
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=JS, check=True, timeout=600)
    r = subprocess.run(["node", "suite.mjs"], cwd=JS, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "e2b js suite: ok" in r.stdout
