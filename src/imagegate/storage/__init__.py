"""Storage for `url` responses: a Store of opaque blobs (LocalStore today) and the signed,
expiring links the content route serves them through."""

from .base import Blob, BlobNotFound, InvalidBlobName, Store
from .links import URL_PREFIX, SignedLinks, load_or_create_secret
from .local import LocalStore

# The name the service and the app hold it by: a Store behind signed links.
Storage = SignedLinks

__all__ = ["URL_PREFIX", "Blob", "BlobNotFound", "InvalidBlobName", "LocalStore", "SignedLinks", "Storage", "Store",
           "load_or_create_secret"]
