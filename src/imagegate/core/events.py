"""What the flow yields. The JSON response, the SSE stream and the CLI are thin consumers
of these events; a new stage (moderation, signing) is one step in ImageService.run.

Order: `Accepted` once the request passed validation and admission (its ledger row exists),
then any `PartialImage`s, then exactly one of `Completed` or `Failed`. A failure before
`Accepted` is raised instead, so that every consumer can answer it with a plain error."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..errors import ImagegateError
from ..normalize import ImageSpec
from ..protocol import Image as WireImage
from ..protocol import ImagesUsage


@dataclass(frozen=True)
class Accepted:
    spec: ImageSpec


@dataclass(frozen=True)
class PartialImage:
    image_index: int
    partial_index: int
    b64_json: str  # encoded in the output format, at the output size


@dataclass(frozen=True)
class Completed:
    spec: ImageSpec
    images: tuple[bytes, ...]  # encoded files, one per image
    data: tuple[WireImage, ...]  # as delivered: b64_json or a signed url
    usage: ImagesUsage  # the whole request's
    usage_per_image: ImagesUsage  # what each stream `completed` event reports
    seed: int | None = None


@dataclass(frozen=True)
class Failed:
    error: ImagegateError


Event = Accepted | PartialImage | Completed | Failed

if TYPE_CHECKING:
    from .request import ImageRequest, RequestContext


class Flow(Protocol):
    """What consumers run a request through: ImageService (local models) or the Gateway
    in front of it (routed names too)."""

    def run(self, req: ImageRequest, ctx: RequestContext) -> AsyncGenerator[Event, None]: ...
