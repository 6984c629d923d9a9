"""The plugin that keeps every test but the unit tests honest catches a mocked network client, in
every phase, under every marker but `unit`, UDB's own network entry points included."""
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.unit

CASES = {
    "monkeypatch": '''
import httpx, pytest
@pytest.mark.integration
def test_fake(monkeypatch):
    monkeypatch.setattr(httpx.Client, "send", lambda *a, **k: None)
''',
    "mock_patch": '''
import pytest
from unittest import mock
@pytest.mark.e2e
def test_fake():
    with mock.patch("boto3.client"):
        pass
''',
    "left_mock": '''
import pytest, socket
from unittest import mock
@pytest.mark.integration
def test_fake():
    socket.create_connection = mock.MagicMock()
''',
    # The bypasses the plugin used to let through (issue 18): a patch made by a fixture...
    "fixture": '''
import httpx, pytest
@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(httpx.Client, "send", lambda *a, **k: None)
@pytest.mark.integration
def test_fake(offline):
    pass
''',
    # ...a patch in a test marked only `security`...
    "security_only": '''
import pytest, socket
@pytest.mark.security
def test_fake(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [])
''',
    # ...and a patch of UDB's own network wrappers.
    "udb_wrapper": '''
import pytest
from shared.sources import http
@pytest.mark.e2e
def test_fake(monkeypatch):
    monkeypatch.setattr(http, "request", lambda *a, **k: None)
''',
    "udb_wrapper_by_path": '''
import pytest
from unittest import mock
@pytest.mark.reliability
def test_fake():
    with mock.patch("shared.storage.s3store.S3Store"):
        pass
''',
    "fixture_teardown": '''
import pytest, socket
from unittest import mock
@pytest.fixture
def later():
    yield
    socket.create_connection = mock.MagicMock()
@pytest.mark.integration
def test_fake(later):
    pass
''',
}
MARKERS = "[pytest]\nmarkers =\n    integration: x\n    e2e: x\n    security: x\n    reliability: x\n    unit: x\n"


@pytest.mark.parametrize("case", list(CASES))
def test_plugin_fails_a_test_that_mocks_the_network(pytester, monkeypatch, case):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pytester.makeconftest('pytest_plugins = ["tests.plugins.no_network_mocks"]\n')
    pytester.makeini(MARKERS)
    pytester.makepyfile(CASES[case])
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    # A violation in a fixture's teardown is an error of a test that passed; a Mock left on a
    # module is reported by every phase that ends with it still there.
    assert outcomes.get("passed", 0) == 0 or outcomes.get("errors", 0) >= 1, outcomes
    assert outcomes.get("failed", 0) + outcomes.get("errors", 0) >= 1, outcomes
    result.stdout.fnmatch_lines(["*network clients must not be mocked*"])


def test_plugin_leaves_unit_tests_and_harmless_patches_alone(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pytester.makeconftest('pytest_plugins = ["tests.plugins.no_network_mocks"]\n')
    pytester.makeini(MARKERS)
    pytester.makepyfile('''
import httpx, os, pytest
from shared.sources import http
@pytest.mark.unit
def test_unit(monkeypatch):
    monkeypatch.setattr(httpx.Client, "send", lambda *a, **k: None)
@pytest.mark.unit
@pytest.mark.security
def test_unit_security(monkeypatch):
    monkeypatch.setattr(http, "request", lambda *a, **k: None)
@pytest.mark.integration
def test_env(monkeypatch):
    monkeypatch.setenv("X", "1")
    monkeypatch.setattr(os, "getcwd", lambda: "/")
@pytest.mark.integration
def test_udb_constant(monkeypatch):
    monkeypatch.setattr(http, "BACKOFF", (0.01, 0.02))  # a retry backoff: the real client still runs
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
