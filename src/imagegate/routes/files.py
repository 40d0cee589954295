"""/v1/files: OpenAI's Files API (upload, list, retrieve, content, delete). Parse, delegate
to jobs.Files, return."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile

from ..accounts import Principal
from ..errors import InvalidRequest
from ..jobs.files import Files, file_object, owner_of
from .deps import require_api_key

router = APIRouter(prefix="/v1", tags=["files"])


def files(request: Request) -> Files:
    f: Files = request.app.state.files
    return f


@router.post("/files", name="files.create")
async def create_file(request: Request, principal: Principal | None = Depends(require_api_key)) -> dict[str, Any]:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest("This endpoint takes multipart/form-data with 'file' and 'purpose'.",
                             code="unsupported_content_type")
    limit = request.app.state.settings.max_body_bytes
    async with request.form(max_files=1, max_fields=8, max_part_size=limit) as form:
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
        if not isinstance(purpose, str):
            raise InvalidRequest("Missing required parameter: 'purpose'.", param="purpose",
                                 code="missing_required_parameter")
        data = await upload.read()
        name = upload.filename or "upload"
    row = await files(request).create(owner_of(principal), purpose, name, data)
    return file_object(row)


@router.get("/files", name="files.list")
async def list_files(request: Request, purpose: str | None = None, after: str | None = None, limit: int = 10000,
                     order: str = "desc", principal: Principal | None = Depends(require_api_key)) -> dict[str, Any]:
    if not 1 <= limit <= 10000:
        raise InvalidRequest("'limit' must be between 1 and 10000.", param="limit", code="invalid_value")
    if order not in ("asc", "desc"):
        raise InvalidRequest("'order' must be 'asc' or 'desc'.", param="order", code="invalid_value")
    rows, more = await files(request).list(owner_of(principal), purpose=purpose, after=after, limit=limit,
                                           order=order)
    data = [file_object(r) for r in rows]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": more}


@router.get("/files/{file_id}", name="files.retrieve")
async def retrieve_file(request: Request, file_id: str,
                        principal: Principal | None = Depends(require_api_key)) -> dict[str, Any]:
    return file_object(await files(request).get(owner_of(principal), file_id))


@router.get("/files/{file_id}/content", name="files.content", response_class=StreamingResponse)
async def file_content(request: Request, file_id: str,
                       principal: Principal | None = Depends(require_api_key)) -> StreamingResponse:
    row, blob = await files(request).open(owner_of(principal), file_id)
    media = "application/jsonl" if row.filename.endswith(".jsonl") else "application/octet-stream"
    return StreamingResponse(blob.chunks, media_type=media, headers=blob.http_headers(),
                             background=BackgroundTask(blob.close))


@router.delete("/files/{file_id}", name="files.delete")
async def delete_file(request: Request, file_id: str,
                      principal: Principal | None = Depends(require_api_key)) -> dict[str, Any]:
    row = await files(request).delete(owner_of(principal), file_id)
    return {"id": row.id, "object": "file", "deleted": True}
