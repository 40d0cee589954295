"""The Store seam: opaque named blobs, so that nothing above it assumes a local path (a
directory today; S3 through obstore next, one bucket shared by several replicas).

The methods are synchronous on purpose. Every caller already runs off the event loop (the
service delivers from its encode pool; the janitor and the content route hop to a thread),
Python has no asynchronous file I/O for LocalStore to use, and obstore and boto3 both offer
blocking clients. An async protocol would push a thread hop into every local call and buy
nothing for the callers we have.

Names are checked against one pattern shared by every store: letters, digits, `.`, `_` and
`-`, not starting with a dot, at most 200 characters. It has no path separator and no
`..`, so no name reaches outside a directory, and it is a plain S3 key, so a name that
works on one store works on all. A leading dot is kept free for a store's own temporaries."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Protocol

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


class BlobNotFound(LookupError):
    """No blob of that name: never written, or deleted (expired and swept)."""


class InvalidBlobName(ValueError):
    """A name no store accepts (see the module docstring); never a blob we wrote."""


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidBlobName(f"invalid blob name {name!r}")
    return name


@dataclass(frozen=True)
class Blob:
    """An open blob, read in chunks so a large image is never held whole in memory. `chunks`
    closes the source when exhausted; call `close` when not reading it to the end."""

    size: int
    chunks: Iterator[bytes]
    close: Callable[[], None] = field(default=lambda: None)
    modified: float | None = None  # epoch seconds, where the store knows it
    etag: str | None = None  # quoted, as the Store reports it (HTTP's ETag syntax)

    def http_headers(self) -> dict[str, str]:
        """Content-Length, ETag and Last-Modified, as far as the store knows them."""
        headers = {"content-length": str(self.size)}
        if self.etag:
            headers["etag"] = self.etag
        if self.modified is not None:
            headers["last-modified"] = formatdate(self.modified, usegmt=True)
        return headers


class Store(Protocol):
    """Named, immutable-once-written blobs. Every method may be called from several threads
    and several processes (replicas) at once over the same storage."""

    def put(self, name: str, data: bytes) -> None:
        """Store `data` under `name`, atomically: readers see all of it or nothing (replaces
        an existing blob of that name)."""
        ...

    def get(self, name: str) -> bytes:
        """The whole blob; BlobNotFound if there is none."""
        ...

    def open(self, name: str) -> Blob:
        """The blob for reading in chunks; BlobNotFound is raised here, before any chunk."""
        ...

    def delete(self, name: str) -> None:
        """Remove the blob; a missing one is not an error (replicas sweep the same store)."""
        ...

    def names(self) -> Iterator[str]:
        """Names of the complete blobs, in no particular order (never partial writes)."""
        ...

    def discard_partial(self, before: float) -> int:
        """Remove leftovers of writes that started before `before` (epoch seconds) and never
        finished, e.g. after a crash; returns how many went. Stores whose writes are atomic
        by nature (an S3 PUT) have none and return 0."""
        ...
