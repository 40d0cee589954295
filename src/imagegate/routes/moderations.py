"""POST /v1/moderations in OpenAI's shape, backed by the same stages as image requests:
the word lists for text, the NSFW classifier for images (data URLs only, as for edits).
`flagged` is what moderation=auto would block."""

from __future__ import annotations

import asyncio
import uuid

from fastapi import APIRouter, Depends, Request
from PIL import Image

from ..errors import InvalidRequest
from ..inputs import decode_data_url, decode_image
from ..protocol import ModerationImageInput, ModerationRequest, ModerationResponse, ModerationResult
from ..safety import CATEGORIES, IMAGE_CATEGORIES, Assessment, Moderation, thumbnail
from ..settings import Settings
from .deps import require_api_key

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])
MAX_INPUTS = 32


@router.post("/moderations", response_model=ModerationResponse)
async def create_moderation(body: ModerationRequest, request: Request) -> ModerationResponse:
    moderation: Moderation = request.app.state.container.moderation
    settings = request.app.state.settings
    items = [body.input] if isinstance(body.input, str) else list(body.input)
    if not items or len(items) > MAX_INPUTS:
        raise InvalidRequest(f"input must have 1 to {MAX_INPUTS} items.", param="input")
    results: list[ModerationResult] = []
    if all(isinstance(i, str) for i in items):  # one result per string, as OpenAI
        for text in items:
            assert isinstance(text, str)
            results.append(_result(await moderation.assess([text], []), texts=True, images=False))
    else:  # a multimodal list: one result for all its parts
        texts = [i.text for i in items if not isinstance(i, (str, ModerationImageInput))]
        loop = asyncio.get_running_loop()
        images = []
        for n, item in enumerate(items):
            if isinstance(item, ModerationImageInput):
                param = f"input[{n}].image_url.url"
                data = decode_data_url(item.image_url.url, param=param)
                images.append(await loop.run_in_executor(None, _thumbnail, data, param, settings))
        results.append(_result(await moderation.assess(texts, images), texts=bool(texts), images=bool(images)))
    return ModerationResponse(id=f"modr-{uuid.uuid4().hex}", model=body.model or "omni-moderation-latest",
                              results=results)


def _thumbnail(data: bytes, param: str, settings: Settings) -> Image.Image:
    decoded = decode_image(data, param=param, max_pixels=settings.max_input_pixels, max_bytes=settings.max_image_bytes)
    return thumbnail(decoded.image)


def _result(a: Assessment, *, texts: bool, images: bool) -> ModerationResult:
    """Every category is assessed on text; images only on what the classifier scores."""
    return ModerationResult(
        flagged=bool(a.flagged),
        categories={c: c in a.flagged for c in CATEGORIES},
        category_scores={c: round(a.scores.get(c, 0.0), 6) for c in CATEGORIES},
        category_applied_input_types={c: ["text"] * texts + ["image"] * (images and c in IMAGE_CATEGORIES)
                                      for c in CATEGORIES})
