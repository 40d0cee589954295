"""Prompts read as things on a backdrop and served to the built-in model in its own grammar: one
picture per thing.

imagegate-mini draws one large thing on a flat backdrop well and three poorly (model 1: 6% of
three-thing prompts all right): its small text encoder mixes the attributes of several things, and
its small silhouettes are blurred (a small star comes out round). It also reads its own training
sentences far better than other ones (run 22: 93% of checks in its grammar, 25% in held-out
phrasings). So for text-to-image the server reads the prompt as things (kind, colour, size, place)
on a backdrop, places the things the prompt leaves unplaced in free cells of the 3x3 grid the model
was trained on (spaced as its training scenes are, chosen by the seed, so open positions vary), and
asks the model for one picture per thing in the model's own grammar ("a large red star in the top
left corner on a green background"), all from the same noise; a small thing is asked for large. The
answer is composed from those pictures: each thing's pixels near its cell from its own picture (a
small one shrunk about its cell centre), every other pixel from the picture whose cell is nearest.
Every pixel is the model's; the layout and the sizing are the server's, the way layout-first systems
plan boxes before drawing into them. One thing alone is one picture: only its sentence changes.

The prompt is read by ``imagegate.mini.reading``, which says what it reads and when it declines.
Laid out only when the reading is certain and the things fit the grid; anything else returns None
and the model reads the prompt as it is. Pure Python/numpy/Pillow; no torch.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .reading import KIND_WORDS, read
from .regions import _CELLS, _PLACE, _a, _grow

# Half extents at the native 128 px (training/mini/scenes.py SIZES); an unsaid size may be either.
_RADIUS = {"small": 14.0, "large": 25.0, None: 25.0}
_MARGIN = 5.0  # training scenes keep things' bounding circles this far apart
_REACH = 10.0  # a thing's own pixels are taken this far beyond its radius (jitter, antialiasing)


@dataclass(frozen=True)
class Thing:
    words: str  # how the prompt names it: "red circle", "small blue box"
    cell: tuple[int, int] | None  # (column, row) in the 3x3 grid; None: one thing whose place the prompt leaves open
    size: str | None


@dataclass(frozen=True)
class Layout:
    background: str  # a palette colour
    things: tuple[Thing, ...]

    def prompts(self) -> list[str]:
        """One prompt per thing, in the model's own grammar. A small thing is asked for large and
        shrunk when composed: model 1 draws large silhouettes better (a small star comes out round)."""
        return [" ".join(filter(None, (_a(_asked(t)), _PLACE.get(t.cell) if t.cell else None,
                                       f"on {_a(self.background)} background"))) for t in self.things]

    def compose(self, images: list[Image.Image]) -> Image.Image:
        """One picture from the things' pictures (``prompts()`` order, all the same size)."""
        assert len(images) == len(self.things)
        one = self.things[0]
        if len(self.things) == 1 and (one.cell is None or _drawn_size(one) == one.size):
            return images[0]  # one thing drawn as asked: the picture is the answer
        arrays = [np.asarray(im.convert("RGB")) for im in images]
        h, w = arrays[0].shape[:2]
        scale = np.array([w, h], np.float32) / 128.0
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        cells = [t.cell or (1, 1) for t in self.things]  # only one thing alone may leave its place open
        centres = [(_CELLS[c[0]] * scale[0], _CELLS[c[1]] * scale[1]) for c in cells]
        dist = np.stack([np.hypot((xs - cx) / scale[0], (ys - cy) / scale[1]) for cx, cy in centres])
        nearest = dist.argmin(0)
        out = np.take_along_axis(np.stack(arrays), nearest[None, :, :, None].repeat(3, -1), 0)[0].copy()
        owns = []
        stack = np.stack(arrays)
        for i, (t, a) in enumerate(zip(self.things, arrays, strict=True)):
            own = (dist[i] <= _RADIUS[_drawn_size(t)] + _REACH) & _foreground(a)
            # cleared first, to the backdrop of the nearest other picture (its thing is elsewhere), or
            # with one picture to the colour just around the thing: a shrunk thing leaves the rest of its
            # drawn footprint empty
            if len(arrays) > 1:
                other = np.where(np.arange(len(arrays))[:, None, None] == i, np.inf, dist).argmin(0)
                out[own] = np.take_along_axis(stack, other[None, :, :, None].repeat(3, -1), 0)[0][own]
            elif own.any():
                out[own] = np.median(a[_grow(own, 3) & ~own], 0).astype(a.dtype)
            owns.append(own)
        for t, a, own, (cx, cy) in zip(self.things, arrays, owns, centres, strict=True):
            if _drawn_size(t) == t.size or t.size is None:
                out[own] = a[own]
                continue
            k = _RADIUS[t.size] / _RADIUS[_drawn_size(t)]
            rgba = Image.fromarray(np.dstack([a, own.astype(np.uint8) * 255]), "RGBA")
            small = rgba.resize((max(1, round(w * k)), max(1, round(h * k))), Image.Resampling.LANCZOS)
            at = (round(cx - cx * k), round(cy - cy * k))  # the cell centre stays where it was
            layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
            layer.paste(small, at)
            pix = np.asarray(layer)
            keep = pix[..., 3] >= 128
            out[keep] = pix[..., :3][keep]
        return Image.fromarray(out)


def _drawn_size(t: Thing) -> str | None:
    return "large" if t.size == "small" else t.size


def _asked(t: Thing) -> str:
    return re.sub(r"\bsmall\b", "large", t.words) if t.size == "small" else t.words


def _backdrop(a: np.ndarray) -> np.ndarray:
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    return np.asarray(np.median(border, 0), a.dtype)


def _foreground(a: np.ndarray) -> np.ndarray:
    """Pixels away from the picture's backdrop colour (the median of its border), grown 1 px."""
    return _grow(np.abs(a.astype(np.float32) - _backdrop(a).astype(np.float32)).sum(-1) > 48, 1)


def plan(prompt: str, seed: int) -> Layout | None:
    """The layout of ``prompt`` (already through the model's lexicon), or None to leave it to the model."""
    got = read(prompt)
    if got is None:
        return None
    background, things = got
    if len(things) == 1:  # one thing: restated in the model's grammar; a small one is drawn large and shrunk
        words, cell, size = things[0]
        return Layout(background, (Thing(words, cell or (1, 1) if size == "small" else cell, size),))
    cells = _place([(cell, size) for _, cell, size in things], random.Random(seed))
    if cells is None:
        return None
    return Layout(background, tuple(Thing(words, cell, size) for (words, _, size), cell
                                    in zip(things, cells, strict=True)))


def _place(wanted: list[tuple[tuple[int, int] | None, str | None]], rng: random.Random
           ) -> list[tuple[int, int]] | None:
    """Cells for the things: the said ones kept, the others one of the arrangements of free cells
    where no two things are closer than training scenes put them, drawn by ``rng``; None if said
    places clash or nothing fits."""
    said = [cell for cell, _ in wanted if cell is not None]
    if len(set(said)) != len(said):
        return None
    open_ = [i for i, (cell, _) in enumerate(wanted) if cell is None]
    free = [(c, r) for r in range(3) for c in range(3) if (c, r) not in said]

    def spaced(cells: list[tuple[int, int]]) -> bool:
        return all(np.hypot(_CELLS[a[0]] - _CELLS[b[0]], _CELLS[a[1]] - _CELLS[b[1]])
                   >= _RADIUS[wanted[i][1]] + _RADIUS[wanted[j][1]] + _MARGIN
                   for i, a in enumerate(cells) for j, b in enumerate(cells) if i < j and open_ and
                   (i in open_ or j in open_))

    options = []
    for pick in itertools.permutations(free, len(open_)):
        cells = [cell for cell, _ in wanted]
        for i, cell in zip(open_, pick, strict=True):
            cells[i] = cell
        full = [c for c in cells if c is not None]
        if spaced(full):
            options.append(full)
    return rng.choice(options) if options else None


def parts(layout: Layout | None, prompt: str) -> list[str]:
    """The prompts one picture takes: the layout's, or the prompt itself."""
    return layout.prompts() if layout is not None else [prompt]


def pictures(layouts: list[Layout | None]) -> int:
    """How many pictures ``layouts`` take."""
    return sum(len(layout.things) if layout is not None else 1 for layout in layouts)


def gather(layouts: list[Layout | None], images: list[Image.Image]) -> list[Image.Image]:
    """One picture per layout from the pictures of ``parts`` in order (a None layout took one)."""
    out, at = [], 0
    for layout in layouts:
        k = len(layout.things) if layout is not None else 1
        out.append(layout.compose(images[at:at + k]) if layout is not None else images[at])
        at += k
    assert at == len(images), "one picture per part"
    return out


__all__ = ["KIND_WORDS", "Layout", "Thing", "gather", "parts", "pictures", "plan"]
