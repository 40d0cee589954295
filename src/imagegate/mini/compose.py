"""Prompts with several things, served to the built-in model as a layout: one picture per thing.

imagegate-mini draws one large thing on a flat backdrop well and three poorly (model 1: 6% of
three-thing prompts all right): its small text encoder mixes the attributes of several things, and
its small silhouettes are blurred (a small star comes out round). So for text-to-image the server
reads the prompt as things (kind, colour, size, place) on a backdrop, places the things the prompt
leaves unplaced in free cells of the 3×3 grid the model was trained on (spaced as its training
scenes are, chosen by the seed, so open positions vary), and asks the model for one picture per
thing in the model's own grammar ("a large red star in the top left corner on a green
background"), all from the same noise; a small thing is asked for large. The answer is composed
from those pictures: each thing's pixels near its cell from its own picture (a small one shrunk
about its cell centre), every other pixel from the picture whose cell is nearest. Every pixel is
the model's; the layout and the sizing are the server's, the way layout-first systems plan boxes
before drawing into them.

Composed only when the reading is certain: one small thing, or two or three things, each with one
kind word, distinct places, a backdrop colour, no counts ("two stars"), no word outside the
training grammar's ("a dragon", "at night") and nothing it cannot place. Anything else returns
None and the model reads the prompt as it is. Pure Python/numpy/Pillow; no torch.
"""

from __future__ import annotations

import functools
import itertools
import random
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .regions import _CELLS, _KNOWN_COLOURS, _PLACE, _POSITIONS, _a, _colour_words, _grow, _words

# The kinds the built-in models were trained to draw and the words their training used for them
# (training/mini/prompts.py SHAPE_WORDS, training/mini/language.py KIND_WORDS; a test keeps them equal),
# singular then plural.
KIND_WORDS: dict[str, tuple[tuple[str, str], ...]] = {
    "circle": (("circle", "circles"), ("disc", "discs"), ("disk", "disks"), ("dot", "dots")),
    "square": (("square", "squares"), ("box", "boxes")),
    "triangle": (("triangle", "triangles"),),
    "star": (("star", "stars"),),
    "ring": (("ring", "rings"), ("donut", "donuts"), ("doughnut", "doughnuts"), ("hoop", "hoops")),
    "heart": (("heart", "hearts"),),
    "house": (("house", "houses"), ("home", "homes")),
    "tree": (("tree", "trees"),),
    "sun": (("sun", "suns"),),
    "moon": (("moon", "moons"),),
    "cloud": (("cloud", "clouds"),),
    "car": (("car", "cars"),),
    "boat": (("boat", "boats"), ("ship", "ships")),
    "fish": (("fish", "fish"),),
    "flower": (("flower", "flowers"), ("daisy", "daisies")),
    "mountain": (("mountain", "mountains"),),
    "cat": (("cat", "cats"), ("kitten", "kittens")),
    "dog": (("dog", "dogs"), ("puppy", "puppies")),
    "bird": (("bird", "birds"),),
    "cup": (("cup", "cups"), ("mug", "mugs")),
    "key": (("key", "keys"),),
    "umbrella": (("umbrella", "umbrellas"),),
    "balloon": (("balloon", "balloons"),),
    "rocket": (("rocket", "rockets"), ("spaceship", "spaceships")),
    "apple": (("apple", "apples"),),
    "bell": (("bell", "bells"),),
    "mushroom": (("mushroom", "mushrooms"),),
    "crown": (("crown", "crowns"),),
    "leaf": (("leaf", "leaves"),),
    "arrow": (("arrow", "arrows"),),
}
_SINGULAR = {s: kind for kind, forms in KIND_WORDS.items() for s, _ in forms}
_PLURAL = {p for forms in KIND_WORDS.values() for s, p in forms if p != s}
_SIZE = {"small": "small", "little": "small", "tiny": "small", "large": "large", "big": "large", "huge": "large"}
_COUNT = {"two", "three", "four", "five", "several", "many", "some", "pair", "couple"} | {str(d) for d in range(2, 10)}
# Half extents at the native 128 px (training/mini/scenes.py SIZES); an unsaid size may be either.
_RADIUS = {"small": 14.0, "large": 25.0, None: 25.0}
_MARGIN = 5.0  # training scenes keep things' bounding circles this far apart
_REACH = 10.0  # a thing's own pixels are taken this far beyond its radius (jitter, antialiasing)

_BACKDROPS = tuple(re.compile(r) for r in (  # each with the colour as group "c"
    r"\b(?:(?:on|over|against|with|in front of)\s+)?(?:(?:an?|the)\s+)?(?:plain\s+|solid\s+|flat\s+)?"
    r"(?P<c>[a-z]+)(?:\s+colou?red)?\s+(?:background|backdrop|bg)\b",  # "on a plain green background"
    r"\b(?:background|backdrop|bg)\s*(?:colou?r\s*)?(?:is\s+|of\s+|:\s*)?(?P<c>[a-z]+)\b",  # "background: green"
    r"\b(?:on|over|against)\s+(?P<c>[a-z]+)\s*(?:[,;:.]|$)",  # "on green, a red circle", "... on green"
    r"\b(?:on|over|against)\s+(?:an?\s+)?(?:plain\s+)?(?P<c>[a-z]+)\s+colou?r\b",  # "on a plain pink colour"
))
_RELATION = re.compile(r"\b(?:(?:to|on) the )?(?P<r>left|right) of\b|\b(?P<v>above|over|on top of|below|under|beneath|"
                       r"underneath)\b")
# Words a thing's phrase may hold besides its kind, colour and size: the training grammars' articles,
# prepositions, place words, prefixes and "1" (training/mini/prompts.py, language.py). A phrase with any
# other word ("a dragon", "at night", "striped", "a shape") is not laid out: the model reads the prompt whole.
_FILLER = frozenset({
    "a", "an", "the", "one", "of", "in", "on", "at", "to", "near", "is", "that", "there", "it",
    "side", "corner", "middle", "centre", "center", "top", "bottom", "left", "right", "upper", "lower",
    "colour", "color", "coloured", "colored", "picture", "image", "drawing", "illustration", "icon", "simple", "flat",
    "plain", "solid", "draw", "make", "create", "paint", "generate", "i", "want", "give", "me", "1", "beside"})
_SPLIT = re.compile(r"\s*(?:[,;:./&+]|\band\b|\bwith\b|\bplus\b|\balso\b)\s*")


@dataclass(frozen=True)
class Thing:
    words: str  # how the prompt names it: "red circle", "small blue box"
    cell: tuple[int, int]  # (column, row) in the 3x3 grid
    size: str | None


@dataclass(frozen=True)
class Layout:
    background: str  # a palette colour
    things: tuple[Thing, ...]

    def prompts(self) -> list[str]:
        """One prompt per thing, in the model's own grammar. A small thing is asked for large and
        shrunk when composed: model 1 draws large silhouettes better (a small star comes out round)."""
        return [f"{_a(_asked(t))} {_PLACE[t.cell]} on {_a(self.background)} background" for t in self.things]

    def compose(self, images: list[Image.Image]) -> Image.Image:
        """One picture from the things' pictures (``prompts()`` order, all the same size)."""
        assert len(images) == len(self.things)
        arrays = [np.asarray(im.convert("RGB")) for im in images]
        h, w = arrays[0].shape[:2]
        scale = np.array([w, h], np.float32) / 128.0
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        centres = [(_CELLS[t.cell[0]] * scale[0], _CELLS[t.cell[1]] * scale[1]) for t in self.things]
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
    read = _read(prompt)
    if read is None:
        return None
    background, things = read
    if len(things) == 1:  # one thing: only a small one gains (drawn large, shrunk); unplaced, it is central
        words, cell, size = things[0]
        return Layout(background, (Thing(words, cell or (1, 1), size),)) if size == "small" else None
    cells = _place([(cell, size) for _, cell, size in things], random.Random(seed))
    if cells is None:
        return None
    return Layout(background, tuple(Thing(words, cell, size) for (words, _, size), cell
                                    in zip(things, cells, strict=True)))


@functools.lru_cache(maxsize=256)  # n images of one request read the same prompt; only the seed differs
def _read(prompt: str) -> tuple[str, tuple[tuple[str, tuple[int, int] | None, str | None], ...]] | None:
    """The backdrop colour and (words, cell or None, size) per thing, with a relation's cells."""
    text = _words(prompt, r"[^a-z0-9,;:./&+\- ]+").replace("-", " ")
    spans: dict[tuple[int, int], list[str]] = {}  # where a backdrop is named, and its colour
    for pattern in _BACKDROPS:
        for m in pattern.finditer(text):
            if len(c := _colour_words(m.group("c"))) == 1 and not any(a < m.end() and m.start() < b for a, b in spans):
                spans[m.span()] = c
    if len(spans) != 1:
        return None
    (start, end), background = next(iter(spans.items()))
    body = (text[:start] + " , " + text[end:]).strip(" ,")
    if any(w in _PLURAL or w in _COUNT for w in body.split()):
        return None
    relation = None
    rel = list(_RELATION.finditer(body))
    if len(rel) == 1:
        r = rel[0]
        relation = r.group("r") or ("above" if r.group("v") in ("above", "over", "on top of") else "below")
        body = body[:r.start()] + " | " + body[r.end():]
    elif rel:
        return None
    things = _things(body)
    if things is None or not 1 <= len(things) <= 3 or (relation and len(things) != 2):
        return None
    if relation is not None and all(cell is None for _, cell, _ in things):
        first, second = {"left": ((0, 1), (2, 1)), "right": ((2, 1), (0, 1)),
                         "above": ((1, 0), (1, 2)), "below": ((1, 2), (1, 0))}[relation]
        things = [(things[0][0], first, things[0][2]), (things[1][0], second, things[1][2])]
    return background[0], tuple(things)


def _things(body: str) -> list[tuple[str, tuple[int, int] | None, str | None]] | None:
    """(words, cell or None, size) per thing; a chunk naming no kind ("in the top left", "large")
    lends its place, size and colour to the thing before it, or else to the one after it."""
    chunks = [c for part in body.split("|") for c in _SPLIT.split(part) if c.strip()]
    found: list[dict[str, Any]] = []
    pending: dict[str, Any] = {}
    for chunk in chunks:
        words = chunk.split()
        if any(w not in _FILLER and w not in _SINGULAR and w not in _SIZE and w not in _KNOWN_COLOURS for w in words):
            return None
        kinds = [w for w in words if w in _SINGULAR]
        colours = _colour_words(chunk)
        if len(kinds) > 1 or len(colours) > 1:
            return None
        said = {"cell": next((c for names, c in _POSITIONS if any(re.search(rf"\b{n}\b", chunk) for n in names)), None),
                "size": next((_SIZE[w] for w in words if w in _SIZE), None),
                "colour": colours[0] if colours else None}
        said = {k: v for k, v in said.items() if v is not None}
        if not kinds:
            if found and all(found[-1][k] is None for k in said):
                found[-1].update(said)
            elif said:  # else "a picture of", "draw"
                pending.update(said)
            continue
        thing: dict[str, Any] = {"kind": kinds[0], "cell": None, "size": None, "colour": None, **said}
        if any(k in said for k in pending):
            return None
        found.append({**thing, **pending})
        pending = {}
    if pending:
        return None
    return [(" ".join(w for w in (t["size"], t["colour"], t["kind"]) if w), t["cell"], t["size"]) for t in found]


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
