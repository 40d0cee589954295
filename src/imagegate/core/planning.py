"""Which mode serves a request, from what its model can do (its Capabilities) and nothing
else: text-to-image, inpainting, native editing or image-to-image. How the model takes
that mode — the size it generates at, its inputs laid out — is its backend's
(Backend.plan through the EngineClient). Runs in a worker thread (segmenting and
resizing large inputs are CPU work)."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from ..engine.base import Job
from ..engine.client import EngineClient
from ..errors import InvalidRequest
from ..inputs import InputImage
from ..normalize import ImageSpec
from .request import RequestContext


@dataclass(frozen=True)
class Planned:
    job: Job
    # The edit region at the first input's size when it was inferred (segmenter): the
    # service composites with it; the model never needs it, so it is not in the Job.
    inferred_region: Image.Image | None = None


def plan_job(engine: EngineClient, spec: ImageSpec, inputs: list[InputImage], edit_mask: Image.Image | None,
             ctx: RequestContext) -> Planned:
    """Choose how the model serves the request (`spec.model`, the served name), from what it can do:

    - no input image: text-to-image;
    - a mask: inpainting of the first image;
    - images without a mask: the family's native instruction editing (all references when
      it takes several, else composited into one), or image-to-image on the composite;
    - a mode the model lacks: 400 naming the parameter that asked for it."""
    model = spec.model
    caps = engine.capabilities(model)
    modes = caps.modes
    images = [i.image for i in inputs]
    if not inputs:
        if "txt2img" not in modes:
            raise InvalidRequest(f"Model '{spec.model}' cannot generate from text alone; use /v1/images/edits.",
                                 param="model", code="unsupported_mode")
        return Planned(engine.plan(model, spec, "txt2img", [], None))
    if edit_mask is not None:
        if "inpaint" not in modes:
            raise InvalidRequest(f"Model '{spec.model}' cannot edit with a mask.", param="mask",
                                 code="unsupported_mode")
        if len(inputs) > 1:
            ctx.notes.append(f"mask applies to the first image; {len(inputs) - 1} further image(s) "
                             "not used by inpainting")
        return Planned(engine.plan(model, spec, "inpaint", images[:1], edit_mask))
    if "edit" in modes:
        job = engine.plan(model, spec, "edit", images, None)
        if len(job.references) < len(inputs):
            ctx.composited = len(inputs)
            ctx.notes.append(f"{len(inputs)} images composited into one reference")
        return Planned(job)
    if caps.segmenter and "inpaint" in modes:
        region = engine.segment(model, images[0], spec.prompt)
        if region is not None:
            ctx.notes.append("no mask: the edit region was inferred from the prompt (segmenter)")
            return Planned(engine.plan(model, spec, "inpaint", images[:1], region), inferred_region=region)
        ctx.notes.append("no mask: the segmenter found no region for the prompt; image-to-image instead")
    if "img2img" not in modes:
        raise InvalidRequest(f"Model '{spec.model}' cannot edit images.", param="image", code="unsupported_mode")
    if len(inputs) > 1:
        ctx.composited = len(inputs)
        ctx.notes.append(f"{len(inputs)} images composited into one reference")
    return Planned(engine.plan(model, spec, "img2img", images, None))
