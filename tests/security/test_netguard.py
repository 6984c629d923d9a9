"""The SSRF guard (shared/security/netguard.py, issue 4), attacked the ways an address can be disguised:
integer, octal and hex IPv4, short forms, IPv6 and IPv4-mapped literals, names that resolve to
loopback, userinfo tricks, and redirects from an admitted host to the metadata service — and
a refusal is a failed job at discover and at sync."""
from __future__ import annotations

import socket
from dataclasses import replace

import pytest

from functions.discover.handler import handle as discover_handle
from functions.sync.handler import handle as sync_handle
from shared.core import events
from shared.security import netguard
from shared.core.errors import SourceError
from shared.serving import runtime
from shared.serving.runtime import invoke
from shared.core.tenancy import new_job_id
from shared.core.settings import Settings
from tests.peers.rest_api import RestPeer

pytestmark = pytest.mark.security

# (URL, what the guard must say it is). Every one is refused with an empty allowlist.
DISGUISED = [
    ("http://127.0.0.1/", "loopback"),
    ("http://localhost/", "loopback"),
    ("http://LOCALHOST./", "loopback"),
    ("http://app.localhost/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://[0:0:0:0:0:0:0:1]/", "loopback"),
    ("http://2130706433/", "loopback"),           # 127.0.0.1 as one decimal number
    ("http://0x7f.1/", "loopback"),               # hex and a short form
    ("http://0x7f000001/", "loopback"),
    ("http://017700000001/", "loopback"),         # octal
    ("http://0177.0.0.1/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://127.0.0.1:18085/status/x", "loopback"),  # UDB's own functions
    ("http://0/", "unspecified"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:7f00:1]/", "loopback"),
    ("http://[::ffff:a9fe:a9fe]/", "cloud metadata"),  # 169.254.169.254, IPv4-mapped in hex
    ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "cloud metadata"),
    ("http://2852039166/", "cloud metadata"),       # 169.254.169.254 as a decimal number
    ("http://0xa9.0xfe.0xa9.0xfe/", "cloud metadata"),
    ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata"),
    ("http://[fd00:ec2::254]/", "cloud metadata"),
    ("http://100.100.100.200/", "cloud metadata"),
    ("http://169.254.170.2/v2/credentials", "cloud metadata"),
    ("http://10.0.0.1/", "private"),
    ("http://172.31.255.255/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://100.64.0.1/", "private"),
    ("http://[fc00::1]/", "private"),
    ("http://[fe80::1]/", "link-local"),
    ("http://169.254.1.1/", "link-local"),
    ("http://224.0.0.251/", "multicast"),
    ("http://evil.example@127.0.0.1/", "loopback"),  # the host is after the @
    ("http://user:pass@[::1]:8080/", "loopback"),
]


@pytest.mark.parametrize("url,kind", DISGUISED)
def test_disguised_internal_addresses_are_refused(url, kind):
    with pytest.raises(netguard.BlockedAddress) as info:
        netguard.Guard.parse("").check_url(url)
    assert kind in str(info.value)
    assert "pass@" not in str(info.value)  # a password in the URL is not repeated


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://127.0.0.1:25/", "ftp://10.0.0.1/x",
                                 "dict://127.0.0.1:11211/", "jar:http://x/y!/", "HTTP://127.0.0.1/"])
def test_other_schemes_and_their_hosts_are_refused(url):
    with pytest.raises(netguard.BlockedAddress):
        netguard.Guard.parse("").check_url(url)


def test_this_machines_own_name_is_refused_after_resolution():
    name = socket.gethostname()
    addresses = {info[4][0] for info in socket.getaddrinfo(name, 80, 0, socket.SOCK_STREAM)}
    guard = netguard.Guard.parse("")
    if all(guard.refusal(__import__("ipaddress").ip_address(a)) for a in addresses):
        with pytest.raises(netguard.BlockedAddress, match=rf"refused to connect to {name} \("):
            guard.check(name)
    else:  # a machine with a public address: then it is allowed, and that is right
        assert guard.check(name)


def test_an_allowlisted_loopback_address_does_not_admit_the_others():
    guard = netguard.Guard.parse("127.0.0.1")
    assert guard.check("127.0.0.1") == ["127.0.0.1"]
    for other in ("http://[::1]/", "http://127.0.0.2/", "http://169.254.169.254/"):
        with pytest.raises(netguard.BlockedAddress):
            guard.check_url(other)


@pytest.fixture(scope="module")
def peer():
    with RestPeer(total=10) as server:
        yield server


@pytest.mark.parametrize("target,kind", [
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://2852039166/latest/meta-data/", "cloud metadata"),
    ("http://[::ffff:a9fe:a9fe]/latest/", "cloud metadata"),
    ("http://metadata.google.internal/", "cloud metadata"),
    ("http://[::1]:1/", "loopback"),
    ("http://10.0.0.7/", "private"),
])
def test_a_redirect_from_an_admitted_host_to_an_internal_one_is_refused(peer, monkeypatch, target, kind):
    # Only the peer's exact address is admitted; each hop's target is checked before it is asked.
    with netguard.client(Settings(net_allowlist="127.0.0.1")) as http:
        with pytest.raises(netguard.BlockedAddress) as info:
            netguard.send(http, "GET", f"{peer.url}/redirect?to={target}")
    assert kind in str(info.value)


def _via(peer, target: str, hops: int) -> str:
    """A URL on the admitted peer that redirects `hops` times over the peer before `target`."""
    from urllib.parse import quote

    url = target
    for _ in range(hops):
        url = f"{peer.url}/redirect?to={quote(url, safe='')}"
    return url


@pytest.mark.parametrize("hops", [2, 4])
def test_every_hop_of_a_redirect_chain_is_checked_not_only_the_first(peer, monkeypatch, hops):
    """Admitted hops first, the internal target last: the guard refuses at the hop that points
    inside, and no request goes there; the same chain ending on an admitted URL is followed."""
    with netguard.client(Settings(net_allowlist="127.0.0.1")) as http:
        with pytest.raises(netguard.BlockedAddress, match="cloud metadata"):
            netguard.send(http, "GET", _via(peer, "http://169.254.169.254/latest/meta-data/", hops))
        for scheme_target in ("file:///etc/passwd", "gopher://127.0.0.1:25/"):
            with pytest.raises(netguard.BlockedAddress):
                netguard.send(http, "GET", _via(peer, scheme_target, hops))
        ok = netguard.send(http, "GET", _via(peer, f"{peer.url}/empty", hops))
        assert ok.status_code == 200 and ok.json()["data"] == []


def test_a_redirect_loop_ends_with_a_clear_error(peer, monkeypatch):
    with netguard.client(Settings(net_allowlist="127.0.0.1")) as http:
        with pytest.raises(SourceError, match="more than .* redirects"):
            netguard.send(http, "GET", _via(peer, f"{peer.url}/empty", netguard.MAX_REDIRECTS + 1))


def test_discover_of_a_url_redirecting_to_the_metadata_service_fails_the_job(peer, settings):
    ctx = runtime.start("discover", replace(settings, net_allowlist="127.0.0.1"))
    hint = f"{peer.url}/redirect?to=http://169.254.169.254/latest/meta-data/data.csv"
    reply = invoke(discover_handle, events.make_event(events.DISCOVER_REQUESTED, {"hint": hint}, tenant="acme",
                                                      job_id=new_job_id(), function="test"), ctx)
    assert reply["type"] == events.JOB_FAILED
    assert "169.254.169.254: a cloud metadata endpoint" in events.event_data(reply)["reason"]


@pytest.mark.parametrize("location,provider", [
    ("http://169.254.169.254/latest/user-data.csv", "http"),
    ("postgresql://u@169.254.169.254:5432/db?schema=public&table=t", "postgres"),
    ("postgresql://u@2130706433:5432/db?schema=public&table=t", "postgres"),
])
def test_sync_refuses_a_catalogue_pointing_inside_even_if_discovery_let_it_through(settings, location, provider):
    # A source document edited (or discovered under a wider allowlist) to point inside:
    # sync checks again when it connects.
    ctx = runtime.start("sync", replace(settings, net_allowlist=""))
    job = new_job_id()
    stream = {"name": "t", "format": "csv", "location": location, "columns": [{"name": "a", "type": "BIGINT"}],
              "sync_modes": ["full"], "cursor_candidates": [], "primary_key_candidates": []}
    source = {"id": "inside-00000000", "short": "inside", "provider": provider, "hint": location,
              "confidence": 0.9, "streams": [stream]}
    event = events.make_event(events.SOURCE_DISCOVERED, {"source": source, "candidates": [], "ambiguous": False,
                                                         "autosync": True, "autoanalyze": False},
                              tenant="acme", job_id=job, function="test")
    reply = invoke(sync_handle, event, ctx)
    assert reply["type"] == events.JOB_FAILED
    reason = events.event_data(reply)["reason"]
    assert "refused to connect to" in reason and "not admitted by UDB_NET_ALLOWLIST" in reason
    assert ctx.jobs("acme").get(job)["state"] == "failed"


def test_a_hint_naming_an_internal_postgres_host_fails_at_discovery(settings):
    ctx = runtime.start("discover", replace(settings, net_allowlist=""))
    for hint in ("postgresql://u:p@169.254.169.254/db", "postgresql://u:p@[::1]:5432/db",
                 "postgresql://u:p@0x7f.1:5432/db"):
        reply = invoke(discover_handle, events.make_event(events.DISCOVER_REQUESTED, {"hint": hint}, tenant="acme",
                                                          job_id=new_job_id(), function="test"), ctx)
        assert reply["type"] == events.JOB_FAILED
        reason = events.event_data(reply)["reason"]
        assert "refused to connect to" in reason and ":p@" not in reason, reason
