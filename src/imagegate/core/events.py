"""What the flow yields. The JSON response, the SSE stream and the CLI are thin consumers
of these events; a new stage (moderation, signing) is one step in ImageService.run.

Order: `Accepted` once the request passed validation and admission (its ledger row exists),
then any `PartialImage`s, then exactly one of `Completed` or `Failed`. A failure before
`Accepted` is raised instead, so that every consumer can answer it with a plain error."""

from __future__ import annotations

from dataclasses import dataclass

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
