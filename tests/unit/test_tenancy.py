"""shared/core/tenancy.py: tenant, job and artifact ids and the names derived from them."""
from __future__ import annotations

import re

import pytest

from shared.core.errors import InputError
from shared.core.tenancy import (DEFAULT_TENANT, identifier, new_job_id, table_name, tenant_prefix,
                                 validate_artifact_name, validate_job_id, validate_tenant)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("tenant", ["ab", "demo", "acme-2", "a" + "b" * 30])
def test_valid_tenants_come_back_unchanged(tenant):
    assert validate_tenant(tenant) == tenant


@pytest.mark.parametrize("tenant", ["a", "A-corp", "2acme", "-acme", "acme_x", "a" + "b" * 31, "", None, 7,
                                    "acme/..", "acme\n"])
def test_invalid_tenants_are_refused_naming_the_value(tenant):
    with pytest.raises(InputError, match=re.escape(f"invalid tenant id {tenant!r}")):
        validate_tenant(tenant)


def test_default_tenant_is_valid():
    assert validate_tenant(DEFAULT_TENANT) == "demo"


def test_job_ids():
    assert validate_job_id("job-0123456789abcdef") == "job-0123456789abcdef"
    for bad in ("job-0123456789ABCDEF", "job-0123456789abcde", "job-0123456789abcdef0", "0123456789abcdef", None):
        with pytest.raises(InputError, match="expected 'job-' and 16 hex digits"):
            validate_job_id(bad)


def test_new_job_ids_are_valid_and_distinct():
    ids = {new_job_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(validate_job_id(i) == i for i in ids)


def test_artifact_names():
    for good in ("index.html", "profile-sales.html", "chart_1.png", "A" * 128):
        assert validate_artifact_name(good) == good
    for bad in (".hidden", "../x", "a/b", "a..b", "A" * 129, "", "-x" + "/", None):
        with pytest.raises(InputError, match="invalid artifact name"):
            validate_artifact_name(bad)


@pytest.mark.parametrize("text,fallback,expected", [
    ("Sales 2024.csv", "t", "sales_2024_csv"),
    ("  --Orders--  ", "t", "orders"),
    ("2024 sales", "t", "t_2024_sales"),
    ("2024", "s", "s_2024"),
    ("!!!", "t", "t"),
    ("", "x", "x"),
    ("Ünïcode Näme", "t", "n_code_n_me"),
    ("a" * 60, "t", "a" * 48),
])
def test_identifier(text, fallback, expected):
    assert identifier(text, fallback) == expected


def test_table_name_joins_source_and_table():
    assert table_name("My Files", "Sales 2024.csv") == "my_files__sales_2024_csv"
    assert table_name("", "") == "s__t"
    assert table_name("9lives", "1st") == "s_9lives__t_1st"


def test_tenant_prefix():
    assert tenant_prefix("acme") == "tenants/acme/"
    with pytest.raises(InputError):
        tenant_prefix("../acme")
