"""The edit region of a mask-less instruction to the built-in model, read from the prompt and
the picture (its segmenter: the service inpaints the region and keeps every other pixel).

imagegate-mini draws flat things in ten palette colours on flat backdrops, so the region an
instruction names can be found by colour, without a segmentation model:

- ``make the background green`` / ``change the background to green`` / ``green background
  instead``: the backdrop's pixels (the colour that owns most of the border), grown 2 px
  into the edges of the things so that they are redrawn against the new colour;
- ``remove the red circle`` (delete, erase, take away, get rid of): the named colour's
  pixels, grown 4 px;
- ``replace the red circle with …`` / ``swap … for …`` / ``change the red circle to …`` /
  ``make the red circle blue``: the box around the named colour's pixels, 6 px wider;
- ``add a star`` / ``put a star in the top left``: the named cell of the 3×3 grid the model
  was trained on, else the emptiest cell (the centre first).

An edit prompt that names only the change ("a yellow star", "add a yellow star", "replace the
red circle with a yellow star", "make the red circle blue") is restated as the scene the model was
trained to draw in the masked region: the backdrop read from the picture outside the mask, the
thing's size and place from the mask's box unless the prompt says them ("a small yellow star in
the top left corner on a green background"): ``restate_edit``.

Colour names beyond the table below ("maroon", "teal", "navy blue") are read through the model's
lexicon (``mini.lexicon``). A thing named without a colour is found only when the picture holds one colour besides the
backdrop. Anything else (no verb recognised, a colour not in the picture) gives None, and
the request is served as image-to-image. Pure numpy/Pillow; no torch.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

from . import NATIVE_SIZE
from .lexicon import Lexicon

# The colours the model draws (training/mini/scenes.py renders with this table).
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 60),
    "blue": (35, 75, 225),
    "yellow": (245, 215, 30),
    "orange": (250, 135, 15),
    "purple": (135, 50, 185),
    "pink": (250, 150, 205),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
    "grey": (128, 128, 128),
}
# The colour words the models were trained on (training/mini/prompts.py and language.py COLOUR_WORDS;
# tests/mini keeps them equal), as trained; any other colour name is read through the lexicon.
_COLOUR_OF = {name: name for name in PALETTE} | {
    "gray": "grey", "crimson": "red", "scarlet": "red", "emerald": "green", "lime": "green", "azure": "blue",
    "navy": "blue", "golden": "yellow", "gold": "yellow", "amber": "orange", "violet": "purple", "magenta": "pink",
}
_NAMES = list(PALETTE)
_RGB = np.array([PALETTE[n] for n in _NAMES], np.float32)
# Pixels farther than this from every palette colour are antialiased edges: they belong to no colour.
_MATCH = 60.0
# Cell centres of the 3x3 grid at the native size (training/mini/scenes.py CELL_CENTRES).
_CELLS = (30, 64, 98)
_CELL_HALF = 21
_POSITIONS = (  # (words, (column, row)); longer phrases first
    (("top left", "upper left", "top-left", "northwest"), (0, 0)),
    (("top right", "upper right", "top-right", "northeast"), (2, 0)),
    (("bottom left", "lower left", "bottom-left", "southwest"), (0, 2)),
    (("bottom right", "lower right", "bottom-right", "southeast"), (2, 2)),
    (("middle left", "left"), (0, 1)),
    (("middle right", "right"), (2, 1)),
    (("top", "upper middle"), (1, 0)),
    (("bottom", "lower middle"), (1, 2)),
    (("centre", "center", "middle"), (1, 1)),
)
_BACKGROUND = re.compile(r"\b(background|backdrop|bg)\b")
_REMOVE = re.compile(r"^(please )?(remove|delete|erase|take away|get rid of)\b")
_REPLACE = re.compile(r"^(please )?(replace|swap|change|recolou?r|(make|turn|paint|set|colou?r) (the|it)\b)")
_BARE_BACKGROUND = re.compile(r"^(an? )?([a-z]+ ){1,2}(background|backdrop|bg)( instead)?$")
_ADD = re.compile(r"^(please )?(add|put|place|insert)\b")


def infer_region(image: Image.Image, prompt: str) -> Image.Image | None:
    """The 'L' edit mask (255 = repaint) at the image's size for the instruction `prompt`, or None."""
    text = _words(prompt, r"[^a-z\- ]+")
    labels = _native_labels(image)
    bg = _backdrop(labels)
    if bg < 0:
        return None
    colours = _colour_words(text)
    region: np.ndarray | None
    if _is_background_edit(text):
        region = _grow(labels == bg, 2)
    elif _REMOVE.match(text):
        region = _thing(labels, bg, colours[:1])
        region = None if region is None else _grow(region, 4)
    elif (verb := _REPLACE.match(text)) and (verb.group(3) is None or colours):
        # The colour before "to / into / with / for" names the thing ("change the red circle to blue");
        # "make the red circle blue" ends with the new colour; "make it nicer" gives none, so it is
        # image-to-image; no colour for the thing: the only thing there is.
        parts = re.split(r"\b(?:to|into|with|for)\b", text, maxsplit=1)
        named = _colour_words(parts[0])
        if verb.group(3) is not None and len(parts) == 1:
            named = named[:-1]
        region = _thing(labels, bg, named[:1])
        region = None if region is None else _box(region, 6)
    elif _ADD.match(text):
        region = _cell(labels, bg, text)
    else:
        region = None
    if region is None or not region.any():
        return None
    mask = Image.fromarray(region.astype(np.uint8) * 255, "L")
    return mask.resize(image.size, Image.Resampling.NEAREST)


_THERE = re.compile(r" (there|here|in it|to it|(in|to|into) (the|this) (picture|image|scene|photo))$")
_SPLIT = re.compile(r"\b(?:with|for|to|into|by)\b")
_SIZE_WORDS = frozenset({"small", "large", "big", "tiny", "little", "huge"})
_SMALL_BOX = 26  # half the box around a thing: the model's things are 14 (small) or 25 px (large) across half
_CELL_EDGES = ((_CELLS[0] + _CELLS[1]) / 2, (_CELLS[1] + _CELLS[2]) / 2)
_PLACE = {(0, 0): "in the top left corner", (1, 0): "at the top", (2, 0): "in the top right corner",
          (0, 1): "on the left", (1, 1): "in the centre", (2, 1): "on the right",
          (0, 2): "in the bottom left corner", (1, 2): "at the bottom", (2, 2): "in the bottom right corner"}
_ARTICLE = re.compile(r"^(an?|the|one|some|another|[0-9]+|two|three)\b")


def restate_edit(image: Image.Image, mask: Image.Image, prompt: str) -> str:
    """The prompt to inpaint ``mask`` of ``image`` with. A change-only prompt ("add a yellow star",
    "replace the red circle with a yellow star", "change the red circle to blue", "a yellow star")
    becomes the new thing, sized and placed by the mask's box, on the backdrop read outside the mask
    ("a small yellow star in the top left corner on a green background"): the model learnt to draw
    whole scenes, not changes. "make the background green" becomes "a green background". A removal,
    a prompt that names a background otherwise, one it cannot read ("make it nicer"), an empty mask,
    or a picture without a flat backdrop is returned as it is."""
    text = _words(prompt, r"[^a-z0-9\- ]+")  # digits kept: "add 2 stars"
    if _is_background_edit(text) and (colours := _colour_words(text)):
        return f"{_a(colours[-1])} background"  # "make the background green": the new backdrop, as trained
    if not text or _BACKGROUND.search(text) or _REMOVE.match(text):
        return prompt
    labels = _native_labels(image)
    masked = np.asarray(mask.convert("L").resize(labels.shape[::-1], Image.Resampling.NEAREST)) > 127
    border = _border(labels)[~_border(masked)]  # the border where the mask leaves it
    bg = _backdrop(labels, masked)
    if bg < 0 or (border == bg).mean() < 0.5 or not masked.any():  # no flat backdrop there
        return prompt
    if verb := _REPLACE.match(text):
        rest = text[verb.end():].strip()
        parts = _SPLIT.split(rest, maxsplit=1)
        old, new = (parts[0].strip(), parts[1].strip()) if len(parts) == 2 else (rest, "")
        if not new and verb.group(3) is not None:  # "make the red circle blue": the last word is the colour
            old, _, new = old.rpartition(" ")
            if new not in _COLOUR_OF:  # "make it nicer"
                return prompt
        if all(w in _COLOUR_OF for w in new.split()):  # only a colour (or nothing): the old thing in it
            thing = [w for w in old.split() if w not in _COLOUR_OF and not _ARTICLE.match(w)]
            if not new or not thing:
                return prompt
            new = " ".join([new, *thing])
    elif verb := _ADD.match(text):
        new = _THERE.sub("", text[verb.end():]).strip()
    else:
        new = text
    if not new:
        return prompt
    # where and how big: the mask's box in the 3x3 grid the model draws in, unless the prompt says
    ys, xs = np.nonzero(masked)
    if not any(w in _SIZE_WORDS for w in new.split()):
        big = "small" if max(np.ptp(xs), np.ptp(ys)) < 2 * _SMALL_BOX else "large"
        article = _ARTICLE.match(new)
        new = f"{article.group()} {big} {new[article.end():].strip()}" if article else f"{big} {new}"
    if not any(re.search(rf"\b{w}\b", new) for words, _ in _POSITIONS for w in words):
        col, row = (int(np.searchsorted(_CELL_EDGES, (v.min() + v.max()) / 2)) for v in (xs, ys))
        new = f"{new} {_PLACE[(col, row)]}"
    return f"{_a(new)} on {_a(_NAMES[bg])} background"


def served_prompt(prompt: str, rewrite: Callable[[str], str], image: Image.Image | None = None,
                  mask: Image.Image | None = None) -> str:
    """What the built-in model reads: an edit with a mask restated from its picture (``restate_edit``),
    then ``rewrite`` (the model's lexicon)."""
    if image is not None and mask is not None:
        prompt = restate_edit(image, mask, prompt)
    return rewrite(prompt)


def _is_background_edit(text: str) -> bool:
    return bool(_BACKGROUND.search(text)) and bool(_REPLACE.match(text) or _BARE_BACKGROUND.match(text)
                                                    or "instead" in text)


def _a(phrase: str) -> str:
    """The phrase with an article: "an orange background", as training wrote it."""
    if _ARTICLE.match(phrase):
        return re.sub(r"^an? (?=\S)", lambda m: "an " if phrase[m.end()] in "aeiou" else "a ", phrase)
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


# words read as colours as they are; other colour names go through the lexicon (mini.lexicon)
_KNOWN_COLOURS = frozenset(_COLOUR_OF)
_READ_AS_SAID = _KNOWN_COLOURS | {"background", "backdrop"}  # the words ``_words`` keeps, and reads slips of as


def _colour_words(text: str) -> list[str]:
    return [_COLOUR_OF[w] for w in text.replace("-", " ").split() if w in _COLOUR_OF]


def _label(rgb: np.ndarray) -> np.ndarray:
    """Each pixel's palette index, or -1 where it is near none (an edge between two colours)."""
    dist = np.linalg.norm(rgb[:, :, None, :] - _RGB[None, None], axis=-1)
    idx = dist.argmin(-1)
    return np.where(dist.min(-1) <= _MATCH, idx, -1)


def _words(prompt: str, drop: str) -> str:
    """The prompt in lower case, characters matching ``drop`` read as spaces, colour names read as
    palette colours ("the maroon circle" is the red one), and a slip of a colour or backdrop word read as the
    word ("make the backround yelow")."""
    return Lexicon.default().rewrite(" ".join(re.sub(drop, " ", prompt.lower()).split()), _READ_AS_SAID)


def _native_labels(image: Image.Image) -> np.ndarray:
    small = image.convert("RGB").resize((NATIVE_SIZE, NATIVE_SIZE), Image.Resampling.BOX)
    return _label(np.asarray(small, np.float32))


def _border(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])


def _backdrop(labels: np.ndarray, masked: np.ndarray | None = None) -> int:
    """The palette colour owning most of the border (where ``masked`` leaves it), or -1."""
    border = _border(labels) if masked is None else _border(labels)[~_border(masked)]
    border = border[border >= 0]
    return int(np.bincount(border).argmax()) if border.size else -1


def _thing(labels: np.ndarray, bg: int, colours: list[str]) -> np.ndarray | None:
    """The pixels of the named colour (not the backdrop's), or of the one colour besides the backdrop."""
    counts = np.bincount(labels[labels >= 0], minlength=len(_NAMES))
    counts[bg] = 0
    present = [i for i in range(len(_NAMES)) if counts[i] >= 12]  # a few stray pixels are not a thing
    if colours:
        idx = _NAMES.index(colours[0])
        return labels == idx if idx in present else None
    return labels == present[0] if len(present) == 1 else None


def _grow(region: np.ndarray, px: int) -> np.ndarray:
    img = Image.fromarray(region.astype(np.uint8) * 255, "L").filter(ImageFilter.MaxFilter(2 * px + 1))
    return np.asarray(img) > 127


def _box(region: np.ndarray, margin: int) -> np.ndarray:
    ys, xs = np.nonzero(region)
    out = np.zeros_like(region)
    top, left = max(0, ys.min() - margin), max(0, xs.min() - margin)
    out[top:ys.max() + margin + 1, left:xs.max() + margin + 1] = True  # numpy clips the far ends
    return out


def _cell(labels: np.ndarray, bg: int, text: str) -> np.ndarray:
    """The named cell, else the one with fewest pixels of things (the centre, then the others, on a tie)."""
    def box(col: int, row: int) -> np.ndarray:
        out = np.zeros(labels.shape, bool)
        cx, cy = _CELLS[col], _CELLS[row]
        out[cy - _CELL_HALF:cy + _CELL_HALF, cx - _CELL_HALF:cx + _CELL_HALF] = True
        return out

    for words, (col, row) in _POSITIONS:
        if any(re.search(rf"\b{w}\b", text) for w in words):
            return box(col, row)
    things = labels != bg
    order = [(1, 1)] + [(c, r) for r in range(3) for c in range(3) if (c, r) != (1, 1)]
    return min((box(c, r) for c, r in order), key=lambda b: int((things & b).sum()))


__all__ = ["PALETTE", "infer_region", "restate_edit", "served_prompt"]
