"""Secrets shared through the database: every process on one database (replicas on many
machines, the CLI) reads the same URL-signing key, API-key HMAC secret and webhook secret,
with nothing to copy between machines."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .tables import SecretRow


async def shared_secret(sessions: async_sessionmaker[AsyncSession], name: str, legacy_file: Path | None = None,
                        make: Callable[[], bytes] = lambda: secrets.token_bytes(32)) -> bytes:
    """The secret stored under `name`, made on first use. Its first value is the data dir's
    `legacy_file` where one exists (what this process used before the database kept it, so
    links and keys made then keep working), else `make()`. Processes starting together
    each insert-if-absent: the first insert wins and every process then reads that one."""
    async with sessions() as s:
        found = (await s.execute(select(SecretRow.value).where(SecretRow.name == name))).scalar()
        if found is not None:
            return bytes(found)
        value = await asyncio.to_thread(_first_value, legacy_file, make)
        dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
        await s.execute(dialect.insert(SecretRow).values(name=name, value=value, created_at=time.time())
                        .on_conflict_do_nothing(index_elements=["name"]))
        await s.commit()
        stored = (await s.execute(select(SecretRow.value).where(SecretRow.name == name))).scalar_one()
        return bytes(stored)


def _first_value(legacy_file: Path | None, make: Callable[[], bytes]) -> bytes:
    try:
        return legacy_file.read_bytes() if legacy_file is not None else make()
    except (FileNotFoundError, IsADirectoryError):
        return make()
