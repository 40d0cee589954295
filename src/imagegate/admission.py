"""Server-wide memory budgets for what requests hold while in flight: request bodies (bytes)
and decoded input images (pixels). A request that would take a budget over its capacity is
refused at once with 503 + Retry-After (the SDK retries those), so a burst of large edits
queues at the client instead of in this process's memory.

Used only from the event loop (no locks needed); `wait` is for work already accepted (the
compositing step after generation), which should wait its turn rather than fail."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
from collections.abc import AsyncIterator, Callable, Iterator

from .errors import Overloaded

log = logging.getLogger("imagegate.admission")


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return None
    return trim


_malloc_trim = _load_malloc_trim()


def trim_heap() -> None:
    """Hand freed heap memory back to the system. glibc keeps freed blocks of large
    decoded images in its arenas: after three 16-image edits 4.8 GB stayed held (#19).
    Blocking (milliseconds): call it from a worker thread."""
    if _malloc_trim is not None:
        _malloc_trim(0)


class Budget:
    def __init__(self, name: str, capacity: int, unit: str, trim_after: int | None = None) -> None:
        self.name = name
        self.capacity = capacity
        self.unit = unit
        self.used = 0
        self.peak = 0
        self._released: asyncio.Condition | None = None
        # When the budget falls idle after this much was taken since the last trim, the
        # freed memory is handed back to the system (see trim_heap).
        self.trim_after = trim_after
        self._since_trim = 0

    def _fits(self, amount: int) -> bool:
        # One request larger than the whole budget still runs, alone: otherwise a setting
        # below the per-request limit would make such a request fail forever.
        return self.used == 0 or self.used + amount <= self.capacity

    def try_acquire(self, amount: int) -> bool:
        if amount <= 0:
            return True
        if not self._fits(amount):
            return False
        self.used += amount
        self._since_trim += amount
        self.peak = max(self.peak, self.used)
        return True

    def acquire(self, amount: int, retry_after: float = 1.0) -> None:
        if not self.try_acquire(amount):
            raise Overloaded(
                f"The server is busy with other large requests ({self.name}: {self.used} of {self.capacity} "
                f"{self.unit} in use, this request needs {amount}); try again shortly.",
                retry_after=retry_after,
            )

    def release(self, amount: int) -> None:
        if amount <= 0:
            return
        self.used = max(0, self.used - amount)
        if self.used == 0 and self.trim_after is not None and self._since_trim >= self.trim_after:
            self._since_trim = 0
            try:
                asyncio.get_running_loop().run_in_executor(None, trim_heap)
            except RuntimeError:  # no running loop
                trim_heap()
        self._notify()

    def _notify(self) -> None:
        if self._released is not None:
            cond = self._released

            async def _notify() -> None:
                async with cond:
                    cond.notify_all()

            with contextlib.suppress(RuntimeError):  # no running loop: nobody can be waiting
                asyncio.get_running_loop().create_task(_notify())

    @contextlib.contextmanager
    def hold(self, amount: int, retry_after: float = 1.0) -> Iterator[None]:
        """Acquire or raise 503; released when the block ends, however it ends."""
        self.acquire(amount, retry_after)
        try:
            yield
        finally:
            self.release(amount)

    @contextlib.asynccontextmanager
    async def wait(self, amount: int) -> AsyncIterator[None]:
        """Acquire, waiting for others to release if needed."""
        if self._released is None:
            self._released = asyncio.Condition()
        async with self._released:
            await self._released.wait_for(lambda: self.try_acquire(amount))
        try:
            yield
        finally:
            self.release(amount)
