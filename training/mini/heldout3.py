"""Held-out phrasing split 3 of imagegate-mini 2 ("the blind split"), written 2026-12-04 by a session that
had not read the server's prompt reader, and whose phrases the reader's author did not see: the blind test
split that measures the reader.

Everything here is words and sentence frames that neither the training generators (``language.py``,
model 1's ``prompts.py``) nor the earlier held-out splits (``heldout.py``, ``heldout2.py``) use: templates,
request forms, connectives, position and background phrasings, and colour / size / kind synonyms. About
30% of colour mentions keep the palette's own word and about 30% of size mentions a plain size word
(small, little, large, big), and kinds with no clear synonym (triangle, star, sun, key, ...) keep their own
name, so the split is not only a synonym test. Positions are always said in new words.

Kept apart on purpose: nothing imports this module but its test, which samples 20,000+ prompts of each
training generator and finds none of these phrases (``uses_heldout3``), and finds no phrase shared with
``heldout.py`` or ``heldout2.py``. A phrase is matched on word boundaries of the normalised (lower-case,
single-spaced) text.

Each synonym maps to the palette colour / kind / size / cell it stands for (``COLOUR_OF``, ``KIND_OF``,
``SIZE_OF``, ``POSITION_OF`` the other way), so the checker can judge it. Scenes with no setting only.
"""

from __future__ import annotations

import random
import re

from .heldout import phrase_finder, reverse
from .world2 import KIND_NAMES, Scene2, Thing

# colour words that neither training nor the earlier splits use; _colour keeps the palette word 30% of the time
COLOURS = {
    "red": ["blood red", "lipstick red", "carmine"],
    "green": ["bottle green", "moss green", "shamrock green"],
    "blue": ["denim blue", "electric blue"],
    "yellow": ["taxi yellow", "school bus yellow"],
    "orange": ["safety orange", "marmalade orange"],
    "purple": ["royal purple", "eggplant purple"],
    "pink": ["shocking pink", "blush pink", "neon pink"],
    "white": ["pure white", "porcelain white"],
    "black": ["inky black", "soot black"],
    "grey": ["battleship grey", "concrete gray", "stone grey"],
}
# synonyms and hyponyms that clearly are the kind; kinds without one (triangle, star, heart, sun, moon,
# cloud, mountain, key, umbrella, apple, bell, mushroom, crown, leaf, arrow) are named by their own name
KINDS = {
    "circle": ["filled circle"],
    "square": ["filled square"],
    "ring": ["outlined circle"],
    "house": ["hut", "farmhouse"],
    "tree": ["maple", "beech"],
    "car": ["coupe", "station wagon"],
    "boat": ["schooner", "dinghy"],
    "fish": ["mackerel", "minnow"],
    "flower": ["rose", "lily"],
    "cat": ["moggy", "pussycat"],
    "dog": ["mutt", "beagle"],
    "bird": ["songbird", "wren", "pigeon"],
    "cup": ["espresso cup"],
    "balloon": ["party balloon"],
    "rocket": ["space rocket"],
}
SIZES = {"small": ["teensy", "itty-bitty", "diminutive"], "large": ["gigantic", "great big", "sizeable"]}
# the plain size words (training's own), said for about 30% of sizes; not phrases of this split
PLAIN_SIZES = {"small": ["small", "little"], "large": ["large", "big"]}
POSITIONS = {
    "top left": ["tucked into the top left corner", "up in the top left", "at the very top left"],
    "top": ["in the top middle", "halfway across the top"],
    "top right": ["tucked into the top right corner", "up in the top right", "at the very top right"],
    "left": ["in the middle of the left side", "halfway up the left edge"],
    "centre": ["in the exact centre", "in the exact center", "in the middle of the frame"],
    "right": ["in the middle of the right side", "halfway up the right edge"],
    "bottom left": ["tucked into the bottom left corner", "down in the bottom left", "at the very bottom left"],
    "bottom": ["in the bottom middle", "halfway across the bottom"],
    "bottom right": ["tucked into the bottom right corner", "down in the bottom right", "at the very bottom right"],
}
# background frames: {c} is the background's colour word. BG_TAIL follow the things, BG_HEAD come first.
BG_TAIL = ["with {c} as the background", "the background should be {c}", "with the background in {c}",
           "laid out on {c}", "and {c} everywhere else", "on a background of {c}"]
BG_HEAD = ["the background should be {c}", "start with a {c} background", "fill the background with {c}",
           "{c} fills the background", "on a background of {c}", "with {c} as the background"]
# the phrase of each frame that marks it (tests check that every frame has one)
BG_MARKERS = ["as the background", "should be", "the background in", "laid out on", "everywhere else",
              "a background of", "start with", "fill the background", "fills the background"]
# whole-prompt templates: {bg} from BG_TAIL where it follows {body}, from BG_HEAD where it leads
TAIL_TEMPLATES = ["could i get {body}, {bg}?", "i'd love {body}, {bg}", "is it possible to make {body}, {bg}?",
                  "mock up {body}, {bg}", "an icon showing {body}, {bg}", "my idea: {body}, {bg}",
                  "do you think you could do {body}, {bg}?", "produce {body}. {bg}", "requesting {body}, {bg}",
                  "i'm imagining {body}, {bg}", "{body}. {bg}", "{body} - {bg}"]
HEAD_TEMPLATES = ["{bg}, featuring {body}", "{bg}. in front of it, {body}", "{bg}. the picture has {body}"]
LIST_TEMPLATE = "{bg}. contents: {body}"  # the things as a spec list: "noun (size, colour) position; ..."
TEMPLATE_MARKERS = ["could i get", "i'd love", "is it possible", "mock up", "an icon showing", "my idea",
                    "do you think you could", "produce", "requesting", "i'm imagining", "featuring",
                    "in front of it", "the picture has", "contents"]
# between things (the last of three may be LAST_CONNECTIVES); and the forms of one thing
CONNECTIVES = [" accompanied by ", ", and in addition ", ". additionally, "]
LAST_CONNECTIVES = [", and finally ", ", and lastly "]
THING_MARKERS = ["which is", "accompanied by", "in addition", "additionally", "finally", "lastly"]

PHRASES: tuple[str, ...] = tuple(sorted({
    *(w for ws in COLOURS.values() for w in ws),
    *(w for ws in KINDS.values() for w in ws),
    *(w for ws in SIZES.values() for w in ws),
    *(w for ws in POSITIONS.values() for w in ws),
    *BG_MARKERS, *TEMPLATE_MARKERS, *THING_MARKERS,
}))
_find = phrase_finder(PHRASES)

# ground truth, the other way: each held-out word to the palette colour / kind / size / cell it stands for
COLOUR_OF, KIND_OF, SIZE_OF, POSITION_OF = (reverse(t) for t in (COLOURS, KINDS, SIZES, POSITIONS))


def uses_heldout3(text: str) -> list[str]:
    """The held-out-3 phrases that ``text`` contains (empty for every training prompt)."""
    return _find(text)


def _colour(rng: random.Random, c: str) -> str:
    return c if rng.random() < 0.3 else rng.choice(COLOURS[c])


def _size(rng: random.Random, s: str) -> str:
    return rng.choice(PLAIN_SIZES[s]) if rng.random() < 0.3 else rng.choice(SIZES[s])


def _noun(rng: random.Random, kind: str) -> str:
    return rng.choice(KINDS[kind]) if kind in KINDS and rng.random() < 0.7 else kind


def _words(rng: random.Random, t: Thing, said: dict[tuple[str, str], str]) -> tuple[str, str, str, str]:
    """Colour, noun, size and position words of one thing; ``said`` keeps one word per colour and per kind
    within a prompt, as people do."""
    if ("colour", t.colour) not in said:
        said["colour", t.colour] = _colour(rng, t.colour)
    if ("kind", t.kind) not in said:
        said["kind", t.kind] = _noun(rng, t.kind)
    return said["colour", t.colour], said["kind", t.kind], _size(rng, t.size), rng.choice(POSITIONS[t.pos])


def _thing(rng: random.Random, t: Thing, front: bool, said: dict[tuple[str, str], str]) -> str:
    col, noun, size, pos = _words(rng, t, said)
    u = rng.random()
    if front and u < 0.2:
        return f"{pos}, a {size} {col} {noun}"
    if u < 0.5:
        return f"a {size} {col} {noun} {pos}"
    if u < 0.65:
        return f"a {col} {noun} ({size}) {pos}"
    if u < 0.8:
        return f"a {col} {noun}, {size}, {pos}"
    return f"a {size} {noun} which is {col}, {pos}"


def _item(rng: random.Random, t: Thing, said: dict[tuple[str, str], str]) -> str:
    """One thing as an entry of a spec list: the noun, then its attributes."""
    col, noun, size, pos = _words(rng, t, said)
    return f"{noun} ({size}, {col}) {pos}"


def _noise(rng: random.Random, text: str) -> str:
    """Capitalisation and end punctuation as people type them."""
    u = rng.random()
    if u < 0.35:
        text = re.sub(r"\bi\b", "I", text)
        text = text[:1].upper() + text[1:]
    elif u < 0.4:
        text = text.upper()
    if text[-1] not in "?!":
        u = rng.random()
        text += "." if u < 0.25 else ("!" if u < 0.32 else ("!!" if u < 0.35 else ""))
    return text


def describe(scene: Scene2, rng: random.Random) -> str:
    """A held-out-3 phrasing of a scene with no setting: background colour and every thing's colour, kind,
    size and position stated; positions, frames and most colour and size words are held out."""
    things, said = scene.things, {("colour", scene.background): _colour(rng, scene.background)}
    if rng.random() < 0.15:  # a spec list, the background first
        template, bg = LIST_TEMPLATE, rng.choice(BG_HEAD)
        body = "; ".join(_item(rng, t, said) for t in things)
    else:
        head = rng.random() < 0.25
        template = rng.choice(HEAD_TEMPLATES if head else TAIL_TEMPLATES)
        bg = rng.choice(BG_HEAD if head else BG_TAIL)
        parts = [_thing(rng, t, i == 0 and template.startswith("{body}"), said) for i, t in enumerate(things)]
        joins = rng.sample(CONNECTIVES, 2)  # two different ones where there are three things
        if len(parts) == 3:
            if rng.random() < 0.5:
                joins[1] = rng.choice(LAST_CONNECTIVES)
            if rng.random() < 0.4:
                joins[0] = ", "
        body = parts[0] + "".join(j + p for j, p in zip(joins[:len(parts) - 1], parts[1:], strict=True))
    text = template.format(body=body, bg=bg.format(c=said["colour", scene.background]))
    return _noise(rng, re.sub(r"\ba (?=[aeiou])", "an ", text))


__all__ = ["COLOURS", "COLOUR_OF", "KINDS", "KIND_NAMES", "KIND_OF", "PHRASES", "PLAIN_SIZES", "POSITIONS",
           "POSITION_OF", "SIZES", "SIZE_OF", "describe", "uses_heldout3"]
