"""The `containers` marker: UDB's images run by testcontainers-python, host networking only.

A Docker engine is made available by scripts/docker.sh (Debian's docker.io installed when
missing, dockerd started without the docker0 bridge or iptables; stopped again at the end if it
was started here). The images are built by the same script as `just images` when missing or
when their inputs changed (images/build.py --stale). Every container runs with
`network_mode=host` and listens on 127.0.0.1 only, on ports of their own (29xxx), so the process
stack (19xxx/18xxx) can run beside it.

Package fixtures (stopped when the last test here is done, not at the end of the session):
Kafka, MinIO and PostgreSQL from their images; the six functions, each from its own image with
the CPU and memory limits and THREADS of its Knative Service (knative/base/services.yaml), a
read-only root filesystem and /tmp as tmpfs, as on Knative; the local broker (devstack.broker)
as a host process in front of them. Each function's cold start (container start -> first 200 on
/healthz, then on /readyz) is recorded.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from devstack import stack
from tests.conftest import REPO

HOST = "127.0.0.1"
KAFKA_PORT, KAFKA_CONTROLLER_PORT = 29092, 29093
MINIO_PORT, MINIO_CONSOLE_PORT = 29000, 29001
POSTGRES_PORT = 29432
FUNCTION_PORTS = {"discover": 29081, "sync": 29082, "writer": 29083, "analyze": 29084, "artifacts": 29085,
                  "reports": 29086}
BROKER_PORT = 29090
BUCKET = "udb"
MINIO_USER, MINIO_PASSWORD = "udbminio", "udbminio-secret"
PG_USER = PG_PASSWORD = PG_DB = "udb"
SHARED_HOME = "/var/lib/udb"  # the function containers' UDB_HOME, one host directory mounted in each
COLD_START_FILE = REPO / ".cache" / "containers-cold-start.json"

sys.path.insert(0, str(REPO / "images"))
import build as images  # noqa: E402  (images/build.py: names, budgets, the build itself)


# --- engine and images ----------------------------------------------------------------------

@pytest.fixture(scope="session")
def docker_engine():
    result = subprocess.run(["bash", str(REPO / "scripts" / "docker.sh"), "up"], capture_output=True, text=True)
    assert result.returncode == 0, f"scripts/docker.sh up failed:\n{result.stdout}{result.stderr}"
    # testcontainers' reaper (Ryuk) is an image from Docker Hub: the fixtures stop what they start.
    from testcontainers.core.config import testcontainers_config

    testcontainers_config.ryuk_disabled = True
    yield
    if result.stdout.strip() == "started":
        subprocess.run(["bash", str(REPO / "scripts" / "docker.sh"), "down"], check=True)


@pytest.fixture(scope="session")
def built_images(docker_engine) -> dict[str, str]:
    """Image name -> reference; built by images/build.py when missing or stale (as `just images`)."""
    result = subprocess.run([sys.executable, str(REPO / "images" / "build.py"), "--stale"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, f"images/build.py --stale failed:\n{result.stdout}{result.stderr[-4000:]}"
    return {name: images.image_name(name) for name in (*images.FUNCTIONS, *images.SERVICES)}


# --- containers -----------------------------------------------------------------------------

def _wait(what: str, check, container, timeout: float) -> float:
    """Seconds until check() is true; fails with the container's log if it never is."""
    started = time.monotonic()
    while not check():
        container.reload()
        if container.status not in ("created", "running"):
            raise AssertionError(f"{what} exited ({container.status}):\n{_logs(container)}")
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} not ready after {timeout:.0f}s:\n{_logs(container)}")
        time.sleep(0.05)
    return time.monotonic() - started


def _logs(container) -> str:
    with contextlib.suppress(Exception):
        return container.logs(tail=60).decode(errors="replace")
    return "(no log)"


def _status(url: str, timeout: float = 2) -> int | None:
    try:
        return httpx.get(url, timeout=timeout).status_code
    except httpx.HTTPError:
        return None


def start_container(image: str, env: dict[str, str], tmp: str = "", volumes: dict | None = None, **kwargs):
    """A testcontainers DockerContainer on the host's network (never the bridge), /tmp a tmpfs
    (`tmp`: its mount options, e.g. "size=1g"), `volumes`: host directory -> container path."""
    from testcontainers.core.container import DockerContainer

    container = DockerContainer(image).with_kwargs(network_mode="host", **kwargs).with_tmpfs_mount("/tmp", tmp)
    for host_path, container_path in (volumes or {}).items():
        container.with_volume_mapping(str(host_path), container_path, mode="rw")
    for key, value in env.items():
        container.with_env(key, value)
    return container.start()


@pytest.fixture(scope="package")
def service_containers(built_images):
    """Kafka, MinIO and PostgreSQL from their images, listening on 127.0.0.1 only."""
    started = []
    try:
        kafka = start_container(built_images["kafka"], {"KAFKA_HOST": HOST, "KAFKA_PORT": str(KAFKA_PORT),
                                                         "KAFKA_CONTROLLER_PORT": str(KAFKA_CONTROLLER_PORT)},
                                mem_limit="1g")
        started.append(kafka)
        minio = start_container(built_images["minio"], {"MINIO_HOST": HOST, "MINIO_PORT": str(MINIO_PORT),
                                                         "MINIO_CONSOLE_PORT": str(MINIO_CONSOLE_PORT),
                                                         "MINIO_ROOT_USER": MINIO_USER,
                                                         "MINIO_ROOT_PASSWORD": MINIO_PASSWORD},
                                mem_limit="1g")
        started.append(minio)
        postgres = start_container(built_images["postgres"], {"POSTGRES_HOST": HOST, "POSTGRES_PORT": str(POSTGRES_PORT),
                                                               "POSTGRES_USER": PG_USER, "POSTGRES_PASSWORD": PG_PASSWORD,
                                                               "POSTGRES_DB": PG_DB},
                                   mem_limit="1g")
        started.append(postgres)
        _wait("minio", lambda: _status(f"http://{HOST}:{MINIO_PORT}/minio/health/ready") == 200,
              minio.get_wrapped_container(), 60)
        _wait("postgres", _postgres_ready, postgres.get_wrapped_container(), 60)
        _wait("kafka", _kafka_ready, kafka.get_wrapped_container(), 120)
        yield {"kafka": f"{HOST}:{KAFKA_PORT}", "s3": f"http://{HOST}:{MINIO_PORT}",
               "postgres": f"postgresql://{PG_USER}:{PG_PASSWORD}@{HOST}:{POSTGRES_PORT}/{PG_DB}"}
    finally:
        for container in reversed(started):
            with contextlib.suppress(Exception):
                container.stop()


def _postgres_ready() -> bool:
    import psycopg

    try:
        with psycopg.connect(f"postgresql://{PG_USER}:{PG_PASSWORD}@{HOST}:{POSTGRES_PORT}/{PG_DB}",
                             connect_timeout=2) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.Error:
        return False


def _kafka_ready() -> bool:
    import asyncio
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        if sock.connect_ex((HOST, KAFKA_PORT)) != 0:
            return False
    from aiokafka.admin import AIOKafkaAdminClient

    async def probe():
        admin = AIOKafkaAdminClient(bootstrap_servers=f"{HOST}:{KAFKA_PORT}", request_timeout_ms=3000)
        try:
            await admin.start()
            return bool((await admin.describe_cluster()).get("brokers"))
        finally:
            await admin.close()

    try:
        return asyncio.run(probe())
    except Exception:
        return False


def knative_limits() -> dict[str, dict]:
    """Function -> {"cpu": cores, "memory": bytes, "threads": str} of its Knative Service."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    found = {}
    for doc in yaml.safe_load_all((REPO / "knative" / "base" / "services.yaml").read_text()):
        name = doc["metadata"]["name"].removeprefix("udb-")
        if name not in FUNCTION_PORTS:
            continue  # the -api Services reuse the same images
        container = doc["spec"]["template"]["spec"]["containers"][0]
        limits = container["resources"]["limits"]
        cpu = limits["cpu"]
        memory = limits["memory"]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        found[name] = {"cpu": float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu),
                       "memory": int(memory[:-2]) * units[memory[-2:]],
                       "threads": env.get("THREADS", "8")}
    return found


def containers_env(name: str, endpoints: dict) -> dict[str, str]:
    """The stack's settings for `name` (devstack.stack.function_env), pointed at the containers."""
    env = stack.function_env(name)
    env.update({
        "UDB_S3_ENDPOINT": endpoints["s3"], "UDB_S3_ACCESS_KEY": MINIO_USER, "UDB_S3_SECRET_KEY": MINIO_PASSWORD,
        "UDB_KAFKA_BOOTSTRAP": endpoints["kafka"], "UDB_BUCKET": BUCKET,
        # UDB_HOME is a volume all the function containers share: it holds the tenants' source
        # secrets (LocalSecretStore), which Knative keeps in Kubernetes Secrets instead. Otherwise
        # /tmp is the only writable place (read-only root, as on Knative).
        "UDB_HOME": SHARED_HOME, "UDB_OTEL_FILE": "/tmp/traces.jsonl", "UDB_LINEAGE_FILE": "/tmp/lineage.jsonl",
    })
    return env


@pytest.fixture(scope="package")
def function_containers(built_images, service_containers, tmp_path_factory):
    """The six functions, one container each, started one after another so that each cold start
    is measured alone: name -> base URL. Cold starts land in .cache/containers-cold-start.json."""
    limits = knative_limits()
    home = tmp_path_factory.mktemp("udb-containers-home")
    os.chown(home, 10001, 10001)  # the images' user
    home.chmod(0o700)
    started, cold = [], {}
    try:
        for name, port in FUNCTION_PORTS.items():
            env = {**containers_env(name, service_containers), "HOST": HOST, "PORT": str(port),
                   "THREADS": limits[name]["threads"]}
            if name == "reports":
                env["UDB_CHART_PNG"] = "1"  # the image's Chromium draws them (off in the process stack)
            began = time.monotonic()
            container = start_container(
                built_images[name], env,
                mem_limit=limits[name]["memory"], memswap_limit=limits[name]["memory"],
                nano_cpus=int(limits[name]["cpu"] * 1e9),
                read_only=True, tmp="size=1g,mode=1777", volumes={home: SHARED_HOME},
                cap_drop=["ALL"], security_opt=["no-new-privileges"])
            started.append(container)
            wrapped = container.get_wrapped_container()
            url = f"http://{HOST}:{port}"
            _wait(name, lambda: _status(url + "/healthz") == 200, wrapped, 120)
            healthz = time.monotonic() - began
            _wait(name, lambda: _status(url + "/readyz", timeout=10) == 200, wrapped, 120)
            cold[name] = {"healthz_s": round(healthz, 2), "readyz_s": round(time.monotonic() - began, 2),
                          "cpu": limits[name]["cpu"], "memory_mib": limits[name]["memory"] // 2**20}
        COLD_START_FILE.parent.mkdir(parents=True, exist_ok=True)
        COLD_START_FILE.write_text(json.dumps(cold, indent=2) + "\n")
        print("\ncold starts (container start -> first 200):", json.dumps(cold))
        yield {name: f"http://{HOST}:{port}" for name, port in FUNCTION_PORTS.items()} | {"_cold": cold,
                                                                                         "_containers": started}
    finally:
        for container in reversed(started):
            with contextlib.suppress(Exception):
                container.stop()


@pytest.fixture(scope="package")
def containers_stack(service_containers, function_containers):
    """The broker (devstack.broker) as a host process in front of the function containers."""
    argv = [sys.executable, "-m", "devstack.broker", "--port", str(BROKER_PORT),
            "--kafka", service_containers["kafka"], "--eventing", str(REPO / "eventing"),
            "--instance", "udb-containers-broker"]
    for name in FUNCTION_PORTS:
        argv += ["--subscriber", f"udb-{name}={function_containers[name]}/"]
    log_path = REPO / ".cache" / "logs" / "containers-broker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **containers_env("broker", service_containers)}
    env["UDB_HOME"] = str(REPO / ".cache" / "containers-home")
    with open(log_path, "ab") as log:
        broker = subprocess.Popen(argv, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while _status(f"http://{HOST}:{BROKER_PORT}/healthz") != 200:
            assert broker.poll() is None, f"the broker exited; log {log_path}"
            assert time.monotonic() < deadline, f"the broker is not up after 60s; log {log_path}"
            time.sleep(0.2)
        yield {**{k: v for k, v in function_containers.items() if not k.startswith("_")},
               **service_containers, "broker": f"http://{HOST}:{BROKER_PORT}/{stack.NAMESPACE}/{stack.BROKER}"}
    finally:
        broker.terminate()
        try:
            broker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait()
