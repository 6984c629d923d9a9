"""Discover latency per provider, and peak memory of a large REST sync.

Discover = detection (with its probes) + the catalogue + the source document, as the discover
function runs it, against the running services (MinIO, PostgreSQL, WebDAV: `just services up`)
and the REST test peer. Each hint is discovered RUNS times; the table shows the first (cold)
run and the median and max of the others.

Then a REST API of ROWS records over PAGES pages is synced in a child process (the peer runs in
another one) and the child's peak RSS is reported next to a run ten times smaller: bounded
memory means the two peaks are close.

Usage: python bench/discover_latency.py [RUNS] [ROWS] [PAGES]
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("UDB_NET_ALLOWLIST", "127.0.0.0/8,::1")

import boto3  # noqa: E402
import psycopg  # noqa: E402

from devstack import services  # noqa: E402
from functions.discover.handler import discover  # noqa: E402
from shared.storage import duck  # noqa: E402
from shared.serving import runtime
from shared.core.settings import Settings  # noqa: E402
from shared.core.tenancy import new_job_id  # noqa: E402
from tests.conftest import write_sales  # noqa: E402
from tests.peers.rest_api import RestPeer  # noqa: E402

TENANT = "bench"


def prepare(tmp: Path, peer: RestPeer, ctx) -> dict[str, str]:
    """One reachable hint per provider."""
    folder = tmp / "folder"
    write_sales(folder / "sales.csv", 10_000)
    con = duck.connect()
    con.execute(f"COPY (SELECT i AS id, 'x' || i AS label FROM range(10000) t(i)) TO '{folder / 'items.parquet'}' "
                "(FORMAT parquet)")
    con.close()
    sales = (folder / "sales.csv").read_bytes()
    peer.files["sales.csv"] = (sales, "text/csv")

    user, password = services.minio_credentials()
    endpoint = services.endpoints()["s3"]
    os.environ.update(UDB_S3_ENDPOINT=endpoint, UDB_S3_ACCESS_KEY=user, UDB_S3_SECRET_KEY=password)
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=user, aws_secret_access_key=password,
                      region_name="us-east-1")
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="data/sales.csv", Body=sales)

    dsn = services.endpoints()["postgres"]
    table = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as pg:
        pg.execute(f"CREATE TABLE {table} AS SELECT i AS id, md5(i::text) AS label, now() AS at "
                   f"FROM generate_series(1, 10000) i")

    dav_dir = services.WEBDAV_ROOT / f"bench-{uuid.uuid4().hex[:8]}"
    dav_dir.mkdir(parents=True)
    shutil.copy(folder / "sales.csv", dav_dir / "sales.csv")
    shutil.copy(folder / "items.parquet", dav_dir / "items.parquet")

    upload_id = "up-" + uuid.uuid4().hex[:16]
    ctx.tenant_store(TENANT).put(f"uploads/{upload_id}/sales.csv", sales)
    cleanup = {"s3": (s3, bucket), "pg": (dsn, table), "dav": dav_dir}
    hints = {
        "file": str(folder / "sales.csv"),
        "directory": str(folder),
        "s3": f"s3://{bucket}/data/",
        "postgres": f"{dsn}?table={table}",
        "rest": f"{peer.url}/page/items",
        "http file": f"{peer.url}/files/sales.csv",
        "webdav": f"{services.endpoints()['webdav']}/{dav_dir.name}/",
        "upload": f"upload://{upload_id}/sales.csv",
    }
    return hints, cleanup


def tidy(cleanup: dict) -> None:
    s3, bucket = cleanup["s3"]
    for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=obj["Key"])
    s3.delete_bucket(Bucket=bucket)
    dsn, table = cleanup["pg"]
    with psycopg.connect(dsn, autocommit=True) as pg:
        pg.execute(f"DROP TABLE IF EXISTS {table}")
    shutil.rmtree(cleanup["dav"], ignore_errors=True)


def latency(runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="udb-bench-") as tmp, RestPeer(total=250) as peer:
        # Every run leaves a discovered (live) job: no cap on live jobs here.
        settings = Settings.from_env(env={"UDB_MAX_CONCURRENT_JOBS": "0"}, home=Path(tmp) / "udb", log_level="ERROR")
        ctx = runtime.start("discover", settings)
        hints, cleanup = prepare(Path(tmp), peer, ctx)
        try:
            print(f"discover latency, {runs} runs per hint (ms)")
            print(f"{'provider':<12} {'detected':<10} {'cold':>8} {'median':>8} {'max':>8}  streams")
            for name, hint in hints.items():
                times, provider, streams = [], "", 0
                for _ in range(runs):
                    started = time.perf_counter()
                    source, found = discover(ctx, TENANT, new_job_id(), hint)
                    times.append(1000 * (time.perf_counter() - started))
                    provider, streams = source["provider"], len(source["streams"])
                warm = times[1:] or times
                print(f"{name:<12} {provider:<10} {times[0]:8.0f} {statistics.median(warm):8.0f} "
                      f"{max(warm):8.0f}  {streams}")
        finally:
            tidy(cleanup)


CHILD = """
import os, resource, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, {root!r})
os.environ.setdefault("UDB_NET_ALLOWLIST", "127.0.0.0/8,::1")
from shared.core.settings import Settings
from shared.sources import SourceEnv, rest
env = SourceEnv(settings=Settings.from_env())  # this child's entry point: its settings, built once
started = time.perf_counter()
stream = rest.inspect({url!r}, env=env)["streams"][0]
with tempfile.TemporaryDirectory() as tmp:
    rows = rest.extract(stream, Path(tmp) / "parts", env=env, part_bytes=64 * 1024 * 1024)
    parts = len(list((Path(tmp) / "parts").glob("*.parquet")))
print(rows, parts, round(time.perf_counter() - started, 1), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def rest_memory(rows: int, pages: int) -> None:
    print("\nREST sync peak memory (child process RSS; the peer runs in its own process)")
    print(f"{'records':>9} {'pages':>6} {'synced':>9} {'parts':>6} {'seconds':>8} {'peak MiB':>9}")
    for total in (rows // 10, rows):
        size = max(1, total // pages)
        port = 18000 + int(uuid.uuid4().int % 900)
        peer = subprocess.Popen([sys.executable, "-m", "tests.peers.rest_api", "--port", str(port),
                                 "--total", str(total)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            peer.stdout.readline()  # "rest peer at ..." once it listens
            url = f"http://127.0.0.1:{port}/page/items?per_page={size}"
            out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), url=url)], cwd=ROOT,
                                 capture_output=True, text=True, timeout=900)
            if out.returncode != 0:
                raise SystemExit(out.stderr)
            synced, parts, seconds, peak = out.stdout.split()
            print(f"{total:>9} {-(-total // size):>6} {synced:>9} {parts:>6} {seconds:>8} {peak:>9}")
        finally:
            peer.terminate()
            peer.wait(timeout=10)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
    pages = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    latency(runs)
    rest_memory(rows, pages)


if __name__ == "__main__":
    main()
