"""The Usage and Costs APIs (and `imagegate usage`) read the request ledger: rows written here
directly, results checked against a plain-Python count of the same rows (`_expect`), on
SQLite and PostgreSQL (the `db_url` fixture); then over HTTP, with the openai SDK's admin
client where it has one, and through the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import itertools
import math
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from cli_fixtures import clean_env  # noqa: F401 - autouse: no IMAGEGATE_* from the environment
from imagegate.accounts import usage
from imagegate.accounts.keys import static_key_id
from imagegate.accounts.usage import COSTS_GROUPS, USAGE_GROUPS
from imagegate.cli_usage import usage_command
from imagegate.db import Ledger, RequestRow
from imagegate.errors import InvalidRequest

T0 = int(dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc).timestamp())  # a midnight, UTC
DAY, HOUR, MINUTE = 86400, 3600, 60
END = T0 + 5 * DAY
K1, K2 = "key_aaaa1111", "key_bbbb2222"


@dataclasses.dataclass(frozen=True)
class R:
    at: float  # seconds after T0
    endpoint: str = "images.generations"
    status: str = "ok"
    model: str | None = "tiny-sd"
    api_key_id: str | None = K1
    project_id: str | None = "p1"
    size: str | None = "1024x1024"
    images: int | None = 1
    cost_usd: float | None = 0.011
    user: str | None = None
    n: int | None = None

    def row(self) -> RequestRow:
        return RequestRow(
            id=f"req_{uuid.uuid4().hex}", created_at=dt.datetime.fromtimestamp(T0 + self.at, dt.timezone.utc),
            endpoint=self.endpoint, status=self.status, http_status=200 if self.status == "ok" else 400,
            model=self.model, model_requested=self.model, api_key_id=self.api_key_id, project_id=self.project_id,
            size=self.size, quality="low", images=self.images, cost_usd=self.cost_usd, user=self.user, n=self.n,
            params={}, notes=[])


ROWS = [
    R(10 * HOUR + 30, images=2, cost_usd=0.022, user="alice"),
    R(10 * HOUR + 59.7, endpoint="images.edits", api_key_id=K2, project_id="p2", size="512x512",
      cost_usd=0.0105),  # 59.7 s: still minute 10:00 (a rounding cast would move it on)
    R(10 * HOUR + 60, status="error", images=0, cost_usd=0.0),
    R(13 * HOUR, endpoint="images.variations", model="other", size="256x256", images=3, cost_usd=0.3, user="bob"),
    R(13 * HOUR + 5, status="running", model="other", images=None, cost_usd=None),
    R(2 * DAY, model="other", api_key_id=None, project_id=None, cost_usd=0.1),  # auth off
    R(3 * DAY - 0.001, api_key_id=K2, project_id="p2", images=4, cost_usd=0.044, user="alice"),
    R(3 * DAY + 2 * HOUR, api_key_id=None, project_id=None, size=None, images=None, n=2, cost_usd=None),  # pre-0002
    R(3 * DAY + 3 * HOUR, endpoint="images.edits", status="cancelled", images=0, cost_usd=0.005),
    R(-1, cost_usd=0.5),  # before start_time
    R(5 * DAY, cost_usd=0.7),  # at end_time: excluded
]
SOURCE = {"images.generations": "image.generation", "images.edits": "image.edit",
          "images.variations": "image.variation"}
FIELD = {"project_id": "project_id", "user_id": "user", "api_key_id": "api_key_id", "model": "model",
         "size": "size", "source": "endpoint", "line_item": "model"}


def _value(r: R, g: str) -> Any:
    if g == "api_source":
        return "unlabeled"
    v = getattr(r, FIELD[g])
    return SOURCE[v] if g == "source" else v


def _expect(rows: list[R], *, start: int = T0, end: int = END, width: int = DAY, group_by: tuple[str, ...] = (),
            ok_only: bool = True, keep: Any = lambda r: True) -> dict[tuple[Any, ...], tuple[int, int, float]]:
    """(bucket start, *group values) -> (requests, images, cost), counted the slow, obvious way."""
    out: dict[tuple[Any, ...], tuple[int, int, float]] = {}
    for r in rows:
        t = T0 + r.at
        if not start <= t < end or not keep(r) or (ok_only and r.status != "ok"):
            continue
        key = (math.floor(t / width) * width, *(_value(r, g) for g in group_by))
        req, img, cost = out.get(key, (0, 0, 0.0))
        ok = r.status == "ok"
        out[key] = (req + ok, img + (r.images if r.images is not None else (r.n or 0)) * ok, cost + (r.cost_usd or 0))
    return out


def _usage_got(page: dict[str, Any], group_by: tuple[str, ...] = ()) -> dict[tuple[Any, ...], tuple[int, int]]:
    got = {}
    for b in page["data"]:
        for res in b["results"]:
            assert res["object"] == "organization.usage.images.result"
            for f in set(USAGE_GROUPS) - set(group_by):
                assert res[f] is None, (f, res)
            got[(b["start_time"], *(res[g] for g in group_by))] = (res["num_model_requests"], res["images"])
    return got


def _costs_got(page: dict[str, Any], group_by: tuple[str, ...] = ()) -> dict[tuple[Any, ...], float]:
    got = {}
    for b in page["data"]:
        for res in b["results"]:
            assert res["object"] == "organization.costs.result" and res["amount"]["currency"] == "usd"
            got[(b["start_time"], *(res[g] for g in group_by))] = res["amount"]["value"]
    return got


@pytest.fixture
async def ledger(db_url: str) -> AsyncIterator[Ledger]:
    led = Ledger(db_url)
    await led.start()
    async with led.sessions() as s:
        s.add_all([r.row() for r in ROWS])
        await s.commit()
    yield led
    await led.close()


# -- the queries ------------------------------------------------------------------------------
async def test_daily_buckets_add_up_to_the_ledger_and_empty_days_are_present(ledger: Ledger) -> None:
    page = await usage.usage_images(ledger.sessions, start_time=T0, end_time=END)
    assert page["object"] == "page" and page["has_more"] is False and page["next_page"] is None
    assert [(b["object"], b["start_time"], b["end_time"]) for b in page["data"]] == [
        ("bucket", T0 + i * DAY, T0 + (i + 1) * DAY) for i in range(5)]
    assert page["data"][1]["results"] == [] and page["data"][4]["results"] == []
    want = _expect(ROWS)
    assert _usage_got(page) == {k: v[:2] for k, v in want.items()}
    assert sum(v[0] for v in want.values()) == 6 and sum(v[1] for v in want.values()) == 13

    cost = await usage.costs(ledger.sessions, start_time=T0, end_time=END)
    want_cost = _expect(ROWS, ok_only=False)
    assert _costs_got(cost) == pytest.approx({k: round(v[2], 6) for k, v in want_cost.items()})
    assert sum(_costs_got(cost).values()) == pytest.approx(0.022 + 0.0105 + 0.3 + 0.1 + 0.044 + 0.005)
    res = cost["data"][0]["results"][0]
    assert set(res) == {"object", "amount", "line_item", "project_id", "api_key_id", "user_id", "api_source",
                        "quantity", "quantity_unit"}  # openai-python's CostsResult, fields not grouped null
    assert res["line_item"] is None and res["quantity"] is None and res["api_source"] is None


@pytest.mark.parametrize("group", USAGE_GROUPS)
async def test_usage_group_by_each_field(ledger: Ledger, group: str) -> None:
    page = await usage.usage_images(ledger.sessions, start_time=T0, end_time=END, group_by=[group])
    assert _usage_got(page, (group,)) == {k: v[:2] for k, v in _expect(ROWS, group_by=(group,)).items()}


async def test_usage_group_by_several_fields(ledger: Ledger) -> None:
    groups = ("model", "source", "api_key_id")
    page = await usage.usage_images(ledger.sessions, start_time=T0, end_time=END, group_by=list(groups))
    assert _usage_got(page, groups) == {k: v[:2] for k, v in _expect(ROWS, group_by=groups).items()}


@pytest.mark.parametrize("group", COSTS_GROUPS)
async def test_costs_group_by_each_field(ledger: Ledger, group: str) -> None:
    page = await usage.costs(ledger.sessions, start_time=T0, end_time=END, group_by=[group])
    want = _expect(ROWS, group_by=(group,), ok_only=False)
    assert _costs_got(page, (group,)) == pytest.approx({k: round(v[2], 6) for k, v in want.items()})
    results = [r for b in page["data"] for r in b["results"]]
    assert all(("model" in r) == (group == "model") for r in results)  # our extension appears only when asked
    if group == "line_item":  # the served model, with its images as the quantity
        assert {r["line_item"]: r["quantity"] for r in page["data"][0]["results"]} == {"tiny-sd": 3, "other": 3}
        assert {r["quantity_unit"] for r in results} == {"images"}


FILTERS = [
    ({"models": ["other"]}, lambda r: r.model == "other"),
    ({"sources": ["image.edit", "image.variation"]}, lambda r: r.endpoint != "images.generations"),
    ({"api_key_ids": [K2]}, lambda r: r.api_key_id == K2),
    ({"project_ids": ["p1", "p2"]}, lambda r: r.project_id in ("p1", "p2")),
    ({"sizes": ["1024x1024"]}, lambda r: r.size == "1024x1024"),
    ({"user_ids": ["alice"]}, lambda r: r.user == "alice"),
    ({"models": ["tiny-sd"], "api_key_ids": [K1, K2], "sizes": ["512x512"]},
     lambda r: r.model == "tiny-sd" and r.size == "512x512"),
    ({"models": ["nothing-like-it"]}, lambda r: False),
]


@pytest.mark.parametrize(("filters", "keep"), FILTERS, ids=[",".join(f) for f, _ in FILTERS])
async def test_usage_filters(ledger: Ledger, filters: dict[str, list[str]], keep: Any) -> None:
    page = await usage.usage_images(ledger.sessions, start_time=T0, end_time=END, group_by=["model"], **filters)
    assert _usage_got(page, ("model",)) == {k: v[:2] for k, v in _expect(ROWS, group_by=("model",), keep=keep).items()}


@pytest.mark.parametrize(("filters", "keep"), [
    ({"project_ids": ["p2"]}, lambda r: r.project_id == "p2"),
    ({"line_items": ["other"]}, lambda r: r.model == "other"),
    ({"api_key_ids": [K1], "models": ["tiny-sd"]}, lambda r: r.api_key_id == K1 and r.model == "tiny-sd"),
])
async def test_costs_filters(ledger: Ledger, filters: dict[str, list[str]], keep: Any) -> None:
    page = await usage.costs(ledger.sessions, start_time=T0, end_time=END, **filters)
    want = _expect(ROWS, ok_only=False, keep=keep)
    assert _costs_got(page) == pytest.approx({k: round(v[2], 6) for k, v in want.items()})


async def test_minute_and_hour_buckets(ledger: Ledger) -> None:
    start = T0 + 10 * HOUR
    page = await usage.usage_images(ledger.sessions, start_time=start, end_time=start + 3 * MINUTE,
                                    bucket_width="1m")
    assert [b["start_time"] for b in page["data"]] == [start, start + 60, start + 120]
    assert _usage_got(page) == {(start, ): (2, 3)}  # 10:00:30 and 10:00:59.7; 10:01 failed

    page = await usage.usage_images(ledger.sessions, start_time=T0, bucket_width="1h", limit=24, now=END)
    assert len(page["data"]) == 24 and page["has_more"] is True
    assert _usage_got(page) == {(T0 + 10 * HOUR,): (2, 3), (T0 + 13 * HOUR,): (1, 3)}

    costs = await usage.costs(ledger.sessions, start_time=T0, end_time=T0 + DAY, bucket_width="1h", limit=24)
    want = _expect(ROWS, end=T0 + DAY, width=HOUR, ok_only=False)
    assert _costs_got(costs) == pytest.approx({k: round(v[2], 6) for k, v in want.items()})


async def test_an_unaligned_start_keeps_aligned_buckets_but_counts_from_start_time(ledger: Ledger) -> None:
    start = T0 + 10 * HOUR + 45  # mid-minute: only the 10:00:59.7 request is after it in that hour
    page = await usage.usage_images(ledger.sessions, start_time=start, end_time=T0 + 11 * HOUR, bucket_width="1h")
    assert [(b["start_time"], b["end_time"]) for b in page["data"]] == [(T0 + 10 * HOUR, T0 + 11 * HOUR)]
    assert _usage_got(page) == {(T0 + 10 * HOUR,): (1, 1)}


@pytest.mark.parametrize(("width", "limit", "pages"), [("1h", 24, 5), ("1d", 2, 3), ("1h", 168, 1)])
async def test_paging_walks_every_bucket_exactly_once(ledger: Ledger, width: str, limit: int, pages: int) -> None:
    seen: list[int] = []
    got: dict[tuple[Any, ...], tuple[int, int]] = {}
    cursor = None
    for _ in range(pages):
        page = await usage.usage_images(ledger.sessions, start_time=T0, end_time=END, bucket_width=width,
                                        limit=limit, page=cursor, group_by=["model"])
        seen += [b["start_time"] for b in page["data"]]
        got.update(_usage_got(page, ("model",)))
        cursor = page["next_page"]
        assert page["has_more"] is (cursor is not None)
    assert cursor is None
    step = usage.WIDTHS[width]
    assert seen == list(range(T0, END, step))
    assert got == {k: v[:2] for k, v in _expect(ROWS, width=step, group_by=("model",)).items()}


async def test_a_key_sees_only_its_own_rows(ledger: Ledger) -> None:
    page = await usage.usage_images(ledger.sessions, start_time=T0, end_time=END, group_by=["api_key_id"],
                                    only_key=K2)
    assert _usage_got(page, ("api_key_id",)) == {
        k: v[:2] for k, v in _expect(ROWS, group_by=("api_key_id",), keep=lambda r: r.api_key_id == K2).items()}
    other = await usage.usage_images(ledger.sessions, start_time=T0, end_time=END, api_key_ids=[K1], only_key=K2)
    assert all(b["results"] == [] for b in other["data"]) and len(other["data"]) == 5
    cost = await usage.costs(ledger.sessions, start_time=T0, end_time=END, only_key=K2)
    assert sum(_costs_got(cost).values()) == pytest.approx(0.0105 + 0.044)


async def test_a_start_in_the_future_is_an_empty_page(ledger: Ledger) -> None:
    page = await usage.usage_images(ledger.sessions, start_time=END + DAY, now=END)
    assert page == {"object": "page", "data": [], "has_more": False, "next_page": None}


@pytest.mark.parametrize(("kw", "param"), [
    ({"bucket_width": "1w"}, "bucket_width"),
    ({"limit": 0}, "limit"),
    ({"limit": 32}, "limit"),
    ({"bucket_width": "1h", "limit": 169}, "limit"),
    ({"bucket_width": "1m", "limit": 1441}, "limit"),
    ({"end_time": T0}, "end_time"),
    ({"end_time": T0 - 1}, "end_time"),
    ({"start_time": -1}, "start_time"),
    ({"start_time": 10**15}, "start_time"),
    ({"group_by": ["line_item"]}, "group_by"),
    ({"sources": ["image.upscale"]}, "sources"),
    ({"page": "garbage"}, "page"),
    ({"page": "page_" + "x" * 7}, "page"),
])
async def test_bad_parameters_name_themselves(ledger: Ledger, kw: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        await usage.usage_images(ledger.sessions, **{"start_time": T0, **kw})
    assert e.value.param == param and e.value.status == 400


async def test_cursors_belong_to_their_query(ledger: Ledger) -> None:
    daily = await usage.usage_images(ledger.sessions, start_time=T0, end_time=END, limit=1)
    with pytest.raises(InvalidRequest) as e:  # another width
        await usage.usage_images(ledger.sessions, start_time=T0, end_time=END, bucket_width="1h",
                                 page=daily["next_page"])
    assert e.value.param == "page"
    with pytest.raises(InvalidRequest):  # past the end of the range
        await usage.usage_images(ledger.sessions, start_time=T0, end_time=T0 + DAY, page=daily["next_page"])
    assert (await usage.costs(ledger.sessions, start_time=T0, end_time=END, limit=180))["has_more"] is False
    with pytest.raises(InvalidRequest) as e:
        await usage.costs(ledger.sessions, start_time=T0, limit=181)
    assert e.value.param == "limit"


def test_parse_query_takes_repeated_bracketed_and_comma_arrays() -> None:
    got = usage.parse_query("usage", [("start_time", "5"), ("models", "a"), ("models[]", "b"), ("group_by[]", "model"),
                                      ("group_by", "size,source"), ("limit", "3"), ("bucket_width", "1h")])
    assert got == {"start_time": 5, "models": ["a", "b"], "group_by": ["model", "size", "source"], "limit": 3,
                   "bucket_width": "1h"}
    for items, param in [([], "start_time"), ([("start_time", "x")], "start_time"),
                         ([("start_time", "1"), ("start_time", "2")], "start_time"),
                         ([("start_time", "1"), ("limit", "1.5")], "limit"),
                         ([("start_time", "1"), ("colour", "red")], "colour"),
                         ([("start_time", "1"), ("sizes", "1024x1024")], "sizes")]:  # costs take no sizes
        with pytest.raises(InvalidRequest) as e:
            usage.parse_query("costs", items)
        assert e.value.param == param
    with pytest.raises(InvalidRequest) as e:  # nor does usage take line_items
        usage.parse_query("usage", [("start_time", "1"), ("line_items", "x")])
    assert e.value.param == "line_items"


# -- over HTTP ------------------------------------------------------------------------------------
ADMIN, KEY_A, KEY_B = "admin-key-" + "x" * 16, "sk-test-a", "sk-test-b"


@pytest.fixture
async def http_app(tmp_path: Path) -> AsyncIterator[Any]:
    from imagegate.app import create_app
    from imagegate.registry import ModelConfig
    from imagegate.routes import usage as usage_routes
    from imagegate.settings import Settings

    # No model loads (preload off; its files need not exist): these routes only read the ledger.
    config = ModelConfig(name="tiny-sd", source=str(tmp_path / "absent"), family="sd", preload=False)
    settings = Settings(data_dir=tmp_path / "data", admin_key=ADMIN, api_keys=[KEY_A, KEY_B], torch_threads=1)
    app = create_app(settings, [config])
    if not any(getattr(r, "path", "") == "/v1/organization/costs" for r in app.routes):
        app.include_router(usage_routes.router)  # until app.py registers it
    async with app.router.lifespan_context(app):
        # The model's check fails at once (no files); wait for it, as the app's own tasks
        # must not be cut off mid-query when the test ends.
        await asyncio.wait_for(app.state.loader, 120)
        rows = [dataclasses.replace(r, api_key_id={K1: static_key_id(KEY_A), K2: static_key_id(KEY_B)}.get(
            r.api_key_id, r.api_key_id)) for r in ROWS]
        async with app.state.ledger.sessions() as s:
            s.add_all([r.row() for r in rows])
            await s.commit()
        app.state.test_rows = rows
        yield app
        # app.py's lifespan cancels its janitor without awaiting it and then closes the
        # database: a janitor cut off mid-query then waits forever on a closed connection
        # (seen here as a hung teardown). End it first, while the database is open.
        for task in [t for t in asyncio.all_tasks() if getattr(t.get_coro(), "__qualname__", "") == "janitor"]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _http(app: Any, key: str) -> Any:
    import httpx2

    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://testserver",
                              headers={"authorization": f"Bearer {key}"})


async def test_http_the_admin_sees_everything_and_a_key_its_own(http_app: Any) -> None:
    rows = http_app.state.test_rows
    query = f"start_time={T0}&end_time={END}&group_by=api_key_id&group_by=model"
    async with _http(http_app, ADMIN) as c:
        r = await c.get(f"/v1/organization/usage/images?{query}")
        assert r.status_code == 200, r.text
        assert _usage_got(r.json(), ("api_key_id", "model")) == {
            k: v[:2] for k, v in _expect(rows, group_by=("api_key_id", "model")).items()}
    async with _http(http_app, KEY_B) as c:
        r = await c.get(f"/v1/organization/usage/images?{query}")
        mine = static_key_id(KEY_B)
        assert _usage_got(r.json(), ("api_key_id", "model")) == {
            k: v[:2] for k, v in _expect(rows, group_by=("api_key_id", "model"),
                                         keep=lambda x: x.api_key_id == mine).items()}
        r = await c.get(f"/v1/organization/costs?start_time={T0}&end_time={END}&api_key_ids[]={static_key_id(KEY_A)}")
        assert r.status_code == 200 and all(b["results"] == [] for b in r.json()["data"])  # narrowed to nothing
    async with _http(http_app, "sk-unknown") as c:
        assert (await c.get(f"/v1/organization/costs?start_time={T0}")).status_code == 401


@pytest.mark.parametrize(("path", "filters"), [("usage/images", usage.USAGE_FILTERS),
                                               ("costs", usage.COSTS_FILTERS)])
async def test_http_every_documented_parameter_is_taken(http_app: Any, path: str, filters: tuple[str, ...]) -> None:
    values = {"sources": "image.generation"}
    query = "&".join([f"start_time={T0}", f"end_time={END}", "bucket_width=1d", "limit=5", "group_by=project_id",
                      *(f"{f}={values.get(f, 'x')}" for f in filters)])
    async with _http(http_app, ADMIN) as c:
        r = await c.get(f"/v1/organization/{path}?{query}")
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 5 and r.json()["has_more"] is False


@pytest.mark.parametrize(("query", "param"), [
    ("", "start_time"),
    ("start_time=abc", "start_time"),
    (f"start_time={T0}&bucket_width=2d", "bucket_width"),
    (f"start_time={T0}&limit=32", "limit"),
    (f"start_time={T0}&bucket_width=1h&limit=0", "limit"),
    (f"start_time={T0}&group_by=colour", "group_by"),
    (f"start_time={T0}&end_time={T0 - 60}", "end_time"),
    (f"start_time={T0}&page=not-a-cursor", "page"),
    (f"start_time={T0}&sources=image.bogus", "sources"),
    (f"start_time={T0}&colour=red", "colour"),
])
async def test_http_bad_parameters_are_400_naming_the_parameter(http_app: Any, query: str, param: str) -> None:
    async with _http(http_app, ADMIN) as c:
        r = await c.get(f"/v1/organization/usage/images?{query}")
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error" and err["message"]


async def test_http_the_openai_sdk_reads_usage_and_costs_and_pages(http_app: Any) -> None:
    import httpx2
    from openai import AsyncOpenAI

    rows = http_app.state.test_rows
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=http_app), base_url="http://testserver")
    client = AsyncOpenAI(api_key="unused", admin_api_key=ADMIN, base_url="http://testserver/v1", http_client=http,
                         max_retries=0)
    try:
        org = client.admin.organization.usage
        page = await org.images(start_time=T0, end_time=END, group_by=["model", "source"],
                                sources=["image.generation", "image.edit"])
        got = {(b.start_time, r.model, r.source): (r.num_model_requests, r.images) for b in page.data
               for r in b.results}
        want = _expect(rows, group_by=("model", "source"), keep=lambda r: r.endpoint != "images.variations")
        assert got == {k: v[:2] for k, v in want.items()}

        seen, cursor = [], None
        for _ in range(10):
            p = await org.images(start_time=T0, end_time=END, bucket_width="1h", limit=50,
                                 **({"page": cursor} if cursor else {}))
            seen += [b.start_time for b in p.data]
            cursor = p.next_page
            if not p.has_more:
                break
        assert seen == list(range(T0, END, HOUR))

        costs = await org.costs(start_time=T0, end_time=END, group_by=["project_id", "line_item"])
        amounts = {(b.start_time, r.project_id, r.line_item): r.amount.value for b in costs.data for r in b.results
                   if r.amount is not None}
        want_cost = _expect(rows, group_by=("project_id", "line_item"), ok_only=False)
        assert amounts == pytest.approx({k: round(v[2], 6) for k, v in want_cost.items()})
    finally:
        await client.close()


# -- the command line -----------------------------------------------------------------------------
def _cli() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)  # a group, as in `imagegate usage ...`
    app.command("usage")(usage_command)
    return app


async def test_cli_prints_the_table_with_totals_equal_to_the_ledger(db_url: str) -> None:
    now = dt.datetime.now(dt.timezone.utc).timestamp()
    rows = [dataclasses.replace(r, at=now - T0 - age) for r, age in zip(ROWS, itertools.cycle(
        [3600, 2 * DAY, 6 * DAY, 30, 10 * DAY]), strict=False)]  # some of them older than 7 days
    led = Ledger(db_url)
    await led.start()
    async with led.sessions() as s:
        s.add_all([r.row() for r in rows])
        await s.commit()
    await led.close()

    def run(*args: str) -> str:
        r = CliRunner().invoke(_cli(), ["usage", "--database-url", db_url, *args], env={"COLUMNS": "200"})
        assert r.exit_code == 0, r.output
        return r.output

    recent = [r for r in rows if r.at > now - T0 - 7 * DAY]
    requests = sum(r.status == "ok" for r in recent)
    images = sum((r.images if r.images is not None else r.n or 0) for r in recent if r.status == "ok")
    cost = sum(r.cost_usd or 0 for r in recent)
    assert requests < sum(r.status == "ok" for r in rows)  # the window matters
    for args in [(), ("--by", "model"), ("--by", "source", "--bucket", "1h"),
                 ("--since", "168h", "--by", "api_key_id")]:
        out = await asyncio.to_thread(run, *args)
        total = re.search(r"^\s*total\s+(\d+)\s+(\d+)\s+([\d.]+)\s*$", out, re.M)
        assert total, out
        assert (int(total[1]), int(total[2]), float(total[3])) == (requests, images, pytest.approx(cost, abs=1e-6))
        if "--by" in args:
            by = args[args.index("--by") + 1]
            assert by in out
        if args[-1:] == ("model",):
            assert "tiny-sd" in out and "other" in out
        if "source" in args:
            assert "image.generation" in out

    for bad in (["--since", "soon"], ["--by", "colour"], ["--bucket", "1w"]):
        r = CliRunner().invoke(_cli(), ["usage", "--database-url", db_url, *bad])
        assert r.exit_code == 2 and "error" in r.output


def test_cli_without_a_ledger_says_so(tmp_path: Path) -> None:
    r = CliRunner().invoke(_cli(), ["usage", "--data-dir", str(tmp_path / "nowhere")])
    assert r.exit_code == 1 and "no ledger database" in r.output
    assert not (tmp_path / "nowhere").exists()
