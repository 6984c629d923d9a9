"""The SSRF guard: what it refuses (after DNS, on every redirect hop, for PostgreSQL hosts),
what the allowlist admits, and that a refusal is a clear failed job. Refused addresses are
refused before any connection is tried: no traffic leaves for them.
"""
from __future__ import annotations

import ipaddress

import httpx
import pytest

from functions.discover.handler import handle as discover_handle
from shared.core import events
from shared.security import netguard
from shared.core.errors import SourceError
from shared.serving.runtime import invoke
from shared.core.settings import Settings
from shared.sources import SourceEnv, http as web, postgres, rest
from shared.core.tenancy import new_job_id
from tests.conftest import LOOPBACK
from tests.peers.rest_api import RestPeer

pytestmark = [pytest.mark.integration, pytest.mark.security]
PEERS = Settings(net_allowlist=LOOPBACK)  # settings under which the loopback test peers are reachable


@pytest.fixture(scope="module")
def peer():
    with RestPeer(total=20) as server:
        yield server


@pytest.mark.parametrize("address, reason", [
    ("127.0.0.1", "a loopback address"), ("::1", "a loopback address"), ("10.1.2.3", "a private address"),
    ("192.168.0.10", "a private address"), ("172.16.5.4", "a private address"), ("100.64.1.1", "a private address"),
    ("169.254.10.10", "a link-local address"), ("fe80::1", "a link-local address"), ("0.0.0.0", "an unspecified address"),
    ("224.0.0.1", "a multicast address"), ("fc00::5", "a private address"),
    ("169.254.169.254", "a cloud metadata endpoint"), ("fd00:ec2::254", "a cloud metadata endpoint"),
    ("::ffff:127.0.0.1", "a loopback address"), ("::ffff:169.254.169.254", "a cloud metadata endpoint"),
])
def test_refused_addresses(address, reason):
    guard = netguard.Guard.parse("")
    with pytest.raises(netguard.BlockedAddress, match="refused to connect to") as info:
        guard.check(address, 80)
    assert reason in str(info.value)
    assert guard.refusal(ipaddress.ip_address("93.184.216.34")) is None  # a public address


def test_allowlist_admits_ranges_and_hosts_but_metadata_only_by_name():
    guard = netguard.Guard.parse("127.0.0.0/8, ::1, 10.0.0.0/8, files.internal, *.corp.example")
    assert guard.check("127.0.0.1") == ["127.0.0.1"] and guard.check("10.9.9.9") == ["10.9.9.9"]
    assert guard.host_admitted("files.internal") and guard.host_admitted("a.b.corp.example")
    assert not guard.host_admitted("corp.example.evil")
    wide = netguard.Guard.parse("0.0.0.0/0, 169.254.0.0/16")
    with pytest.raises(netguard.BlockedAddress, match="cloud metadata endpoint"):
        wide.check("169.254.169.254")
    with pytest.raises(netguard.BlockedAddress, match="cloud metadata endpoint"):
        wide.check("metadata.google.internal")
    assert netguard.Guard.parse("169.254.169.254").check("169.254.169.254") == ["169.254.169.254"]
    with pytest.raises(SourceError, match="UDB_NET_ALLOWLIST: not a CIDR, address or host name: 10.0.0.0/99"):
        netguard.Guard.parse("10.0.0.0/99")
    with pytest.raises(Exception, match="UDB_NET_ALLOWLIST"):
        Settings.from_env(env={"UDB_NET_ALLOWLIST": "bad host!"})


def test_names_are_checked_after_resolution():
    guard = netguard.Guard.parse("")
    with pytest.raises(netguard.BlockedAddress, match=r"refused to connect to localhost \(127.0.0.1\): a loopback"):
        guard.check("localhost")
    with pytest.raises(netguard.BlockedAddress, match="refused URL file:///etc/passwd: scheme 'file'"):
        guard.check_url("file:///etc/passwd")


def test_loopback_is_refused_without_the_allowlist(peer):
    closed = Settings()  # the caller's settings decide, whatever the environment says
    with pytest.raises(netguard.BlockedAddress, match=r"refused to connect to 127.0.0.1: a loopback address"):
        rest.inspect(f"{peer.url}/page/items", env=SourceEnv(settings=closed))
    dsn = postgres.parse("postgresql://u:p@127.0.0.1:1/db")
    with pytest.raises(netguard.BlockedAddress, match="a loopback address"):
        postgres.connect(dsn, settings=closed)


def test_every_redirect_hop_is_checked(peer):
    before = peer.hits["/redirect"]
    with netguard.client(PEERS) as http:
        with pytest.raises(netguard.BlockedAddress, match="169.254.169.254: a cloud metadata endpoint"):
            netguard.send(http, "GET", f"{peer.url}/redirect?to=http://169.254.169.254/latest/meta-data/")
        with pytest.raises(netguard.BlockedAddress, match="10.0.0.7: a private address"):
            web.request(http, "GET", f"{peer.url}/redirect?to=http://10.0.0.7/")
        # an allowed hop is followed
        response = netguard.send(http, "GET", f"{peer.url}/redirect?to=/page/items%3Fper_page%3D5")
        assert response.status_code == 200 and len(response.json()["records"]) == 5
    assert peer.hits["/redirect"] - before == 3


def test_the_client_refuses_even_without_send(peer):
    # The transport itself checks: a plain client.get through the guarded client is refused too.
    with netguard.client(PEERS) as http:
        with pytest.raises(netguard.BlockedAddress):
            http.get("http://169.254.169.254/")
        assert http.get(f"{peer.url}/page/items?per_page=2").status_code == 200
        assert http.timeout == httpx.Timeout(connect=3.0, read=10.0, write=10.0, pool=3.0)


def test_a_refused_hint_fails_the_job(ctx_for):
    request = events.make_event(events.DISCOVER_REQUESTED, {"hint": "http://169.254.169.254/latest/meta-data/"},
                                tenant="acme", job_id=new_job_id(), function="test")
    reply = invoke(discover_handle, request, ctx_for("discover"))
    assert reply["type"] == events.JOB_FAILED
    assert events.event_data(reply)["reason"] == ("refused to connect to 169.254.169.254: a cloud metadata "
                                                  "endpoint, not admitted by UDB_NET_ALLOWLIST")
