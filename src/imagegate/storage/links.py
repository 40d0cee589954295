"""Signed, expiring links to images in any Store, for `response_format=url`.

A blob's name is `<expires>-<random>.<ext>` and the link carries an HMAC of that name, so
the signature covers both the image and its lifetime, and the janitor finds expired blobs
from their names alone: no database, and nothing that assumes the blobs are files. Replicas
that share a Store and a key (IMAGEGATE_URL_SIGNING_KEY) serve each other's links."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Callable

from ..errors import Forbidden, Gone, NotFound
from .base import Blob, BlobNotFound, InvalidBlobName, Store

URL_PREFIX = "/v1/images/content"
MIN_KEY_BYTES = 32
# A write unfinished after this long was cut off (a crash): the largest image is written in
# well under a second.
PARTIAL_WRITE_GRACE_SECONDS = 3600


def _expires(name: str) -> int | None:
    try:
        return int(name.split("-", 1)[0])
    except ValueError:
        return None


class SignedLinks:
    """Images in `store` behind links signed with `key` that expire `ttl_seconds` after
    they were saved. With `presign` (the store's own signer, S3Store.presign) a link is a
    URL of the store itself, valid until the image expires, and our content route is not
    in its path."""

    def __init__(self, store: Store, key: bytes, ttl_seconds: int,
                 presign: Callable[[str, float], str] | None = None) -> None:
        if len(key) < MIN_KEY_BYTES:
            # The key itself stays out of the message: it ends up in logs.
            raise ValueError(f"the URL-signing key has {len(key)} bytes; at least {MIN_KEY_BYTES} are needed")
        self.store = store
        self._key = key
        self.ttl = ttl_seconds
        self.presign = presign

    def __repr__(self) -> str:
        return f"SignedLinks({self.store!r}, ttl_seconds={self.ttl})"

    def _sig(self, name: str) -> str:
        return hmac.new(self._key, name.encode(), hashlib.sha256).hexdigest()[:32]

    def save(self, data: bytes, ext: str, now: float | None = None) -> str:
        """Store atomically; returns the name ('<expires>-<random>.<ext>')."""
        expires = int((time.time() if now is None else now) + self.ttl)
        name = f"{expires}-{uuid.uuid4().hex}.{ext}"
        self.store.put(name, data)
        return name

    def url(self, base_url: str, name: str, now: float | None = None) -> str:
        if self.presign is not None:
            # Until the expiry in the name: a link made late in a batch expires with its image.
            return self.presign(name, (_expires(name) or 0) - (time.time() if now is None else now))
        return f"{base_url.rstrip('/')}{URL_PREFIX}/{name}?sig={self._sig(name)}"

    def check(self, name: str, sig: str | None, now: float | None = None) -> None:
        """403 for a missing or wrong signature, 410 once expired; touches no storage."""
        # Bytes, not str: compare_digest raises TypeError on non-ASCII strings (a 500 for `?sig=%C2%80`).
        if not sig or not hmac.compare_digest(self._sig(name).encode(), sig.encode()):
            raise Forbidden("This image link is invalid.", code="invalid_signature")
        expires = _expires(name)
        if expires is None:
            raise NotFound("No such image.")
        if (time.time() if now is None else now) >= expires:
            raise Gone("This image link has expired.", code="expired")

    def open(self, name: str, sig: str | None, now: float | None = None) -> Blob:
        """The image behind a link, for streaming; 410 if it is no longer stored."""
        self.check(name, sig, now)
        try:
            return self.store.open(name)
        except (BlobNotFound, InvalidBlobName):
            raise Gone("This image is no longer stored.", code="expired") from None

    def read(self, name: str, sig: str | None, now: float | None = None) -> bytes:
        """The image behind a link, whole; the same errors as `open`."""
        self.check(name, sig, now)
        try:
            return self.store.get(name)
        except (BlobNotFound, InvalidBlobName):
            raise Gone("This image is no longer stored.", code="expired") from None

    def sweep(self, now: float | None = None) -> int:
        """Delete expired images and stale partial writes; returns how many went. Names
        without an expiry were not written here and are left alone."""
        now = time.time() if now is None else now
        removed = 0
        for name in self.store.names():
            expires = _expires(name)
            if expires is not None and expires <= now:
                self.store.delete(name)
                removed += 1
        return removed + self.store.discard_partial(before=now - PARTIAL_WRITE_GRACE_SECONDS)
