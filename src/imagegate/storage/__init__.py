"""Storage for `url` responses and uploaded files: a Store of opaque blobs (LocalStore, or
S3Store for a bucket several replicas share) and the signed, expiring links the content
route serves them through."""

from __future__ import annotations

from .base import Blob, BlobNotFound, InvalidBlobName, Store
from .links import URL_PREFIX, SignedLinks
from .local import LocalStore

# The name the service and the app hold it by: a Store behind signed links.
Storage = SignedLinks


def open_store(url: str) -> Store:
    """The Store a storage URL names (IMAGEGATE_STORAGE_URL, checked by Settings): a
    directory for file://, a bucket for s3:// (checked to be listable now, so a missing
    bucket or bad credentials stop the start with the setting named)."""
    if url.startswith("s3://"):
        from .s3 import S3Store

        store = S3Store(url)
        store.check()
        return store
    from ..settings import local_path

    return LocalStore(local_path(url))


__all__ = ["URL_PREFIX", "Blob", "BlobNotFound", "InvalidBlobName", "LocalStore", "SignedLinks", "Storage", "Store",
           "open_store"]
