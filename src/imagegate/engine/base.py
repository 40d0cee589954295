"""The engine's data and the backend seam.

`Job` is what a backend needs to make a request's images: plain, picklable data (the spec,
the mode and images at the generation size), so it can go to another process (a Ray
replica, a job worker). What only makes sense in this process — the cancel flag, the
preview and progress callbacks — travels beside it in `JobHooks`; what comes back is a
`RunResult`.

`Backend` is every member the engine and the service use: a backend kind (diffusers, an
upstream provider) implements exactly this and nothing is read through getattr."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from PIL import Image

from ..normalize import ImageSpec

if TYPE_CHECKING:
    from ..registry import ModelConfig

# (image index, partial index, preview image at the generation size)
PreviewSink = Callable[[int, int, Image.Image], None]


class RunCancelled(Exception):
    """Raised inside a model call when its client went away."""


@dataclass
class Job:
    spec: ImageSpec
    mode: str = "txt2img"  # txt2img | img2img | inpaint | edit (native instruction editing)
    references: list[Image.Image] = field(default_factory=list)  # edit: the reference image(s)
    init_image: Image.Image | None = None  # RGB at the generation size (img2img / inpaint)
    edit_mask: Image.Image | None = None  # 'L' at the generation size, 255 = repaint
    # The edit region at the first input's size when it was inferred (segmenter), for compositing.
    inferred_region: Image.Image | None = None
    # Runtime hooks and outputs, set by the engine in this process: never pickled.
    on_preview: PreviewSink | None = field(default=None, repr=False, compare=False)
    on_step: Callable[[int, int], None] | None = field(default=None, repr=False, compare=False)  # (step, total)
    cancel: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)
    seed_used: int | None = field(default=None, compare=False)
    pipeline_calls: int = field(default=0, compare=False)

    _RUNTIME = ("on_preview", "on_step", "cancel", "seed_used", "pipeline_calls")

    def __getstate__(self) -> dict[str, Any]:
        """The inputs only: a job sent to another process carries no callbacks or flags."""
        return {k: v for k, v in self.__dict__.items() if k not in self._RUNTIME}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.on_preview = self.on_step = None
        self.cancel = threading.Event()
        self.seed_used, self.pipeline_calls = None, 0


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

    def batch_key(self, job: Job) -> tuple[object, ...]:
        """Jobs with equal keys may share one model call."""

    def run_batch(self, jobs: list[Job]) -> list[list[Image.Image]]:
        """Blocking; called from the model's worker thread, one batch at a time. Returns
        each job's images, in order; raises RunCancelled when every job was cancelled."""
