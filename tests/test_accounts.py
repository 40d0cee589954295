"""Accounts through the openai SDK and the admin API, on SQLite and on a real PostgreSQL:
keys made, used and revoked; allow-lists; requests and images per minute under concurrent
load; budgets that concurrent requests cannot overspend; cost from the price table; keys
that never reach the logs, the database or an error body."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from conftest import make_settings, running, sdk_client, tiny_config
from imagegate.accounts.budget import SETTLEMENT_KEEP, Budgets
from imagegate.app import create_app
from imagegate.db import Ledger
from imagegate.db.tables import SettlementRow
from imagegate.pricing import GPT_IMAGE_1_PER_IMAGE, Pricing

ADMIN = "admin-" + "a" * 40
PER_IMAGE = {"low": {"1024x1024": 0.5, "1536x1024": 0.75, "1024x1536": 0.75},
             "medium": {"1024x1024": 1.0, "1536x1024": 1.5, "1024x1536": 1.5},
             "high": {"1024x1024": 2.0, "1536x1024": 3.0, "1024x1536": 3.0}}


def _admin(app: Any) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://testserver",
                              headers={"authorization": f"Bearer {ADMIN}"})


async def _create(app: Any, name: str, **body: Any) -> dict[str, Any]:
    async with _admin(app) as http:
        r = await http.post("/admin/v1/keys", json={"name": name, **body})
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    assert out["key"].startswith("sk-ig-")
    return out


@pytest.fixture
async def acc_app(tmp_path: Path, tiny_sd_path: Path, db_url: str) -> Any:
    """The tiny model, priced per image, on the database under test."""
    config = tiny_config(tiny_sd_path, max_batch_images=4, pricing=Pricing(per_image=PER_IMAGE))
    settings = make_settings(tmp_path, database_url=db_url, admin_key=ADMIN, janitor_interval_seconds=3600)
    application = create_app(settings, [config])
    async with running(application):
        yield application


async def test_create_use_revoke(acc_app: Any) -> None:
    made = await _create(acc_app, "alice", project="p1")
    client = sdk_client(acc_app, api_key=made["key"])
    raw = await client.images.with_raw_response.generate(prompt="a red circle", size="1024x1024", quality="low")
    assert raw.headers["x-imagegate-cost-usd"] == "0.5"
    assert raw.parse().data[0].b64_json
    row = await acc_app.state.ledger.get(raw.headers["x-request-id"])
    assert (row.api_key_id, row.project_id, row.cost_usd, row.images) == (made["id"], "p1", 0.5, 1)
    async with _admin(acc_app) as http:
        r = await http.delete("/admin/v1/keys/alice")
        assert r.status_code == 200 and r.json()["status"] == "revoked"
    revoked_at = time.monotonic()
    refused: openai.AuthenticationError | None = None
    while refused is None:  # within a second (the cache lives 0.5 s)
        try:
            await client.models.list()
        except openai.AuthenticationError as exc:
            refused = exc
        else:
            assert time.monotonic() - revoked_at < 1.0
            await asyncio.sleep(0.05)
    assert refused.body["code"] == "invalid_api_key"  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError):
        await client.images.generate(prompt="x")
    # Without any key the server is closed now that keys exist; a wrong key gets 401.
    with pytest.raises(openai.AuthenticationError):
        await sdk_client(acc_app, api_key="sk-ig-wrong").images.generate(prompt="x")


async def test_admin_key_is_not_an_image_key(acc_app: Any) -> None:
    await _create(acc_app, "someone")
    with pytest.raises(openai.AuthenticationError):
        await sdk_client(acc_app, api_key=ADMIN).images.generate(prompt="x")
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=acc_app), base_url="http://t") as http:
        r = await http.get("/admin/v1/keys", headers={"authorization": "Bearer nope"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = await http.post("/admin/v1/keys", json={"name": "x", "rpm": 0},
                            headers={"authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "rpm"
        r = await http.post("/admin/v1/keys", json={"name": "someone"}, headers={"authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 409 and r.json()["error"]["param"] == "name"


async def test_expired_key(acc_app: Any) -> None:
    made = await _create(acc_app, "brief", expires_in="1s")
    client = sdk_client(acc_app, api_key=made["key"])
    await client.models.list()
    await asyncio.sleep(1.1)
    with pytest.raises(openai.AuthenticationError) as e:
        await client.models.list()
    assert "expired" in e.value.message


async def test_model_allow_list(acc_app: Any) -> None:
    made = await _create(acc_app, "narrow", models=["some-other-model"])
    with pytest.raises(openai.PermissionDeniedError) as e:
        await sdk_client(acc_app, api_key=made["key"]).images.generate(prompt="x", model="tiny-sd")
    assert e.value.status_code == 403
    assert e.value.body["code"] == "model_not_allowed" and e.value.body["param"] == "model"  # type: ignore[index]
    ok = await _create(acc_app, "wide", models=["tiny-sd"])
    await sdk_client(acc_app, api_key=ok["key"]).images.generate(prompt="x", model="tiny-sd")


async def _burst(app: Any, key: str, count: int, n: int = 1) -> list[Any]:
    client = sdk_client(app, api_key=key)

    async def one() -> Any:
        try:
            return await client.images.with_raw_response.generate(prompt="x", n=n, quality="low")
        except openai.RateLimitError as exc:
            return exc

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def test_rpm_exact_under_concurrency(acc_app: Any) -> None:
    made = await _create(acc_app, "rpm", rpm=7)
    results = await _burst(acc_app, made["key"], 20)
    ok = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(ok) == 7 and len(refused) == 13
    for r in ok:
        assert r.headers["x-ratelimit-limit-requests"] == "7"
        assert 0 <= int(r.headers["x-ratelimit-remaining-requests"]) < 7
        assert r.headers["x-ratelimit-reset-requests"]
    remaining = sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok)
    assert remaining == list(range(7))  # each success saw its own count
    e = refused[0]
    assert e.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    h = e.response.headers
    assert h["x-ratelimit-limit-requests"] == "7" and h["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(h["retry-after"]) <= 60


async def test_ipm_counts_images(acc_app: Any) -> None:
    made = await _create(acc_app, "ipm", ipm=8)
    results = await _burst(acc_app, made["key"], 20, n=3)
    ok = [r for r in results if not isinstance(r, Exception)]
    assert len(ok) == 2  # 3 + 3 fit in 8; a third would make 9
    assert all(r.headers["x-ratelimit-limit-images"] == "8" for r in ok)
    with pytest.raises(openai.RateLimitError) as e:  # more images than the limit at all
        await sdk_client(acc_app, api_key=(await _create(acc_app, "ipm2", ipm=2))["key"]).images.generate(
            prompt="x", n=3)
    assert "3 images" in e.value.message


async def test_budget_cannot_be_overspent(acc_app: Any) -> None:
    # 0.5 per low 1024x1024 image: a budget of 2.2 pays for exactly four.
    made = await _create(acc_app, "budget", budget_usd=2.2)
    client = sdk_client(acc_app, api_key=made["key"])

    async def one() -> Any:
        try:
            return await client.images.with_raw_response.generate(prompt="x", quality="low", size="1024x1024")
        except openai.RateLimitError as exc:
            return exc

    results = await asyncio.gather(*(one() for _ in range(12)))
    ok = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(ok) == 4 and len(refused) == 8
    assert refused[0].body["code"] == "insufficient_quota"  # type: ignore[index]
    assert refused[0].response.headers["x-should-retry"] == "false"
    assert sum(float(r.headers["x-imagegate-cost-usd"]) for r in ok) == pytest.approx(2.0)
    async with _admin(acc_app) as http:
        listed = (await http.get("/admin/v1/keys/budget")).json()
    assert listed["spent_usd_this_month"] == pytest.approx(2.0)


async def test_failures_cost_nothing_and_release_the_hold(acc_app: Any) -> None:
    made = await _create(acc_app, "tight", budget_usd=0.5)
    client = sdk_client(acc_app, api_key=made["key"])
    with pytest.raises(openai.BadRequestError) as e:  # fails after the hold: transparent jpeg
        await client.images.generate(prompt="x", quality="low", background="transparent", output_format="jpeg")
    assert e.value.response.headers["x-imagegate-cost-usd"] == "0"
    raw = await client.images.with_raw_response.generate(prompt="x", quality="low", size="1024x1024")
    assert raw.headers["x-imagegate-cost-usd"] == "0.5"


async def test_cost_follows_the_price_table(acc_app: Any) -> None:
    client = sdk_client(acc_app)  # no keys: open server, still priced
    for quality in ("low", "medium", "high"):
        for size in ("1024x1024", "1536x1024", "1024x1536"):
            raw = await client.images.with_raw_response.generate(prompt="x", quality=quality, size=size, n=2)
            assert float(raw.headers["x-imagegate-cost-usd"]) == pytest.approx(2 * PER_IMAGE[quality][size])


async def test_openai_names_default_to_openais_prices(app: Any, client: Any) -> None:
    raw = await client.images.with_raw_response.generate(model="gpt-image-1", prompt="x", quality="medium",
                                                         size="1536x1024")
    assert float(raw.headers["x-imagegate-cost-usd"]) == GPT_IMAGE_1_PER_IMAGE["medium"]["1536x1024"]
    raw = await client.images.with_raw_response.generate(model="tiny-sd", prompt="x")
    assert raw.headers["x-imagegate-cost-usd"] == "0"  # a local model without a table is free
    card = await client.models.retrieve("gpt-image-1")
    assert card.model_extra["pricing"]["per_image"]["high"]["1024x1024"] == 0.167  # type: ignore[index]


async def test_static_keys_stay_unlimited(tmp_path: Path, tiny_sd_path: Path) -> None:
    settings = make_settings(tmp_path, api_keys=["static-key"], admin_key=ADMIN)
    application = create_app(settings, [tiny_config(tiny_sd_path)])
    async with running(application):
        made = await _create(application, "db-key", rpm=1)
        await sdk_client(application, api_key="static-key").images.generate(prompt="x")
        await sdk_client(application, api_key=made["key"]).images.generate(prompt="x")
        with pytest.raises(openai.RateLimitError):
            await sdk_client(application, api_key=made["key"]).images.generate(prompt="x")
        for _ in range(3):
            await sdk_client(application, api_key="static-key").images.generate(prompt="x")
        with pytest.raises(openai.AuthenticationError):
            await sdk_client(application, api_key="other").images.generate(prompt="x")


async def test_keys_never_stored_or_logged(tmp_path: Path, tiny_sd_path: Path, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    settings = make_settings(tmp_path, admin_key=ADMIN)
    application = create_app(settings, [tiny_config(tiny_sd_path)])
    async with running(application):
        made = await _create(application, "secret", rpm=1)
        key = made["key"]
        client = sdk_client(application, api_key=key)
        await client.images.generate(prompt="x")
        with pytest.raises(openai.RateLimitError) as e:
            await client.images.generate(prompt="x")
        assert key not in e.value.response.text
        with pytest.raises(openai.AuthenticationError) as e2:
            await sdk_client(application, api_key=key + "x").images.generate(prompt="x")
        assert key not in e2.value.response.text
        async with _admin(application) as http:
            listed = (await http.get("/admin/v1/keys")).text
        assert key not in listed and key[-4:] in listed
    for f in settings.data_dir.rglob("*"):
        if f.is_file():
            assert key.encode() not in f.read_bytes(), f
    assert key not in caplog.text


async def test_usage_and_costs_add_up_to_real_requests(acc_app: Any) -> None:
    """Requests by two keys, then OpenAI's usage and costs APIs through the SDK: the admin
    sees both keys, each key only itself, and the sums equal what the responses said."""
    import httpx2
    from openai import AsyncOpenAI

    a = await _create(acc_app, "usage-a", project="pa")
    b = await _create(acc_app, "usage-b", project="pb")
    start = int(time.time()) - 5
    spent = {"pa": 0.0, "pb": 0.0}
    images = {"pa": 0, "pb": 0}
    for made, project, n, quality in ((a, "pa", 2, "low"), (a, "pa", 1, "high"), (b, "pb", 3, "medium")):
        raw = await sdk_client(acc_app, api_key=made["key"]).images.with_raw_response.generate(
            prompt="x", n=n, quality=quality, size="1024x1024")
        spent[project] += float(raw.headers["x-imagegate-cost-usd"])
        images[project] += n
    with pytest.raises(openai.BadRequestError):  # a failure: counted nowhere, costs nothing
        await sdk_client(acc_app, api_key=b["key"]).images.generate(prompt="x", background="transparent",
                                                                      output_format="jpeg")

    def org(key: str) -> Any:
        http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=acc_app), base_url="http://testserver")
        return AsyncOpenAI(api_key="unused", admin_api_key=key, base_url="http://testserver/v1", http_client=http,
                           max_retries=0).admin.organization

    usage = await org(ADMIN).usage.images(start_time=start, group_by=["project_id"])
    got = {r.project_id: (r.images, r.num_model_requests) for bucket in usage.data for r in bucket.results}
    assert got == {"pa": (images["pa"], 2), "pb": (images["pb"], 1)}
    costs = await org(ADMIN).usage.costs(start_time=start, group_by=["project_id"])
    amounts = {r.project_id: r.amount.value for bucket in costs.data for r in bucket.results if r.amount}
    assert amounts == {p: pytest.approx(v) for p, v in spent.items()}
    own = await org(a["key"]).usage.images(start_time=start, group_by=["api_key_id"])
    assert {r.api_key_id for bucket in own.data for r in bucket.results} == {a["id"]}


@pytest.mark.parametrize("counters", ["database", "redis"])
async def test_limits_hold_across_processes(tmp_path: Path, tiny_sd_path: Path, counters: str,
                                            request: pytest.FixtureRequest) -> None:
    """Two servers on one database (two processes' worth of state: engines, caches,
    counters' clients), the counters in that database or in one Redis: a key's rpm is one
    limit however its requests are spread."""
    redis_url = request.getfixturevalue("redis_server") if counters == "redis" else None
    db = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    # Processes sharing a database share its key secret (IMAGEGATE_KEY_SECRET).
    apps = [create_app(make_settings(tmp_path / name, database_url=db, admin_key=ADMIN, redis_url=redis_url,
                                     key_secret="s" * 32), [tiny_config(tiny_sd_path)]) for name in ("one", "two")]
    async with running(apps[0]), running(apps[1]):
        from imagegate.accounts.ratelimit import SQLStorage

        assert isinstance(apps[0].state.accounts.limits.storage, SQLStorage) == (counters == "database")
        made = await _create(apps[0], "shared", rpm=5, ipm=100)
        clients = [sdk_client(a, api_key=made["key"]) for a in apps]

        async def one(i: int) -> Any:
            try:
                return await clients[i % 2].images.with_raw_response.generate(prompt="x", quality="low")
            except openai.RateLimitError as exc:
                return exc

        results = await asyncio.gather(*(one(i) for i in range(20)))
    ok = [r for r in results if not isinstance(r, Exception)]
    assert len(ok) == 5
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok) == [0, 1, 2, 3, 4]


async def test_a_request_id_is_billed_once_however_often_it_settles(db_url: str) -> None:
    """A job whose process died after settling and before finishing runs again under the same
    request id: its key's spend counts it once, and the budget it already paid does not refuse it."""
    import datetime as dt

    from sqlalchemy import func, select

    ledger = Ledger(db_url)
    await ledger.start()
    try:
        budgets = Budgets(ledger.engine, hold_seconds=600)
        for _attempt in range(3):
            await budgets.hold("key_a", 2.0, "req_job", 1.5)
            await budgets.settle("key_a", "req_job", 1.5)
        assert await budgets.spent("key_a") == pytest.approx(1.5)
        await budgets.hold("key_a", 2.0, "req_next", 0.5)  # fits only if no retry's hold is left
        # a failure costs nothing and marks nothing: the id's later success is billed
        await budgets.settle("key_a", "req_next", 0.0)
        await budgets.hold("key_a", 2.0, "req_next", 0.5)
        await budgets.settle("key_a", "req_next", 0.5)
        assert await budgets.spent("key_a") == pytest.approx(2.0)
        # settlement records are kept for SETTLEMENT_KEEP, then swept
        async with ledger.sessions() as s:
            s.add(SettlementRow(request_id="req_old", key_id="key_a", cost_usd=1.0,
                                settled_at=dt.datetime.now(dt.timezone.utc) - SETTLEMENT_KEEP - dt.timedelta(hours=1)))
            await s.commit()
        assert await budgets.sweep() == 1
        async with ledger.sessions() as s:
            assert (await s.execute(select(func.count()).select_from(SettlementRow))).scalar_one() == 2
    finally:
        await ledger.close()
