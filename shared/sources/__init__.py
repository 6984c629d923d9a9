"""Sources: one connector class per provider (shared/sources/registry.py), and what every
provider shares: the env a connector reads beyond the hint, the check of a request's options,
and the entry points discover and sync call (`inspect_source`, `extract_stream`, `redact`).

Options are checked here, for every provider alike: a connector lists the option fields it reads
in `options`, discover's own fields (`GENERIC_OPTIONS`) are allowed everywhere, and anything else
is refused by name rather than silently ignored. `options.incremental` is refused unless a stream
of the catalogue declares the `incremental` sync mode.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.core.errors import NotFound, SourceError
from shared.sources.registry import connector_for, needs_oauth
from shared.sources import registry

# Read by discover itself (detect.py: the provider; the OAuth flow: device or browser).
GENERIC_OPTIONS = frozenset({"provider", "oauth"})


@dataclass
class SourceEnv:
    """What a provider may use beyond the hint: the request's options, the tenant's store and
    secret store, the settings, and (at sync) the source id that keys incremental state."""
    tenant: str | None = None
    store: Any = None            # shared.storage.store.TenantStore of the tenant
    secrets: Any = None          # shared.security.secrets.SecretStore (all tenants: always used with `tenant`)
    settings: Any = None         # shared.core.settings.Settings
    options: dict = field(default_factory=dict)
    source_id: str | None = None
    # Set by the sync function: incremental state noted here, saved by the writer after the load.
    pending_state: dict | None = None

    @classmethod
    def of(cls, ctx, tenant: str, options: dict | None = None, source_id: str | None = None) -> "SourceEnv":
        """The env of a function's context for one tenant; the secret store opens on first use."""
        env = cls(tenant=tenant, store=ctx.tenant_store(tenant), settings=ctx.settings,
                  options=dict(options or {}), source_id=source_id)
        env._ctx = ctx
        return env

    def secret_store(self):
        if self.secrets is None and getattr(self, "_ctx", None) is not None:
            self.secrets = self._ctx.secrets
        if self.secrets is None or not self.tenant:
            raise SourceError("this source needs the secret store, and none is configured here")
        return self.secrets

    def resolve_secret(self, value: str) -> str:
        """The value itself, or the secret a `secret://name` reference names."""
        from shared.security.secrets import REF_PREFIX
        if not isinstance(value, str) or not value.startswith(REF_PREFIX):
            return value
        name = value[len(REF_PREFIX):]
        try:
            return self.secret_store().get(self.tenant, name)
        except NotFound:
            raise SourceError(f"no secret {name!r} for tenant {self.tenant}: store it first") from None

    def keep_secret(self, name: str, value: str) -> str:
        """Store `value` in the tenant's secret store; returns the `secret://name` reference."""
        from shared.security.secrets import ref
        self.secret_store().put(self.tenant, name, value)
        return ref(name)


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


__all__ = ["GENERIC_OPTIONS", "SourceEnv", "check_options", "connector_for", "extract_stream", "inspect_source",
           "needs_oauth", "redact", "supported_options"]
