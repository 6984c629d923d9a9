"""Source kinds: a registry from provider name to the module that catalogues and extracts it.

Each module offers `inspect(hint) -> {provider, short, streams}` and
`extract(stream, out_dir, part_bytes=..., ...) -> rows`; a module whose hints can carry a
credential also offers `redact(hint)`, which `redact` below applies before a hint is stored.
A module that needs more than the hint (options, the tenant's store or secrets, the settings:
its SSRF allowlist and size caps, the source id for incremental state) sets `USES_ENV = True`
and takes `env=SourceEnv(...)` as a keyword; `inspect_source` and `extract_stream` pass it only
to those. The settings come from the caller (the function's context): no source module reads
the environment.

Options are checked here, for every provider alike: a module lists the option fields it reads
in `OPTIONS` (none when it has no such list), discover's own fields (`GENERIC_OPTIONS`) are
allowed everywhere, and anything else is refused by name rather than silently ignored.
`options.incremental` is refused unless a stream of the catalogue declares the
`incremental` sync mode.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from shared.core.errors import NotFound, SourceError
from shared.core.settings import Settings

# provider -> module of shared.sources, imported when first used: a local file's job need not
# pay for boto3, the OAuth clients and the REST machinery (images/requirements.py follows these
# names, DYNAMIC_PACKAGES).
PROVIDER_MODULES: dict[str, str] = {"file": "files", "directory": "files", "s3": "s3", "postgres": "postgres",
                                    "rest": "rest", "http": "http", "webdav": "webdav", "upload": "upload",
                                    "document": "documents", "onedrive": "msgraph", "sharepoint": "msgraph",
                                    "gdrive": "gdrive"}
PROVIDERS = tuple(PROVIDER_MODULES)
# Share links read with the tenant's OAuth token (shared/sources/oauth.py): discover without one makes
# the job wait for authorization and answers an oauthUrl.
OAUTH_PROVIDERS = ("onedrive", "sharepoint", "gdrive")
# Read by discover itself (detect.py: the provider; the OAuth flow: device or browser).
GENERIC_OPTIONS = frozenset({"provider", "oauth"})


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


def module_for(provider: str) -> ModuleType:
    try:
        name = PROVIDER_MODULES[provider]
    except KeyError:
        raise SourceError(f"unknown provider {provider!r}; known: {', '.join(sorted(PROVIDERS))}") from None
    return importlib.import_module(f"shared.sources.{name}")


def inspect_source(provider: str, hint: str, env: SourceEnv | None = None) -> dict:
    """The provider's catalogue of `hint`, with the env where the provider uses one."""
    module = module_for(provider)
    options = dict(getattr(env, "options", None) or {})
    check_options(provider, options)
    if getattr(module, "USES_ENV", False):
        catalogue = module.inspect(hint, env=env or SourceEnv())
    else:
        catalogue = module.inspect(hint)
    if options.get("incremental"):
        modes = sorted({m for s in catalogue["streams"] for m in s.get("sync_modes", ["full"])})
        if "incremental" not in modes:
            raise SourceError(f"options.incremental: provider {provider!r} cannot sync {hint and redact(hint)!r} "
                              f"incrementally (sync modes: {', '.join(modes)}); remove the option for full syncs")
    return catalogue


def supported_options(provider: str) -> frozenset:
    """The option fields a provider reads, discover's own included."""
    return GENERIC_OPTIONS | frozenset(getattr(module_for(provider), "OPTIONS", ()))


def check_options(provider: str, options: dict) -> None:
    """SourceError naming each option field the provider does not read (none ignored)."""
    known = supported_options(provider)
    unknown = sorted(set(options or {}) - known)
    if unknown:
        raise SourceError(f"options: {', '.join(map(repr, unknown))} not supported by provider {provider!r}; "
                          f"it reads: {', '.join(sorted(known))}")


def extract_stream(provider: str, stream: dict, out_dir, *, env: SourceEnv | None = None, **kwargs) -> int:
    """The provider's extract of one stream into Parquet parts, with the env where used."""
    module = module_for(provider)
    if getattr(module, "USES_ENV", False):
        return module.extract(stream, out_dir, env=env or SourceEnv(), **kwargs)
    return module.extract(stream, out_dir, **kwargs)


def redact(hint: str) -> str:
    """The hint as it may be stored and shown: any password in it replaced by `***`."""
    if "@" not in hint:
        # Every redactor takes the password out of a URL's user-info (user:password@host),
        # which needs an "@": without one there is nothing to redact, and no provider module
        # need be imported for a local path.
        return hint
    for module in dict.fromkeys(module_for(p) for p in PROVIDERS):
        redactor = getattr(module, "redact", None)
        if redactor is not None:
            hint = redactor(hint)
    return hint
