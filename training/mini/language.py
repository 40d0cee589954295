"""The training language of imagegate-mini 2: what people actually type, not one grammar.

``describe2(scene, rng)`` gives one of many English descriptions of a ``world2.Scene2`` and the
claims it makes (what the checker may judge): free word order, with or without articles and
prepositions, commas / fragments / lists ("red circle; blue background"), background phrasings
(backdrop, background, on, over, against, in front of: never a second object), British and
American spellings, capitalisation and punctuation noise, colour synonyms mapped to the drawn
colours, counts in words and digits ("two red stars" is two things), relations, and the settings
(ground, sea, night sky). ``edit_instruction(scene, rng)`` phrases the scene as the result of an
edit (add, put ... in the ..., replace ... with ..., remove ..., make the background ..., change
the ... to ...): such a prompt states only the change, which is what OpenAI-style edit prompts do.

The held-out phrasings (``heldout.py``) are never produced here; tests/mini checks 20,000+ prompts.
Model 1's grammar (``prompts.py``) is unchanged.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from .prompts import is_heldout
from .scenes import COLOUR_NAMES, POSITIONS
from .world2 import KIND_NAMES, SHAPES, Scene2, Thing, home_cell

COLOUR_WORDS = {
    "red": ["red", "red", "red", "crimson", "scarlet"],
    "green": ["green", "green", "green", "emerald", "lime"],
    "blue": ["blue", "blue", "blue", "azure", "navy"],
    "yellow": ["yellow", "yellow", "yellow", "golden", "gold"],
    "orange": ["orange", "orange", "amber"],
    "purple": ["purple", "purple", "violet"],
    "pink": ["pink", "pink", "magenta"],
    "white": ["white"],
    "black": ["black"],
    "grey": ["grey", "gray"],
}
# singular, plural
KIND_WORDS: dict[str, list[tuple[str, str]]] = {
    "circle": [("circle", "circles"), ("circle", "circles"), ("disc", "discs"), ("disk", "disks"), ("dot", "dots")],
    "square": [("square", "squares"), ("square", "squares"), ("box", "boxes")],
    "triangle": [("triangle", "triangles")],
    "star": [("star", "stars")],
    "ring": [("ring", "rings"), ("ring", "rings"), ("donut", "donuts"), ("doughnut", "doughnuts"), ("hoop", "hoops")],
    "heart": [("heart", "hearts")],
    "house": [("house", "houses"), ("house", "houses"), ("home", "homes")],
    "tree": [("tree", "trees")],
    "sun": [("sun", "suns")],
    "moon": [("moon", "moons"), ("moon", "moons"), ("crescent moon", "crescent moons")],
    "cloud": [("cloud", "clouds")],
    "car": [("car", "cars")],
    "boat": [("boat", "boats"), ("boat", "boats"), ("ship", "ships")],
    "fish": [("fish", "fish")],
    "flower": [("flower", "flowers"), ("flower", "flowers"), ("daisy", "daisies")],
    "mountain": [("mountain", "mountains")],
    "cat": [("cat", "cats"), ("cat", "cats"), ("kitten", "kittens")],
    "dog": [("dog", "dogs"), ("dog", "dogs"), ("puppy", "puppies")],
    "bird": [("bird", "birds")],
    "cup": [("cup", "cups"), ("cup", "cups"), ("mug", "mugs")],
    "key": [("key", "keys")],
    "umbrella": [("umbrella", "umbrellas")],
    "balloon": [("balloon", "balloons")],
    "rocket": [("rocket", "rockets"), ("rocket", "rockets"), ("spaceship", "spaceships")],
    "apple": [("apple", "apples")],
    "bell": [("bell", "bells")],
    "mushroom": [("mushroom", "mushrooms")],
    "crown": [("crown", "crowns")],
    "leaf": [("leaf", "leaves")],
    "arrow": [("arrow", "arrows")],
}
SIZE_WORDS = {"small": ["small", "small", "little", "tiny"], "large": ["large", "large", "big", "huge"]}
COUNT_WORDS = {1: ["a", "one", "1"], 2: ["two", "two", "2"], 3: ["three", "three", "3"]}
_CENTRE = ["centre", "center"]  # British and American
POS_WORDS = {
    "top left": ["in the top left corner", "in the top left", "top left", "at the top left", "in the upper left corner",
                 "in the top-left corner", "upper left"],
    "top": ["at the top", "at the top {centre}", "near the top", "top {centre}", "in the upper middle"],
    "top right": ["in the top right corner", "in the top right", "top right", "at the top right",
                  "in the upper right corner", "in the top-right corner", "upper right"],
    "left": ["on the left", "at the left", "on the left side", "left", "in the middle left"],
    "centre": ["in the {centre}", "in the middle", "at the {centre}", "{centre}", "in the {centre} of the picture"],
    "right": ["on the right", "at the right", "on the right side", "right", "in the middle right"],
    "bottom left": ["in the bottom left corner", "in the bottom left", "bottom left", "at the bottom left",
                    "in the lower left corner", "in the bottom-left corner", "lower left"],
    "bottom": ["at the bottom", "at the bottom {centre}", "near the bottom", "bottom {centre}", "in the lower middle"],
    "bottom right": ["in the bottom right corner", "in the bottom right", "bottom right", "at the bottom right",
                     "in the lower right corner", "in the bottom-right corner", "lower right"],
}
REL_WORDS = {
    "left of": ["to the left of", "left of", "on the left of", "beside and left of"],
    "right of": ["to the right of", "right of", "on the right of"],
    "above": ["above", "over", "on top of"],
    "below": ["below", "under", "beneath", "underneath"],
}
# Backdrop phrasings: each one names the background colour, never a second object ("in front of a
# plain blue backdrop" drew two things with model 1).
BG_WORDS = ["on a {c} background", "on a {c} background", "{c} background", "background {c}", "background: {c}",
            "against a {c} backdrop", "against {c}", "over {c}", "on {c}", "in front of a plain {c} backdrop",
            "in front of a {c} background", "{c} backdrop", "with a {c} background", "on a plain {c} {colour}",
            "on a {c}-coloured background", "{c} bg"]
SETTING_WORDS = {
    "ground": ["on the ground", "standing on {b} ground", "{s} sky with {b} ground", "on {b} ground under a {s} sky",
               "a {s} sky above {b} ground", "landscape with {b} ground and {s} sky"],
    "sea": ["on the sea", "on a blue sea", "at sea", "on the ocean", "{s} sky over a blue sea",
            "a seascape with a {s} sky", "sea below a {s} sky"],
    "night": ["at night", "in the night sky", "night sky", "under a starry sky", "on a starry night"],
}
PREFIXES = ["a picture of", "an image of", "a drawing of", "a simple illustration of", "a flat icon of", "draw",
            "make", "create", "paint", "generate", "icon:", "picture:", "i want", "give me"]
JOINERS = [" and ", ", ", "; ", " with ", " & ", " / ", ". ", ", and "]


Relation = tuple[int, str, int]  # (a, "left of", b): a relation a prompt states between things a and b


@dataclass
class ThingClaim:
    """What a prompt states about one thing, or about a counted group of them (``idx``)."""

    idx: list[int]
    kind: bool = True
    colour: bool = True
    size: bool = True
    position: bool = True


@dataclass
class Claims2:
    background: bool = True
    setting: bool = False
    things: list[ThingClaim] = field(default_factory=list)
    relation: Relation | None = None  # (a, "left of", b): scene thing indices
    absent: list[tuple[str, str]] = field(default_factory=list)  # (colour, kind) said to be gone
    edit: str | None = None  # the edit verb, for an edit instruction


def groups(scene: Scene2) -> list[list[int]]:
    """Things that are one counted group: same kind and colour."""
    out: dict[tuple[str, str], list[int]] = {}
    for i, t in enumerate(scene.things):
        out.setdefault((t.kind, t.colour), []).append(i)
    return list(out.values())


def relation_of(scene: Scene2, a: int, b: int) -> str | None:
    """The relation between two things in a relation layout (outer cells of the middle or of the bottom row,
    or of the centre column), else None: as in model 1, a relation comes only with its own layout. Training
    lays a relation out in the bottom row only for things on the ground, but any scene may put two things
    there, and the words do not say which row (``targets.multi_checks`` judges them so)."""
    return relation_of_cells(scene.things[a].pos, scene.things[b].pos)


def relation_of_cells(pa: str, pb: str) -> str | None:
    """``relation_of`` for a thing in cell ``pa`` and one in cell ``pb``."""
    ca, ra = POSITIONS[pa]
    cb, rb = POSITIONS[pb]
    if ra == rb and ra in (1, 2) and {ca, cb} == {0, 2}:
        return "left of" if ca < cb else "right of"
    if ca == cb == 1 and {ra, rb} == {0, 2}:
        return "above" if ra < rb else "below"
    return None


def _word(rng: random.Random, words: list[str]) -> str:
    w = rng.choice(words).replace("{centre}", rng.choice(_CENTRE))
    return w.replace("{colour}", rng.choice(["colour", "color"]))


def colour_word(rng: random.Random, c: str) -> str:
    return rng.choice(COLOUR_WORDS[c])


def kind_word(rng: random.Random, kind: str, n: int = 1) -> str:
    s, p = rng.choice(KIND_WORDS[kind])
    return s if n == 1 else p


def noun_phrase(rng: random.Random, t: Thing, c: ThingClaim, article: bool = True) -> str:
    n = len(c.idx)
    col = colour_word(rng, t.colour) if c.colour else ""
    noun = kind_word(rng, t.kind, n) if c.kind else rng.choice(["shape", "thing", "object"] if n == 1 else
                                                               ["shapes", "things", "objects"])
    siz = rng.choice(SIZE_WORDS[t.size]) if c.size else ""
    art = rng.choice(COUNT_WORDS[n]) if (article or n > 1) else ""
    v = rng.random()
    if v < 0.7 or not col:
        return f"{art} {siz} {col} {noun}"
    if v < 0.8:
        return f"{art} {siz} {noun} in {col}"
    if v < 0.9:
        return f"{art} {siz} {noun}, {col}"
    return f"{art} {col} {noun}" + (f", {siz}" if siz else "")


def _clause(rng: random.Random, scene: Scene2, c: ThingClaim, article: bool) -> str:
    t = scene.things[c.idx[0]]
    np_ = noun_phrase(rng, t, c, article)
    if not c.position or len(c.idx) > 1:
        return np_
    pp = _word(rng, POS_WORDS[t.pos])
    return f"{pp}: {np_}" if rng.random() < 0.15 else f"{np_} {pp}"


def backdrop(rng: random.Random, scene: Scene2, claims: Claims2) -> str:
    if claims.setting and scene.setting != "plain":
        return _word(rng, SETTING_WORDS[scene.setting]).format(
            s=colour_word(rng, scene.background), b=colour_word(rng, scene.band) if scene.band else "")
    return _word(rng, BG_WORDS).format(c=colour_word(rng, scene.background))


def fix(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([,;:.!?])", r"\1", text)
    text = re.sub(r"\b([aA]) (?=[aeiouAEIOU])", r"\1n ", text)
    return text


def noise(rng: random.Random, text: str) -> str:
    """Capitalisation and punctuation as people type them (the tokenizer lower-cases anyway)."""
    u = rng.random()
    if u < 0.25:
        text = text[:1].upper() + text[1:]
    elif u < 0.3:
        text = text.upper()
    elif u < 0.35:
        text = text.title()
    u = rng.random()
    if u < 0.15:
        text += "."
    elif u < 0.2:
        text += "!"
    elif u < 0.25:
        text = text.replace(",", "")
    return text


def _claims(rng: random.Random, scene: Scene2, full: bool) -> Claims2:
    n_things = len(scene.things)
    gs = groups(scene)
    if full:
        return Claims2(background=True, setting=scene.setting != "plain", things=[ThingClaim(g) for g in gs])
    things = []
    for g in gs:
        t = scene.things[g[0]]
        # positions left open only where the layout fixes them (model 1's lesson): one thing in the centre
        open_pos = n_things == 1 and t.pos == home_cell(t.kind, scene.setting) and rng.random() < 0.5
        things.append(ThingClaim(g, kind=rng.random() < 0.95, colour=rng.random() < 0.9, size=rng.random() < 0.5,
                                 position=not open_pos))
    return Claims2(background=rng.random() < 0.75, setting=scene.setting != "plain" and rng.random() < 0.8,
                   things=things)


def describe2(scene: Scene2, rng: random.Random, full: bool = False) -> tuple[str, Claims2]:
    """A prompt for ``scene`` and the claims it makes. ``full``: every attribute stated (evaluation)."""
    claims = _claims(rng, scene, full)
    article = rng.random() < 0.7
    if len(claims.things) == 2 and len(scene.things) == 2 and (rel := relation_of(scene, 0, 1)) is not None \
            and rng.random() < 0.8:
        a, b = (0, 1) if rng.random() < 0.5 else (1, 0)
        rel = relation_of(scene, a, b)
        assert rel is not None
        for c in claims.things:
            c.position = False
        claims.relation = (a, rel, b)
        body = (f"{noun_phrase(rng, scene.things[a], claims.things[a], article)} {_word(rng, REL_WORDS[rel])} "
                f"{noun_phrase(rng, scene.things[b], claims.things[b], True)}")
    else:
        order = list(range(len(claims.things)))
        if rng.random() < 0.4:
            rng.shuffle(order)
        parts = [_clause(rng, scene, claims.things[i], article) for i in order]
        joiner = rng.choice(JOINERS)
        body = joiner.join(parts) if rng.random() < 0.5 else joiner.join(parts[:-1]) + \
            (rng.choice([" and ", ", "]) if len(parts) > 1 else "") + parts[-1]
    if rng.random() < 0.2:
        body = f"{rng.choice(PREFIXES)} {body}"
    if claims.background or claims.setting:
        bg = backdrop(rng, scene, claims)
        u = rng.random()
        if u < 0.45:
            text = f"{body} {bg}"
        elif u < 0.7:
            text = f"{body}{rng.choice([', ', '; ', '. '])}{bg}"
        else:
            text = f"{bg}{rng.choice([', ', '; ', ': ', '. '])}{body}"
    else:
        text = body
    return noise(rng, fix(text)), claims


EDITS = ("add", "put", "replace", "remove", "background", "change")


def edit_instruction(scene: Scene2, rng: random.Random, verb: str | None = None) -> tuple[str, Claims2]:
    """The scene phrased as the result of an edit that states only the change. The scene is the
    picture after the edit; what was there before is invented where the verb needs it (the thing
    replaced or removed), and claimed absent."""
    verb = verb or rng.choice(EDITS)
    i = rng.randrange(len(scene.things))
    t = scene.things[i]
    one = ThingClaim([i], size=rng.random() < 0.3, position=False)
    np_ = noun_phrase(rng, t, one)
    present = {(x.colour, x.kind) for x in scene.things}
    other_kind = rng.choice([k for k in KIND_NAMES if k != t.kind and (t.colour, k) not in present])
    other_colour = rng.choice([c for c in COLOUR_NAMES if c not in {t.colour, scene.background, scene.band}
                               and (c, t.kind) not in present and (c, other_kind) not in present])
    claims = Claims2(background=False, things=[one], edit=verb)
    if verb == "add":
        one.position = rng.random() < 0.5
        text = f"add {np_}" + (f" {_word(rng, POS_WORDS[t.pos])}" if one.position else "")
    elif verb == "put":
        one.position = True
        text = f"{rng.choice(['put', 'place'])} {np_} {_word(rng, POS_WORDS[t.pos])}"
    elif verb == "replace":
        old = f"the {colour_word(rng, other_colour)} {kind_word(rng, other_kind)}"
        claims.absent = [(other_colour, other_kind)]
        text = rng.choice([f"replace {old} with {np_}", f"swap {old} for {np_}"])
    elif verb == "remove":
        old = f"the {colour_word(rng, other_colour)} {kind_word(rng, other_kind)}"
        claims.things, claims.absent = [], [(other_colour, other_kind)]
        text = rng.choice([f"remove {old}", f"delete {old}", f"take away {old}", f"get rid of {old}"])
    elif verb == "background":
        claims.things, claims.background = [], True
        c = colour_word(rng, scene.background)
        text = rng.choice([f"make the background {c}", f"change the background to {c}",
                           f"turn the background {c}", f"{c} background instead"])
    else:  # change: the thing's colour (or its kind) is what changed
        one.kind = True
        if rng.random() < 0.6:
            claims.absent = [(other_colour, t.kind)]
            text = rng.choice([f"change the {kind_word(rng, t.kind)} to {colour_word(rng, t.colour)}",
                               f"make the {kind_word(rng, t.kind)} {colour_word(rng, t.colour)}",
                               f"change the {rng.choice(['colour', 'color'])} of the {kind_word(rng, t.kind)} to "
                               f"{colour_word(rng, t.colour)}"])
        else:
            claims.absent = [(t.colour, other_kind)]
            text = f"change the {colour_word(rng, t.colour)} {kind_word(rng, other_kind)} to {np_}"
    return noise(rng, fix(text)), claims


def train_example2(scene: Scene2, rng: random.Random, p_edit: float = 0.15) -> tuple[str, Claims2 | None]:
    """A training prompt for ``scene`` (never in model 1's hash-held-out bucket, which the in-grammar
    evaluation draws from), with its claims; ``p_edit`` of them are edit instructions."""
    for _ in range(50):
        text, claims = edit_instruction(scene, rng) if rng.random() < p_edit else describe2(scene, rng)
        if not is_heldout(text):
            return text, claims
    return "", None


def corpus2(seed: int = 0, n: int = 20000) -> list[str]:
    """Training prompts for the tokenizer of model 2."""
    from .world2 import sample_training_scene2

    rng = random.Random(f"corpus2-{seed}")
    return [train_example2(sample_training_scene2(rng), rng)[0] for _ in range(n)]


__all__ = ["SHAPES", "Claims2", "ThingClaim", "corpus2", "describe2", "edit_instruction", "train_example2"]
