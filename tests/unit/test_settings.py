"""shared/core/settings.py: the typed Settings, how a child process gets them, and the values
parsed here (network allowlist, national-id patterns). Defaults, conversions and overrides:
test_settings_tenancy.py."""
from __future__ import annotations

import dataclasses
import ipaddress
import os
from pathlib import Path

import pytest

from shared.core.errors import SourceError, ValidationError
from shared.core.settings import (DEFAULT_NATIONAL_IDS, Settings, child_env, library_env, parse_allowlist,
                                  parse_national_ids)

pytestmark = pytest.mark.unit


def test_as_env_round_trips_through_from_env(tmp_path):
    settings = Settings.from_env(env={}, home=tmp_path / "h", mode="stack", chart_png=False, ready_cache_seconds=2.5,
                                 net_allowlist="10.0.0.0/8,example.com", link_ttl_seconds=0)
    env = settings.as_env()
    assert env["UDB_HOME"] == str(tmp_path / "h") and env["UDB_MODE"] == "stack"
    assert env["UDB_CHART_PNG"] == "0" and env["UDB_READY_CACHE_SECONDS"] == "2.5"
    assert set(env) == {f.metadata["env"] for f in dataclasses.fields(Settings)}
    assert Settings.from_env(env=env) == settings


def test_child_env_carries_the_settings_and_puts_pythonpath_first(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHONPATH", "/already/there")
    monkeypatch.setenv("UDB_MODE", "cluster")   # the parent's environment is overridden by its Settings
    settings = Settings(home=tmp_path, mode="embedded")
    env = child_env(settings, pythonpath="/repo", EXTRA="1")
    assert env["PYTHONPATH"] == os.pathsep.join(["/repo", "/already/there"])
    assert env["UDB_MODE"] == "embedded" and env["UDB_HOME"] == str(tmp_path) and env["EXTRA"] == "1"
    assert env["PATH"] == os.environ["PATH"]
    monkeypatch.delenv("PYTHONPATH")
    assert child_env(pythonpath="/repo")["PYTHONPATH"] == "/repo"


def test_library_env_never_sets_a_udb_setting(monkeypatch):
    monkeypatch.delenv("UDB_UNIT_LIB_FLAG", raising=False)
    monkeypatch.setenv("UNIT_LIB_FLAG", "mine")
    monkeypatch.delenv("UNIT_LIB_OTHER", raising=False)
    library_env({"UNIT_LIB_FLAG": "theirs", "UNIT_LIB_OTHER": "1"})
    assert os.environ["UNIT_LIB_FLAG"] == "mine" and os.environ["UNIT_LIB_OTHER"] == "1"
    library_env({"UNIT_LIB_FLAG": "theirs"}, force=True)
    assert os.environ["UNIT_LIB_FLAG"] == "theirs"
    with pytest.raises(ValueError, match="UDB_UNIT_LIB_FLAG is a UDB setting: pass Settings"):
        library_env({"UDB_UNIT_LIB_FLAG": "1"})
    assert "UDB_UNIT_LIB_FLAG" not in os.environ


def test_parse_allowlist():
    networks, hosts, wildcards, exact = parse_allowlist(" 10.0.0.0/8, 192.168.1.7 ,Example.COM., *.corp.example,::1,,")
    assert networks == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.168.1.7/32"),
                        ipaddress.ip_network("::1/128"))
    assert hosts == frozenset({"example.com"})
    assert wildcards == (".corp.example",)
    assert exact == frozenset({ipaddress.ip_address("192.168.1.7"), ipaddress.ip_address("::1")})
    assert parse_allowlist(["10.1.2.3/16"])[0] == (ipaddress.ip_network("10.1.0.0/16"),)   # not strict
    assert parse_allowlist("") == ((), frozenset(), (), frozenset())
    with pytest.raises(SourceError, match=r"^UDB_NET_ALLOWLIST: not a CIDR, address or host name: bad host!, \*\.$"):
        parse_allowlist("10.0.0.0/8,bad host!,*.")


def test_parse_national_ids():
    assert parse_national_ids("") == DEFAULT_NATIONAL_IDS
    assert parse_national_ids("{}") == {}
    assert parse_national_ids('{"nl_bsn": "\\\\b\\\\d{9}\\\\b"}') == {"nl_bsn": "\\b\\d{9}\\b"}
    assert parse_national_ids(r"\bX\d{6}\b") == {"national_id": r"\bX\d{6}\b"}
    for raw, message in (("{not json", "not a JSON object of name: regex"),
                         ('{"a": 1}', "expected a JSON object of name: regex strings"),
                         ("(unclosed", "pattern 'national_id' does not compile"),
                         ('{"any": "x*"}', "pattern 'any' matches the empty string")):
        with pytest.raises(ValueError, match=message):
            parse_national_ids(raw)


def test_the_default_national_ids_match_known_examples_and_not_ordinary_numbers():
    import re
    ssn, nino, cf = (re.compile(DEFAULT_NATIONAL_IDS[k]) for k in ("us_ssn", "uk_nino", "it_codice_fiscale"))
    assert ssn.search("ssn 123-45-6789") and not ssn.search("000-12-3456") and not ssn.search("123-00-4567")
    assert nino.search("AB 12 34 56 C") and not nino.search("QQ 12 34 56 C") and nino.search("AB123456D") and not nino.search("DA123456A")
    assert cf.search("RSSMRA85T10A562S") and not cf.search("RSSMRA85T10A562")
    assert not ssn.search("order 2024-05-17")


@pytest.mark.parametrize("overrides,variable,problem", [
    ({"mode": "cloud"}, "UDB_MODE", "expected one of embedded, stack, cluster; found 'cloud'"),
    ({"store": "gcs"}, "UDB_STORE", "expected one of local, s3; found 'gcs'"),
    ({"secrets_backend": "vault"}, "UDB_SECRETS", "expected one of local, kubernetes; found 'vault'"),
    ({"auth": "maybe"}, "UDB_AUTH", "expected one of on, off, auto; found 'maybe'"),
    ({"jwt_secret": "short"}, "UDB_JWT_SECRET", "expected at least 32 characters, found 5"),
    ({"net_allowlist": "no such!"}, "UDB_NET_ALLOWLIST", "not a CIDR, address or host name: no such!"),
    ({"otel_exporter": "zipkin"}, "UDB_OTEL_EXPORTER", "expected one of none, otlp, file; found 'zipkin'"),
    ({"otel_exporter": "file"}, "UDB_OTEL_FILE", "UDB_OTEL_EXPORTER=file needs a span file path"),
    ({"lineage": "http", "lineage_url": "ftp://x"}, "UDB_LINEAGE_URL",
     "UDB_LINEAGE=http needs an http(s) URL, found 'ftp://x'"),
    ({"lineage": "file"}, "UDB_LINEAGE_FILE", "UDB_LINEAGE=file needs a file path"),
    ({"graph_url": "graph.microsoft.com"}, "UDB_GRAPH_URL", "expected an http(s) URL, found 'graph.microsoft.com'"),
    ({"kpi_max_bytes": 0}, "UDB_KPI_MAX_BYTES", "expected a positive number, found 0"),
    ({"link_ttl_seconds": -1}, "UDB_LINK_TTL_SECONDS", "expected 0 (no links) or more seconds, found -1"),
    ({"analyze_memory_mb": -1}, "UDB_ANALYZE_MEMORY_MB", "expected 0 (off) or more, found -1"),
    ({"artifact_retention_days": -2}, "UDB_ARTIFACT_RETENTION_DAYS", "expected 0 (keep forever) or more days, found -2"),
])
def test_each_rule_names_its_variable(overrides, variable, problem):
    assert Settings().problems() == {}
    settings = dataclasses.replace(Settings(), **overrides)
    assert settings.problems() == {variable: problem}
    with pytest.raises(ValidationError) as error:
        Settings.from_env(env={}, **overrides)
    assert error.value.problems == {variable: problem}


def test_conversions_of_floats_and_paths():
    settings = Settings.from_env(env={"UDB_READY_CACHE_SECONDS": "0.25", "UDB_HOME": "/data/udb"})
    assert settings.ready_cache_seconds == 0.25 and settings.home == Path("/data/udb")
    with pytest.raises(ValidationError) as error:
        Settings.from_env(env={"UDB_READY_CACHE_SECONDS": "soon"})
    assert error.value.problems == {"UDB_READY_CACHE_SECONDS": "expected float, found 'soon'"}


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().mode = "stack"
