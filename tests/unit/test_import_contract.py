"""The import contract (pyproject.toml [tool.importlinter], run by `just lint`).

The repository keeps every contract, and the same contracts, pointed at a small tree that breaks
each rule once, report exactly those breaks: so a contract that silently matched nothing (a typo
in a module name, an ignore that swallows too much) would fail here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _run(config: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(config), "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_repository_keeps_every_import_contract():
    result = _run(REPO / "pyproject.toml", REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout


# A tree with one break of each rule; module names as in UDB so the real contracts apply.
BROKEN_TREE = {
    "shared/__init__.py": "",
    "shared/core/__init__.py": "",
    "shared/core/events.py": "from shared.observability import telemetry\n",  # core below observability
    "shared/observability/__init__.py": "",
    "shared/observability/telemetry.py": "",
    "shared/storage/__init__.py": "",
    # a cycle hidden by an import inside a function, as open_store once had
    "shared/storage/store.py": "def open_store():\n    from shared.storage import s3store\n",
    "shared/storage/s3store.py": "from shared.storage import store\n",
    "shared/security/__init__.py": "",
    "shared/sources/__init__.py": "",
    "shared/serving/__init__.py": "",
    "shared/analysis/__init__.py": "",
    "shared/analysis/charts.py": "import functions.analyze.kpis\n",  # the library importing the application
    "functions/__init__.py": "",
    "functions/analyze/__init__.py": "",
    "functions/analyze/kpis.py": "",
    "functions/artifacts/__init__.py": "",
    "functions/artifacts/kpis_api.py": "from functions.analyze import kpis\n",  # one function importing another
    "frontends/__init__.py": "",
}


def test_each_contract_reports_its_break_in_a_tree_that_breaks_it(tmp_path):
    for name, text in BROKEN_TREE.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    # JSON's strings and arrays are TOML's too.
    lines = [f"[tool.importlinter]\nroot_packages = {json.dumps(config['root_packages'])}\n"]
    for contract in config["contracts"]:
        lines.append("[[tool.importlinter.contracts]]")
        # The repository's temporary ignores name modules this tree does not have.
        lines += [f"{key} = {json.dumps(value)}" for key, value in contract.items() if key != "ignore_imports"]
        lines.append("")
    (tmp_path / "contracts.toml").write_text("\n".join(lines))

    result = _run(tmp_path / "contracts.toml", tmp_path)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "Contracts: 0 kept, 4 broken." in out
    assert "shared.analysis.charts -> functions.analyze.kpis" in out
    assert "functions.artifacts.kpis_api -> functions.analyze.kpis" in out
    assert textwrap.dedent("""\
        shared.core is not allowed to import shared.observability:

        - shared.core.events -> shared.observability.telemetry""") in out
    assert "No cycles are allowed in shared.storage." in out
    # Either import of the two-module cycle is a cycle breaker; grimp names one.
    assert "- .store -> .s3store (1 import)" in out or "- .s3store -> .store (1 import)" in out
    assert out.count("No cycles are allowed in") == 1
