"""Usage and costs read from the request ledger, in the shapes of OpenAI's Usage API
(`GET /v1/organization/usage/images`) and Costs API (`GET /v1/organization/costs`).

One SQL query per page does the work: rows in the page's time window, grouped by time
bucket (unix seconds // width, computed in SQL for SQLite and PostgreSQL) and the grouped
columns, with counts and sums; only those aggregates leave the database. Buckets are
aligned to the width in UTC (a day is [00:00, 24:00) UTC) and every bucket of the page is
returned, empty ones included. Rows are counted when start_time <= created_at < end_time,
so the first and last buckets may cover less than their nominal span.

What is counted: usage counts successful requests (status "ok"): `num_model_requests`
is their number and `images` the images they delivered; costs sum `cost_usd` over every
row (failures carry 0; rows from before the accounts migration count as 0)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import BigInteger, ColumnElement, Integer, case, cast, extract, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db.tables import RequestRow
from ..errors import InvalidRequest, quote_name

Kind = Literal["usage", "costs"]

WIDTHS = {"1m": 60, "1h": 3600, "1d": 86400}
# Buckets per page by width, (default, max), as OpenAI documents them for the Usage API.
USAGE_LIMITS = {"1m": (60, 1440), "1h": (24, 168), "1d": (7, 31)}
# The Costs API takes only 1d there, 1 to 180 buckets, default 7; 1h and 1m are our
# extension and take the Usage API's limits.
COSTS_LIMITS = {**USAGE_LIMITS, "1d": (7, 180)}
SOURCES = {"images.generations": "image.generation", "images.edits": "image.edit",
           "images.variations": "image.variation"}
ENDPOINTS = {v: k for k, v in SOURCES.items()}
USAGE_GROUPS = ("project_id", "user_id", "api_key_id", "model", "size", "source")
# OpenAI's costs group by these (openai-python 3.57's params) and, our extension, by model.
COSTS_GROUPS = ("project_id", "user_id", "line_item", "api_key_id", "api_source", "model")
# The ledger column behind each grouped field. user_id is the request's `user` (the end
# user the caller names); a line item is the served model (what a price table belongs to).
# api_source is not a column: every request here is "unlabeled" (not OpenAI's Agents API).
_COLUMN: dict[str, Any] = {
    "project_id": RequestRow.project_id, "user_id": RequestRow.user, "api_key_id": RequestRow.api_key_id,
    "model": RequestRow.model, "size": RequestRow.size, "source": RequestRow.endpoint,
    "line_item": RequestRow.model,
}
FILTERS = {  # query parameter -> the group field it filters on
    "api_key_ids": "api_key_id", "project_ids": "project_id", "user_ids": "user_id", "models": "model",
    "sizes": "size", "sources": "source", "line_items": "line_item",
}
USAGE_FILTERS = ("api_key_ids", "project_ids", "user_ids", "models", "sizes", "sources")
COSTS_FILTERS = ("project_ids", "api_key_ids", "line_items", "models")  # models: our extension
MAX_TIME = 253402300799  # 9999-12-31T23:59:59Z: the last second a datetime can hold
_CURSOR = "v1"


@dataclass(frozen=True)
class Filters:
    """Each set narrows the rows to those whose field is one of its values; None: no filter."""

    api_key_ids: tuple[str, ...] | None = None
    project_ids: tuple[str, ...] | None = None
    user_ids: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None
    sizes: tuple[str, ...] | None = None
    sources: tuple[str, ...] | None = None
    line_items: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Cell:
    """One bucket x group: its counts and sums."""

    start: int  # the bucket's start, unix seconds (UTC)
    group: dict[str, str | None] = field(hash=False)  # grouped field -> value (source as image.*)
    rows: int  # ledger rows of any status
    requests: int  # successful requests
    images: int  # images they delivered
    cost_usd: float  # summed over every row


@dataclass(frozen=True)
class Page:
    buckets: list[int]  # bucket starts of this page
    width: int
    has_more: bool
    next_page: str | None


# -- the query ----------------------------------------------------------------------------------
def _bucket(dialect: str, width: int) -> ColumnElement[Any]:
    """The row's bucket index: unix seconds // width. The width is inlined (one of three
    constants), so that the selected expression and the GROUP BY are the same text."""
    w = literal_column(str(width), Integer)
    epoch = extract("epoch", RequestRow.created_at)
    if dialect == "sqlite":  # CAST(STRFTIME('%s', created_at) AS INTEGER): whole seconds, UTC
        return epoch // w  # whole numbers: SQLite's integer division (a floor, as t >= 0)
    # PostgreSQL: a fractional epoch; a cast to bigint would round 59.7 s into the next minute.
    return cast(func.floor(epoch / w), BigInteger)


def _utc(t: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc)


async def aggregate(sessions: async_sessionmaker[AsyncSession], *, start: int, end: int, width: int,
                    group_by: Sequence[str] = (), filters: Filters = Filters(), only_key: str | None = None,
                    ok_only: bool = False) -> list[Cell]:
    """Rows with start <= created_at < end, counted per bucket of `width` seconds and per
    value of the `group_by` fields; buckets without rows are absent. `only_key` keeps the
    rows of that API key alone; `ok_only` keeps successful image requests alone."""
    for g in group_by:
        if g not in _COLUMN:
            raise InvalidRequest(f"Cannot group by '{quote_name(g)}'.", param="group_by", code="invalid_value")
    async with sessions() as s:
        dialect = s.get_bind().dialect.name
        labels = [f"g{i}" for i in range(len(group_by))]
        bucket = _bucket(dialect, width).label("b")
        groups = [_COLUMN[g].label(lbl) for g, lbl in zip(group_by, labels, strict=True)]
        ok = RequestRow.status == "ok"
        delivered = func.coalesce(RequestRow.images, RequestRow.n, 0)  # `n`: rows from before `images`
        stmt = (
            select(bucket, *groups, func.count().label("rows"),
                   func.sum(case((ok, 1), else_=0)).label("requests"),
                   func.sum(case((ok, delivered), else_=0)).label("images"),
                   func.sum(func.coalesce(RequestRow.cost_usd, 0.0)).label("cost"))
            .where(RequestRow.created_at >= _utc(start), RequestRow.created_at < _utc(end),
                   *_conditions(filters, only_key))
            .group_by(bucket, *groups)
        )
        if ok_only:
            stmt = stmt.where(ok, RequestRow.endpoint.in_(list(SOURCES)))
        result = await s.execute(stmt)
        cells = []
        for row in result.mappings():
            group = {g: row[lbl] for g, lbl in zip(group_by, labels, strict=True)}
            if "source" in group and group["source"] is not None:
                group["source"] = SOURCES.get(group["source"], group["source"])
            cells.append(Cell(start=int(row["b"]) * width, group=group, rows=int(row["rows"]),
                              requests=int(row["requests"] or 0), images=int(row["images"] or 0),
                              cost_usd=float(row["cost"] or 0.0)))
    cells.sort(key=lambda c: (c.start, *[(v is not None, v or "") for v in c.group.values()]))
    return cells


def _conditions(filters: Filters, only_key: str | None) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    for name, fld in FILTERS.items():
        values = getattr(filters, name)
        if values is None:
            continue
        if name == "sources":
            values = tuple(ENDPOINTS[v] for v in values if v in ENDPOINTS)
        out.append(_COLUMN[fld].in_(list(values)))
    if only_key is not None:
        out.append(RequestRow.api_key_id == only_key)
    return out


# -- the two endpoints ------------------------------------------------------------------------
async def usage_images(sessions: async_sessionmaker[AsyncSession], *, start_time: int, end_time: int | None = None,
                       bucket_width: str = "1d", group_by: Sequence[str] = (),
                       api_key_ids: Sequence[str] | None = None, project_ids: Sequence[str] | None = None,
                       user_ids: Sequence[str] | None = None, models: Sequence[str] | None = None,
                       sizes: Sequence[str] | None = None, sources: Sequence[str] | None = None,
                       limit: int | None = None, page: str | None = None, only_key: str | None = None,
                       now: int | None = None) -> dict[str, Any]:
    """OpenAI's images usage page: per bucket, one result per group with `images` and
    `num_model_requests` (fields not grouped by are null). `only_key`: that key's rows only."""
    groups = _check_groups(group_by, USAGE_GROUPS)
    if sources is not None:
        for v in sources:
            if v not in ENDPOINTS:
                raise InvalidRequest(f"Unknown source '{quote_name(v)}': use one of {', '.join(ENDPOINTS)}.",
                                     param="sources", code="invalid_value")
    filters = Filters(api_key_ids=_tuple(api_key_ids), project_ids=_tuple(project_ids), user_ids=_tuple(user_ids),
                      models=_tuple(models), sizes=_tuple(sizes), sources=_tuple(sources))
    plan = _plan(start_time, end_time, bucket_width, limit, page, USAGE_LIMITS, now)
    cells = await _page_cells(sessions, plan, start_time, end_time, now, groups, filters, only_key, ok_only=True)
    return _render(plan, cells, lambda c: {
        "object": "organization.usage.images.result", "images": c.images, "num_model_requests": c.requests,
        **{g: c.group.get(g) for g in ("source", "size", "model", "api_key_id", "project_id", "user_id")},
    })


async def costs(sessions: async_sessionmaker[AsyncSession], *, start_time: int, end_time: int | None = None,
                bucket_width: str = "1d", group_by: Sequence[str] = (), project_ids: Sequence[str] | None = None,
                api_key_ids: Sequence[str] | None = None, line_items: Sequence[str] | None = None,
                models: Sequence[str] | None = None, limit: int | None = None, page: str | None = None,
                only_key: str | None = None, now: int | None = None) -> dict[str, Any]:
    """OpenAI's costs page: per bucket, one result per group with `amount` in USD (rounded
    to 6 decimals); fields not grouped by are null. Grouped by line_item (the served model),
    `quantity` is the images delivered. `model` appears only when grouped by it (our extension)."""
    groups = _check_groups(group_by, COSTS_GROUPS)
    filters = Filters(api_key_ids=_tuple(api_key_ids), project_ids=_tuple(project_ids),
                      line_items=_tuple(line_items), models=_tuple(models))
    plan = _plan(start_time, end_time, bucket_width, limit, page, COSTS_LIMITS, now)
    sql_groups = [g for g in groups if g != "api_source"]
    cells = await _page_cells(sessions, plan, start_time, end_time, now, sql_groups, filters, only_key,
                              ok_only=False)
    by_item = "line_item" in groups

    def result(c: Cell) -> dict[str, Any]:
        return {
            "object": "organization.costs.result", "amount": {"value": round(c.cost_usd, 6), "currency": "usd"},
            **{g: c.group.get(g) for g in ("line_item", "project_id", "api_key_id", "user_id")},
            "api_source": "unlabeled" if "api_source" in groups else None,
            "quantity": c.images if by_item else None, "quantity_unit": "images" if by_item else None,
            **({"model": c.group.get("model")} if "model" in groups else {}),
        }

    return _render(plan, cells, result)


async def _page_cells(sessions: async_sessionmaker[AsyncSession], plan: Page, start_time: int,
                      end_time: int | None, now: int | None, groups: list[str], filters: Filters,
                      only_key: str | None, *, ok_only: bool) -> list[Cell]:
    if not plan.buckets:
        return []
    end = _end(end_time, now)
    lo, hi = max(start_time, plan.buckets[0]), min(end, plan.buckets[-1] + plan.width)
    return await aggregate(sessions, start=lo, end=hi, width=plan.width, group_by=groups, filters=filters,
                           only_key=only_key, ok_only=ok_only)


def _render(plan: Page, cells: list[Cell], result: Any) -> dict[str, Any]:
    by_bucket: dict[int, list[dict[str, Any]]] = {b: [] for b in plan.buckets}
    for c in cells:
        if c.start in by_bucket:
            by_bucket[c.start].append(result(c))
    return {
        "object": "page",
        "data": [{"object": "bucket", "start_time": b, "end_time": b + plan.width, "results": by_bucket[b]}
                 for b in plan.buckets],
        "has_more": plan.has_more,
        "next_page": plan.next_page,
    }


# -- parameters ---------------------------------------------------------------------------------
def _tuple(values: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)


def _check_groups(group_by: Sequence[str], allowed: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for g in group_by:
        if g not in allowed:
            raise InvalidRequest(f"Cannot group by '{quote_name(g)}': use any of {', '.join(allowed)}.",
                                 param="group_by", code="invalid_value")
        if g not in out:
            out.append(g)
    return out


def _end(end_time: int | None, now: int | None) -> int:
    """The exclusive end: `end_time`, else the second after now (so a request made this
    second is counted)."""
    return end_time if end_time is not None else (now if now is not None else int(time.time()) + 1)


def _plan(start_time: int, end_time: int | None, bucket_width: str, limit: int | None, page: str | None,
          limits: dict[str, tuple[int, int]], now: int | None) -> Page:
    """The buckets of this page, and the cursor of the next one."""
    if bucket_width not in WIDTHS:
        raise InvalidRequest(f"bucket_width must be one of {', '.join(limits)}.", param="bucket_width",
                             code="invalid_value")
    width = WIDTHS[bucket_width]
    _check_time(start_time, "start_time")
    if end_time is not None:
        _check_time(end_time, "end_time")
        if end_time <= start_time:
            raise InvalidRequest("end_time must be after start_time.", param="end_time", code="invalid_value")
    default, most = limits[bucket_width]
    if limit is None:
        limit = default
    elif not 1 <= limit <= most:
        raise InvalidRequest(f"limit must be between 1 and {most} for bucket_width {bucket_width}.",
                             param="limit", code="invalid_value")
    end = _end(end_time, now)
    first = start_time // width * width
    at = first if page is None else _decode(page, width, first, end)
    buckets = [b for b in range(at, at + limit * width, width) if b < end]
    has_more = bool(buckets) and buckets[-1] + width < end
    return Page(buckets, width, has_more, _encode(buckets[-1] + width, width) if has_more else None)


def _check_time(value: int, param: str) -> None:
    if isinstance(value, bool) or not 0 <= value <= MAX_TIME:
        raise InvalidRequest(f"{param} must be a unix time in seconds between 0 and {MAX_TIME}.", param=param,
                             code="invalid_value")


def _encode(bucket: int, width: int) -> str:
    """An opaque cursor: the next page's first bucket (and the width it belongs to)."""
    return "page_" + base64.urlsafe_b64encode(f"{_CURSOR}:{width}:{bucket}".encode()).decode().rstrip("=")


def _decode(page: str, width: int, first: int, end: int) -> int:
    bad = InvalidRequest("page is not a cursor of this query: pass the next_page of the previous response with "
                         "the same parameters.", param="page", code="invalid_value")
    try:
        raw = page.removeprefix("page_")
        version, w, b = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode().split(":")
        bucket = int(b)
    except (ValueError, UnicodeError, binascii.Error):
        raise bad from None
    if version != _CURSOR or w != str(width) or bucket % width or not first <= bucket < end:
        raise bad
    return bucket


_INT_PARAMS = ("start_time", "end_time", "limit")
_STR_PARAMS = ("bucket_width", "page")


def parse_query(kind: Kind, items: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Query string pairs -> keyword arguments of usage_images() or costs(). Arrays come as
    repeated parameters (`models=a&models=b`) or with brackets (`models[]=a`); group_by
    also takes commas (`group_by=model,size`). Unknown or repeated scalars are a 400."""
    lists = ("group_by", *(USAGE_FILTERS if kind == "usage" else COSTS_FILTERS))
    out: dict[str, Any] = {}
    for raw_key, value in items:
        key = raw_key[:-2] if raw_key.endswith("[]") else raw_key
        if key in lists:
            parts = [p.strip() for p in value.split(",")] if key == "group_by" else [value]
            out.setdefault(key, []).extend(p for p in parts if p)
        elif key in _INT_PARAMS or key in _STR_PARAMS:
            if key in out or raw_key != key:
                raise InvalidRequest(f"'{key}' takes one value.", param=key, code="invalid_value")
            out[key] = _int(value, key) if key in _INT_PARAMS else value
        else:
            name = quote_name(raw_key)
            raise InvalidRequest(f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
    if "start_time" not in out:
        raise InvalidRequest("Missing required parameter: 'start_time'.", param="start_time",
                             code="missing_required_parameter")
    return out


def _int(value: str, param: str) -> int:
    text = value.strip()
    if not (text.isascii() and text.lstrip("-").isdigit()) or len(text) > 20:
        raise InvalidRequest(f"Invalid value for '{param}': expected a whole number.", param=param,
                             code="invalid_value")
    return int(text)


__all__ = ["COSTS_FILTERS", "COSTS_GROUPS", "COSTS_LIMITS", "ENDPOINTS", "MAX_TIME", "SOURCES", "USAGE_FILTERS",
           "USAGE_GROUPS", "USAGE_LIMITS", "WIDTHS", "Cell", "Filters", "Kind", "aggregate", "costs", "parse_query",
           "usage_images"]
