"""Held-out phrasing split 4 of imagegate-mini 2: how people LIST two or three things. A development set for
the server's prompt reader, written by a session that had not read the reader.

The split is mainly about structure: numbered and bulleted lists, "first ... second ...", "one is ...
another is ...", "from left to right: ...", row by row ("top row: ..."), naming the things first and their
places after ("..., arranged like this: the red one ..."), a shared size ("both small", "three small
items:"), count headings, request openers and background sentences. Positions are said in new words
(``POSITIONS``, or a row heading and a place in the row: ``ROWS``, ``IN_ROW``); about half of the colour
and kind mentions keep the palette's / kind's own name. Only its test imports this module: no training
prompt (20,000+ of each generator) and no other held-out split uses its phrases (``uses_heldout4``,
matched on word boundaries of the normalised text). Scenes with no setting, things of distinct colours.
"""

from __future__ import annotations

import random
import re

from .heldout import phrase_finder, reverse
from .scenes import POSITIONS as CELLS
from .scenes import position_name
from .world2 import KIND_NAMES, Scene2, Thing

# colour words that neither training nor an earlier split uses; _colour keeps the palette word half the time
COLOURS = {
    "red": ["brick red", "rust red"], "green": ["fern green", "pistachio green"],
    "blue": ["powder blue", "prussian blue"], "yellow": ["saffron yellow", "primrose yellow"],
    "orange": ["rust orange", "papaya orange"], "purple": ["orchid purple", "heather purple"],
    "pink": ["coral pink", "peony pink"], "white": ["linen white", "eggshell white"],
    "black": ["tar black", "carbon black"], "grey": ["granite grey", "concrete grey"],
}
# synonyms and hyponyms that clearly are the kind; other kinds keep their own name
KINDS = {
    "house": ["shack", "villa"], "tree": ["sycamore", "sapling"], "car": ["roadster", "jalopy"],
    "boat": ["skiff", "canoe"], "fish": ["perch", "herring"], "flower": ["pansy", "dahlia"],
    "cat": ["feline", "housecat"], "dog": ["doggo", "canine"], "bird": ["budgie", "lark"],
    "cup": ["tankard", "demitasse"], "mushroom": ["champignon", "morel"], "crown": ["coronet", "diadem"],
}
# the plain "small" / "large" are said 40% of the time
SIZES = {"small": ["dainty", "titchy", "compact"], "large": ["whopping", "chunky", "hulking"]}
POSITIONS = {
    "top left": ["in the top-left area", "where the top and left edges meet"],
    "top": ["in the top-middle area", "halfway along the top"],
    "top right": ["in the top-right area", "where the top and right edges meet"],
    "left": ["in the middle-left area", "halfway down the left edge"],
    "centre": ["in the central area", "at the exact centre", "at the exact center", "right in the middle"],
    "right": ["in the middle-right area", "halfway down the right edge"],
    "bottom left": ["in the bottom-left area", "where the bottom and left edges meet"],
    "bottom": ["in the bottom-middle area", "halfway along the bottom"],
    "bottom right": ["in the bottom-right area", "where the bottom and right edges meet"],
}
# the row-by-row form: a heading per row (row 0 = top), and the place in that row (column 0 = left)
ROWS = {0: ["top row", "upper row"], 1: ["middle row"], 2: ["bottom row", "lower row"]}
IN_ROW = {0: ["at the left end", "furthest left"], 1: ["mid-row", "in the middle of that row"],
          2: ["at the right end", "furthest right"]}
# background sentences: {c} colour word, {colour} colour / color, {them} it / them; HEAD ones may lead
BG_HEAD = ["{colour} the background {c}", "the backdrop ought to be {c}", "set the background to {c}",
           "background = {c}"]
BG_TAIL = [*BG_HEAD, "against a plain wash of {c}", "{c} behind {them}", "and a {c} background to finish",
           "sitting on a {c} backing", "with the background done in {c}"]
BG_MARKERS = ["colour the background", "color the background", "ought to be", "set the background to", "=",
              "wash of", "behind it", "behind them", "to finish", "sitting on", "backing", "done in"]
OPENERS = ["let's have", "what i want is", "i'm hoping for", "may i have"]
# list forms and their markers
NUMBERS = ["{i})", "({i})"]
BULLETS = ["•", "*", "-"]
ORDINALS = [["first", "second", "third"], ["firstly", "secondly", "thirdly"]]
LAST = ["last of all", "last but not least"]
SEQUENCES = {"col": "from left to right", "row": "from top to bottom"}
INTROS = ["arranged like this:", "laid out as follows:", "placement:"]
CONNECTIVES = [" + ", ", and besides that, ", ", and over and above that, "]
LIST_MARKERS = ["items", "the following", "one is", "another is", "the other is", "a third is", "both", "all three",
                "over and above that", "besides that", "+", "a single", "just", "nothing else", "in size", "in colour",
                "in color", *(n.format(i=i) for n in NUMBERS for i in (1, 2, 3)), "•", "*", *LAST,
                *(o for os in ORDINALS for o in os), *SEQUENCES.values(), *(s.rstrip(":") for s in INTROS)]

PHRASES: tuple[str, ...] = tuple(sorted({
    *(w for ws in COLOURS.values() for w in ws),
    *(w for ws in KINDS.values() for w in ws),
    *(w for ws in SIZES.values() for w in ws),
    *(w for ws in POSITIONS.values() for w in ws),
    *(w for ws in ROWS.values() for w in ws),
    *(w for ws in IN_ROW.values() for w in ws),
    *BG_MARKERS, *OPENERS, *LIST_MARKERS,
}))
_find = phrase_finder(PHRASES)

# ground truth, the other way: each held-out word to the palette colour / kind / size / cell / row / column
COLOUR_OF, KIND_OF, SIZE_OF, POSITION_OF = (reverse(t) for t in (COLOURS, KINDS, SIZES, POSITIONS))
ROW_OF = {w: r for r, ws in ROWS.items() for w in ws}
COLUMN_OF = {w: c for c, ws in IN_ROW.items() for w in ws}
COUNTS = {1: ["one", "1"], 2: ["two", "2"], 3: ["three", "3"]}


def uses_heldout4(text: str) -> list[str]:
    """The held-out-4 phrases that ``text`` contains (empty for every training prompt)."""
    return _find(text)


class _Say:
    """One word per colour and per kind within a prompt, as people do; sizes vary per mention."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.words: dict[tuple[str, str], str] = {}

    def colour(self, c: str) -> str:
        return self.words.setdefault(("c", c), c if self.rng.random() < 0.5 else self.rng.choice(COLOURS[c]))

    def noun(self, k: str) -> str:
        return self.words.setdefault(("k", k), self.rng.choice(KINDS[k]) if k in KINDS and self.rng.random() < 0.85
                                     else k)

    def size(self, s: str) -> str:
        return s if self.rng.random() < 0.4 else self.rng.choice(SIZES[s])

    def np(self, t: Thing, size: bool) -> str:
        """The thing without its place: "a small red star", or without its size where that is said once."""
        return f"a {self.size(t.size) + ' ' if size else ''}{self.colour(t.colour)} {self.noun(t.kind)}"

    def thing(self, t: Thing, size: bool = True, pos: str | None = None) -> str:
        """The thing with its place (a cell phrase, or ``pos`` in the row form)."""
        rng = self.rng
        where = pos or rng.choice(POSITIONS[t.pos])
        u = rng.random()
        if u < 0.5:
            return f"{self.np(t, size)} {where}"
        if u < 0.7:
            return f"{self.np(t, size)} ({where})"
        if u < 0.85 and size:
            return f"a {self.colour(t.colour)} {self.noun(t.kind)}, {t.size} in size, {where}"
        return f"a {self.size(t.size) + ' ' if size else ''}{self.noun(t.kind)}, {self.colour(t.colour)} in " \
               f"{rng.choice(['colour', 'color'])}, {where}"


def _and(parts: list[str], rng: random.Random) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + rng.choice([" and ", ", and "]) + parts[-1]


def _block(say: _Say, things: list[Thing], rng: random.Random) -> str:
    """Numbered or bulleted, maybe under a count heading that may carry a shared size."""
    shared = len({t.size for t in things}) == 1 and rng.random() < 0.4
    head = f"{rng.choice(COUNTS[len(things)])} {say.size(things[0].size) + ' ' if shared else ''}items:"
    items = [say.thing(t, not shared) for t in things]
    if rng.random() < 0.5:
        number, sep = rng.choice(NUMBERS), rng.choice(["\n", " ", "; "])
        body = sep.join(f"{number.format(i=i + 1)} {s}" for i, s in enumerate(items))
    else:
        bullet, sep = rng.choice(BULLETS), "\n"
        body = "\n".join(f"{bullet} {s}" for s in items)
    return head + (sep if sep != "; " else " ") + body if shared or rng.random() < 0.5 else body


def _rows(say: _Say, things: list[Thing], rng: random.Random) -> str:
    rows = sorted({CELLS[t.pos][1] for t in things})
    parts = []
    for r in rows:
        here = sorted((t for t in things if CELLS[t.pos][1] == r), key=lambda t: CELLS[t.pos][0])
        parts.append(f"{rng.choice(ROWS[r])}: " + _and([say.thing(t, True, rng.choice(IN_ROW[CELLS[t.pos][0]]))
                                                      for t in here], rng))
    return rng.choice(["; ", "\n", ". "]).join(parts)


def _inline(say: _Say, things: list[Thing], rng: random.Random) -> str:
    n, u = len(things), rng.random()
    axes = [a for a, i in (("col", 0), ("row", 1)) if len({CELLS[t.pos][i] for t in things}) == n]
    if u < 0.2 and axes:  # from left to right / from top to bottom
        axis = rng.choice(axes)
        order = sorted(things, key=lambda t: CELLS[t.pos][0 if axis == "col" else 1])
        return f"{SEQUENCES[axis]}: " + _and([say.thing(t) for t in order], rng)
    if u < 0.4:  # first, second, third
        words = list(rng.choice(ORDINALS)[:n])
        if rng.random() < 0.4:
            words[-1] = "and " + rng.choice(LAST)
        return rng.choice([", ", "; "]).join(f"{w}, {say.thing(t)}" for w, t in zip(words, things, strict=True))
    if u < 0.6:  # one is ..., another is ..., a third is ... / the other is ...
        words = ["one is", "the other is"] if n == 2 else ["one is", "another is", "and a third is"]
        return ", ".join(f"{w} {say.thing(t)}" for w, t in zip(words, things, strict=True))
    if u < 0.8:  # the things first, their places after
        shared = len({t.size for t in things}) == 1 and rng.random() < 0.5
        names = _and([say.np(t, not shared) for t in things], rng)
        if shared:
            names += f", {'both' if n == 2 else 'all three'} {say.size(things[0].size)}"
        places = _and([f"the {say.colour(t.colour)} one {rng.choice(POSITIONS[t.pos])}" for t in things], rng)
        return f"{names}, {rng.choice(INTROS)} {places}"
    joins = [rng.choice(CONNECTIVES) for _ in things[1:]]
    return say.thing(things[0]) + "".join(j + say.thing(t) for j, t in zip(joins, things[1:], strict=True))


def _single(say: _Say, t: Thing, rng: random.Random) -> str:
    u, text = rng.random(), say.thing(t)
    if u < 0.25:
        return "a single " + text[2:]
    if u < 0.45:
        return "just " + text
    if u < 0.6:
        return text + ", nothing else"
    return text


def _noise(rng: random.Random, text: str) -> str:
    """Capitalisation and end punctuation as people type them."""
    if rng.random() < 0.4:
        text = re.sub(r"\bi\b", "I", text)
        text = "\n".join(line[:1].upper() + line[1:] for line in text.split("\n"))
    if text[-1] not in "?!.)":
        text += "." if rng.random() < 0.3 else ""
    return text


def describe(scene: Scene2, rng: random.Random) -> str:
    """A held-out-4 phrasing of a scene with no setting: background colour and every thing's colour, kind,
    size and position stated, the things in one of many list forms."""
    say, things = _Say(rng), scene.things
    if len(things) == 1:
        body, block = _single(say, things[0], rng), False
    else:
        u = rng.random()
        block = u < 0.35
        form = _block if block else (_rows if u < 0.5 else _inline)
        body = form(say, things, rng)
    if rng.random() < 0.35:  # a request opener; "the following:" before a list
        body = f"{rng.choice(OPENERS)} {'the following:' + chr(10) if block else ''}" + \
            ("the following: " if len(things) > 1 and not block else "") + body
    head = rng.random() < 0.35
    bg = rng.choice(BG_HEAD if head else BG_TAIL).format(c=say.colour(scene.background),
                                                         colour=rng.choice(["colour", "color"]),
                                                         them="it" if len(things) == 1 else "them")
    if head:
        text = f"{bg}.{chr(10) if block else ' '}{body}"
    elif block or "\n" in body:
        text = f"{body}\n{bg}"
    else:
        text = body + rng.choice([f", {bg}", f". {bg}", f" ({bg})"])
    return _noise(rng, re.sub(r"\ba (?=[aeiou])", "an ", text))


__all__ = ["COLOURS", "COLOUR_OF", "COLUMN_OF", "IN_ROW", "KINDS", "KIND_NAMES", "KIND_OF", "PHRASES", "POSITIONS",
           "POSITION_OF", "ROWS", "ROW_OF", "SIZES", "SIZE_OF", "describe", "position_name", "uses_heldout4"]
