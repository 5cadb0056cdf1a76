"""The E2B Python SDK's own view of Warren: `Sandbox.create()` + `commands.run("echo hi")` + `kill()`.

Run by `warren-bench` with the SDK's virtualenv; the daemon is named by E2B_API_URL, E2B_SANDBOX_URL
and E2B_API_KEY. Prints one JSON object: the end-to-end samples in milliseconds and a split by phase.
"""

import json
import sys
import time

from e2b import Sandbox


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    warmup = 3
    total, create, run, kill = [], [], [], []
    for i in range(n + warmup):
        t0 = time.perf_counter()
        sb = Sandbox.create()
        t1 = time.perf_counter()
        out = sb.commands.run("echo hi")
        t2 = time.perf_counter()
        sb.kill()
        t3 = time.perf_counter()
        if out.stdout != "hi\n":
            raise SystemExit(f"unexpected output {out.stdout!r}")
        if i >= warmup:
            total.append((t3 - t0) * 1000)
            create.append((t1 - t0) * 1000)
            run.append((t2 - t1) * 1000)
            kill.append((t3 - t2) * 1000)
    print(json.dumps({"total_ms": total, "create_ms": create, "run_ms": run, "kill_ms": kill}))


if __name__ == "__main__":
    main()
