"""docs/security.md shows the action -> role table and the event -> role table as they are in
shared/security/auth.py: one table, in code, mirrored in the docs."""
from __future__ import annotations

import re

import pytest

from shared.security import auth
from tests.conftest import REPO

pytestmark = pytest.mark.security


def _rows(marker: str) -> list[list[str]]:
    text = (REPO / "docs" / "security.md").read_text()
    block = re.search(rf"<!-- {marker} -->(.*?)<!-- /{marker} -->", text, re.S).group(1)
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in block.strip().splitlines()[2:]]
    return rows


def test_the_route_table_in_the_docs_is_the_code():
    assert [tuple(r) for r in _rows("ROUTE_ROLES")] == list(auth.ROUTE_ROLES)


def test_the_event_table_in_the_docs_is_the_code():
    assert dict((t, r) for t, r in _rows("EVENT_ROLES")) == auth.EVENT_ROLES


def _coverage() -> dict[str, list[str]]:
    """The issue's points (1-9, then more) -> the `file::test` names the coverage map gives them."""
    text = (REPO / "docs" / "security.md").read_text()
    block = re.search(r"<!-- COVERAGE -->(.*?)<!-- /COVERAGE -->", text, re.S).group(1)
    points = {}
    for line in block.strip().splitlines()[2:]:
        point, tests = [cell.strip() for cell in line.strip().strip("|").split("|")]
        points[point.split(".", 1)[0]] = re.findall(r"`([^`]+::[^`]+)`", tests)
    return points


def test_the_coverage_map_gives_every_point_tests_that_exist_and_are_marked():
    points = _coverage()
    # The points 1-9, then the outside probe's findings as further points, numbered on.
    assert sorted(points, key=int) == [str(n) for n in range(1, max(10, len(points) + 1))]
    for point, tests in points.items():
        assert tests, f"point {point} names no test"
        for name in tests:
            path, test = name.split("::")
            source = (REPO / path).read_text()
            assert re.search(rf"^(async )?def {re.escape(test)}\(", source, re.M), f"{name} does not exist"
            assert "mark.security" in source, f"{path} is not selected by -m security"


def test_the_probe_table_names_tests_that_exist_and_are_marked():
    """Issue 16's probe table: every attempt names the test that repeats it."""
    rows = _rows("PROBE")
    assert rows and all(len(row) == 4 for row in rows)
    for finding, attempt, outcome, tests in rows:
        names = re.findall(r"`([^`]+::[^`]+)`", tests)
        assert names, f"{finding}: {attempt[:40]}... names no test"
        for name in names:
            path, test = name.split("::")
            source = (REPO / path).read_text()
            assert re.search(rf"^(async )?def {re.escape(test)}\(", source, re.M), f"{name} does not exist"
            assert "mark.security" in source, f"{path} is not selected by -m security"


def test_every_security_module_carries_the_marker():
    for path in sorted((REPO / "tests" / "security").glob("test_*.py")):
        assert re.search(r"^pytestmark = .*pytest\.mark\.security", path.read_text(), re.M), path.name
