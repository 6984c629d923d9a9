"""The tests mirror the source tree: each module of shared/, functions/ and frontends/ has a test
file named after it somewhere under tests/ (any marker folder), so its tests are found by name.

`shared/security/netguard.py` is mirrored by `test_netguard.py`; a module whose name is common
(`handler.py`, `main.py`, a source's `http.py`) may take its package's name too:
`test_sources_http.py`, `test_analyze_handler.py`. A module without one is listed below with
where it is tested today; the list only shrinks: a module that gains its test file must leave it
(the test says so), and a new module without one fails here.
"""
from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = ("shared", "functions", "frontends")

# Module -> where it is tested instead. Each entry is a test file to write or to rename to.
NOT_MIRRORED = {
    # shared/: tested through the pieces that use them
    "shared/serving/embedded.py": "e2e/test_embedded_pipeline.py and every embedded pipeline test",
    "shared/serving/httpfn.py": "unit/test_http_targets.py, unit/test_readyz_cache.py",
    "shared/serving/runtime.py": "unit/test_http_targets.py, unit/test_handlers.py",
    "shared/sources/files.py": "integration/test_file_formats.py",
    "shared/sources/gdrive.py": "integration/test_sources_oauth.py",
    "shared/sources/msgraph.py": "integration/test_sources_oauth.py",
    "shared/sources/postgres.py": "integration/test_sources_s3_postgres.py, integration/test_incremental_postgres.py",
    "shared/sources/s3.py": "integration/test_sources_s3_postgres.py, integration/test_incremental_s3.py",
    # functions/: the HTTP targets and handlers are tested together, by function and by stage
    "functions/analyze/main.py": "unit/test_http_targets.py (every function's target)",
    "functions/artifacts/main.py": "unit/test_http_targets.py",
    "functions/discover/main.py": "unit/test_http_targets.py",
    "functions/reports/main.py": "unit/test_http_targets.py",
    "functions/sync/main.py": "unit/test_http_targets.py",
    "functions/writer/main.py": "unit/test_http_targets.py",
    "functions/analyze/handler.py": "unit/test_handlers.py, integration/test_analysis_pipeline.py",
    "functions/discover/handler.py": "unit/test_handlers.py, unit/test_detect.py",
    "functions/sync/handler.py": "unit/test_handlers.py",
    "functions/writer/handler.py": "unit/test_handlers.py, reliability/test_writer_crashes.py",
    "functions/reports/handler.py": "unit/test_reports.py, reliability/test_wide_reports.py",
    "functions/artifacts/handler.py": "integration/test_analysis_pipeline.py, security/test_report_injection.py",
    "functions/artifacts/admin.py": "unit/test_prune.py, integration/test_prune_s3.py",
    "functions/reports/bounded.py": "unit/test_reports.py",
    "functions/reports/render.py": "unit/test_reports.py, integration/test_reports_warm.py",
    # frontends/
    "frontends/cli.py": "e2e/test_embedded_pipeline.py, unit/test_docs.py (every documented command)",
    "frontends/mcp_server/backends.py": "integration/test_mcp.py, e2e/test_mcp_stack.py",
    "frontends/mcp_server/resources.py": "integration/test_mcp.py",
    "frontends/mcp_server/tools.py": "integration/test_mcp.py, e2e/test_mcp_stack.py",
    "frontends/mcp_server/transport.py": "integration/test_mcp.py",
    "frontends/mcp_server/udb.py": "integration/test_mcp.py",
}


def source_modules() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for root in SOURCE_ROOTS for p in (ROOT / root).rglob("*.py")
                  if p.name != "__init__.py" and "__pycache__" not in p.parts)


def existing_test_files() -> set[str]:
    return {p.name for p in (ROOT / "tests").rglob("test_*.py")}


def mirrored(module: str, names: set[str]) -> bool:
    path = Path(module)
    return f"test_{path.stem}.py" in names or f"test_{path.parent.name}_{path.stem}.py" in names


def test_every_module_has_a_test_file_named_after_it():
    names = existing_test_files()
    missing = [m for m in source_modules() if not mirrored(m, names) and m not in NOT_MIRRORED]
    assert missing == [], (f"no test file named after {missing}: add tests/<marker>/test_<module>.py "
                           "(or test_<package>_<module>.py)")


def test_the_exceptions_are_real_and_still_needed():
    modules, names = set(source_modules()), existing_test_files()
    gone = sorted(set(NOT_MIRRORED) - modules)
    assert gone == [], f"NOT_MIRRORED names modules that no longer exist: {gone}"
    now_mirrored = sorted(m for m in NOT_MIRRORED if mirrored(m, names))
    assert now_mirrored == [], f"these have their test file now; remove them from NOT_MIRRORED: {now_mirrored}"
    named = {part.split(" ")[0] for where in NOT_MIRRORED.values() for part in where.split(", ")}
    assert sorted(t for t in named if not (ROOT / "tests" / t).is_file()) == []


def test_the_rule_on_known_names():
    names = {"test_netguard.py", "test_sources_http.py", "test_analyze_handler.py"}
    assert mirrored("shared/security/netguard.py", names)
    assert mirrored("shared/sources/http.py", names)
    assert mirrored("functions/analyze/handler.py", names)
    assert not mirrored("functions/sync/handler.py", names)
