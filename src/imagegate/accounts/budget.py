"""Monthly budgets per key: a request holds its cost estimate before any work, and settles
the actual cost (0 for a failure) when it ends. Holds are taken one at a time per key (the
key's row is locked first: a row lock on PostgreSQL, the write lock on SQLite), so requests
arriving together cannot overspend a budget: spent + held + this estimate <= budget.

A hold whose process died expires after `budget_hold_seconds`; spend is kept per calendar
month (UTC) in `key_spend`. A request's cost is added once: `budget_settlements` records each
request id settled with a cost, so a job retried under its id after its process died between
settling and finishing is not billed again."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, Float, String, bindparam, delete, func, insert, literal, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from ..db.tables import ApiKeyRow, BudgetHoldRow, SettlementRow, SpendRow
from ..errors import QuotaExceeded

# A settlement record only has to outlive the attempts of its job (hours); kept a month and more.
SETTLEMENT_KEEP = dt.timedelta(days=35)

_ADD_SPEND = text(
    "INSERT INTO key_spend (key_id, month, spent_usd) VALUES (:key_id, :month, :amount) "
    "ON CONFLICT (key_id, month) DO UPDATE SET spent_usd = key_spend.spent_usd + :amount").bindparams(
        bindparam("key_id", type_=String), bindparam("month", type_=String), bindparam("amount", type_=Float))


def month_of(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m")


class Budgets:
    def __init__(self, engine: AsyncEngine, hold_seconds: float) -> None:
        self.engine = engine
        self.hold_seconds = hold_seconds

    async def hold(self, key_id: str, budget_usd: float, request_id: str, amount: float) -> None:
        """Hold `amount` against the key's budget for this month; 429 insufficient_quota
        (nothing held) when it does not fit. A request id already settled with a cost (a job
        retried after its process died) is paid for: nothing is held and nothing refused."""
        now = dt.datetime.now(dt.timezone.utc)
        spent_q = select(func.coalesce(func.sum(SpendRow.spent_usd), 0.0)).where(
            SpendRow.key_id == key_id, SpendRow.month == month_of(now)).scalar_subquery()
        held_q = select(func.coalesce(func.sum(BudgetHoldRow.amount_usd), 0.0)).where(
            BudgetHoldRow.key_id == key_id, BudgetHoldRow.expires_at > now).scalar_subquery()
        async with self.engine.begin() as conn:
            # Serialise holds on this key: a no-op write that takes the lock. Then one
            # statement holds the amount only if it fits.
            await conn.execute(update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(id=ApiKeyRow.id))
            if (await conn.execute(select(SettlementRow.request_id).where(
                    SettlementRow.request_id == request_id))).first() is not None:
                return None
            fits = select(literal(request_id), literal(key_id), literal(amount),
                          literal(now + dt.timedelta(seconds=self.hold_seconds), DateTime(timezone=True))).where(
                spent_q + held_q + amount <= budget_usd + 1e-9)
            res = await conn.execute(insert(BudgetHoldRow).from_select(
                ["request_id", "key_id", "amount_usd", "expires_at"], fits))
            if res.rowcount == 1:
                return None
            spent, held = (await conn.execute(select(spent_q, held_q))).one()
        left = budget_usd - float(spent) - float(held)
        raise QuotaExceeded(
            f"You exceeded your current quota: this request would cost ${amount:.4f} and the key has "
            f"${max(0.0, left):.4f} of its ${budget_usd:.2f} monthly budget left.")

    async def settle(self, key_id: str, request_id: str, cost: float) -> None:
        """Release the request's hold and add its actual cost to the month's spend, unless this
        request id was settled with a cost before (a retried job)."""
        now = dt.datetime.now(dt.timezone.utc)
        async with self.engine.begin() as conn:
            await conn.execute(delete(BudgetHoldRow).where(BudgetHoldRow.request_id == request_id))
            if cost > 0:
                dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
                first = await conn.execute(dialect.insert(SettlementRow).values(
                    request_id=request_id, key_id=key_id, cost_usd=cost, settled_at=now).on_conflict_do_nothing(
                    index_elements=["request_id"]))
                if first.rowcount == 1:
                    await conn.execute(_ADD_SPEND, {"key_id": key_id, "month": month_of(now), "amount": cost})

    async def spent(self, key_id: str) -> float:
        """The key's spending this month."""
        async with self.engine.connect() as conn:
            value = (await conn.execute(select(SpendRow.spent_usd).where(
                SpendRow.key_id == key_id, SpendRow.month == month_of(dt.datetime.now(dt.timezone.utc))))).scalar()
        return float(value or 0.0)

    async def sweep(self) -> int:
        """Delete expired holds and old settlement records (the janitor calls it)."""
        now = dt.datetime.now(dt.timezone.utc)
        async with self.engine.begin() as conn:
            res = await conn.execute(delete(BudgetHoldRow).where(BudgetHoldRow.expires_at <= now))
            old = await conn.execute(delete(SettlementRow).where(SettlementRow.settled_at < now - SETTLEMENT_KEEP))
        return int(res.rowcount or 0) + int(old.rowcount or 0)
