"""Held-out phrasing split 2 of imagegate-mini 2, written 2026-12-04 by a session that had not read the
server's prompt reader, to measure it on phrasings its author did not see.

Everything here is words and sentence frames that neither the training generators (``language.py``,
model 1's ``prompts.py``) nor the first held-out split (``heldout.py``) use: templates, request forms,
connectives, position and background phrasings, and colour / size / kind synonyms. About 30% of colour
mentions keep the palette's own word and kinds with no clear synonym (star, sun, key, ...) keep their
own name, so the split is not only a synonym test. Sizes and positions are always said in new words.

Kept apart on purpose: nothing imports this module but its test, which samples 20,000+ prompts of each
training generator and finds none of these phrases (``uses_heldout2``), and finds no phrase shared with
``heldout.py``. A phrase is matched on word boundaries of the normalised (lower-case, single-spaced) text.

Each synonym maps to the palette colour / kind / size it stands for (``COLOUR_OF``, ``KIND_OF``,
``SIZE_OF``, ``POSITION_OF`` the other way), so the checker can judge it. Scenes with no setting only.
"""

from __future__ import annotations

import random
import re

from .heldout import phrase_finder, reverse
from .world2 import KIND_NAMES, Scene2, Thing

# colour words that neither training nor heldout.py uses; _colour keeps the palette word 30% of the time
COLOURS = {
    "red": ["vermilion", "fire engine red", "tomato red"],
    "green": ["forest green", "kelly green", "pea green"],
    "blue": ["royal blue", "ultramarine", "cerulean"],
    "yellow": ["mustard yellow", "banana yellow"],
    "orange": ["pumpkin orange", "carrot orange", "burnt orange"],
    "purple": ["mauve", "grape purple", "deep purple"],
    "pink": ["hot pink", "candy pink", "baby pink"],
    "white": ["chalk white", "milky white", "pearl white"],
    "black": ["pitch black", "coal black", "onyx"],
    "grey": ["ash grey", "steel gray", "pewter"],
}
# synonyms and hyponyms that clearly are the kind; kinds without one (triangle, star, sun, moon, cloud,
# key, balloon, apple, bell, crown, leaf) are named by their own name
KINDS = {
    "circle": ["ball", "spot"],
    "square": ["block"],
    "ring": ["hollow circle"],
    "heart": ["valentine"],
    "house": ["cabin", "bungalow"],
    "tree": ["elm", "birch"],
    "car": ["sedan", "hatchback"],
    "boat": ["yacht", "sailing boat"],
    "fish": ["guppy", "trout"],
    "flower": ["blossom", "poppy"],
    "mountain": ["peak"],
    "cat": ["tabby", "tomcat"],
    "dog": ["pooch", "terrier"],
    "bird": ["robin", "finch"],
    "cup": ["coffee cup"],
    "umbrella": ["brolly"],
    "rocket": ["rocketship"],
    "mushroom": ["toadstool"],
    "arrow": ["pointer"],
}
SIZES = {"small": ["miniature", "smallish", "wee", "pint-sized"], "large": ["massive", "oversized", "jumbo"]}
POSITIONS = {
    "top left": ["in the upper left-hand corner", "high up on the left"],
    "top": ["high up in the middle", "centred at the top"],
    "top right": ["in the upper right-hand corner", "high up on the right"],
    "left": ["on the far left, halfway down", "midway down the left side"],
    "centre": ["in the very middle", "centred in the picture", "at the midpoint"],
    "right": ["on the far right, halfway down", "midway down the right side"],
    "bottom left": ["in the lower left-hand corner", "low down on the left"],
    "bottom": ["low down in the middle", "centred at the bottom"],
    "bottom right": ["in the lower right-hand corner", "low down on the right"],
}
# background frames: {c} is the background's colour word. BG_TAIL follow the things, BG_HEAD come first.
BG_TAIL = ["on solid {c}", "with everything else {c}", "with {c} for the background", "with a backdrop of {c}",
           "the whole background {c}", "background colour: {c}", "background color: {c}", "all on {c}",
           "and the rest of the picture {c}"]
BG_HEAD = ["background colour: {c}", "background color: {c}", "the whole background is {c}", "{c} for the background",
           "solid {c} behind everything", "the backdrop is {c}"]
# the phrase of each frame that marks it (tests check that every frame has one)
BG_MARKERS = ["solid", "behind everything", "everything else", "for the background", "a backdrop of",
              "the whole background", "background colour:", "background color:", "all on", "the rest of the picture",
              "the backdrop is"]
# whole-prompt templates: {bg} from BG_TAIL where it follows {body}, from BG_HEAD where it leads
TAIL_TEMPLATES = ["can you draw {body}, {bg}?", "i need {body}, {bg}", "would you make me {body}, {bg}?",
                  "looking for {body}, {bg}", "picture this: {body}, {bg}", "how about {body}, {bg}?",
                  "i'm after {body}, {bg}", "illustrate {body}, {bg}", "{body}, {bg} - thanks!",
                  "a scene with {body}, {bg}", "{body}, {bg}"]
HEAD_TEMPLATES = ["{bg}; {body}", "{bg}. there's {body}", "{bg}, and on it {body}"]
LIST_TEMPLATE = "{bg}; {body}"  # the things as a semicolon list, each may lead with its position
TEMPLATE_MARKERS = ["can you draw", "i need", "would you make me", "looking for", "picture this", "how about",
                    "i'm after", "illustrate", "thanks", "a scene with", "there's", "and on it"]
# between things; and the forms of one thing
CONNECTIVES = [" as well as ", " together with ", " along with ", ", and also ", ", then "]
THING_MARKERS = ["that's", "painted", "as well as", "together with", "along with", "also", "then"]

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


def uses_heldout2(text: str) -> list[str]:
    """The held-out-2 phrases that ``text`` contains (empty for every training prompt)."""
    return _find(text)


def _colour(rng: random.Random, c: str) -> str:
    return c if rng.random() < 0.3 else rng.choice(COLOURS[c])


def _noun(rng: random.Random, kind: str) -> str:
    return rng.choice(KINDS[kind]) if kind in KINDS and rng.random() < 0.7 else kind


def _thing(rng: random.Random, t: Thing, front: bool, said: dict[tuple[str, str], str]) -> str:
    """One thing; ``said`` keeps one word per colour and per kind within a prompt, as people do."""
    if ("colour", t.colour) not in said:
        said["colour", t.colour] = _colour(rng, t.colour)
    if ("kind", t.kind) not in said:
        said["kind", t.kind] = _noun(rng, t.kind)
    col, noun = said["colour", t.colour], said["kind", t.kind]
    size, pos = rng.choice(SIZES[t.size]), rng.choice(POSITIONS[t.pos])
    u = rng.random()
    if front and u < 0.25:
        return f"{pos}, a {size} {col} {noun}"
    if u < 0.55:
        return f"a {size} {col} {noun} {pos}"
    if u < 0.8:
        return f"a {size} {noun} that's {col}, {pos}"
    return f"a {size} {noun}, painted {col}, {pos}"


def _noise(rng: random.Random, text: str) -> str:
    """Capitalisation and end punctuation as people type them."""
    if rng.random() < 0.4:
        text = re.sub(r"\bi\b", "I", text)
        text = text[:1].upper() + text[1:]
    if text[-1] not in "?!":
        u = rng.random()
        text += "." if u < 0.2 else ("!" if u < 0.3 else "")
    return text


def describe(scene: Scene2, rng: random.Random) -> str:
    """A held-out-2 phrasing of a scene with no setting: background colour and every thing's colour, kind,
    size and position stated; sizes, positions, frames and most colour words are held out."""
    things, said = scene.things, {("colour", scene.background): _colour(rng, scene.background)}
    if rng.random() < 0.2:  # a semicolon list, the background first
        template, bg = LIST_TEMPLATE, rng.choice(BG_HEAD)
        body = "; ".join(_thing(rng, t, True, said) for t in things)
    else:
        head = rng.random() < 0.25
        template = rng.choice(HEAD_TEMPLATES[1:] if head else TAIL_TEMPLATES)
        bg = rng.choice(BG_HEAD if head else BG_TAIL)
        parts = [_thing(rng, t, i == 0 and template.startswith("{body}"), said) for i, t in enumerate(things)]
        joins = rng.sample(CONNECTIVES, 2)  # two different ones where there are three things
        if len(parts) == 3 and rng.random() < 0.5:
            joins[0] = ", "
        body = parts[0] + "".join(j + p for j, p in zip(joins[:len(parts) - 1], parts[1:], strict=True))
    text = template.format(body=body, bg=bg.format(c=said["colour", scene.background]))
    return _noise(rng, re.sub(r"\ba (?=[aeiou])", "an ", text))


__all__ = ["COLOURS", "COLOUR_OF", "KINDS", "KIND_NAMES", "KIND_OF", "PHRASES", "POSITIONS", "POSITION_OF", "SIZES",
           "SIZE_OF", "describe", "uses_heldout2"]
