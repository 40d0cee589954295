"""/v1/batches: OpenAI's Batch API over the job workers (jobs/batches.py)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from ..accounts import Principal
from ..core.request import hash_key
from ..errors import InvalidRequest
from ..jobs import Jobs, owner_of
from ..jobs.runner import principal_dict
from ..jobs.webhooks import check_url
from .deps import bearer, require_api_key
from .images import _json_body, _validate

router = APIRouter(prefix="/v1", tags=["batches"])


class CreateBatchRequest(BaseModel):
    """OpenAI's batch creation body (openai-python's batch_create_params)."""

    model_config = ConfigDict(extra="forbid")

    input_file_id: Annotated[str, Field(min_length=1, max_length=64)]
    endpoint: str
    completion_window: str
    metadata: Annotated[dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
                        Field(max_length=16)] | None = None
    output_expires_after: dict[str, Any] | None = None  # accepted; output files do not expire here


def jobs(request: Request) -> Jobs:
    j: Jobs = request.app.state.jobs
    return j


@router.post("/batches", name="batches.create")
async def create_batch(request: Request, principal: Principal | None = Depends(require_api_key)) -> dict[str, Any]:
    body: CreateBatchRequest = _validate(CreateBatchRequest, await _json_body(request), strict=True)
    j = jobs(request)
    url = (body.metadata or {}).get("webhook_url")
    if url is not None:
        await asyncio.to_thread(check_url, url, j.allow_hosts, "metadata.webhook_url")
    b = await j.batches.create(owner_of(principal), principal_dict(principal, hash_key(bearer(request))),
                               str(request.base_url), input_file_id=body.input_file_id, endpoint=body.endpoint,
                               completion_window=body.completion_window, metadata=body.metadata)
    return await j.batches.describe(b)


@router.get("/batches/{batch_id}", name="batches.retrieve")
async def retrieve_batch(request: Request, batch_id: str,
                         principal: Principal | None = Depends(require_api_key)) -> dict[str, Any]:
    j = jobs(request)
    return await j.batches.describe(await j.batches.get(owner_of(principal), batch_id))


@router.post("/batches/{batch_id}/cancel", name="batches.cancel")
async def cancel_batch(request: Request, batch_id: str,
                       principal: Principal | None = Depends(require_api_key)) -> dict[str, Any]:
    j = jobs(request)
    return await j.batches.describe(await j.batches.cancel(owner_of(principal), batch_id))


@router.get("/batches", name="batches.list")
async def list_batches(request: Request, after: str | None = None, limit: int = 20,
                       principal: Principal | None = Depends(require_api_key)) -> dict[str, Any]:
    if not 1 <= limit <= 100:
        raise InvalidRequest("'limit' must be between 1 and 100.", param="limit", code="invalid_value")
    j = jobs(request)
    rows, more = await j.batches.list(owner_of(principal), after, limit)
    data = [await j.batches.describe(b) for b in rows]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": more}
