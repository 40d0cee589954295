"""API keys in the database: made once, shown once, stored as HMAC-SHA256 digests under the
server's key secret, looked up per request through a cache short enough (0.5 s) that a
revocation takes effect within a second on every process sharing the database.

Keys from IMAGEGATE_API_KEYS / --api-key stay valid as unlimited keys of project `default`."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db.tables import ApiKeyRow
from ..errors import AuthenticationFailed, Conflict, InvalidRequest, NotFound

PREFIX = "sk-ig-"
CACHE_SECONDS = 0.5
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}")
DEFAULT_PROJECT = "default"


@dataclass(frozen=True)
class Principal:
    """Who a request is from: a database key, or a static key from the settings."""

    key_id: str
    name: str
    project: str
    models: tuple[str, ...] | None = None  # None: every model
    rpm: int | None = None
    ipm: int | None = None
    budget_usd: float | None = None
    expires_at: dt.datetime | None = None

    @property
    def limited(self) -> bool:
        return self.rpm is not None or self.ipm is not None

    def allows(self, *names: str | None) -> bool:
        """The allow-list admits a model by any of its names (as asked for, as served)."""
        return self.models is None or any(n in self.models for n in names if n)


@dataclass(frozen=True)
class KeyInfo:
    """A key as listed: everything but the key."""

    id: str
    name: str
    redacted: str
    project: str
    models: list[str] | None
    rpm: int | None
    ipm: int | None
    budget_usd: float | None
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= _now():
            return "expired"
        return "active"

    @classmethod
    def of(cls, row: ApiKeyRow) -> KeyInfo:
        return cls(id=row.id, name=row.name, redacted=row.redacted, project=row.project,
                   models=list(row.models) if row.models is not None else None, rpm=row.rpm, ipm=row.ipm,
                   budget_usd=row.budget_usd, created_at=_aware_now(row.created_at), expires_at=_aware(row.expires_at),
                   revoked_at=_aware(row.revoked_at))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _aware(t: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands timestamps back without their zone; they were written in UTC."""
    return t.replace(tzinfo=dt.timezone.utc) if t is not None and t.tzinfo is None else t


def _aware_now(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t


def static_key_id(key: str) -> str:
    return "static_" + hashlib.sha256(key.encode()).hexdigest()[:12]


class KeyStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], secret: bytes, static_keys: list[str]) -> None:
        self.sessions = sessions
        self.secret = secret
        self.static = {self.digest(k): Principal(key_id=static_key_id(k), name="static", project=DEFAULT_PROJECT)
                       for k in static_keys}
        self._cache: dict[str, tuple[float, ApiKeyRow | None]] = {}
        self._any: tuple[float, bool] = (0.0, False)

    def digest(self, key: str) -> str:
        return hmac.new(self.secret, key.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

    # -- administration (CLI and admin API) ------------------------------------------
    async def create(self, name: str, *, project: str | None = None, models: list[str] | None = None,
                     rpm: int | None = None, ipm: int | None = None, budget_usd: float | None = None,
                     expires_at: dt.datetime | None = None) -> tuple[KeyInfo, str]:
        """A new key: its record, and the key itself (shown this once, never stored)."""
        _check_name(name, "name")
        project = project or DEFAULT_PROJECT
        _check_name(project, "project")
        for field, value in (("rpm", rpm), ("ipm", ipm)):
            if value is not None and (isinstance(value, bool) or value < 1):
                raise InvalidRequest(f"{field} must be a positive whole number.", param=field)
        if budget_usd is not None and not budget_usd >= 0:
            raise InvalidRequest("budget_usd must be zero or more.", param="budget_usd")
        if models is not None:
            models = [m.strip() for m in models if m.strip()]
            if not models:
                raise InvalidRequest("models must name at least one model (omit it for every model).", param="models")
        if expires_at is not None and expires_at <= _now():
            raise InvalidRequest("expires_at is in the past.", param="expires_at")
        key = PREFIX + secrets.token_urlsafe(32)
        row = ApiKeyRow(id="key_" + secrets.token_hex(8), name=name, digest=self.digest(key),
                        redacted=f"{PREFIX}...{key[-4:]}", project=project, models=models, rpm=rpm, ipm=ipm,
                        budget_usd=budget_usd, created_at=_now(), expires_at=expires_at, revoked_at=None)
        try:
            async with self.sessions() as s:
                s.add(row)
                await s.commit()
        except IntegrityError:
            raise Conflict(f"A key named '{name}' already exists.", param="name", code="key_exists") from None
        self._any = (0.0, False)
        return KeyInfo.of(row), key

    async def list(self) -> list[KeyInfo]:
        async with self.sessions() as s:
            rows = (await s.execute(select(ApiKeyRow).order_by(ApiKeyRow.created_at))).scalars()
            return [KeyInfo.of(r) for r in rows]

    async def get(self, name: str) -> KeyInfo:
        async with self.sessions() as s:
            row = (await s.execute(select(ApiKeyRow).where(ApiKeyRow.name == name))).scalar_one_or_none()
        if row is None:
            raise NotFound(f"No key named '{name}'.", param="name", code="key_not_found")
        return KeyInfo.of(row)

    async def revoke(self, name: str) -> KeyInfo:
        """Revoke by name (idempotent: a revoked key keeps its first revocation time)."""
        async with self.sessions() as s:
            await s.execute(update(ApiKeyRow).where(ApiKeyRow.name == name, ApiKeyRow.revoked_at.is_(None))
                            .values(revoked_at=_now()))
            await s.commit()
        self._cache.clear()
        return await self.get(name)

    # -- per request -----------------------------------------------------------------
    async def any_keys(self) -> bool:
        """Whether authentication is on: static keys, or any key in the database (a key
        made while the server runs closes it within a second)."""
        if self.static:
            return True
        at, value = self._any
        if value or time.monotonic() - at < CACHE_SECONDS:
            return value
        async with self.sessions() as s:
            n = (await s.execute(select(func.count()).select_from(ApiKeyRow))).scalar_one()
        found = int(n) > 0
        self._any = (time.monotonic(), found)
        return found

    async def authenticate(self, key: str | None) -> Principal | None:
        """The caller, or None when authentication is off. 401 for a missing, unknown,
        revoked or expired key."""
        if key is None:
            if await self.any_keys():
                raise AuthenticationFailed("You didn't provide an API key. Send it as 'Authorization: Bearer KEY'.")
            return None
        digest = self.digest(key)
        static = self.static.get(digest)
        if static is not None:
            return static
        row = await self._lookup(digest)
        if row is None:
            if not await self.any_keys():
                return None  # no keys anywhere: the server is open and the token means nothing
            raise AuthenticationFailed("Incorrect API key provided.")
        if row.revoked_at is not None:
            raise AuthenticationFailed("This API key has been revoked.")
        expires = _aware(row.expires_at)
        if expires is not None and expires <= _now():
            raise AuthenticationFailed("This API key has expired.")
        return Principal(key_id=row.id, name=row.name, project=row.project,
                         models=tuple(row.models) if row.models is not None else None, rpm=row.rpm, ipm=row.ipm,
                         budget_usd=row.budget_usd, expires_at=expires)

    async def _lookup(self, digest: str) -> ApiKeyRow | None:
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            return hit[1]
        async with self.sessions() as s:
            row = (await s.execute(select(ApiKeyRow).where(ApiKeyRow.digest == digest))).scalar_one_or_none()
        if len(self._cache) > 10_000:  # unknown tokens are cached too: bound them
            self._cache.clear()
        self._cache[digest] = (now, row)
        return row if isinstance(row, ApiKeyRow) else None


def _check_name(value: str, param: str) -> None:
    if not NAME.fullmatch(value):
        raise InvalidRequest(f"{param} must be 1-128 characters of letters, digits and . _ @ : - "
                             "(starting with a letter or digit).", param=param)


def parse_duration(text: str) -> dt.timedelta:
    """`30d`, `12h`, `90m`, `45s` or `2w` → a timedelta (for --expires and usage --since)."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text or "")
    if not m:
        raise ValueError(f"{text!r} is not a duration like 30d, 12h, 90m, 45s or 2w")
    n, unit = int(m.group(1)), m.group(2)
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    if n <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return dt.timedelta(seconds=n * seconds)
