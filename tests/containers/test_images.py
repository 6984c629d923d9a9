"""The built images: within their budgets, nothing of the build left inside, each function's image
holding its own packages and not another's."""
from __future__ import annotations

import subprocess

import pytest

from tests.containers.conftest import images

pytestmark = pytest.mark.containers
ALL = (*images.FUNCTIONS, *images.SERVICES)


def run_in(ref: str, script: str) -> str:
    result = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", ref, "-c", script],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{ref}: {script!r} failed:\n{result.stdout}{result.stderr}"
    return result.stdout


@pytest.mark.parametrize("name", ALL)
def test_image_is_within_its_budget(built_images, name):
    budget = images.budgets()[name]
    size_mb = images.image_size(built_images[name]) / 1e6
    print(f"{built_images[name]}: {size_mb:.0f} MB (budget {budget} MB)")
    assert size_mb <= budget, (f"{built_images[name]} is {size_mb:.0f} MB, over its budget of {budget} MB "
                               "(images/requirements/budgets.txt)")


@pytest.mark.parametrize("name", images.FUNCTIONS)
def test_function_image_holds_no_build_tools_and_runs_as_udb(built_images, name):
    ref = built_images[name]
    # The build stage's pip, wheels and caches stay in the build stage.
    out = run_in(ref, "id -u; for p in /pip /wheels /root/.cache/pip; do [ -e $p ] && echo LEFT $p; done; "
                      "ls /opt/udb; python3 -c 'import sys; print(sys.version_info[:2])'")
    assert out.split() == ["10001", "core", "documents", "function", "(3,", "11)"], out
    history = subprocess.run(["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", ref],
                             capture_output=True, text=True, check=True).stdout
    assert "/wheels" not in history.replace("/wheels/", "") and "secret" not in history.lower()
    assert "pip install" not in history  # installs happened in the build stage only


def test_each_function_image_carries_its_own_packages(built_images):
    # A package with code (origin set): analyze's plotly.js alone makes `plotly` a bare namespace.
    probe = ("python3 -c \"import importlib.util as u; "
             "print(' '.join(m for m in ('duckdb', 'functions_framework', 'unstructured', 'spacy', 'ydata_profiling', "
             "'kaleido', 'scipy', 'psycopg', 'pandas', 'plotly') if getattr(u.find_spec(m), 'origin', None)))\"")
    found = {name: set(run_in(built_images[name], probe).split()) for name in images.FUNCTIONS}
    assert all({"duckdb", "functions_framework"} <= mods for mods in found.values()), found
    assert found["writer"] == {"duckdb", "functions_framework"}
    assert found["analyze"] == {"duckdb", "functions_framework", "scipy"}
    assert {"unstructured", "spacy", "psycopg", "pandas"} <= found["discover"]
    assert {"ydata_profiling", "kaleido", "scipy", "pandas", "plotly"} <= found["reports"]
    assert not {"ydata_profiling", "kaleido"} & (found["discover"] | found["sync"] | found["analyze"] | found["artifacts"])
    # Chromium for the PNG charts only where the reports are drawn.
    assert run_in(built_images["reports"], "test -x /usr/bin/chromium && echo yes").strip() == "yes"
    assert run_in(built_images["analyze"], "test -e /usr/bin/chromium || echo no").strip() == "no"


def test_analyze_and_artifacts_serve_plotly_js_without_the_plotly_package(built_images):
    """Their charts link plotly.js, which they read from the one file of the pinned plotly wheel
    their images carry (images/requirements/<f>.data); the same bytes as the package's."""
    from shared.analysis.charts import plotly_js

    expected = len(plotly_js().encode())
    for name in ("analyze", "artifacts"):
        out = run_in(built_images[name], "python3 -c \"from shared.analysis.charts import plotly_js; "
                                         "print(len(plotly_js().encode()))\"")
        assert int(out) == expected, (name, out)


def test_function_images_share_their_wheel_layers(built_images):
    def layers(ref: str) -> list[str]:
        out = subprocess.run(["docker", "image", "inspect", "--format", "{{json .RootFS.Layers}}", ref],
                             capture_output=True, text=True, check=True).stdout
        return __import__("json").loads(out)

    stacks = {name: layers(built_images[name]) for name in images.FUNCTIONS}
    # base, the .pth/user layer, core: the same three layers in all six images.
    assert len({tuple(s[:3]) for s in stacks.values()}) == 1
    # The documents layer too, for the three functions that read documents.
    assert stacks["discover"][3] == stacks["sync"][3] == stacks["artifacts"][3]


@pytest.mark.parametrize("name", ALL)
def test_no_image_trusts_the_build_machines_own_cas(built_images, name):
    """The machine's extra CAs (the bundle its pip trusts: /usr/local/share/ca-certificates) are
    used by the host's pip only; every image trusts Debian's ca-certificates and nothing else."""
    from pathlib import Path

    local = {path.name: "".join(line for line in path.read_text().splitlines() if not line.startswith("-----"))
             for path in Path("/usr/local/share/ca-certificates").glob("**/*.crt")}
    bundle = run_in(built_images[name], "cat /etc/ssl/certs/ca-certificates.crt; ls /usr/local/share/ca-certificates")
    flat = bundle.replace("\n", "")
    assert [n for n, body in local.items() if body and body in flat] == []
    assert bundle.count("BEGIN CERTIFICATE") > 100  # Debian's bundle is there
    assert not bundle.rstrip().endswith(".crt")  # no local CA file in the image either
