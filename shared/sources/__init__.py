"""Source kinds: a registry from provider name to the module that catalogues and extracts it.

Each module offers `inspect(hint) -> {provider, short, streams}` and
`extract(stream, out_dir, part_bytes=..., ...) -> rows`; a module whose hints can carry a
credential also offers `redact(hint)`, which `redact` below applies before a hint is stored.
"""
from __future__ import annotations

from types import ModuleType

from shared.errors import SourceError
from shared.sources import files, postgres, s3

PROVIDERS: dict[str, ModuleType] = {"file": files, "directory": files, "s3": s3, "postgres": postgres}


def module_for(provider: str) -> ModuleType:
    try:
        return PROVIDERS[provider]
    except KeyError:
        raise SourceError(f"unknown provider {provider!r}; known: {', '.join(sorted(PROVIDERS))}") from None


def redact(hint: str) -> str:
    """The hint as it may be stored and shown: any password in it replaced by `***`."""
    for module in dict.fromkeys(PROVIDERS.values()):
        redactor = getattr(module, "redact", None)
        if redactor is not None:
            hint = redactor(hint)
    return hint
