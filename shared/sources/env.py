"""What a connector may use beyond the hint (`SourceEnv`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.core.errors import NotFound, SourceError
from shared.core.settings import Settings


@dataclass
class SourceEnv:
    """What a provider may use beyond the hint: the request's options, the tenant's store and
    secret store, the settings, and (at sync) the source id that keys incremental state."""
    tenant: str | None = None
    store: Any = None            # shared.storage.store.TenantStore of the tenant
    secrets: Any = None          # shared.security.secrets.SecretStore (all tenants: always used with `tenant`)
    # The caller's settings (SSRF allowlist, size caps, ...); without any, the declared defaults
    # (public addresses only), never the environment.
    settings: Settings = field(default_factory=Settings)
    options: dict = field(default_factory=dict)
    source_id: str | None = None
    # Set by the sync function: incremental state noted here, saved by the writer after the load.
    pending_state: dict | None = None
    _ctx: Any = field(default=None, init=False, repr=False, compare=False)  # the function's, for `secrets`

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


def settings_of(env: SourceEnv | None) -> Settings:
    """The settings a source module works under: its env's (the caller's), else the declared
    defaults."""
    settings = getattr(env, "settings", None)
    return settings if settings is not None else Settings()
