"""shared/sources/env.py: what a connector may use beyond the hint (SourceEnv)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from shared.core.errors import SourceError
from shared.core.settings import Settings
from shared.security.secrets import LocalSecretStore
from shared.sources.env import SourceEnv, settings_of

pytestmark = pytest.mark.unit


@pytest.fixture
def secrets(tmp_path):
    return LocalSecretStore(tmp_path / "secrets")


def test_defaults_are_the_declared_settings_not_the_environment(monkeypatch):
    monkeypatch.setenv("UDB_NET_ALLOWLIST", "10.0.0.0/8")
    env = SourceEnv()
    assert env.settings == Settings()
    assert env.settings.net_allowlist == ""
    assert env.options == {} and env.pending_state is None
    assert settings_of(None) == Settings()
    mine = Settings(max_download_bytes=123)
    assert settings_of(SourceEnv(settings=mine)) is mine


def test_plain_values_pass_through_and_references_resolve(secrets):
    env = SourceEnv(tenant="acme", secrets=secrets)
    assert env.resolve_secret("plain-password") == "plain-password"
    assert env.resolve_secret(42) == 42
    ref = env.keep_secret("pg-password", "s3cr3t")
    assert ref == "secret://pg-password"
    assert env.resolve_secret(ref) == "s3cr3t"
    # Per tenant: another tenant does not see it.
    with pytest.raises(SourceError, match="no secret 'pg-password' for tenant other: store it first"):
        SourceEnv(tenant="other", secrets=secrets).resolve_secret(ref)


def test_without_a_secret_store_a_reference_is_a_clear_error():
    with pytest.raises(SourceError, match="needs the secret store"):
        SourceEnv(tenant="acme").resolve_secret("secret://x")
    with pytest.raises(SourceError, match="needs the secret store"):
        SourceEnv(secrets=object()).keep_secret("x", "y")   # no tenant


def test_of_takes_the_context_and_opens_secrets_on_first_use(secrets):
    opened = []

    class Ctx:
        settings = Settings(broker_token="ctx-token")

        def tenant_store(self, tenant):
            return f"store-of-{tenant}"

        @property
        def secrets(self):
            opened.append(1)
            return secrets

    options = {"sheet": "A"}
    env = SourceEnv.of(Ctx(), "acme", options, source_id="src-1")
    assert (env.tenant, env.store, env.settings.broker_token, env.source_id) == \
        ("acme", "store-of-acme", "ctx-token", "src-1")
    assert env.options == options and env.options is not options
    assert opened == []
    assert env.keep_secret("k", "v") == "secret://k"
    assert env.resolve_secret("secret://k") == "v"
    assert opened == [1]
    assert SourceEnv.of(SimpleNamespace(tenant_store=lambda t: None, settings=Settings()), "acme").options == {}
