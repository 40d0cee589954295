"""Decoding and validating uploaded images and masks. Runs in worker threads.

Only PNG, JPEG, WebP and non-animated GIF are accepted. Dimensions are read from the
header and checked against Settings.max_input_pixels *before* any pixel is decoded,
so a decompression bomb costs nothing."""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidRequest

ACCEPTED_FORMATS = {"PNG", "JPEG", "WEBP", "GIF", "MPO"}  # MPO: multi-picture JPEGs from cameras


@dataclass
class InputImage:
    image: Image.Image  # RGB or RGBA, EXIF orientation applied
    format: str

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def _open(data: bytes, *, param: str, max_pixels: int, max_bytes: int) -> Image.Image:
    """Open (header only, nothing decoded) and check format, pixel count and animation."""
    if len(data) > max_bytes:
        raise InvalidRequest(f"{param} is {len(data)} bytes; the limit is {max_bytes}.", param=param,
                             code="image_too_large")
    if not data:
        raise InvalidRequest(f"{param} is empty.", param=param, code="invalid_image")
    too_large = InvalidRequest(f"{param} has more than {max_pixels} pixels, the limit for one input image.",
                               param=param, code="image_too_large")
    try:
        # Pillow's own bomb guard raises in open() above twice its MAX_IMAGE_PIXELS; ours is
        # max_pixels, reported the same way whichever fires first. (No warnings filter here:
        # catch_warnings is process-global and this runs in several threads at once.)
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise too_large from None
    except Exception as exc:  # noqa: BLE001 - any failure to parse an uploaded file is the file's fault
        raise _undecodable(param, exc) from None
    fmt = img.format or ""
    if fmt not in ACCEPTED_FORMATS:
        raise InvalidRequest(f"{param} is a {fmt} file; upload png, jpeg, webp or a non-animated gif.",
                             param=param, code="invalid_image_format")
    w, h = img.size
    if w * h > max_pixels:
        raise InvalidRequest(f"{param} is {w}x{h} = {w * h} pixels; the limit is {max_pixels}.", param=param,
                             code="image_too_large")
    if getattr(img, "is_animated", False) and fmt != "MPO":
        raise InvalidRequest(f"{param} is animated; upload a still image.", param=param, code="invalid_image")
    return img


def _undecodable(param: str, exc: BaseException) -> InvalidRequest:
    if isinstance(exc, UnidentifiedImageError):
        return InvalidRequest(
            f"{param} is not an image file we can read; upload png, jpeg, webp or a non-animated gif.",
            param=param, code="invalid_image")
    # Pillow's messages can carry object reprs ("<_io.BytesIO object at 0x...>"): keep only plain text.
    detail = _REPR.sub("", str(exc)).strip(" :") or type(exc).__name__
    return InvalidRequest(f"{param} is not a valid image ({detail[:200]}).", param=param, code="invalid_image")


_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


def probe_size(data: bytes, *, param: str, max_pixels: int, max_bytes: int) -> tuple[int, int]:
    """An upload's width and height from its header, after the checks decode_image makes
    before decoding: what admission control counts before any pixel is held in memory."""
    with _open(data, param=param, max_pixels=max_pixels, max_bytes=max_bytes) as img:
        w, h = img.size
    return w, h


def decode_image(data: bytes, *, param: str, max_pixels: int, max_bytes: int) -> InputImage:
    img = _open(data, param=param, max_pixels=max_pixels, max_bytes=max_bytes)
    fmt = img.format or ""
    try:
        img.load()
        img = ImageOps.exif_transpose(img)
        if img.mode not in ("RGB", "RGBA"):
            has_alpha = img.mode in ("LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)
            img = img.convert("RGBA" if has_alpha else "RGB")
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt pixel data is the file's fault
        raise _undecodable(param, exc) from None
    return InputImage(image=img, format="JPEG" if fmt == "MPO" else fmt)


def decode_mask(data: bytes, *, first_size: tuple[int, int], max_pixels: int, max_bytes: int) -> Image.Image:
    """The edit region as an 'L' image: 255 where the mask's alpha is 0 (edit), 0 elsewhere
    (keep); intermediate alphas give partial edits."""
    inp = decode_image(data, param="mask", max_pixels=max_pixels, max_bytes=max_bytes)
    if inp.format != "PNG":
        raise InvalidRequest("mask must be a PNG file with an alpha channel.", param="mask", code="invalid_mask")
    if inp.image.mode != "RGBA":
        raise InvalidRequest(
            "mask has no alpha channel; fully transparent pixels (alpha 0) mark the region to edit.",
            param="mask",
            code="invalid_mask",
        )
    if inp.size != first_size:
        raise InvalidRequest(
            f"mask is {inp.size[0]}x{inp.size[1]} but the first image is {first_size[0]}x{first_size[1]}; "
            "they must match.",
            param="mask",
            code="invalid_mask",
        )
    alpha = inp.image.getchannel("A")
    return ImageOps.invert(alpha)


_DATA_URL = re.compile(r"^data:(image/[a-zA-Z0-9.+-]+)?(;[^,]*)?,(.*)$", re.DOTALL)


def decode_data_url(url: str, *, param: str) -> bytes:
    """JSON edit bodies carry images as data URLs. Remote URLs are refused: fetching
    arbitrary addresses from the server is a request-forgery risk."""
    m = _DATA_URL.match(url)
    if not m:
        if url.startswith(("http://", "https://")):
            raise InvalidRequest(
                f"{param}: only base64 data URLs are accepted (data:image/png;base64,...); "
                "this server does not fetch remote URLs.",
                param=param,
                code="unsupported_image_url",
            )
        raise InvalidRequest(f"{param} is not a data URL.", param=param, code="invalid_image_url")
    if not (m.group(2) or "").endswith("base64"):
        raise InvalidRequest(f"{param}: the data URL must be base64-encoded.", param=param, code="invalid_image_url")
    try:
        return base64.b64decode(m.group(3), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"{param}: invalid base64 data ({exc}).", param=param, code="invalid_image_url") from exc
