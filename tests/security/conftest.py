"""Helpers of the security tests: the real functions-framework apps with chosen settings."""
from __future__ import annotations

import pytest
from functions_framework import create_app

from shared.serving import runtime
from shared.security.auth import KeyStore
from shared.core.settings import Settings
from tests.conftest import REPO

JWT_SECRET = "test-secret-" + "x" * 40


@pytest.fixture
def app_for(settings, monkeypatch):
    """make(function, **env) -> (test client, context on the same store). Authentication is
    on unless `UDB_AUTH` says otherwise; settings come from the environment, as deployed."""
    monkeypatch.setenv("UDB_HOME", str(settings.home))
    monkeypatch.setenv("UDB_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("UDB_AUTH", "on")
    monkeypatch.setenv("UDB_JWT_SECRET", JWT_SECRET)

    def make(function: str, **env):
        for name, value in env.items():
            monkeypatch.setenv(name, str(value))
        app = create_app(target="http", source=str(REPO / "functions" / function / "main.py"))
        return app.test_client(), runtime.start(function, Settings.from_env())

    return make


def bearer(key: str, **extra) -> dict:
    return {"Authorization": f"Bearer {key}", **extra}


def new_key(ctx, tenant: str, role: str) -> str:
    return KeyStore(ctx.store).create(tenant, role, "test")[0]
