"""How a model serves a request, from what it can do (its Capabilities): text-to-image,
inpainting, native editing or image-to-image, with its inputs resized to the generation
size. Runs in a worker thread (resizing large inputs is CPU work)."""

from __future__ import annotations

from collections.abc import Callable

from PIL import Image

from .. import postprocess
from ..engine.base import Capabilities, Job
from ..errors import InvalidRequest
from ..inputs import InputImage
from ..normalize import ImageSpec
from .request import RequestContext

# Native-edit pipelines (FLUX.2, Kontext, Qwen-Image-Edit) refuse references more extreme
# than this (FLUX.2 checks 8:1); a clear 400 instead of the pipeline's 500.
MAX_REFERENCE_ASPECT = 8.0


def build_job(spec: ImageSpec, inputs: list[InputImage], edit_mask: Image.Image | None, caps: Capabilities,
              ctx: RequestContext, segment: Callable[[Image.Image, str], Image.Image | None] | None = None) -> Job:
    """Choose how the model serves the request, from what it can do:

    - no input image: text-to-image;
    - a mask: inpainting of the first image;
    - images without a mask: the family's native instruction editing (all references when
      it takes several, else composited into one), or image-to-image on the composite;
    - a mode the model lacks: 400 naming the parameter that asked for it."""
    gw, gh = spec.gen_width, spec.gen_height
    modes, multi_image = caps.modes, caps.multi_image
    if not inputs:
        if "txt2img" not in modes:
            raise InvalidRequest(f"Model '{spec.model}' cannot generate from text alone; use /v1/images/edits.",
                                 param="model", code="unsupported_mode")
        return Job(spec=spec, mode="txt2img")
    if edit_mask is not None:
        if "inpaint" not in modes:
            raise InvalidRequest(f"Model '{spec.model}' cannot edit with a mask.", param="mask",
                                 code="unsupported_mode")
        if len(inputs) > 1:
            ctx.notes.append(f"mask applies to the first image; {len(inputs) - 1} further image(s) "
                             "not used by inpainting")
        init = postprocess.resize_to(inputs[0].image.convert("RGB"), gw, gh)
        m = edit_mask.resize((gw, gh), Image.Resampling.BILINEAR)
        return Job(spec=spec, mode="inpaint", init_image=init, edit_mask=m)
    if "edit" in modes:
        for k, i in enumerate(inputs):
            w, h = i.size
            if max(w, h) / min(w, h) > MAX_REFERENCE_ASPECT:
                raise InvalidRequest(f"image[{k}] is {w}x{h}; native editing takes references up to "
                                     f"{MAX_REFERENCE_ASPECT:g}:1.", param="image", code="invalid_image")
        if multi_image or len(inputs) == 1:
            refs = [postprocess.fit_area(i.image, gw * gh) for i in inputs]
        else:
            ctx.composited = len(inputs)
            ctx.notes.append(f"{len(inputs)} images composited into one reference")
            refs = [postprocess.layout_references([i.image for i in inputs], gw, gh)]
        return Job(spec=spec, mode="edit", references=refs)
    if segment is not None and caps.segmenter and "inpaint" in modes:
        region = segment(inputs[0].image, spec.prompt)
        if region is not None:
            ctx.notes.append("no mask: the edit region was inferred from the prompt (segmenter)")
            job = build_job(spec, inputs[:1], region, caps, ctx)
            job.inferred_region = region
            return job
        ctx.notes.append("no mask: the segmenter found no region for the prompt; image-to-image instead")
    if "img2img" not in modes:
        raise InvalidRequest(f"Model '{spec.model}' cannot edit images.", param="image", code="unsupported_mode")
    if len(inputs) > 1:
        ctx.composited = len(inputs)
        ctx.notes.append(f"{len(inputs)} images composited into one reference")
    init = postprocess.layout_references([i.image for i in inputs], gw, gh)
    return Job(spec=spec, mode="img2img", init_image=init)
