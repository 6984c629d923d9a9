"""The plugin that keeps integration and e2e tests honest catches a mocked network client."""
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
}


@pytest.mark.parametrize("case", list(CASES))
def test_plugin_fails_a_test_that_mocks_the_network(pytester, monkeypatch, case):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pytester.makeconftest('pytest_plugins = ["tests.plugins.no_network_mocks"]\n')
    pytester.makeini("[pytest]\nmarkers =\n    integration: x\n    e2e: x\n")
    pytester.makepyfile(CASES[case])
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*network clients must not be mocked*"])


def test_plugin_leaves_unit_tests_and_harmless_patches_alone(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pytester.makeconftest('pytest_plugins = ["tests.plugins.no_network_mocks"]\n')
    pytester.makeini("[pytest]\nmarkers =\n    integration: x\n")
    pytester.makepyfile('''
import httpx, os, pytest
def test_unit(monkeypatch):
    monkeypatch.setattr(httpx.Client, "send", lambda *a, **k: None)
@pytest.mark.integration
def test_env(monkeypatch):
    monkeypatch.setenv("X", "1")
    monkeypatch.setattr(os, "getcwd", lambda: "/")
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
