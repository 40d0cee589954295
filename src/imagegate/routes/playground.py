"""The playground: a page and its static files, shipped inside the package (web/), served
by the same process with no build step and nothing fetched from elsewhere; and the one
endpoint of its own, which keeps an image of the session's history in the server's store
(behind a signed link that expires like every other stored image)."""

from __future__ import annotations

import asyncio
import io
import time
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image

from ..errors import InvalidRequest, NotFound, PayloadTooLarge
from ..inputs import probe_size
from .deps import require_api_key

router = APIRouter(include_in_schema=False)
TYPES = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8",
         "svg": "image/svg+xml", "png": "image/png", "txt": "text/plain; charset=utf-8"}
# What a stored history image may be, by PIL's name for its format.
FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "AVIF": "avif", "GIF": "gif"}
# A page must never be framed by another site (clickjacking) nor load anything from elsewhere.
HEADERS = {"cache-control": "no-cache", "x-content-type-options": "nosniff", "x-frame-options": "DENY",
           "content-security-policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                                      "script-src 'self'; connect-src 'self'; frame-ancestors 'none'"}


def _files() -> dict[str, bytes]:
    """Every file of web/ by name, read once (a few dozen kB)."""
    root = resources.files("imagegate") / "web"
    return {f.name: f.read_bytes() for f in root.iterdir() if f.is_file()}


FILES = _files()


def _page() -> Response:
    return Response(FILES["index.html"], media_type=TYPES["html"], headers=HEADERS)


@router.get("/")
async def root() -> Response:
    return _page()


@router.get("/playground")
async def playground() -> Response:
    return _page()


@router.get("/playground/static/{name}")
async def static(name: str) -> Response:
    body = FILES.get(name)
    if body is None:
        raise NotFound(f"No playground file '{name}'.")
    return Response(body, media_type=TYPES.get(name.rsplit(".", 1)[-1], "application/octet-stream"), headers=HEADERS)


@router.post("/playground/api/history", dependencies=[Depends(require_api_key)])
async def keep(request: Request) -> JSONResponse:
    """Store one image of the session (the raw image as the body) and return its signed,
    expiring URL: the page's history lives in the server's store with the server's expiry."""
    settings = request.app.state.settings
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > settings.max_image_bytes:
            raise PayloadTooLarge(f"An image may be at most {settings.max_image_bytes} bytes.")
    data = bytes(body)
    if not data:
        raise InvalidRequest("The body must be an image.", param="body")

    def save() -> dict[str, Any]:
        probe_size(data, param="body", max_pixels=settings.max_input_pixels, max_bytes=settings.max_image_bytes)
        with Image.open(io.BytesIO(data)) as img:
            ext = FORMATS.get(img.format or "")
        if ext is None:
            raise InvalidRequest("The image must be PNG, JPEG, WebP, AVIF or GIF.", param="body")
        storage = request.app.state.storage
        name = storage.save(data, ext)
        base = settings.public_base_url or str(request.base_url)
        return {"url": storage.url(base, name), "expires_at": int(time.time()) + settings.url_ttl_seconds}

    return JSONResponse(await asyncio.to_thread(save))
