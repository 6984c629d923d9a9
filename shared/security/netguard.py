"""The SSRF guard: every outbound connection that a hint causes goes through here.

A hint is user input, so a URL, a DSN host or an S3 endpoint in it could point UDB at its own
cloud's metadata service, at the cluster's internal services or at the machine itself. Before
connecting, `Guard.check` resolves the host and refuses loopback, private, link-local,
multicast, unspecified and reserved addresses and the well-known cloud-metadata endpoints,
unless `UDB_NET_ALLOWLIST` admits them. The check runs on the *resolved* addresses and on the
address actually connected to: `client()` builds an httpx client whose connections go through a
network backend that resolves, checks and then connects to the checked IP (no second lookup, so
DNS rebinding cannot slip past), on every request, each redirect hop included. Redirects are
followed by `fetch` one hop at a time, each hop checked again.

UDB_NET_ALLOWLIST: comma-separated CIDRs (`127.0.0.0/8`, `::1`, `10.1.2.3`) and host names
(`files.internal`, `*.corp.example`). A metadata endpoint is admitted only when named exactly
(its own address or host name), never by a wider range.
"""
from __future__ import annotations

import concurrent.futures
import ipaddress
import socket
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable
from urllib.parse import urlsplit

import httpcore
import httpx

from shared.core.errors import SourceError
from shared.core.settings import Settings, parse_allowlist

# Cloud instance-metadata services: refused even where a wider allowlist range covers them.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",   # AWS, GCP, Azure, OpenStack, DigitalOcean...
    "169.254.170.2",     # AWS ECS task metadata
    "169.254.169.253",   # AWS DNS resolver
    "fd00:ec2::254",     # AWS IMDS over IPv6
    "100.100.100.200",   # Alibaba Cloud
    "168.63.129.16",     # Azure wire server
))
METADATA_HOSTS = frozenset(("metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                            "instance-data.ec2.internal", "metadata.azure.internal", "metadata.packet.net"))
# The only address forms an HTTP connection may name: refuses file:, gopher:, ftp: and friends.
HTTP_SCHEMES = ("http", "https")

CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 10.0
DNS_TIMEOUT = 3.0
DEFAULT_DEADLINE = 60.0
MAX_REDIRECTS = 5

_resolver = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="udb-dns")


class BlockedAddress(SourceError):
    """The host is, or resolves to, an address UDB refuses to connect to."""


@dataclass(frozen=True)
class Guard:
    networks: tuple = ()
    hosts: frozenset = frozenset()
    wildcards: tuple = ()
    exact: frozenset = field(default_factory=frozenset)  # single addresses named in the allowlist

    @classmethod
    def parse(cls, allowlist: str | Iterable[str]) -> "Guard":
        """A guard from `UDB_NET_ALLOWLIST` text (or its entries); bad entries are named (the
        parser is Settings' own, so a bad value fails at start with the same message)."""
        return cls(*parse_allowlist(allowlist))

    @classmethod
    def of(cls, settings: Settings) -> "Guard":
        """The guard of these settings (their UDB_NET_ALLOWLIST), parsed once per value."""
        return _guard_for(settings.net_allowlist)

    # ------------------------------------------------------------ decisions

    def host_admitted(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return host in self.hosts or any(host.endswith(w) for w in self.wildcards)

    def refusal(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        """Why `ip` is refused, or None when UDB may connect to it."""
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip in METADATA_ADDRESSES:
            return None if ip in self.exact else "a cloud metadata endpoint"
        if any(ip in net for net in self.networks):
            return None
        for kind, flag in (("a loopback", ip.is_loopback), ("an unspecified", ip.is_unspecified),
                           ("a link-local", ip.is_link_local), ("a multicast", ip.is_multicast),
                           ("a private", ip.is_private), ("a reserved", ip.is_reserved)):
            if flag:
                return f"{kind} address"
        if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED_ADDRESS_SPACE:
            return "a private address"  # carrier-grade NAT, 100.64.0.0/10
        return None

    def check(self, host: str, port: int | None = None) -> list[str]:
        """The addresses of `host` that UDB may connect to (all of them, or BlockedAddress)."""
        if not host:
            raise SourceError("no host to connect to")
        name = host.strip("[]").lower().rstrip(".")
        if name in METADATA_HOSTS and name not in self.hosts:
            raise BlockedAddress(f"refused to connect to {host}: a cloud metadata endpoint")
        literal = _literal(name)
        if literal is not None:
            addresses = [literal]
        elif name == "localhost" or name.endswith(".localhost"):
            addresses = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
        else:
            addresses = resolve(name, port)
        admitted_by_name = literal is None and self.host_admitted(name)
        allowed = []
        for ip in addresses:
            reason = self.refusal(ip)
            if reason and not (admitted_by_name and (ip not in METADATA_ADDRESSES)):
                shown = host if literal is not None else f"{host} ({ip})"
                raise BlockedAddress(f"refused to connect to {shown}: {reason}, not admitted by "
                                     f"UDB_NET_ALLOWLIST")
            allowed.append(str(ip))
        return allowed

    def check_url(self, url: str | httpx.URL, schemes: tuple[str, ...] = HTTP_SCHEMES) -> None:
        """Refuse a URL whose scheme is not http(s) or whose host is refused."""
        parsed = urlsplit(str(url))
        if parsed.scheme.lower() not in schemes:
            raise BlockedAddress(f"refused URL {_shown(url)}: scheme {parsed.scheme or '(none)'!r} "
                                 f"(allowed: {', '.join(schemes)})")
        try:
            port = parsed.port
        except ValueError:
            raise SourceError(f"{_shown(url)}: the port is not a number") from None
        self.check(parsed.hostname or "", port)


_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")


def _literal(host: str):
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _shown(url) -> str:
    parsed = urlsplit(str(url))
    if parsed.password:
        parsed = parsed._replace(netloc=f"{parsed.username}:***@{parsed.hostname}"
                                        + (f":{parsed.port}" if parsed.port else ""))
    return parsed.geturl()


def resolve(host: str, port: int | None = None, timeout: float = DNS_TIMEOUT) -> list:
    """Every address `host` resolves to, within `timeout` (getaddrinfo itself has none)."""
    future = _resolver.submit(socket.getaddrinfo, host, port or 0, 0, socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise SourceError(f"cannot resolve host {host!r}: DNS did not answer within {timeout:.0f} s") from None
    except socket.gaierror as exc:
        raise SourceError(f"cannot resolve host {host!r}: {exc.strerror or exc}") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos))
    if not addresses:
        raise SourceError(f"cannot resolve host {host!r}: no addresses")
    return addresses


@lru_cache(maxsize=8)
def _guard_for(allowlist: str) -> Guard:
    return Guard.parse(allowlist)


def guard(settings: Settings) -> Guard:
    """The guard of the caller's settings: their allowlist, nothing read from the environment."""
    return Guard.of(settings)


def check_host(host: str, port: int | None, settings: Settings) -> list[str]:
    """Check a non-HTTP peer (a PostgreSQL host, a source S3 endpoint); returns its admitted
    addresses so the caller can connect to one of them rather than resolve the name again."""
    return guard(settings).check(host, port)


def check_url(url: str, settings: Settings) -> None:
    guard(settings).check_url(url)


# ---------------------------------------------------------------- httpx

class GuardedBackend(httpcore.SyncBackend):
    """Resolves, checks, then connects to the checked address: the check and the connection
    see the same IP, whatever DNS answers a second time."""

    def __init__(self, guard: Guard):
        self.guard = guard

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        addresses = self.guard.check(host, port)
        last: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                           socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last  # type: ignore[misc]

    def connect_unix_socket(self, *args, **kwargs):
        raise BlockedAddress("refused to connect to a unix socket")


class _DeadlineStream(httpx.SyncByteStream):
    def __init__(self, stream, deadline: float, url: str):
        self.stream, self.deadline, self.url = stream, deadline, url

    def __iter__(self):
        for chunk in self.stream:
            if time.monotonic() > self.deadline:
                raise httpx.ReadTimeout(f"{_shown(self.url)}: the response took longer than the deadline")
            yield chunk

    def close(self):
        self.stream.close()


class GuardedTransport(httpx.HTTPTransport):
    """An httpx transport whose every connection is checked by the guard, with a total
    deadline on each request (connect + headers + body)."""

    def __init__(self, guard: Guard, deadline: float = DEFAULT_DEADLINE, verify: bool = True):
        super().__init__(verify=verify, trust_env=False)
        # httpx (pinned) offers no public hook for the network backend; the pool is rebuilt
        # with the guarded one. Proxies are off (trust_env=False): a proxy would connect for us.
        self._pool = httpcore.ConnectionPool(ssl_context=httpx.create_ssl_context(verify=verify),
                                             max_connections=20, max_keepalive_connections=10,
                                             keepalive_expiry=5.0, network_backend=GuardedBackend(guard))
        self.guard = guard
        self.deadline = deadline

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.guard.check_url(request.url)  # a clear refusal before any connection is tried
        started = time.monotonic()
        response = super().handle_request(request)
        response.stream = _DeadlineStream(response.stream, started + self.deadline, str(request.url))
        return response


def client(settings: Settings, *, deadline: float = DEFAULT_DEADLINE, headers: dict | None = None,
           auth=None, connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT) -> httpx.Client:
    """A ready httpx.Client for source traffic: SSRF-guarded, connect 3 s / read 10 s timeouts,
    a total deadline per request, no proxies from the environment, redirects not followed
    automatically (use `fetch`, which checks each hop)."""
    timeout = httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout)
    return httpx.Client(transport=GuardedTransport(guard(settings), deadline), timeout=timeout,
                        follow_redirects=False, trust_env=False, headers=headers, auth=auth)


def send(http: httpx.Client, method: str, url: str, *, max_redirects: int = MAX_REDIRECTS,
         stream: bool = False, **kwargs) -> httpx.Response:
    """Send a request and follow redirects one hop at a time, each new URL checked by the
    guard before it is requested. With stream=True the caller must close the response."""
    current = httpx.URL(url)
    if kwargs.get("params"):
        # httpx replaces a URL's own query with `params`; keep both, `params` winning.
        current = current.copy_merge_params(kwargs["params"])
    kwargs.pop("params", None)
    for _ in range(max_redirects + 1):
        auth = kwargs.get("auth")
        request = http.build_request(method, current, **{k: v for k, v in kwargs.items() if k != "auth"})
        response = http.send(request, stream=True, **({"auth": auth} if auth is not None else {}))
        if response.is_redirect and response.has_redirect_location:
            target = current.join(response.headers["Location"])
            response.close()
            guard_of(http).check_url(target)
            if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
                method, kwargs = "GET", {k: v for k, v in kwargs.items() if k not in ("content", "data", "json", "files")}
            if target.host != current.host:
                # Credentials meant for one host are not handed to another.
                kwargs.pop("auth", None)
                kwargs["headers"] = {k: v for k, v in dict(kwargs.get("headers") or {}).items()
                                     if k.lower() not in ("authorization", "cookie")}
            current = target
            continue
        return settled(response, stream=stream)
    raise SourceError(f"{_shown(url)}: more than {max_redirects} redirects")


def settled(response: httpx.Response, *, stream: bool) -> httpx.Response:
    """The response as the caller asked for it: left open to stream, or read whole and closed
    (its connection back to the pool)."""
    if not stream:
        try:
            response.read()
        finally:
            response.close()
    return response


def guard_of(http: httpx.Client) -> Guard:
    transport = http._transport  # the transport `client()` installed
    if not isinstance(transport, GuardedTransport):
        raise TypeError("not a client built by shared.security.netguard.client()")
    return transport.guard
