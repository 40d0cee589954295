"""How a routed model picks its routes: the order a strategy gives, routes whose circuit is
open skipped, the health each attempt teaches. Pure bookkeeping, no I/O (the gateway in
core/gateway.py makes the calls)."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

from .catalogue import Route

# Weight of the newest observation in the latency average: about the last ten requests count.
LATENCY_ALPHA = 0.2


@dataclass
class Breaker:
    """Per route: closed (calls go through) → open after `failures` consecutive failures →
    half-open after `cooldown_s`, when one probe may go through: its success closes the
    circuit, its failure opens it again for another cooldown."""

    failures: int = 3
    cooldown_s: float = 30.0
    consecutive: int = 0
    opened_at: float | None = None
    probing: bool = False
    clock: Callable[[], float] = field(default=time.monotonic)

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.cooldown_s else "open"

    def allow(self) -> bool:
        """May a call go to this route now? Takes the half-open probe slot when it is free."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self.probing:
            self.probing = True
            return True
        return False

    def success(self) -> None:
        self.consecutive, self.opened_at, self.probing = 0, None, False

    def failure(self) -> None:
        self.consecutive += 1
        was_probe, self.probing = self.probing, False
        if was_probe or self.consecutive >= self.failures:
            self.opened_at = self.clock()

    def release(self) -> None:
        """A probe that ended neither way (a client error): free the slot."""
        self.probing = False


@dataclass
class Health:
    """What the gateway has learned about each route (keyed by Route.key)."""

    breakers: dict[str, Breaker] = field(default_factory=dict)
    latency_s: dict[str, float] = field(default_factory=dict)  # exponentially decayed average

    def breaker(self, route: Route) -> Breaker:
        b = self.breakers.get(route.key)
        if b is None:
            p = route.provider
            b = Breaker(failures=p.breaker_failures, cooldown_s=p.breaker_cooldown_s) if p else Breaker()
            self.breakers[route.key] = b
        return b

    def observe(self, route: Route, seconds: float) -> None:
        old = self.latency_s.get(route.key)
        self.latency_s[route.key] = seconds if old is None else (1 - LATENCY_ALPHA) * old + LATENCY_ALPHA * seconds


def order(strategy: str, routes: Sequence[Route], health: Health, cost: Callable[[Route], float],
          rng: random.Random | None = None) -> list[Route]:
    """All routes, best first, for the strategy; the caller skips those whose breaker says no.

    - priority: as configured (failover in order);
    - weighted: a weighted draw without replacement (routes of weight 0 only as a last resort);
    - least-latency: lowest observed average first; a route never measured goes first, so
      every route gets measured;
    - cheapest: lowest estimated cost for this request's size, quality and n; ties keep order."""
    rs = list(routes)
    if strategy == "weighted":
        r = rng or random
        # Efraimidis-Spirakis: key u^(1/w), highest first, is a weighted draw without replacement.
        keyed = [(r.random() ** (1.0 / rt.weight) if rt.weight > 0 else -1.0, i) for i, rt in enumerate(rs)]
        return [rs[i] for _, i in sorted(keyed, reverse=True)]
    if strategy == "least-latency":
        return sorted(rs, key=lambda rt: health.latency_s.get(rt.key, -1.0))
    if strategy == "cheapest":
        return sorted(rs, key=cost)
    return rs


def retry_after_seconds(value: str | None, ms: str | None = None, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds, or an HTTP date)."""
    if ms:
        try:
            v = float(ms) / 1000
            if math.isfinite(v) and v >= 0:
                return v
        except ValueError:
            pass
    if not value:
        return None
    try:
        v = float(value)
        return v if math.isfinite(v) and v >= 0 else None
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def backoff_s(attempt: int, base: float = 0.25, cap: float = 4.0, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff before retry `attempt` (1, 2, ...)."""
    return (rng or random).uniform(0, min(cap, base * 2 ** (attempt - 1)))
