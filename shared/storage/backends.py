"""Which object store a deployment uses: the local directory or S3 (settings.store).

It lives apart from store.py because it must name both backends, and the S3 backend builds on
store.py: the choice here keeps store.py and s3store.py free of an import cycle.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from shared.storage.store import LocalStore, ObjectStore

if TYPE_CHECKING:
    from shared.core.settings import Settings


def open_store(settings: Settings) -> ObjectStore:
    """The deployment's object store: S3 when `settings.store` is "s3", else a local directory."""
    if settings.store == "s3":
        from shared.storage.s3store import S3Store  # boto3 only where it is used (cold starts)
        return S3Store.from_settings(settings)
    return LocalStore(Path(settings.home) / "store" / settings.bucket)
