"""Each local dev-stack service starts through devstack.services and answers a real request."""

import asyncio
import uuid

import boto3
import httpx
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from devstack import services

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack():
    # Leave alone whatever was already running (e.g. `just stack up`); stop only what we started.
    already_up = {name for name, info in services.status().items() if info["state"] == "up"}
    services.up()
    yield services.endpoints()
    started = [name for name in services.SERVICES if name not in already_up]
    if started:
        services.down(started)


def test_status_reports_every_service_up(stack):
    report = services.status()
    assert {name: info["state"] for name, info in report.items()} == {name: "up" for name in services.SERVICES}


def test_up_is_idempotent(stack):
    pids = {name: info["pid"] for name, info in services.status().items()}
    services.up()
    assert {name: info["pid"] for name, info in services.status().items()} == pids


def test_kafka_produce_and_consume(stack):
    topic = f"udb-test-{uuid.uuid4().hex[:8]}"
    payload = uuid.uuid4().bytes

    async def roundtrip():
        producer = AIOKafkaProducer(bootstrap_servers=stack["kafka"])
        await producer.start()
        try:
            await producer.send_and_wait(topic, payload, key=b"k")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=stack["kafka"],
                                    group_id=f"g-{topic}", auto_offset_reset="earliest")
        await consumer.start()
        try:
            message = await asyncio.wait_for(consumer.getone(), timeout=30)
        finally:
            await consumer.stop()
        return message.value

    assert asyncio.run(roundtrip()) == payload


def test_minio_put_and_get(stack):
    access_key, secret_key = services.minio_credentials()
    s3 = boto3.client("s3", endpoint_url=stack["s3"], aws_access_key_id=access_key,
                      aws_secret_access_key=secret_key, region_name="us-east-1")
    existing = {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}
    if "udb-test" not in existing:
        s3.create_bucket(Bucket="udb-test")
    key = f"probe-{uuid.uuid4().hex}"
    s3.put_object(Bucket="udb-test", Key=key, Body=b"hello udb")
    try:
        assert s3.get_object(Bucket="udb-test", Key=key)["Body"].read() == b"hello udb"
    finally:
        s3.delete_object(Bucket="udb-test", Key=key)


def test_postgres_select_one(stack):
    with psycopg.connect(stack["postgres"], connect_timeout=5) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)


def test_webdav_propfind(stack):
    response = httpx.request("PROPFIND", stack["webdav"] + "/", headers={"Depth": "1"}, timeout=10)
    assert response.status_code == 207
    assert b"multistatus" in response.content
