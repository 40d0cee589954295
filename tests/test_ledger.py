"""Every /v1/images request leaves a ledger row, including those refused before the
service saw them; the served model is recorded even when validation fails later."""

from __future__ import annotations

import openai
import pytest


async def _row(app, exc):  # type: ignore[no-untyped-def]
    rid = exc.response.headers["x-request-id"]
    return await app.state.ledger.get(rid)


async def test_parse_time_rejection_is_recorded(app, client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(openai.BadRequestError) as e:
        await client.images.generate(prompt="x", n=11)
    row = await _row(app, e.value)
    assert row is not None and row.status == "error" and row.http_status == 400
    assert row.error_code == "invalid_value" and row.endpoint == "images.generations"
    assert row.input_tokens is None  # failures are not billed


async def test_service_validation_failure_names_the_model(app, client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(openai.BadRequestError) as e:
        await client.images.generate(prompt="x", background="transparent", output_format="jpeg")
    row = await _row(app, e.value)
    assert row.model == "tiny-sd" and row.status == "error"
