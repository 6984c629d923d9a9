"""Apache Kafka (KRaft, combined broker + controller) from Maven Central jars, run with Java 17."""
from __future__ import annotations

import base64
import hashlib
import shutil
import sys
import uuid
from pathlib import Path

from . import containers
from .config import (HOST, KAFKA_CONTROLLER_PORT, KAFKA_DATA, KAFKA_DIR, KAFKA_LIBS, KAFKA_LOG4J, KAFKA_POM, KAFKA_PORT,
                     KAFKA_VERSION, ServiceError, use_containers)
from .endpoints import endpoints
from .process import port_busy, require, run_async, run_step, spawn, start, stop


def _kafka_stamp() -> str:
    return hashlib.sha256(KAFKA_POM.read_bytes() + KAFKA_VERSION.encode()).hexdigest()


def install_kafka() -> None:
    stamp = KAFKA_LIBS / ".installed"
    if stamp.exists() and stamp.read_text().strip() == _kafka_stamp():
        return
    require("kafka", "java", "Java 17")
    mvn = require("kafka", "mvn", "Maven 3")
    staging = KAFKA_DIR / "libs.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    run_step("kafka", "install", [
        mvn, "-B", "-q", "-f", str(KAFKA_POM), f"-Dkafka.version={KAFKA_VERSION}",
        "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={staging}",
    ], timeout=1200)
    (staging / ".installed").write_text(_kafka_stamp() + "\n")
    shutil.rmtree(KAFKA_LIBS, ignore_errors=True)
    staging.rename(KAFKA_LIBS)


def _kafka_config() -> Path:
    KAFKA_DATA.mkdir(parents=True, exist_ok=True)
    config = KAFKA_DIR / "server.properties"
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{KAFKA_CONTROLLER_PORT}",
        "listeners": f"PLAINTEXT://{HOST}:{KAFKA_PORT},CONTROLLER://{HOST}:{KAFKA_CONTROLLER_PORT}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{KAFKA_PORT}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(KAFKA_DATA),
        "auto.create.topics.enable": "true",
        "num.partitions": "4",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
    }
    config.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
    return config


def _kafka_java(main: str, *args: str, heap: str = "-Xmx512m") -> list[str]:
    return [
        require("kafka", "java", "Java 17"), heap, "-XX:+UseG1GC", "-Djava.awt.headless=true",
        # Keep logging through the broker's own shutdown hook instead of going silent first.
        "-Dlog4j2.shutdownHookEnabled=false",
        f"-Dlog4j2.configurationFile={KAFKA_LOG4J}",
        "-cp", f"{KAFKA_LIBS}/*", main, *args,
    ]


def _launch_kafka() -> int:
    config = _kafka_config()
    if not (KAFKA_DATA / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        run_step("kafka", "format", _kafka_java(
            "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config), heap="-Xmx256m",
        ), timeout=120)
    return spawn("kafka", _kafka_java("kafka.Kafka", str(config)), cwd=KAFKA_DIR)


def kafka_ready(timeout_ms: int = 3000) -> bool:
    # A cheap port probe first keeps aiokafka from logging connection errors while the JVM boots.
    if not port_busy(KAFKA_PORT):
        return False
    try:
        from aiokafka.admin import AIOKafkaAdminClient
    except ImportError:
        raise ServiceError(f"kafka's readiness check needs 'aiokafka' in {sys.executable}: not installed") from None

    async def probe():
        admin = AIOKafkaAdminClient(bootstrap_servers=endpoints()["kafka"],
                                    request_timeout_ms=timeout_ms)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
            return bool(cluster.get("brokers"))
        finally:
            await admin.close()

    try:
        return run_async(probe)
    except Exception:
        return False


def start_kafka(timeout: float = 120) -> None:
    if use_containers():
        return containers.start_container("kafka")
    start("kafka", (KAFKA_PORT, KAFKA_CONTROLLER_PORT), install_kafka, _launch_kafka, kafka_ready, timeout)


def stop_kafka() -> bool:
    if use_containers():
        return containers.stop_container("kafka")
    return stop("kafka", timeout=60)
