# UDB tasks. Prerequisites: Python 3.11+ and just; every recipe installs the rest.
set shell := ["bash", "-euo", "pipefail", "-c"]

python := env_var_or_default("PYTHON", "python3")
venv := justfile_directory() / ".venv"
bin := venv / "bin"

# Run the demo: a generated sales dataset through the whole pipeline, in this process
demo: install
    {{bin}}/python samples/make_demo.py .udb/samples/demo
    {{bin}}/udb run .udb/samples/demo

# Every test (unit, integration, e2e; services started and stopped by the tests). ARGS go to pytest.
test *ARGS: install
    {{bin}}/python -m pytest {{ARGS}}

# ruff, mypy and the import contract (pyproject.toml: [tool.ruff], [tool.mypy], [tool.importlinter]); CI runs it before the tests
lint: install
    {{bin}}/ruff check shared functions
    {{bin}}/mypy
    {{bin}}/lint-imports

# Create .venv and install UDB with the pinned dependency tree (skipped when up to date)
install:
    #!/usr/bin/env bash
    set -euo pipefail
    stamp="{{venv}}/.udb-installed-$(cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)"
    if [ -f "$stamp" ]; then exit 0; fi
    if [ ! -x "{{bin}}/python" ]; then {{python}} -m venv "{{venv}}"; fi
    "{{bin}}/python" -m pip install --quiet --upgrade pip
    "{{bin}}/python" -m pip install --quiet -c requirements.lock -e ".[dev]"
    # unstructured-inference (imported by unstructured's PDF path) declares torch, transformers
    # and CUDA, which the `fast` strategy never runs: install it bare (its real run-time needs are
    # in pyproject.toml) and alias spaCy's model so nothing downloads later.
    "{{bin}}/python" -m pip install --quiet --no-deps unstructured-inference==1.6.14 ./packaging/en_core_web_sm
    # Debian's Chromium renders the PNG charts offline (kaleido); skipped with a note if absent.
    bash scripts/ensure-chromium.sh
    rm -f "{{venv}}"/.udb-installed-*
    touch "$stamp"

# Run one command of the CLI, e.g. `just udb status job-...`
udb *ARGS: install
    {{bin}}/udb {{ARGS}}

# The real stack on this machine: Kafka, MinIO, the six functions and the local broker. CMD: up | down | status
stack CMD="status": install
    {{bin}}/python -m devstack.stack {{CMD}}

# Local services alone (kafka minio postgres webdav). CMD: up | down | status
services CMD="status" *NAMES: install
    {{bin}}/python -m devstack.services {{CMD}} {{NAMES}}

# Benchmarks against dlt, ydata-profiling and Evidently (docs/benchmarks.md), e.g. `just bench --quick`,
# `just bench --cases csv,rest`. The others run alone: .venv/bin/python bench/<analysis|broker_hop|cold_start|discover_latency|wide_table>.py
bench *ARGS: install
    #!/usr/bin/env bash
    set -euo pipefail
    # The peers are the optional `bench` extra: installed once, skipped while every pin is met.
    if ! "{{bin}}/python" -c 'import importlib.metadata as md, tomllib; from packaging.requirements import Requirement; reqs = [Requirement(r) for r in tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["bench"]]; raise SystemExit(any(md.version(r.name) not in r.specifier for r in reqs))' 2>/dev/null; then
        "{{bin}}/python" -m pip install --quiet -c requirements.lock -e ".[dev,bench]"
    fi
    # PostgreSQL for the postgres case, the stack (Kafka, MinIO, the functions, the broker) for the
    # stack case: started here when down, and stopped again afterwards.
    started=$("{{bin}}/python" -m devstack.stack status | awk '$2 != "up" && $1 != "postgres" && $1 != "webdav" {print $1}' | tr '\n' ' ')
    pg_down=$("{{bin}}/python" -m devstack.services status postgres | awk '$2 != "up" {print $1}')
    stop() {
        if [ -n "$started" ]; then "{{bin}}/python" -m devstack.stack down >/dev/null; fi
        if [ -n "$pg_down" ]; then "{{bin}}/python" -m devstack.services down postgres >/dev/null; fi
    }
    trap stop EXIT
    "{{bin}}/python" -m devstack.services up postgres >/dev/null
    "{{bin}}/python" -m devstack.stack up >/dev/null
    "{{bin}}/python" -m bench.run {{ARGS}}

# The MCP server for AI agents (docs/mcp.md), e.g. `just mcp`, `just mcp --transport http --port 8765`
mcp *ARGS: install
    {{bin}}/udb mcp {{ARGS}}

# Build the images with the local Docker engine (images/build.py): the Debian base (mmdebstrap, when no
# BASE_IMAGE is set), one image per function and the Kafka, MinIO and PostgreSQL images; sizes printed.
# dockerd is installed (Debian's docker.io) and started when missing, and stopped again afterwards.
# e.g. `just images`, `just images --only writer,kafka`, `BASE_IMAGE=python:3.11.14-slim-bookworm@sha256:... just images`
images *ARGS: install
    #!/usr/bin/env bash
    set -euo pipefail
    engine=$(bash scripts/docker.sh up)
    if [ "$engine" = started ]; then trap 'bash scripts/docker.sh down >/dev/null' EXIT; fi
    "{{bin}}/python" images/build.py {{ARGS}}
