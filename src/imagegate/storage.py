"""Images for `url` responses: files under data_dir/images, served back by us through
signed, expiring links. The expiry is part of the file name, so the janitor needs no
database and a link's signature covers both the file and its lifetime."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
import uuid
from pathlib import Path

from .errors import Forbidden, Gone, NotFound

URL_PREFIX = "/v1/images/content"


def load_or_create_secret(path: Path) -> bytes:
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    os.replace(tmp, path)
    return key


class Storage:
    def __init__(self, root: Path, secret: bytes, ttl_seconds: int) -> None:
        self.root = root
        self.secret = secret
        self.ttl = ttl_seconds
        root.mkdir(parents=True, exist_ok=True)

    def _sig(self, name: str) -> str:
        return hmac.new(self.secret, name.encode(), hashlib.sha256).hexdigest()[:32]

    def save(self, data: bytes, ext: str, now: float | None = None) -> str:
        """Write atomically; returns the stored name ('<expires>-<random>.<ext>')."""
        expires = int((now or time.time()) + self.ttl)
        name = f"{expires}-{uuid.uuid4().hex}.{ext}"
        tmp = self.root / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.root / name)
        return name

    def url(self, base_url: str, name: str) -> str:
        return f"{base_url.rstrip('/')}{URL_PREFIX}/{name}?sig={self._sig(name)}"

    def resolve(self, name: str, sig: str | None, now: float | None = None) -> Path:
        # Bytes, not str: compare_digest raises TypeError on non-ASCII strings (a 500 for `?sig=%C2%80`).
        if not sig or not hmac.compare_digest(self._sig(name).encode(), sig.encode()):
            raise Forbidden("This image link is invalid.", code="invalid_signature")
        try:
            expires = int(name.split("-", 1)[0])
        except ValueError as exc:
            raise NotFound("No such image.") from exc
        if (now or time.time()) >= expires:
            raise Gone("This image link has expired.", code="expired")
        path = self.root / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise Gone("This image is no longer stored.", code="expired")
        return path

    def sweep(self, now: float | None = None) -> int:
        """Delete expired images and stale temporaries; returns how many files went."""
        now = now or time.time()
        removed = 0
        for p in self.root.iterdir():
            try:
                if p.name.startswith("."):
                    stale = p.stat().st_mtime < now - 3600
                else:
                    stale = int(p.name.split("-", 1)[0]) <= now
            except (ValueError, OSError):
                continue
            if stale:
                p.unlink(missing_ok=True)
                removed += 1
        return removed
