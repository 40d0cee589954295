"""This process's identity and heartbeat in the database. Several processes share one
database (replicas, workers, the CLI): each has an id recorded on the requests and jobs it
runs, and beats its row (from the janitor's loop, or the CLI's own), so a start-up (or a
peer's janitor) takes for interrupted only the work of processes that are gone, never a live
peer's."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .tables import InstanceRow

log = logging.getLogger(__name__)

# A process is gone after this many missed beats: one late beat (a slow database, a long
# garbage collection) must not make a live peer look dead.
MISSED_BEATS = 3
# Rows of processes gone this long are deleted (their work was taken over long before).
FORGET_AFTER_S = 7 * 86400
# The instances alive in this OS process. A fact about the process, not configuration, so
# module state: a row with our host and pid is alive exactly when its id is here (several
# apps in one process, as in tests) and dead otherwise (a restarted container reuses its
# hostname and pid 1).
_IN_THIS_PROCESS: set[str] = set()


class Instance:
    """One process: `id` (16 hex digits, no `-`, so `<id>-<n>` names its job workers) and
    its row, beaten every `interval_s` seconds."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], interval_s: float) -> None:
        self.sessions = sessions
        self.id = secrets.token_hex(8)
        self.host = socket.gethostname()[:255]
        self.pid = os.getpid()
        self.interval_s = interval_s

    def __repr__(self) -> str:
        return f"Instance({self.id!r}, host={self.host!r}, pid={self.pid})"

    async def register(self) -> None:
        now = time.time()
        async with self.sessions() as s:
            s.add(InstanceRow(id=self.id, host=self.host, pid=self.pid, started_at=now, seen_at=now))
            await s.commit()
        _IN_THIS_PROCESS.add(self.id)

    async def beat(self) -> None:
        """Refresh our row (re-made if a peer deleted it while we were stalled for days)."""
        now = time.time()
        async with self.sessions() as s:
            res = await s.execute(update(InstanceRow).where(InstanceRow.id == self.id).values(seen_at=now))
            if getattr(res, "rowcount", 0) != 1:
                s.add(InstanceRow(id=self.id, host=self.host, pid=self.pid, started_at=now, seen_at=now))
            await s.execute(delete(InstanceRow).where(InstanceRow.seen_at < now - FORGET_AFTER_S))
            await s.commit()

    async def beat_forever(self) -> None:
        """Beat every `interval_s` until cancelled: for a process with no janitor (the CLI's
        local mode), so a long run is not taken for a dead process's work. A failed beat is
        logged and retried at the next interval."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.beat()
            except Exception:  # the database is away for a moment: the next beat may reach it
                log.warning("could not beat instance %s", self.id, exc_info=True)

    async def alive(self) -> set[str]:
        """Ids of the instances alive now: those of this process, and those that beat within
        MISSED_BEATS intervals, less those on this host whose pid is gone or is ours under an
        id this process does not run (a restarted container): those died for certain, and
        their work need not wait for the heartbeat to lapse."""
        cutoff = time.time() - MISSED_BEATS * self.interval_s
        async with self.sessions() as s:
            rows = (await s.execute(select(InstanceRow.id, InstanceRow.host, InstanceRow.pid)
                                    .where(InstanceRow.seen_at >= cutoff))).all()
        here = _IN_THIS_PROCESS | {self.id}  # alive whatever their beats say: we are running them
        return here | {i for i, host, pid in rows if host != self.host or (pid != self.pid and _running(pid))}

    async def retire(self) -> None:
        """A clean stop: our row goes, so what we left running is taken over at once."""
        _IN_THIS_PROCESS.discard(self.id)
        async with self.sessions() as s:
            await s.execute(delete(InstanceRow).where(InstanceRow.id == self.id))
            await s.commit()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True
