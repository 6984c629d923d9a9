"""Cold start of each function, as Knative's scale-from-zero sees it.

    python bench/cold_start.py [RUNS]        (default 3 runs per function; the median is shown)

Per function, with the stack's settings (devstack.stack.function_env: MinIO and Kafka must be
up, e.g. `just services up`):
- import: a fresh interpreter imports functions/<f>/main.py (what functions-framework does
  before it listens; the function's lifecycle starts there: settings checked, object store
  and Kafka producer opened);
- /healthz: from spawning `functions-framework --source functions/<f>/main.py --target http
  --port <free>` to its first 200 on /healthz (interpreter, imports and start, gunicorn);
- /readyz: the first /readyz after that: every dependency checked (Kafka over the producer's
  first connection), as the queue-proxy's readiness probe does before the first request is
  routed;
- cold: spawn to /readyz answered, compared with the target.
Targets: discover and artifacts under 1 s, sync and writer under 1.5 s, analyze under 3 s.
"""
from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack import stack  # noqa: E402

TARGETS = {"discover": 1.0, "sync": 1.5, "writer": 1.5, "analyze": 3.0, "artifacts": 1.0}
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def function_env(function: str) -> dict:
    env = {**os.environ, **stack.function_env(function), "UDB_LOG_LEVEL": "ERROR", "UDB_STRICT_STARTUP": "0"}
    env["PYTHONPATH"] = str(ROOT)
    return env


def import_seconds(function: str) -> float:
    code = ("import time; t = time.perf_counter(); import functions.{f}.main; "
            "print(time.perf_counter() - t)").format(f=function)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=function_env(function),
                         capture_output=True, text=True, timeout=120, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def serve_once(function: str, timeout: float = 60) -> tuple[float, float]:
    """(spawn -> first /healthz 200, first /readyz latency) of one fresh process."""
    port = free_port()
    argv = [str(VENV_BIN / "functions-framework"), "--source", str(ROOT / "functions" / function / "main.py"),
            "--target", "http", "--host", "127.0.0.1", "--port", str(port)]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=function_env(function), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=30) as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{function} exited: {proc.stderr.read().decode()[-2000:]}")
                if time.perf_counter() - started > timeout:
                    raise RuntimeError(f"{function}: no /healthz within {timeout} s")
                try:
                    if client.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.005)
            healthy = time.perf_counter() - started
            before = time.perf_counter()
            response = client.get(f"{url}/readyz")
            ready = time.perf_counter() - before
            if response.status_code != 200:
                raise RuntimeError(f"{function}: /readyz {response.status_code}: {response.text[:500]}")
        return healthy, ready
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str]) -> int:
    runs = int(argv[0]) if argv else 3
    rows = []
    for function in TARGETS:
        imports = [import_seconds(function) for _ in range(runs)]
        served = [serve_once(function) for _ in range(runs)]
        healthz = statistics.median(h for h, _ in served)
        readyz = statistics.median(r for _, r in served)
        cold = statistics.median(h + r for h, r in served)
        rows.append((function, statistics.median(imports), healthz, readyz, cold, TARGETS[function]))
    print(f"cold start, median of {runs} runs (seconds)")
    print(f"{'function':<10} {'import':>7} {'/healthz':>9} {'/readyz':>8} {'cold':>6} {'target':>7}  verdict")
    missed = 0
    for function, imp, healthz, readyz, cold, target in rows:
        verdict = "ok" if cold < target else "MISSED"
        missed += cold >= target
        print(f"{function:<10} {imp:7.3f} {healthz:9.3f} {readyz:8.3f} {cold:6.3f} {target:7.1f}  {verdict}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
