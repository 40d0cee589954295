"""/v1/queue/*: fal's queue pattern with OpenAI's bodies. Submit answers 202 with the
request's id and its status/response/cancel URLs; the work runs in the server's job workers
(jobs/runner.py) and its result is kept for IMAGEGATE_RESULT_TTL_S."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ..accounts import Principal
from ..core.request import hash_key
from ..db.tables import JobRow
from ..errors import InvalidRequest
from ..jobs import Jobs, owner_of
from ..jobs.queue import order_key
from ..jobs.runner import principal_dict
from ..jobs.webhooks import check_url
from ..protocol import CreateImageEditForm, CreateImageEditJSONRequest, CreateImageRequest
from .deps import accounts, bearer, require_api_key
from .images import _json_body, _read_form, _validate

router = APIRouter(prefix="/v1/queue", tags=["queue"])


def jobs(request: Request) -> Jobs:
    j: Jobs = request.app.state.jobs
    return j


def _urls(request: Request, job_id: str) -> dict[str, str]:
    base = f"{str(request.base_url).rstrip('/')}/v1/queue/requests/{job_id}"
    return {"status_url": base, "response_url": base + "/response", "cancel_url": base + "/cancel"}


async def _submit(request: Request, principal: Principal | None, job_id: str, endpoint: str, body: dict[str, Any],
                  webhook_url: str | None, n: int, uploads: dict[str, bytes] | None = None) -> JSONResponse:
    j = jobs(request)
    if webhook_url is not None:
        await asyncio.to_thread(check_url, webhook_url, j.allow_hosts, "webhook_url")
    if principal is not None and principal.limited:  # the key's rate limits apply when work is accepted
        await accounts(request).limits.take(principal, n)
    if uploads:
        for name, data in uploads.items():
            await asyncio.to_thread(j.files.put_blob, f"upload-{job_id}-{name}", data)
    now = time.time()
    await j.queue.add([JobRow(
        id=job_id, kind="queue", owner=owner_of(principal), principal=principal_dict(principal, hash_key(bearer(
            request))), endpoint=endpoint, body=body, base_url=str(request.base_url), order_key=order_key(0, now),
        status="queued", attempts=0, cancel_requested=False, request_id=job_id, webhook_url=webhook_url,
        created_at=now)])
    j.notify()
    return JSONResponse({"id": job_id, "object": "image.request", "status": "queued", **_urls(request, job_id)},
                        status_code=202)


@router.post("/images/generations", name="queue.images.generations", status_code=202)
async def queue_generation(request: Request, webhook_url: str | None = None,
                           principal: Principal | None = Depends(require_api_key)) -> JSONResponse:
    data = await _json_body(request)
    body: CreateImageRequest = _validate(CreateImageRequest, data, strict=True)
    if body.stream:
        raise InvalidRequest("stream is not available for queued requests.", param="stream")
    return await _submit(request, principal, f"req_{uuid.uuid4().hex}", "images.generations", data, webhook_url,
                         body.n or 1)


@router.post("/images/edits", name="queue.images.edits", status_code=202)
async def queue_edit(request: Request, webhook_url: str | None = None,
                     principal: Principal | None = Depends(require_api_key)) -> JSONResponse:
    owner = owner_of(principal)
    job_id = f"req_{uuid.uuid4().hex}"
    if request.headers.get("content-type", "").startswith("application/json"):
        data = await _json_body(request)
        body = _validate(CreateImageEditJSONRequest, data, strict=True)
        assert isinstance(body, CreateImageEditJSONRequest)
        refs = [(f"images[{i}]", r) for i, r in enumerate(body.images)]
        refs += [("mask", body.mask)] if body.mask else []
        for param, ref in refs:
            if (ref.file_id is None) == (ref.image_url is None):
                raise InvalidRequest(f"{param}: give exactly one of image_url or file_id.", param=param)
            if ref.file_id is not None:
                await jobs(request).files.read_input(owner, ref.file_id, param=f"{param}.file_id")
        uploads: dict[str, bytes] = {}
        stream, n = body.stream, body.n
    else:
        fields, files, mask = await _read_form(request)
        if not files:
            raise InvalidRequest("Missing required parameter: 'image'.", param="image",
                                 code="missing_required_parameter")
        form: CreateImageEditForm = _validate(CreateImageEditForm, fields)
        uploads = {str(i): u.data for i, u in enumerate(files)}
        data = {**fields, "images": [{"blob": f"upload-{job_id}-{i}"} for i in range(len(files))]}
        if mask is not None:
            uploads["mask"] = mask.data
            data["mask"] = {"blob": f"upload-{job_id}-mask"}
        stream, n = form.stream, form.n
    if stream:
        raise InvalidRequest("stream is not available for queued requests.", param="stream")
    return await _submit(request, principal, job_id, "images.edits", data, webhook_url, n or 1, uploads)


def _status(request: Request, job: JobRow, position: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": job.id, "object": "image.request", "status": job.status,
                           "created_at": int(job.created_at),
                           "started_at": int(job.started_at) if job.started_at else None,
                           "completed_at": int(job.finished_at) if job.finished_at else None,
                           "attempts": job.attempts, **_urls(request, job.id)}
    if position is not None:
        out["queue_position"] = position
    if job.status in ("failed", "cancelled") and job.result:
        out["error"] = job.result.get("error")
    return out


@router.get("/requests/{request_id}", name="queue.status")
async def queue_status(request: Request, request_id: str,
                       principal: Principal | None = Depends(require_api_key)) -> dict[str, Any]:
    job = await jobs(request).queue.get(owner_of(principal), request_id)
    position = await jobs(request).queue.position(job) if job.status == "queued" else None
    return _status(request, job, position)


@router.get("/requests/{request_id}/response", name="queue.response")
async def queue_response(request: Request, request_id: str,
                         principal: Principal | None = Depends(require_api_key)) -> JSONResponse:
    job = await jobs(request).queue.get(owner_of(principal), request_id)
    if job.status in ("queued", "in_progress"):
        raise InvalidRequest(f"Request {job.id} is {job.status}; its response is not ready.",
                             code="request_not_ready")
    body = await asyncio.to_thread(jobs(request).files.load_result, job.result)
    return JSONResponse(body, status_code=job.http_status or 500)


@router.post("/requests/{request_id}/cancel", name="queue.cancel")
async def queue_cancel(request: Request, request_id: str,
                       principal: Principal | None = Depends(require_api_key)) -> dict[str, Any]:
    job = await jobs(request).queue.cancel(owner_of(principal), request_id)
    return _status(request, job, None)
