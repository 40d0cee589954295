"""How a diffusers model takes a request it serves in a given mode: the size it generates
at (its family's native bucket, never the client's exact size) and the input images laid
out at that size (resized, letterboxed, or several composited into one canvas). Which
mode serves the request is chosen outside, from the Capabilities alone (core/planning.py).
CPU work, run in a worker thread; no weights are needed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from PIL import Image

from ...engine.base import Job
from ...errors import InvalidRequest
from ...normalize import ImageSpec
from ...postprocess import resize_to
from ...registry import ModelConfig

# Native-edit pipelines (FLUX.2, Kontext, Qwen-Image-Edit) refuse references more extreme
# than this (FLUX.2 checks 8:1); a clear 400 instead of the pipeline's 500.
MAX_REFERENCE_ASPECT = 8.0


def plan(config: ModelConfig, multi_image: bool, spec: ImageSpec, mode: str, images: Sequence[Image.Image],
         mask: Image.Image | None) -> Job:
    """The job for `mode`: `spec` at the model's bucket, the inputs laid out at it.

    - txt2img: no inputs;
    - inpaint: the first image and `mask` resized to the bucket;
    - edit: each reference scaled to the bucket's area (aspect kept) when the family takes
      several or there is one, else all composited into one;
    - img2img: all inputs composited into one canvas at the bucket."""
    gw, gh = generation_bucket(config, spec.width, spec.height)
    if mode == "txt2img" and config.builtin:
        # imagegate-mini was trained on 128x128 scenes only: asked for another shape, its UNet
        # drew duplicated and spurious things on a speckled background (issue #27). It draws at
        # its native square and the backend extends the scene to the asked aspect (extend_scene).
        gw = gh = config.native_size or gw
    spec = replace(spec, gen_width=gw, gen_height=gh)
    if mode == "txt2img":
        return Job(spec=spec, mode=mode)
    if mode == "inpaint":
        if mask is None:
            raise ValueError("inpainting needs a mask")
        init = resize_to(images[0].convert("RGB"), gw, gh)
        return Job(spec=spec, mode=mode, init_image=init, edit_mask=mask.resize((gw, gh), Image.Resampling.BILINEAR))
    if mode == "edit":
        for k, im in enumerate(images):
            w, h = im.size
            if max(w, h) / min(w, h) > MAX_REFERENCE_ASPECT:
                raise InvalidRequest(f"image[{k}] is {w}x{h}; native editing takes references up to "
                                     f"{MAX_REFERENCE_ASPECT:g}:1.", param="image", code="invalid_image")
        if multi_image or len(images) == 1:
            refs = tuple(fit_area(im, gw * gh) for im in images)
        else:
            refs = (layout_references(images, gw, gh),)
        return Job(spec=spec, mode=mode, references=refs)
    if mode == "img2img":
        return Job(spec=spec, mode=mode, init_image=layout_references(images, gw, gh))
    raise ValueError(f"unknown mode {mode!r}")


def generation_bucket(model: ModelConfig, width: int, height: int) -> tuple[int, int]:
    """The model's native bucket nearest the requested aspect: about native_size² pixels,
    sides multiples of the model's size_multiple, aspect clamped to 1:3..3:1."""
    native = model.native_size or 512
    m = model.size_multiple or 16  # an unresolved config: the families' default
    ar = min(3.0, max(1 / 3, width / height))
    return _round_to(native * math.sqrt(ar), m), _round_to(native / math.sqrt(ar), m)


def _round_to(x: float, m: int) -> int:
    return max(m, round(x / m) * m)


def fit_into(img: Image.Image, width: int, height: int) -> Image.Image:
    """Scale to cover the canvas and centre-crop: the model sees the input at its bucket aspect."""
    src = img.convert("RGB")
    scale = max(width / src.width, height / src.height)
    w, h = max(1, math.ceil(src.width * scale)), max(1, math.ceil(src.height * scale))
    src = src.resize((w, h), Image.Resampling.LANCZOS)
    left, top = (w - width) // 2, (h - height) // 2
    return src.crop((left, top, left + width, top + height))


def fit_area(img: Image.Image, pixels: int, multiple: int = 16) -> Image.Image:
    """A reference image scaled to about `pixels` pixels, keeping its aspect, sides
    multiples of `multiple` (what native-editing pipelines expect)."""
    src = img.convert("RGB")
    scale = math.sqrt(pixels / (src.width * src.height))
    w = max(multiple, round(src.width * scale / multiple) * multiple)
    h = max(multiple, round(src.height * scale / multiple) * multiple)
    return src.resize((w, h), Image.Resampling.LANCZOS)


def layout_references(images: Sequence[Image.Image], width: int, height: int) -> Image.Image:
    """Several input images → one canvas for image-to-image: a near-square grid, each image
    scaled to fit its cell (letterboxed on neutral grey)."""
    if len(images) == 1:
        return fit_into(images[0], width, height)
    cols = math.ceil(math.sqrt(len(images) * width / height))
    rows = math.ceil(len(images) / cols)
    canvas = Image.new("RGB", (width, height), (127, 127, 127))
    cw, ch = width // cols, height // rows
    for i, im in enumerate(images):
        src = im.convert("RGB")
        scale = min(cw / src.width, ch / src.height)
        tile = src.resize((max(1, int(src.width * scale)), max(1, int(src.height * scale))), Image.Resampling.LANCZOS)
        x = (i % cols) * cw + (cw - tile.width) // 2
        y = (i // cols) * ch + (ch - tile.height) // 2
        canvas.paste(tile, (x, y))
    return canvas


def extend_scene(img: Image.Image, width: int, height: int, strip: int = 3) -> Image.Image:
    """A picture drawn at a square, widened (or heightened) to the aspect of `width` x `height`
    by continuing the colour at each row's (column's) outer edge: the flat background, and a
    band of ground or sea, go on; nothing in the picture is repeated or stretched. Where a thing
    touches the edge, its rows take the backdrop colour of the nearest row that shows one."""
    src = np.asarray(img.convert("RGB"))
    h, w = src.shape[:2]
    target = width / height
    if abs(target - w / h) < 1e-3:
        return img
    if target < w / h:  # taller: the same on the transposed picture
        out = np.asarray(extend_scene(Image.fromarray(src.transpose(1, 0, 2).copy()), height, width, strip))
        return Image.fromarray(out.transpose(1, 0, 2).copy(), "RGB")
    new_w = max(w, round(h * target))
    left = (new_w - w) // 2
    pads = [np.repeat(_edge_colours(src[:, :strip])[:, None], left, 1), src,
            np.repeat(_edge_colours(src[:, -strip:])[:, None], new_w - w - left, 1)]
    return Image.fromarray(np.concatenate(pads, axis=1), "RGB")


def _edge_colours(strip: np.ndarray, tolerance: float = 40.0) -> np.ndarray:
    """Per row, the median colour of an edge strip; rows whose colour is far from both the top's and
    the bottom's (a thing touching the edge) take the colour of the nearest row that is near one."""
    colours = np.median(strip.astype(np.float32), axis=1)
    refs = np.stack([np.median(colours[:4], axis=0), np.median(colours[-4:], axis=0)])
    ok = np.linalg.norm(colours[:, None] - refs[None], axis=-1).min(1) < tolerance
    if ok.any() and not ok.all():
        good = np.nonzero(ok)[0]
        nearest = good[np.abs(np.arange(len(colours))[:, None] - good[None]).argmin(1)]
        colours = colours[nearest]
    return np.rint(colours).astype(np.uint8)
