"""The connector registry: one class per provider, registered once, found by provider name.

A provider module in `shared/sources/` defines one `Connector` subclass and decorates it with
`@register`. The first lookup imports every module of the `shared.sources` package, so a new
provider file is found with no other edit: discover's detect step asks every connector for its
signals, sync extracts through `connector_for(provider)`, hints are redacted by every
connector's `redact`, and the OAuth flow finds a share link's OAuth provider on its connector.

This is the one place that knows which providers exist (CONTRIBUTING.md: "Adding a connector").
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol, TypeVar

from shared.core.errors import SourceError

if TYPE_CHECKING:
    from shared.sources.detection import Hint, Scores, Signals
    from shared.sources.env import SourceEnv

# Modules of shared.sources that are not connectors (the machinery they share).
NOT_CONNECTORS = frozenset({"registry", "detection", "env"})


class OAuthIssuer(Protocol):
    """What the registry knows of a connector's OAuth provider (the whole class is
    shared.sources.oauth.providers.OAuthProvider, which imports this module, not the reverse)."""
    name: str
    label: str

    def config(self, settings: Any) -> Any:
        """The provider's endpoints and UDB's client there (a ProviderConfig)."""


class Connector:
    """One provider (or a family of providers sharing one implementation, as OneDrive and
    SharePoint share Microsoft Graph). Subclasses set the class attributes; `inspect` and
    `extract` are their module's functions of those names unless the class defines its own;
    the detection hooks, `redact` and `oauth` are optional.

    - `providers`: the names detect answers and source documents carry (`provider`).
    - `schemes`: URL schemes only this connector reads (`s3`, `postgresql`, ...): a hint with
      one is shown to this connector alone.
    - `options`: the option fields of a discover request it reads (others are refused).
    - `oauth`: the OAuth provider that authorizes its links, when they need the tenant's token.
    """
    providers: ClassVar[tuple[str, ...]] = ()
    schemes: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[frozenset[str]] = frozenset()
    oauth: ClassVar[OAuthIssuer | None] = None

    # ------------------------------------------------------------ detection
    def signals(self, hint: Hint) -> Signals | None:
        """What the hint's syntax says (free: no I/O beyond a local file's first bytes), or
        None when this connector does not recognise the hint."""
        return None

    def probe(self, hint: Hint, scores: Scores) -> str | None:
        """Network probes (short timeouts, through the SSRF guard) adding to `scores`; returns
        why the hint is unreachable, if it is. Not called when probing is off or the request
        names its provider."""
        return None

    # ------------------------------------------------------------ catalogue and extract
    # A provider module keeps `inspect(hint, *, env)`, `extract(stream, out_dir, *, env, ...)` and
    # (where a hint can carry a credential) `redact(hint)` as module functions, callable
    # directly; by default its connector calls those of its own module, so each class does not
    # repeat the same forwarding (a forwarding copy once dropped `env`, and with it the caller's
    # limits). A connector overrides a method to do otherwise.
    def inspect(self, hint: str, env: SourceEnv) -> dict:
        """The catalogue: {provider, short, streams: [{name, columns, sync_modes, ...}]}."""
        return self._own("inspect")(hint, env=env)

    def extract(self, stream: dict, out_dir: Path, *, env: SourceEnv, part_bytes: int,
                memory_limit: str = "1GB", threads: int = 2) -> int:
        """Write the stream's rows as Parquet parts under `out_dir`; returns the row count."""
        return self._own("extract")(stream, out_dir, env=env, part_bytes=part_bytes, memory_limit=memory_limit,
                                    threads=threads)

    # ------------------------------------------------------------ hints shown and stored
    def redact(self, hint: str) -> str:
        """The hint with any credential this provider's syntax carries replaced by `***`."""
        own = type(self).module_function("redact")
        return own(hint) if own is not None else hint

    @classmethod
    def module_function(cls, name: str) -> Callable[..., Any] | None:
        """The function `name` defined by the connector's own module (not one it imported)."""
        function = getattr(sys.modules.get(cls.__module__), name, None)
        if callable(function) and getattr(function, "__module__", None) == cls.__module__:
            return function
        return None

    def _own(self, name: str) -> Callable[..., Any]:
        function = type(self).module_function(name)
        if function is None:
            raise NotImplementedError(f"{type(self).__name__} does not implement {name}")
        return function


C = TypeVar("C", bound=type[Connector])

_by_provider: dict[str, Connector] = {}
_connectors: list[Connector] = []
_discovered = False
_lock = threading.RLock()


def register(cls: C) -> C:
    """Class decorator: register one instance of a Connector subclass under its providers."""
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise TypeError(f"register: {cls!r} is not a subclass of shared.sources.registry.Connector")
    if not cls.providers:
        raise TypeError(f"register: {cls.__name__}.providers names no provider")
    for method in ("inspect", "extract"):
        if getattr(cls, method) is getattr(Connector, method) and cls.module_function(method) is None:
            raise TypeError(f"register: {cls.__name__} does not implement {method}")
    with _lock:
        taken = {p: type(_by_provider[p]).__name__ for p in cls.providers if p in _by_provider}
        if taken:
            raise ValueError(f"register: {cls.__name__} names providers already registered: "
                             + ", ".join(f"{p!r} ({owner})" for p, owner in sorted(taken.items())))
        owned = {s for c in _connectors for s in c.schemes}
        clash = sorted(set(cls.schemes) & owned)
        if clash:
            raise ValueError(f"register: {cls.__name__} claims schemes another connector reads: {', '.join(clash)}")
        connector = cls()
        _connectors.append(connector)
        for provider in cls.providers:
            _by_provider[provider] = connector
    return cls


def unregister(cls: type[Connector]) -> None:
    """Remove a registered connector class (tests that register their own)."""
    with _lock:
        for connector in [c for c in _connectors if type(c) is cls]:
            _connectors.remove(connector)
            for provider in connector.providers:
                _by_provider.pop(provider, None)


def _discover() -> None:
    """Import every module of shared.sources once: each registers its own connector."""
    global _discovered
    if _discovered:
        return
    with _lock:
        if _discovered:
            return
        # The package's folder, not an import of the package: shared.sources imports this module.
        for module in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
            if not module.ispkg and not module.name.startswith("_") and module.name not in NOT_CONNECTORS:
                importlib.import_module(f"shared.sources.{module.name}")
        _discovered = True


def load() -> None:
    """Import every connector now rather than on the first lookup (a served discover or sync
    calls it at start: the imports cost about 0.2 s, which its first job paid)."""
    _discover()


def connectors() -> list[Connector]:
    """Every registered connector, the package's in module-name order, then any registered later."""
    _discover()
    return list(_connectors)


def providers() -> list[str]:
    """Every provider name, sorted."""
    _discover()
    return sorted(_by_provider)


def connector_for(provider: str) -> Connector:
    """The connector of a provider; SourceError naming the known ones otherwise."""
    _discover()
    try:
        return _by_provider[provider]
    except KeyError:
        raise SourceError(f"unknown provider {provider!r}; known: {', '.join(sorted(_by_provider))}") from None


def owners_of(scheme: str) -> list[Connector]:
    """The connector that alone reads hints of this scheme ([] when the scheme is shared or unknown)."""
    return [c for c in connectors() if scheme and scheme in c.schemes]


def needs_oauth(provider: str) -> bool:
    """True when the provider's links are read with the tenant's OAuth token."""
    _discover()
    connector = _by_provider.get(provider)
    return connector is not None and connector.oauth is not None


def redact(hint: str) -> str:
    """The hint as it may be stored and shown: every connector's redaction applied."""
    for connector in connectors():
        hint = connector.redact(hint)
    return hint
