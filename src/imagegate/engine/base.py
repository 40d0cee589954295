"""The engine's data and the backend seam.

`Job` is what a backend needs to make a request's images: plain, picklable values (the
spec, the mode, and the input images at the generation size, which pickle as their mode,
size and pixel bytes), so it can go to another process (a Ray replica, a job worker) and
compare equal there. What only makes sense in this process — the cancel flag, the preview
and progress callbacks, the seed a run drew — lives in a `JobRuntime` that the engine
creates per submission and hands to the backend beside the job; what comes back is a
`RunResult`.

`Backend` is every member the engine and the service use: a backend kind (diffusers, an
upstream provider) implements exactly this and nothing is read through getattr."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from PIL import Image

from ..normalize import ImageSpec

if TYPE_CHECKING:
    from ..registry import ModelConfig

# (image index, partial index, preview image at the generation size)
PreviewSink = Callable[[int, int, Image.Image], None]


class RunCancelled(Exception):
    """Raised inside a model call when its client went away."""


@dataclass(frozen=True)
class Job:
    """Built by the serving backend's plan(), so its generation size and images are already
    what that model takes; a backend in another process gets exactly these values."""

    spec: ImageSpec  # gen_width x gen_height: the size the model generates at
    mode: str = "txt2img"  # txt2img | img2img | inpaint | edit (native instruction editing)
    references: tuple[Image.Image, ...] = ()  # edit: the reference image(s)
    init_image: Image.Image | None = None  # RGB at the generation size (img2img / inpaint)
    edit_mask: Image.Image | None = None  # 'L' at the generation size, 255 = repaint


@dataclass
class JobRuntime:
    """One submitted job's life in this process, kept out of the Job so the Job stays data:
    the engine sets the flag and callbacks, the backend reports the seed it drew. Holds a
    lock (the Event), so it cannot be pickled by accident."""

    cancel: threading.Event = field(default_factory=threading.Event)
    on_preview: PreviewSink | None = None
    on_step: Callable[[int, int], None] | None = None  # (step, total)
    seed_used: int | None = None


@dataclass(frozen=True)
class Capabilities:
    """What a model can do, known once it is prepared (before its weights are loaded)."""

    modes: frozenset[str]  # txt2img | img2img | inpaint | edit
    multi_image: bool = False  # the edit mode takes several references natively
    negative_prompt: bool = True
    segmenter: bool = False  # an edit without a mask can infer its region (segment())


@dataclass
class RunResult:
    images: list[Image.Image]
    queue_s: float
    inference_s: float
    seed: int | None = None
    batch_id: int = 0
    batch_jobs: int = 1
    batch_images: int = 1
    replica: str | None = None  # the Ray replica that ran it (ray_serve.py); None in one process


class Backend(Protocol):
    name: str
    device: str
    config: ModelConfig

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def loaded(self) -> bool: ...

    def validate(self) -> None:
        """Check the configuration and files without loading anything (`imagegate serve`
        runs it before binding); raise ValueError naming the model."""

    def prepare(self) -> None:
        """Validate, and learn the capabilities, without loading the model's weights."""

    def load(self) -> None: ...

    def unload(self) -> None: ...

    def estimated_bytes(self) -> int:
        """Weights' size before loading, for the memory budget."""

    def memory_bytes(self) -> int:
        """Weights' size once loaded."""

    def segment(self, image: Image.Image, text: str) -> Image.Image | None:
        """The region `text` names, as an 'L' mask at the image's size (capabilities.segmenter)."""

    def plan(self, spec: ImageSpec, mode: str, images: Sequence[Image.Image], mask: Image.Image | None) -> Job:
        """The job that serves `spec` in `mode` (one of capabilities.modes, chosen by the
        caller): the size this model generates at and the inputs laid out for it (`mask`:
        'L' at the first image's size, inpaint only). Blocking CPU work, no weights needed;
        raises InvalidRequest for inputs this model cannot take."""

    def batch_key(self, job: Job) -> tuple[object, ...]:
        """Jobs with equal keys may share one model call."""

    def run_batch(self, jobs: list[Job], runtimes: list[JobRuntime]) -> list[list[Image.Image]]:
        """Blocking; called from the model's worker thread, one batch at a time, with each
        job's runtime beside it. Returns each job's images, in order; raises RunCancelled
        when every job was cancelled."""
