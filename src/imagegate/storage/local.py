"""LocalStore: blobs as files in one directory."""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .base import Blob, BlobNotFound, check_name

CHUNK_BYTES = 64 * 1024  # Starlette's FileResponse chunk, which served these files before


class LocalStore:
    """Files under `root`. A write goes to a dot-named temporary that is flushed to disk
    and then renamed into place (os.replace is atomic within a filesystem), so a reader
    never sees a partial file, and a crash leaves only a temporary that `discard_partial`
    removes later. The root may be a shared mount (NFS) used by several replicas."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, name: str) -> Path:
        return self.root / check_name(name)

    def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        # A random part: two writers of one name never share a temporary.
        tmp = self.root / f".{name}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                # Without it, a power cut after the rename can leave an empty file under the
                # final name (ext4 and XFS order data and rename only for a replaced file).
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def get(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFound(name) from None

    def open(self, name: str) -> Blob:
        path = self._path(name)
        try:
            f = path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFound(name) from None
        try:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise BlobNotFound(name)
        except BaseException:
            f.close()
            raise
        # The ETag Starlette's FileResponse sent for these files, so caches keep matching.
        tag = hashlib.md5(f"{st.st_mtime}-{st.st_size}".encode(), usedforsecurity=False).hexdigest()
        return Blob(size=st.st_size, chunks=_chunks(f), close=f.close, modified=st.st_mtime, etag=f'"{tag}"')

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def names(self) -> Iterator[str]:
        # A list, not a live scandir: callers delete while they walk it.
        with os.scandir(self.root) as it:
            found = [e.name for e in it if not e.name.startswith(".") and e.is_file(follow_symlinks=False)]
        return iter(found)

    def discard_partial(self, before: float) -> int:
        removed = 0
        with os.scandir(self.root) as it:
            temporaries = [e for e in it if e.name.startswith(".") and e.name.endswith(".tmp")]
        for e in temporaries:
            try:
                if e.stat(follow_symlinks=False).st_mtime < before:
                    os.unlink(e.path)
                    removed += 1
            except FileNotFoundError:  # another replica's janitor, or the write just finished
                continue
        return removed


def _chunks(f: BinaryIO) -> Iterator[bytes]:
    with f:
        while chunk := f.read(CHUNK_BYTES):
            yield chunk
