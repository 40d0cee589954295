"""The held-out phrasing split of imagegate-mini 2, written before any model 2 training ran.

Everything here is words and sentence frames that the training generator (``language.py``) never
produces: templates, connectives, request forms, background nouns and colour / shape / object
synonyms. The evaluation's "held-out phrasings" line describes scenes with these only, so it
measures whether the model understood the language or memorised the generator's frames.

Kept apart on purpose: ``language.py`` does not import this module, and ``tests/mini`` samples
20,000+ training prompts and checks that none of them contains a held-out phrase (``uses_heldout``).
A phrase is matched on word boundaries of the normalised (lower-case, single-spaced) text.

Each synonym maps to the palette colour / kind it is drawn as, so the checker can judge it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable
from typing import Any

from .world2 import KIND_NAMES, Scene2, Thing

# colour synonyms training never uses (language.COLOUR_WORDS has the training ones)
COLOURS = {
    "red": ["ruby", "cherry red"],
    "green": ["jade", "grass green"],
    "blue": ["cobalt", "sapphire"],
    "yellow": ["lemon", "canary yellow"],
    "orange": ["tangerine"],
    "purple": ["plum", "amethyst"],
    "pink": ["fuchsia", "bubblegum pink"],
    "white": ["snow white", "ivory"],
    "black": ["jet black", "ebony"],
    "grey": ["slate", "silver"],
}
# shape and object synonyms training never uses
KINDS = {
    "circle": ["orb"],
    "square": ["tile"],
    "triangle": ["wedge"],
    "star": ["five pointed star"],
    "ring": ["loop"],
    "heart": ["love heart"],
    "house": ["cottage"],
    "tree": ["oak"],
    "car": ["automobile"],
    "boat": ["sailboat"],
    "cat": ["kitty"],
    "dog": ["hound"],
    "bird": ["sparrow"],
    "cup": ["teacup"],
    "fish": ["goldfish"],
    "rocket": ["spacecraft"],
    "flower": ["tulip"],
    "umbrella": ["parasol"],
}
# sizes
SIZES = {"small": ["teeny", "petite"], "large": ["giant", "enormous"]}
# positions: (column, row) cells, phrased in ways training never uses
POSITIONS = {
    "top left": ["up in the northwest corner", "towards the upper left"],
    "top": ["along the top edge", "up top"],
    "top right": ["up in the northeast corner", "towards the upper right"],
    "left": ["over on the left hand side", "towards the left edge"],
    "centre": ["dead centre", "smack in the middle"],
    "right": ["over on the right hand side", "towards the right edge"],
    "bottom left": ["down in the southwest corner", "towards the lower left"],
    "bottom": ["along the bottom edge", "down low"],
    "bottom right": ["down in the southeast corner", "towards the lower right"],
}
# background frames: {c} is a held-out or training colour word, {body} the object(s)
BACKGROUNDS = ["on a {c} canvas", "set against {c}", "upon a {c} field", "on {c} paper",
               "surrounded by {c}", "with {c} all around it"]
# request forms and whole-sentence templates
TEMPLATES = ["show me {body}, {bg}", "i'd like {body} {bg}", "could you sketch {body} {bg}?",
             "{bg}: {body}", "here we have {body} {bg}", "{body} -- {bg}", "render {body} {bg} please"]
COUNTS = {2: ["a pair of", "a couple of"], 3: ["a trio of", "a handful of three"]}

PHRASES: tuple[str, ...] = tuple(sorted({
    *(w for ws in COLOURS.values() for w in ws),
    *(w for ws in KINDS.values() for w in ws),
    *(w for ws in SIZES.values() for w in ws),
    *(w for ws in POSITIONS.values() for w in ws),
    *(re.sub(r"\s*\{c\}\s*", " ", b).strip() for b in BACKGROUNDS),
    "show me", "i'd like", "could you sketch", "here we have", "render", "please", "--", "plus", "alongside",
    *(w for ws in COUNTS.values() for w in ws),
}))


def phrase_finder(phrases: Iterable[str]) -> Callable[[str], list[str]]:
    """A function giving the ``phrases`` a text contains, matched on word boundaries of the normalised
    (lower-case, single-spaced) text, longest first (each held-out split's ``uses_…``)."""
    longest_first = sorted(phrases, key=len, reverse=True)
    pattern = re.compile("|".join(rf"(?<![a-z]){re.escape(p)}(?![a-z])" for p in longest_first))
    return lambda text: sorted(set(pattern.findall(" ".join(text.lower().split()))))


def found_in(text: str, words: Iterable[str]) -> list[str]:
    """The terms of ``words`` in ``text``, in the order said: longest first, on word boundaries of the
    normalised text ("hollow circle" is a ring, not a circle). How each split's test reads its prompts back."""
    t = " ".join(text.lower().split())
    return re.findall("|".join(rf"(?<![a-z]){re.escape(w)}(?![a-z])" for w in sorted(words, key=len, reverse=True)), t)


def terms_in(text: str, words: dict[str, Any]) -> list[Any]:
    """What the terms of ``words`` in ``text`` stand for, in the order said."""
    return [words[m] for m in found_in(text, words)]


def reverse(table: dict[str, list[str]]) -> dict[str, str]:
    """A split's table the other way: each held-out word to the colour / kind / size / place it stands for."""
    return {w: k for k, ws in table.items() for w in ws}


_find = phrase_finder(PHRASES)


def uses_heldout(text: str) -> list[str]:
    """The held-out phrases that ``text`` contains (empty for every training prompt)."""
    return _find(text)


def _colour(rng: random.Random, c: str, words: bool = True) -> str:
    return rng.choice(COLOURS[c]) if words else c


def _noun(rng: random.Random, kind: str, words: bool = True) -> str:
    return rng.choice(KINDS.get(kind) or [kind]) if words else kind


def _thing(rng: random.Random, t: Thing, words: bool = True) -> str:
    size = rng.choice(SIZES[t.size]) if words else t.size
    return f"a {size} {_colour(rng, t.colour, words)} {_noun(rng, t.kind, words)} {rng.choice(POSITIONS[t.pos])}"


def describe(scene: Scene2, rng: random.Random, words: bool = True) -> str:
    """A held-out phrasing of a scene with no setting: every attribute stated, all in held-out words
    (colour, size, position and background always; the noun where a held-out synonym exists).

    ``words=False`` keeps the held-out frames (templates, background frames, position phrases) but
    names colour, size and kind with the palette's, the sizes' and the kinds' own names, which training
    uses: it separates new sentence frames, which a model can generalise to, from new words, whose
    meaning a model trained only on its generator cannot know (docs/imagegate-mini.md)."""
    body = _thing(rng, scene.things[0], words)
    for t in scene.things[1:]:
        body += rng.choice([" plus ", " alongside "]) + _thing(rng, t, words)
    bg = rng.choice(BACKGROUNDS).format(c=_colour(rng, scene.background, words))
    text = rng.choice(TEMPLATES).format(body=body, bg=bg)
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


__all__ = ["COLOURS", "KINDS", "KIND_NAMES", "PHRASES", "describe", "phrase_finder", "reverse", "uses_heldout"]
