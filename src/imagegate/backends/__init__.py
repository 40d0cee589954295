"""Backends turn a Job into images. One self-contained file per backend kind."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

from ..normalize import ImageSpec

# (image index, partial index, preview image at the generation size)
PreviewSink = Callable[[int, int, Image.Image], None]


class RunCancelled(Exception):
    """Raised inside a model call when its client went away."""


@dataclass
class Job:
    spec: ImageSpec
    mode: str = "txt2img"  # txt2img | img2img | inpaint | edit (native instruction editing)
    references: list[Image.Image] = field(default_factory=list)  # edit: the reference image(s)
    # The edit region at the first input's size when it was inferred (segmenter), for compositing.
    inferred_region: Image.Image | None = None
    init_image: Image.Image | None = None  # RGB at the generation size (img2img / inpaint)
    edit_mask: Image.Image | None = None  # 'L' at the generation size, 255 = repaint
    on_preview: PreviewSink | None = None
    on_step: Callable[[int, int], None] | None = None  # (step, total), for progress bars
    cancel: threading.Event = field(default_factory=threading.Event)
    seed_used: int | None = None
    pipeline_calls: int = 0


class Backend(Protocol):
    name: str
    device: str

    @property
    def modes(self) -> frozenset[str]:
        """The modes this model can run, once loaded."""

    def load(self) -> None:
        """Load weights; raise with a clear message naming the model on bad files."""

    def batch_key(self, job: Job) -> tuple[object, ...]:
        """Jobs with equal keys may share one model call."""

    def run_batch(self, jobs: list[Job]) -> list[list[Image.Image]]:
        """Blocking; called from the model's worker thread, one batch at a time. Returns
        each job's images, in order."""
