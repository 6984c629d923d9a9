"""Fail any `integration` or `e2e` test that mocks or monkeypatches a network client.

Those tests exist to talk to real Kafka, MinIO, PostgreSQL and WebDAV; a patched httpx,
boto3/botocore, aiokafka, socket or database driver would make them pass without doing so.
Caught: `monkeypatch.setattr`/`setitem` and `unittest.mock.patch`/`patch.object` aimed at such
a module (or a class/function defined in one), and any Mock left on such a module's attributes.
"""
from __future__ import annotations

import sys
import types
from unittest import mock

import pytest

NETWORK_PACKAGES = ("httpx", "httpcore", "boto3", "botocore", "s3transfer", "aiokafka", "kafka", "socket",
                    "ssl", "http.client", "urllib3", "requests", "psycopg", "psycopg2", "asyncpg",
                    "duckdb", "cloudevents.kafka")
GUARDED_MARKERS = ("integration", "e2e")


def _module_of(target) -> str | None:
    if isinstance(target, str):
        return target
    if isinstance(target, types.ModuleType):
        return target.__name__
    return getattr(target, "__module__", None) or getattr(type(target), "__module__", None)


def is_network(target) -> bool:
    name = _module_of(target)
    if not name:
        return False
    return any(name == pkg or name.startswith(pkg + ".") for pkg in NETWORK_PACKAGES)


class _Guard:
    def __init__(self):
        self.violations: list[str] = []
        self._saved = []

    def install(self) -> None:
        guard = self
        original_setattr = pytest.MonkeyPatch.setattr
        original_enter = mock._patch.__enter__

        def setattr(self, target, name=mock.DEFAULT, value=mock.DEFAULT, raising=True):
            if is_network(target):
                guard.violations.append(f"monkeypatch.setattr on {_module_of(target)}"
                                        + (f".{name}" if isinstance(name, str) else ""))
            return original_setattr(self, target, name, value, raising) if value is not mock.DEFAULT \
                else original_setattr(self, target, name, raising=raising)

        def enter(self):
            target = self.getter()
            if is_network(target):
                guard.violations.append(f"mock.patch of {_module_of(target)}.{self.attribute}")
            return original_enter(self)

        self._saved = [(pytest.MonkeyPatch, "setattr", original_setattr), (mock._patch, "__enter__", original_enter)]
        pytest.MonkeyPatch.setattr = setattr
        mock._patch.__enter__ = enter

    def uninstall(self) -> None:
        for owner, name, value in self._saved:
            setattr(owner, name, value)

    def scan_modules(self) -> None:
        for name, module in list(sys.modules.items()):
            if module is None or not is_network(name):
                continue
            for attr, value in list(vars(module).items()):
                if isinstance(value, mock.NonCallableMock):
                    self.violations.append(f"{name}.{attr} is a {type(value).__name__}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    if not any(item.get_closest_marker(m) for m in GUARDED_MARKERS):
        yield
        return
    guard = _Guard()
    guard.install()
    try:
        outcome = yield
    finally:
        guard.uninstall()
    guard.scan_modules()
    if guard.violations:
        outcome.force_exception(pytest.fail.Exception(
            "network clients must not be mocked in integration/e2e tests: " + "; ".join(guard.violations),
            pytrace=False))
