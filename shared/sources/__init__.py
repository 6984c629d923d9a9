"""Sources: one connector class per provider (shared/sources/registry.py), and what every
provider shares: the env a connector reads beyond the hint, the check of a request's options,
and the entry points discover and sync call (`inspect_source`, `extract_stream`, `redact`).

Options are checked here, for every provider alike: a connector lists the option fields it reads
in `options`, discover's own fields (`GENERIC_OPTIONS`) are allowed everywhere, and anything else
is refused by name rather than silently ignored. `options.incremental` is refused unless a stream
of the catalogue declares the `incremental` sync mode.
"""
from __future__ import annotations

from shared.core.errors import SourceError
from shared.sources import registry
from shared.sources.env import SourceEnv, settings_of
from shared.sources.registry import connector_for, needs_oauth

# Read by discover itself (detect.py: the provider; the OAuth flow: device or browser).
GENERIC_OPTIONS = frozenset({"provider", "oauth"})


def inspect_source(provider: str, hint: str, env: SourceEnv | None = None) -> dict:
    """The provider's catalogue of `hint`, read with `env` (the request's options among it)."""
    connector = connector_for(provider)
    options = dict(getattr(env, "options", None) or {})
    check_options(provider, options)
    catalogue = connector.inspect(hint, env or SourceEnv())
    if options.get("incremental"):
        modes = sorted({m for s in catalogue["streams"] for m in s.get("sync_modes", ["full"])})
        if "incremental" not in modes:
            raise SourceError(f"options.incremental: provider {provider!r} cannot sync {hint and redact(hint)!r} "
                              f"incrementally (sync modes: {', '.join(modes)}); remove the option for full syncs")
    return catalogue


def supported_options(provider: str) -> frozenset:
    """The option fields a provider reads, discover's own included."""
    return GENERIC_OPTIONS | connector_for(provider).options


def check_options(provider: str, options: dict) -> None:
    """SourceError naming each option field the provider does not read (none ignored)."""
    known = supported_options(provider)
    unknown = sorted(set(options or {}) - known)
    if unknown:
        raise SourceError(f"options: {', '.join(map(repr, unknown))} not supported by provider {provider!r}; "
                          f"it reads: {', '.join(sorted(known))}")


def extract_stream(provider: str, stream: dict, out_dir, *, env: SourceEnv | None = None, **kwargs) -> int:
    """The provider's extract of one stream into Parquet parts."""
    return connector_for(provider).extract(stream, out_dir, env=env or SourceEnv(), **kwargs)


def redact(hint: str) -> str:
    """The hint as it may be stored and shown: any password in it replaced by `***`."""
    if "@" not in hint:
        # Every redactor takes the password out of a URL's user-info (user:password@host),
        # which needs an "@": without one there is nothing to redact, and no connector need
        # be imported for a local path.
        return hint
    return registry.redact(hint)


__all__ = ["GENERIC_OPTIONS", "SourceEnv", "settings_of", "check_options", "connector_for", "extract_stream", "inspect_source",
           "needs_oauth", "redact", "supported_options"]
