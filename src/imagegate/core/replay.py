"""Answers given again without generating: the response cache (routed models with
`cache_ttl_s`, requests with an explicit seed) and Idempotency-Key retries (any image
request, 24 hours). Both keep the encoded images, not the response, so each answer is
delivered afresh (a new signed URL, or the same base64).

Held in this process's memory, bounded by bytes (least recently used entries go first):
replicas do not share it, and a restart forgets it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

from ..normalize import ImageSpec
from ..protocol import ImagesUsage
from .request import ImageRequest

IDEMPOTENCY_TTL_S = 24 * 3600.0


@dataclass(frozen=True)
class Stored:
    spec: ImageSpec
    images: tuple[bytes, ...]
    usage: ImagesUsage
    usage_per_image: ImagesUsage
    seed: int | None
    provider: str
    served_model: str
    request_id: str
    fingerprint: str = ""
    expires: float = 0.0

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.images) + 2048


def fingerprint(req: ImageRequest, *parts: str) -> str:
    """The request's parameters and inputs (hashed), plus `parts` (the route)."""
    d: dict[str, Any] = {k: v for k, v in asdict(req).items() if k not in ("images", "mask")}
    d["images"] = [hashlib.sha256(u.data).hexdigest() for u in req.images]
    d["mask"] = hashlib.sha256(req.mask.data).hexdigest() if req.mask else None
    d["route"] = list(parts)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


class Replays:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self.entries: OrderedDict[str, Stored] = OrderedDict()
        self.inflight: dict[str, asyncio.Event] = {}

    def get(self, key: str) -> Stored | None:
        s = self.entries.get(key)
        if s is None:
            return None
        if s.expires <= time.time():
            self._drop(key)
            return None
        self.entries.move_to_end(key)
        return s

    def put(self, key: str, stored: Stored) -> None:
        if stored.nbytes > self.max_bytes:
            return
        if key in self.entries:
            self._drop(key)
        self.entries[key] = stored
        self.used += stored.nbytes
        while self.used > self.max_bytes and self.entries:
            self._drop(next(iter(self.entries)))

    def _drop(self, key: str) -> None:
        s = self.entries.pop(key)
        self.used -= s.nbytes

    async def claim(self, key: str) -> bool:
        """True: the caller runs the request and must call release(); False: another request
        with this key ran (or is running, waited for here) first: look it up again."""
        waiting = self.inflight.get(key)
        if waiting is None:
            self.inflight[key] = asyncio.Event()
            return True
        await waiting.wait()
        return False

    def release(self, key: str) -> None:
        ev = self.inflight.pop(key, None)
        if ev is not None:
            ev.set()
