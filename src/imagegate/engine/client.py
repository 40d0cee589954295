"""The one seam between the flow and whatever makes the images: `submit(job)` yields the
job's previews as they are decoded, then its result. Today's implementation is the
in-process scheduler (local.py); a Ray Serve deployment, an upstream HTTP provider or a
job worker can sit behind the same protocol."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from ..normalize import ImageSpec
from .base import Capabilities, Job, RunResult


@dataclass(frozen=True)
class Preview:
    image_index: int
    partial_index: int
    image: Image.Image  # at the generation size


@dataclass(frozen=True)
class Done:
    result: RunResult


EngineEvent = Preview | Done


class EngineClient(Protocol):
    def capabilities(self, model: str) -> Capabilities:
        """What `model` can do (raises Overloaded while it is still being prepared)."""

    def check_capacity(self, model: str) -> None:
        """Raise Overloaded (503 + Retry-After) when `model` cannot take another request now."""

    def plan(self, model: str, spec: ImageSpec, mode: str, images: Sequence[Image.Image],
             mask: Image.Image | None) -> Job:
        """Blocking (resizing is CPU work): the job that serves `spec` in `mode` on `model`,
        at the size it generates at, its inputs laid out the way it takes them (Backend.plan)."""

    def submit(self, model: str, job: Job, priority: str = "interactive",
               on_step: Callable[[int, int], None] | None = None) -> AsyncGenerator[EngineEvent, None]:
        """Run `job`; closing the iterator early cancels it (dropped from the queue, or its
        share of a running batch discarded)."""

    def segment(self, model: str, image: Image.Image, text: str) -> Image.Image | None:
        """Blocking: the region `text` names (models whose capabilities say segmenter)."""
