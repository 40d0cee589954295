"""S3Store: blobs as objects in an S3-compatible bucket, through obstore (Rust's
object_store: the client Polars and DataFusion use), so replicas on several machines share
one store.

obstore is imported here only: a server on a file:// store does not need it installed
(`pip install imagegate[s3]`). Endpoint, credentials and region come from the standard AWS
variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
AWS_REGION / AWS_DEFAULT_REGION), which obstore reads itself."""

from __future__ import annotations

import contextlib
import datetime as dt
import mimetypes
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .base import Blob, BlobNotFound, check_name
from .local import CHUNK_BYTES

if TYPE_CHECKING:
    from obstore.store import S3Store as ObjectStore

SETTING = "IMAGEGATE_STORAGE_URL"
# Images and uploads are at most a few tens of MB: a single PUT is atomic (readers see the
# old object or the new one), where a multipart upload would leave parts behind on a crash.
_TYPES = {".webp": "image/webp", ".avif": "image/avif"}  # not in every mimetypes table


class StoreConfigError(ValueError):
    """The storage settings cannot work; the message names the setting (shown at start-up)."""


def _endpoint() -> str:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or \
        os.environ.get("AWS_ENDPOINT") or ""


def split_s3_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://bucket/prefix`; StoreConfigError naming the setting otherwise."""
    rest = url[len("s3://"):] if url.startswith("s3://") else None
    bucket, _, prefix = (rest or "").partition("/")
    if not bucket:
        raise StoreConfigError(f"{SETTING}={url!r} names no bucket: use s3://BUCKET or s3://BUCKET/PREFIX")
    return bucket, prefix.strip("/")


class S3Store:
    """Objects under `prefix` in `bucket`. A put is one PUT request (atomic by nature), so
    there are never partial writes to discard. Names that the Store's pattern refuses (keys
    with a `/`, written by something else into the same bucket) are not listed."""

    def __init__(self, url: str) -> None:
        try:
            from obstore.exceptions import BaseError
            from obstore.store import S3Store as ObjectStore
        except ImportError:
            raise StoreConfigError(f"{SETTING} is an s3:// URL but obstore is not installed: "
                                   "pip install 'imagegate[s3]'") from None
        self.bucket, self.prefix = split_s3_url(url)
        self.url = url
        # Plain http only where the operator's endpoint says so (MinIO or a test server on a LAN).
        client: dict[str, Any] = {"allow_http": True} if _endpoint().startswith("http://") else {}
        try:
            self._store: ObjectStore = ObjectStore(self.bucket, prefix=self.prefix or None,
                                                   client_options=client)  # type: ignore[arg-type]
        except (BaseError, ValueError) as exc:  # a bad AWS_* value
            raise StoreConfigError(f"{SETTING}={url!r}: {exc}") from None

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    def check(self) -> None:
        """Fail now, naming the setting, if the bucket cannot be listed (missing, no
        credentials, endpoint unreachable), instead of on the first request that stores."""
        import obstore
        from obstore.exceptions import BaseError

        try:
            next(iter(obstore.list(self._store, chunk_size=1)), None)
        except (BaseError, OSError) as exc:  # missing bucket, refused credentials, no route
            detail = str(exc).split("\n", 1)[0][:400]
            raise StoreConfigError(f"{SETTING}={self.url!r}: cannot list bucket {self.bucket!r} "
                                   f"(endpoint {_endpoint() or 'AWS default'}): {detail}") from None

    def put(self, name: str, data: bytes) -> None:
        import obstore

        ext = os.path.splitext(check_name(name))[1].lower()
        kind = _TYPES.get(ext) or mimetypes.types_map.get(ext) or "application/octet-stream"
        # The content type travels with the object, so a presigned GET serves it right.
        obstore.put(self._store, name, data, attributes={"Content-Type": kind}, use_multipart=False)

    def get(self, name: str) -> bytes:
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            return bytes(obstore.get(self._store, check_name(name)).bytes())
        except (FileNotFoundError, NotFoundError):  # obstore raises the first for a 404
            raise BlobNotFound(name) from None

    def open(self, name: str) -> Blob:
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            result = obstore.get(self._store, check_name(name))
        except (FileNotFoundError, NotFoundError):
            raise BlobNotFound(name) from None
        meta = result.meta
        chunks = (bytes(c) for c in result.stream(min_chunk_size=CHUNK_BYTES))
        etag = meta.get("e_tag")
        return Blob(size=int(meta["size"]), chunks=chunks, close=chunks.close,
                    modified=meta["last_modified"].timestamp(),
                    etag=(etag if etag.startswith('"') else f'"{etag}"') if etag else None)

    def delete(self, name: str) -> None:
        import obstore
        from obstore.exceptions import NotFoundError

        # S3 answers 204 for a missing key; other S3-compatible stores may answer 404.
        with contextlib.suppress(FileNotFoundError, NotFoundError):
            obstore.delete(self._store, check_name(name))

    def names(self) -> Iterator[str]:
        import obstore

        for page in obstore.list(self._store, chunk_size=1000):
            for meta in page:
                path = meta["path"]
                if "/" not in path and not path.startswith("."):
                    yield path

    def discard_partial(self, before: float) -> int:
        return 0  # single PUTs only: nothing partial is ever visible

    def presign(self, name: str, expires_in: float) -> str:
        """A URL anyone may GET the object from for `expires_in` seconds (SigV4 query
        signing: at most 7 days), without our server in the path."""
        import obstore

        seconds = max(1, min(int(expires_in), 7 * 24 * 3600))
        return obstore.sign(self._store, "GET", check_name(name), dt.timedelta(seconds=seconds))
