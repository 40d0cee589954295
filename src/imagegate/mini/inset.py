"""One new thing set into an edit's mask, drawn the way the server draws one thing.

An edit with a mask that asks the built-in model for one thing ("add a yellow star", "replace the
red circle with a yellow star", restated by ``regions.restate_edit`` as "a small yellow star in the
top left corner on a green background") used to be inpainted in place: the model drew the thing
inside the mask's box, among the picture's other pixels, at the box's size. It draws one large thing
alone on a flat backdrop far better than a small one (run 24, everyday things: 52.7% of small ones
recognised as typed, 80.0% drawn large and shrunk), and inpainting asked it for exactly the small,
boxed-in thing it draws worst (things drawn 54% of the time).

So the server serves such an edit as it serves text-to-image for one thing (``compose``): the model
draws the thing alone on the backdrop over the whole picture (the pipeline gets a mask that repaints
everything; a small thing is drawn large and shrunk), and the thing is set into the mask's box: its
pixels (those away from the backdrop near its cell) scaled down only if they do not fit the box,
centred on a box about its size or kept where drawn, moved just inside, in a larger one (an "add a
star in the top left" over a whole-picture mask). The rest of the mask becomes the backdrop read just
outside it, so no seam shows. The thing's pixels are the model's; everything outside the mask is the
original's.

A prompt that does not read as one thing on a backdrop (a removal, "make the background green",
one the reader declines), or a picture wider or taller than 6:5, returns None and is inpainted as
before. Pure numpy/Pillow; no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .compose import _RADIUS, _REACH, Layout, _foreground, plan
from .regions import _CELLS, _MATCH, _REMOVE, PALETTE, _grow

_MARGIN = 2.0  # native px kept between the thing and the box's edge when it has to be shrunk to fit
# The picture's widest aspect drawn whole: the model learnt squares, and draws duplicated things on a wide or
# tall canvas (issue #27), so a wider upload's edit is inpainted in place, where the picture around holds it.
_SQUARE = 1.2


@dataclass(frozen=True)
class Inset(Layout):
    """A one-thing ``Layout`` whose picture is set into ``mask`` of ``original`` (both at one size)."""

    original: Image.Image = field(compare=False, repr=False, kw_only=True)
    mask: Image.Image = field(compare=False, repr=False, kw_only=True)  # 'L', 255 = repaint

    def canvas_mask(self) -> Image.Image:
        """The mask the pipeline gets: the whole picture (the thing is drawn alone, then set in)."""
        return Image.new("L", self.mask.size, 255)

    def compose(self, images: list[Image.Image]) -> Image.Image:
        picture = np.asarray(super().compose(images).convert("RGB").resize(self.original.size))
        out = np.asarray(self.original.convert("RGB")).copy()
        masked = np.asarray(self.mask) > 127
        h, w = masked.shape
        scale = np.array([w, h], np.float32) / 128.0
        out[masked] = self._fill(out, masked, scale)
        own = self._own(picture, scale)
        if not own.any():  # the model drew nothing: the box is left as backdrop
            return Image.fromarray(out)
        ys, xs = np.nonzero(masked)
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
        ty, tx = np.nonzero(own)
        thing = np.array([tx.min(), ty.min(), tx.max() + 1, ty.max() + 1], np.float32)
        size, room = thing[2:] - thing[:2], box[2:] - box[:2] - 2 * _MARGIN * scale
        k = float(min(1.0, *(np.maximum(room, 1.0) / size)))
        rgba = Image.fromarray(np.dstack([picture, own.astype(np.uint8) * 255]), "RGBA").crop(tuple(thing.astype(int)))
        rgba = rgba.resize((max(1, round(size[0] * k)), max(1, round(size[1] * k))), Image.Resampling.LANCZOS)
        new = np.array(rgba.size, np.float32)
        centre = (thing[:2] + thing[2:]) / 2
        if np.any(box[2:] - box[:2] < 2 * new):  # a box about the thing's size: the thing in its middle
            centre = (box[:2] + box[2:]) / 2
        else:  # a larger box: where the model drew it, moved just inside
            centre = np.clip(centre, box[:2] + new / 2, box[2:] - new / 2)
        layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        layer.paste(rgba, tuple(np.round(centre - new / 2).astype(int)))
        pix = np.asarray(layer)
        keep = (pix[..., 3] >= 128) & masked
        out[keep] = pix[..., :3][keep]
        return Image.fromarray(out)

    def _own(self, picture: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """The thing's pixels in its own picture: away from the backdrop, near its cell (anywhere if the
        prompt left its place open)."""
        fg = _foreground(picture)
        t = self.things[0]
        if t.cell is None:
            return fg
        h, w = fg.shape
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        cx, cy = _CELLS[t.cell[0]] * scale[0], _CELLS[t.cell[1]] * scale[1]
        reach = _RADIUS[t.size] + _REACH  # composed: a small thing is shrunk back to its size
        own: np.ndarray = fg & (np.hypot((xs - cx) / scale[0], (ys - cy) / scale[1]) <= reach)
        return own

    def _fill(self, rgb: np.ndarray, masked: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """The backdrop just outside the mask (its pixels near the backdrop's palette colour), or that colour."""
        want = np.array(PALETTE[self.background], np.float32)
        ring = rgb[_grow(masked, max(1, round(3 * float(scale.mean())))) & ~masked].astype(np.float32)
        near = ring[np.linalg.norm(ring - want, axis=-1) <= _MATCH]
        colour: np.ndarray = np.median(near, 0) if len(near) else want
        return colour.astype(rgb.dtype)


def plan_inset(prompt: str, original: Image.Image, mask: Image.Image) -> Inset | None:
    """The inset for an edit of ``original`` under ``mask`` (same size) with ``prompt`` (as served: restated,
    through the lexicon), or None when the prompt is not one thing on a backdrop or the mask is empty."""
    if _REMOVE.match(" ".join(prompt.lower().split())):  # "erase the red star on a blue background" is no thing to draw
        return None
    layout = plan(prompt, 0)
    if layout is None or len(layout.things) != 1 or layout.background not in PALETTE:
        return None
    mask = mask.convert("L")
    if mask.size != original.size or not (np.asarray(mask) > 127).any():
        return None
    if not 1 / _SQUARE <= original.width / original.height <= _SQUARE:  # it draws duplicates on other shapes
        return None
    return Inset(layout.background, layout.things, original=original, mask=mask)


__all__ = ["Inset", "plan_inset"]
