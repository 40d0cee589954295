"""/v1/images/*: parse (protocol models), delegate to ImageService, return."""

from __future__ import annotations

import asyncio
import functools
import json
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile

from ..core.request import ImageRequest, Upload
from ..errors import InvalidRequest, quote_name, validation_error
from ..inputs import decode_data_url
from ..jobs.files import Files, owner_of
from ..postprocess import MIME
from ..protocol import (
    CreateImageEditForm,
    CreateImageEditJSONRequest,
    CreateImageRequest,
    CreateImageVariationForm,
    ImageRef,
    ImagesResponse,
)
from ..storage import URL_PREFIX
from .deps import answer, context, open_context, require_api_key

router = APIRouter(prefix="/v1", dependencies=[Depends(open_context), Depends(require_api_key)])
content_router = APIRouter()  # signed links: no API key, the signature is the credential

IMAGE_KEYS = ("image", "image[]", "images", "images[]")
# Parameters of newer OpenAI models that this server does not implement: a clear 400.
UNSUPPORTED = {"complexity", "frame_count", "frame_duration_ms", "markup", "svg"}

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Images, or an SSE stream of image events when stream=true",
          "content": {"text/event-stream": {"schema": {"type": "string"}}}},
    400: {"description": "Invalid request"}, 401: {"description": "Missing or wrong API key"},
    404: {"description": "Unknown model"}, 413: {"description": "Body too large"},
    503: {"description": "Queue full or model loading (Retry-After)"},
}


def _form_schema(model: type[BaseModel], files: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema()
    props = {**files, **schema.get("properties", {})}
    return {"type": "object", "properties": props, "required": list(files)[:1] + schema.get("required", [])}


_FILE = {"type": "string", "format": "binary"}
_EDIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": _form_schema(CreateImageEditForm, {
                "image": {"anyOf": [_FILE, {"type": "array", "items": _FILE, "maxItems": 16}]}, "mask": _FILE})},
            "application/json": {"schema": {"type": "object", "required": ["images", "prompt"], "properties": {
                "images": {"type": "array", "items": {"type": "object", "properties": {
                    "image_url": {"type": "string"}, "file_id": {"type": "string"}}}},
                "prompt": {"type": "string"},
                "mask": {"type": "object", "properties": {"image_url": {"type": "string"},
                                                          "file_id": {"type": "string"}}}}}},
        },
    }
}
_GENERATION_BODY = {
    "requestBody": {"required": True, "content": {"application/json": {
        "schema": CreateImageRequest.model_json_schema()}}}
}
_VARIATION_BODY = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": _form_schema(CreateImageVariationForm, {"image": _FILE})}}}
}


# Bodies above this are parsed in a worker thread, not on the event loop (parsing 100 MB of
# JSON takes about a second).
_INLINE_JSON_BYTES = 1 << 20


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except RecursionError:
        raise InvalidRequest("The JSON body is nested too deeply.", code="invalid_json") from None
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("We could not parse the JSON body of your request: it is not valid JSON.",
                             code="invalid_json") from None


async def _json_body(request: Request) -> dict[str, Any]:
    """The JSON object a request carries, or a 400 that says what is wrong with it."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype and ctype != "application/json" and not ctype.endswith("+json"):
        raise InvalidRequest(f"Unsupported Content-Type '{ctype}'; send a JSON object with "
                             "'Content-Type: application/json'.", code="unsupported_content_type")
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest("The request body is empty; send a JSON object with the request's parameters.",
                             code="invalid_json")
    data = _parse_json(raw) if len(raw) <= _INLINE_JSON_BYTES else await asyncio.to_thread(_parse_json, raw)
    if not isinstance(data, dict):
        raise InvalidRequest(f"The JSON body must be an object, not {type(data).__name__}.", code="invalid_json")
    _check_keys(data)
    return data


def _check_keys(data: dict[str, Any]) -> None:
    """Object keys with an unpaired surrogate cannot even be named by the validator."""
    stack: list[Any] = [data]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            if isinstance(key, str):
                try:
                    key.encode("utf-8")
                except UnicodeEncodeError:
                    name = quote_name(key)
                    raise InvalidRequest(f"Unknown parameter: '{name}'.", param=name,
                                         code="unknown_parameter") from None
            stack.append(value)


@functools.cache  # the schema is built once per wire model, not on every request
def _integer_fields(model: type[BaseModel]) -> frozenset[str]:
    props = model.model_json_schema().get("properties", {})
    return frozenset(k for k, v in props.items()
                     if v.get("type") == "integer" or any(a.get("type") == "integer" for a in v.get("anyOf", [])))


def _json_integers(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """JSON has one number type: 2.0 is an integer to JSON Schema (and to OpenAI's schema),
    so whole floats pass for integer fields; 2.5, "2" and true do not."""
    fields = _integer_fields(model)
    return {k: int(v) if k in fields and isinstance(v, float) and v.is_integer() else v for k, v in data.items()}


def _validate(model: type[BaseModel], data: dict[str, Any], *, strict: bool = False) -> Any:
    """JSON bodies are validated strictly (OpenAI's schema types: `n: "3"` or `n: true` is a
    400); multipart forms carry every value as text, so they are parsed leniently."""
    try:
        return model.model_validate(_json_integers(model, data) if strict else data, strict=strict)
    except ValidationError as exc:
        errors = list(exc.errors())
        first = errors[0]
        if first.get("type") == "extra_forbidden" and first["loc"] and first["loc"][0] in UNSUPPORTED:
            p = str(first["loc"][0])
            raise InvalidRequest(f"'{p}' is not supported by this server.", param=p,
                                 code="unsupported_parameter") from exc
        raise validation_error(errors) from exc


def _routed_extra(request: Request, model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """Parameters we do not know, taken out of `data` for a routed name: they pass through
    to upstreams that take them (core/adapt.py). For anything else they stay, a 400."""
    gateway = getattr(request.app.state, "gateway", None)
    name = data.get("model")
    if gateway is None or not (name is None or isinstance(name, str)) or gateway.find(name) is None:
        return {}
    unknown = [k for k in data if k not in model.model_fields and k not in UNSUPPORTED and k not in IMAGE_KEYS]
    return {k: data.pop(k) for k in unknown}


async def _read_form(request: Request) -> tuple[dict[str, Any], list[Upload], Upload | None]:
    """Multipart → (fields, images, mask). Files are read into memory and the form's
    spooled temporaries are closed before we return, so nothing stays on disk."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise InvalidRequest("This endpoint takes multipart/form-data (or JSON for edits).", param=None,
                             code="unsupported_content_type")
    fields: dict[str, Any] = {}
    files: list[tuple[str, UploadFile]] = []
    mask: Upload | None = None
    # Parts as large as the body may be: a too-long field is then refused naming it (prompt
    # over its limit, unknown parameter) instead of with the parser's anonymous 1 MB error.
    limit = request.app.state.settings.max_body_bytes
    async with request.form(max_files=64, max_fields=64, max_part_size=limit) as form:
        for key, value in form.multi_items():
            if key in IMAGE_KEYS or key == "mask":
                if not isinstance(value, UploadFile):
                    raise InvalidRequest(f"'{key}' must be a file upload.", param=key.rstrip("[]"))
                if key == "mask":
                    if mask is not None:
                        raise InvalidRequest("Only one mask may be sent.", param="mask")
                    mask = Upload("mask", await value.read())
                else:
                    files.append((key, value))
            elif isinstance(value, UploadFile):
                raise InvalidRequest(f"'{key}' must be a form field, not a file.", param=key)
            elif key in fields:
                raise InvalidRequest(f"'{key}' was sent more than once.", param=key)
            else:
                fields[key] = value
        many = len(files) > 1
        uploads = [Upload(f"image[{i}]" if many else "image", await f.read()) for i, (_, f) in enumerate(files)]
    return fields, uploads, mask


async def _json_uploads(request: Request, body: CreateImageEditJSONRequest) -> tuple[list[Upload], Upload | None]:
    """JSON edit bodies reference images by data URL or by the id of an uploaded file (the
    caller's own: another key's file is a 404)."""
    uploads = [Upload(f"images[{i}]", await _ref_bytes(request, ref, f"images[{i}]"))
               for i, ref in enumerate(body.images)]
    mask = Upload("mask", await _ref_bytes(request, body.mask, "mask")) if body.mask else None
    return uploads, mask


async def _ref_bytes(request: Request, ref: ImageRef, param: str) -> bytes:
    if ref.file_id is not None and ref.image_url is not None:
        raise InvalidRequest(f"{param}: give exactly one of image_url or file_id.", param=param)
    if ref.file_id is not None:
        files: Files = request.app.state.files
        return await files.read_input(owner_of(request.state.principal), ref.file_id, param=f"{param}.file_id")
    if ref.image_url is None:
        raise InvalidRequest(f"{param}: image_url is required.", param=param)
    return decode_data_url(ref.image_url, param=f"{param}.image_url")


@router.post("/images/generations", name="images.generations", response_model=ImagesResponse,
             response_model_exclude_none=True,
             responses=_RESPONSES, openapi_extra=_GENERATION_BODY)
async def create_image(request: Request) -> Any:
    ctx = context(request)
    data = await _json_body(request)
    extra = _routed_extra(request, CreateImageRequest, data)
    body = _validate(CreateImageRequest, data, strict=True)
    return await answer(request, replace(ImageRequest.generation(body), extra=extra), ctx)


@router.post("/images/edits", name="images.edits", response_model=ImagesResponse, response_model_exclude_none=True,
             responses=_RESPONSES, openapi_extra=_EDIT_BODY)
async def create_image_edit(request: Request) -> Any:
    ctx = context(request)
    if request.headers.get("content-type", "").startswith("application/json"):
        data = await _json_body(request)
        extra = _routed_extra(request, CreateImageEditJSONRequest, data)
        body: CreateImageEditJSONRequest | CreateImageEditForm = _validate(
            CreateImageEditJSONRequest, data, strict=True)
        assert isinstance(body, CreateImageEditJSONRequest)
        uploads, mask = await _json_uploads(request, body)
    else:
        fields, uploads, mask = await _read_form(request)
        if not uploads:
            raise InvalidRequest("Missing required parameter: 'image'.", param="image",
                                 code="missing_required_parameter")
        extra = _routed_extra(request, CreateImageEditForm, fields)
        body = _validate(CreateImageEditForm, fields)
    return await answer(request, replace(ImageRequest.edit(body, uploads, mask), extra=extra), ctx)


@router.post("/images/variations", name="images.variations", response_model=ImagesResponse,
             response_model_exclude_none=True,
             responses=_RESPONSES, openapi_extra=_VARIATION_BODY)
async def create_image_variation(request: Request) -> Any:
    ctx = context(request)
    fields, uploads, mask = await _read_form(request)
    if mask is not None:
        raise InvalidRequest("Variations take no mask.", param="mask")
    if len(uploads) != 1:
        raise InvalidRequest("Variations take exactly one image.", param="image",
                             code="missing_required_parameter" if not uploads else "too_many_images")
    body = _validate(CreateImageVariationForm, fields)
    return await answer(request, ImageRequest.variation(body, uploads[0]), ctx)


@content_router.get(URL_PREFIX + "/{name}", response_class=StreamingResponse)
async def image_content(name: str, request: Request, sig: str | None = None) -> StreamingResponse:
    """A stored image behind a signed, expiring link (403 tampered, 410 expired), streamed
    from the store. No Range requests: images are read whole."""
    blob = await asyncio.to_thread(request.app.state.storage.open, name, sig)
    ext = name.rsplit(".", 1)[-1]
    return StreamingResponse(blob.chunks, media_type=MIME.get(ext, "application/octet-stream"),
                             headers=blob.http_headers(), background=BackgroundTask(blob.close))
