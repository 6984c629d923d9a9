"""docs/security.md shows the action -> role table and the event -> role table as they are in
shared/auth.py: one table, in code, mirrored in the docs."""
from __future__ import annotations

import re

import pytest

from shared import auth
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
