"""Source kinds: a registry from provider name to the module that catalogues and extracts it.

Each module offers `inspect(hint) -> {provider, short, streams}` and
`extract(stream, out_dir, part_bytes=..., ...) -> rows`.
"""
from __future__ import annotations

from types import ModuleType

from shared.errors import SourceError
from shared.sources import files

PROVIDERS: dict[str, ModuleType] = {"file": files, "directory": files}


def module_for(provider: str) -> ModuleType:
    try:
        return PROVIDERS[provider]
    except KeyError:
        raise SourceError(f"unknown provider {provider!r}; known: {', '.join(sorted(PROVIDERS))}") from None
