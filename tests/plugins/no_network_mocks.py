"""Fail any test but a unit test that mocks or monkeypatches a network client.

Integration, e2e, security, reliability and container tests exist to talk to real Kafka, MinIO,
PostgreSQL, WebDAV and real server processes; a patched httpx, boto3/botocore, aiokafka, socket
or database driver -- or a patched UDB network entry point such as `shared.sources.http.request`
-- would make them pass without doing so.

Caught, in every phase of such a test (its fixtures' setup and teardown included):
`monkeypatch.setattr`/`setitem` and `unittest.mock.patch`/`patch.object` aimed at a network
module (or a class/function defined in one), and any Mock left on such a module's attributes.
On UDB's own network modules only a callable may not be replaced: a tuning constant (a retry
backoff) may be, since the real client still runs.
Exempt: tests marked `unit` (they may carry another marker too, e.g. `unit` + `security`).
"""
from __future__ import annotations

import sys
import types
from unittest import mock

import pytest

NETWORK_PACKAGES = ("httpx", "httpcore", "boto3", "botocore", "s3transfer", "aiokafka", "kafka", "socket",
                    "ssl", "http.client", "urllib3", "requests", "psycopg", "psycopg2", "asyncpg",
                    "duckdb", "cloudevents.kafka")
# UDB's own network entry points: every request, connection and resolution goes through these.
UDB_NETWORK_MODULES = ("shared.security.netguard", "shared.security.egressproxy", "shared.storage.s3store", "shared.serving.jobevents",
                       "shared.sources.oauth", "shared.sources.http", "shared.sources.rest", "shared.sources.s3",
                       "shared.sources.postgres", "shared.sources.webdav", "shared.sources.msgraph",
                       "shared.sources.gdrive", "devstack.broker")
EXEMPT_MARKER = "unit"


def _module_of(target) -> str | None:
    if isinstance(target, str):
        return target
    if isinstance(target, types.ModuleType):
        return target.__name__
    return getattr(target, "__module__", None) or getattr(type(target), "__module__", None)


def _within(name: str, packages) -> bool:
    return any(name == pkg or name.startswith(pkg + ".") for pkg in packages)


def is_network(target) -> bool:
    name = _module_of(target)
    return bool(name) and _within(name, NETWORK_PACKAGES)


def is_udb_network(target) -> bool:
    name = _module_of(target)
    return bool(name) and _within(name, UDB_NETWORK_MODULES)


def _violation(target, replacement) -> bool:
    """A patch of a third-party network module is always one; of UDB's, when what goes in is
    callable (a function, a class, a Mock), not a constant."""
    return is_network(target) or (is_udb_network(target) and callable(replacement))


class _Guard:
    def __init__(self):
        self.violations: list[str] = []
        self._saved = []

    def install(self) -> None:
        guard = self
        original_setattr = pytest.MonkeyPatch.setattr
        original_setitem = pytest.MonkeyPatch.setitem
        original_enter = mock._patch.__enter__

        def setattr(self, target, name=mock.DEFAULT, value=mock.DEFAULT, raising=True):
            replacement = value if value is not mock.DEFAULT else name  # setattr("mod.attr", value)
            if _violation(target, replacement):
                guard.violations.append(f"monkeypatch.setattr on {_module_of(target)}"
                                        + (f".{name}" if isinstance(name, str) and value is not mock.DEFAULT else ""))
            return original_setattr(self, target, name, value, raising) if value is not mock.DEFAULT \
                else original_setattr(self, target, name, raising=raising)

        def setitem(self, dic, name, value):
            if dic is sys.modules and (_within(str(name), NETWORK_PACKAGES) or _within(str(name), UDB_NETWORK_MODULES)):
                guard.violations.append(f"monkeypatch.setitem of sys.modules[{name!r}]")
            elif isinstance(dic, dict) and "__name__" in dic and _violation(str(dic["__name__"]), value):
                guard.violations.append(f"monkeypatch.setitem on {dic['__name__']}.{name}")
            return original_setitem(self, dic, name, value)

        def enter(self):
            target = self.getter()
            replacement = self.new if self.new is not mock.DEFAULT else mock.MagicMock()
            if _violation(target, replacement):
                guard.violations.append(f"mock.patch of {_module_of(target)}.{self.attribute}")
            return original_enter(self)

        self._saved = [(pytest.MonkeyPatch, "setattr", original_setattr),
                       (pytest.MonkeyPatch, "setitem", original_setitem),
                       (mock._patch, "__enter__", original_enter)]
        pytest.MonkeyPatch.setattr = setattr
        pytest.MonkeyPatch.setitem = setitem
        mock._patch.__enter__ = enter

    def uninstall(self) -> None:
        for owner, name, value in self._saved:
            setattr(owner, name, value)

    def scan_modules(self) -> None:
        for name, module in list(sys.modules.items()):
            if module is None or not (is_network(name) or is_udb_network(name)):
                continue
            for attr, value in list(vars(module).items()):
                if isinstance(value, mock.NonCallableMock):
                    self.violations.append(f"{name}.{attr} is a {type(value).__name__}")


def _guarded(item) -> bool:
    return item.get_closest_marker(EXEMPT_MARKER) is None


def _guard_phase(item, phase: str):
    if not _guarded(item):
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
            f"network clients must not be mocked outside unit tests ({phase}): " + "; ".join(guard.violations),
            pytrace=False))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    yield from _guard_phase(item, "setup")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    yield from _guard_phase(item, "call")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    yield from _guard_phase(item, "teardown")
