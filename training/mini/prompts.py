"""Free-English prompt grammar for imagegate-mini scenes.

``describe(scene, rng)`` turns a scene into one of many English descriptions
(synonyms, optional attributes, varied word order, absolute positions or
relations between two objects) and returns the *claims* the text makes, so
the evaluator knows what to check.

Train / held-out split: a prompt is held out iff the SHA-1 of its normalised
text falls in bucket 0 of ``HELDOUT_MOD``.  Training rejects such prompts, so
every held-out prompt is guaranteed never to have been seen verbatim.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field

from .scenes import POSITIONS, Scene, relation_layout, sample_scene, sample_training_scene

HELDOUT_MOD = 10

COLOUR_WORDS = {
    "red": ["red", "red", "red", "crimson", "scarlet"],
    "green": ["green", "green", "green", "emerald"],
    "blue": ["blue", "blue", "blue", "azure"],
    "yellow": ["yellow", "yellow", "yellow", "golden"],
    "orange": ["orange"],
    "purple": ["purple", "purple", "purple", "violet"],
    "pink": ["pink"],
    "white": ["white"],
    "black": ["black"],
    "grey": ["grey", "grey", "gray"],
}
SHAPE_WORDS = {
    "circle": ["circle", "circle", "circle", "disc", "dot"],
    "square": ["square", "square", "square", "box"],
    "triangle": ["triangle"],
    "star": ["star"],
    "ring": ["ring", "ring", "ring", "donut", "hoop"],
    "heart": ["heart"],
}
SIZE_WORDS = {
    "small": ["small", "small", "little", "tiny"],
    "large": ["large", "large", "big", "huge"],
}
POS_WORDS = {
    "top left": ["in the top left corner", "in the top left", "at the top left", "in the upper left corner",
                 "in the top-left corner"],
    "top": ["at the top", "at the top centre", "near the top", "in the upper middle"],
    "top right": ["in the top right corner", "in the top right", "at the top right", "in the upper right corner",
                  "in the top-right corner"],
    "left": ["on the left", "at the left", "on the left side", "in the middle left"],
    "centre": ["in the centre", "in the center", "in the middle", "at the centre"],
    "right": ["on the right", "at the right", "on the right side", "in the middle right"],
    "bottom left": ["in the bottom left corner", "in the bottom left", "at the bottom left",
                    "in the lower left corner", "in the bottom-left corner"],
    "bottom": ["at the bottom", "at the bottom centre", "near the bottom", "in the lower middle"],
    "bottom right": ["in the bottom right corner", "in the bottom right", "at the bottom right",
                     "in the lower right corner", "in the bottom-right corner"],
}
REL_WORDS = {
    "left of": ["to the left of", "left of", "on the left of"],
    "right of": ["to the right of", "right of", "on the right of"],
    "above": ["above", "over"],
    "below": ["below", "under", "beneath"],
}
BG_TEMPLATES = ["on a {c} background", "on a {c} background", "against a {c} background",
                "with a {c} background", "on a plain {c} background", "over a {c} backdrop", "on {c}"]
PREFIXES = ["a picture of ", "an image of ", "a drawing of ", "a simple illustration of ", "a flat icon of "]


@dataclass
class ObjClaim:
    colour: bool = True
    shape: bool = True
    size: bool = True
    position: bool = True


@dataclass
class Claims:
    background: bool = True
    objects: list[ObjClaim] = field(default_factory=list)
    relation: tuple[int, str, int] | None = None  # (a, "left of", b)


def normalise(text: str) -> str:
    return " ".join(text.lower().replace(",", " , ").split())


def is_heldout(text: str) -> bool:
    h = int(hashlib.sha1(normalise(text).encode()).hexdigest()[:8], 16)
    return h % HELDOUT_MOD == 0


def _fix_articles(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip().replace(" ,", ",")
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def _noun_phrase(rng: random.Random, o, c: ObjClaim) -> str:
    col = rng.choice(COLOUR_WORDS[o.colour]) if c.colour else ""
    shp = rng.choice(SHAPE_WORDS[o.shape]) if c.shape else rng.choice(["shape", "object", "thing"])
    siz = rng.choice(SIZE_WORDS[o.size]) if c.size else ""
    art = rng.choice(["a", "a", "a", "a", "one"])
    v = rng.random()
    if v < 0.6 or not (col or siz):
        return f"{art} {siz} {col} {shp}"
    if v < 0.7 and col and siz:
        return f"{art} {col} {shp}, {siz}"
    if v < 0.8 and col:
        return f"{art} {siz} {shp} in {col}"
    if v < 0.9 and col:
        return f"{art} {siz} {shp} that is {col}"
    if siz and col:
        return f"{art} {shp}, {siz} and {col}"
    return f"{art} {siz} {col} {shp}"


def _clause(rng: random.Random, o, c: ObjClaim, allow_front: bool = True) -> str:
    np_ = _noun_phrase(rng, o, c)
    if not c.position:
        return np_
    pp = rng.choice(POS_WORDS[o.pos])
    if allow_front and rng.random() < 0.2:
        return f"{pp}, {np_}"
    return f"{np_} {pp}"


def relations_holding(scene: Scene, a: int, b: int) -> list[str]:
    ca, ra = POSITIONS[scene.objects[a].pos]
    cb, rb = POSITIONS[scene.objects[b].pos]
    rels = []
    if ca < cb:
        rels.append("left of")
    if ca > cb:
        rels.append("right of")
    if ra < rb:
        rels.append("above")
    if ra > rb:
        rels.append("below")
    return rels


def describe(scene: Scene, rng: random.Random, full: bool = False, form: str | None = None) -> tuple[str, Claims]:
    """Return (prompt, claims).  ``full`` states every attribute (evaluation)."""
    n = len(scene.objects)
    if full:
        claims = Claims(background=True, objects=[ObjClaim() for _ in range(n)])
    else:
        # Positions are left unsaid only where the layout says them anyway: a single object in the
        # centre, and two objects in a relation layout (described by their relation). An open
        # position has many right answers, and the model learns to draw their average.
        claims = Claims(
            background=rng.random() < 0.75,
            objects=[ObjClaim(colour=rng.random() < 0.93, shape=rng.random() < 0.95, size=rng.random() < 0.55,
                              position=n > 1 or o.pos != "centre" or rng.random() < 0.5)
                     for o in scene.objects],
        )
    if n == 2 and form is None:
        form = "relation" if relation_layout(scene) and rng.random() < 0.8 else "absolute"
    body: str
    if n == 2 and form == "relation":
        a, b = rng.sample([0, 1], 2)
        rel = rng.choice(relations_holding(scene, a, b))
        for oc in claims.objects:
            oc.position = False
        claims.relation = (a, rel, b)
        body = (f"{_noun_phrase(rng, scene.objects[a], claims.objects[a])} {rng.choice(REL_WORDS[rel])} "
                f"{_noun_phrase(rng, scene.objects[b], claims.objects[b])}")
    else:
        order = list(range(n))
        if rng.random() < 0.3:
            rng.shuffle(order)
        parts = [_clause(rng, scene.objects[i], claims.objects[i], allow_front=(k == 0)) for k, i in enumerate(order)]
        if n == 1:
            body = parts[0]
            if claims.objects[0].position and rng.random() < 0.1:
                body = "there is " + body
        elif n == 2:
            body = parts[0] + rng.choice([" and ", ", ", " and ", " with "]) + parts[1]
        else:
            body = parts[0] + ", " + parts[1] + rng.choice([" and ", ", "]) + parts[2]
    if not body.startswith(("there", "in ", "at ", "on ", "near ")) and rng.random() < 0.15:
        body = rng.choice(PREFIXES) + body
    if claims.background:
        bgc = rng.choice(COLOUR_WORDS[scene.background])
        bg = rng.choice(BG_TEMPLATES).format(c=bgc)
        u = rng.random()
        if u < 0.6:
            text = f"{body} {bg}"
        elif u < 0.85:
            text = f"{body}, {bg}"
        else:
            text = f"{bg}, {body}"
    else:
        text = body
    return _fix_articles(text), claims


def train_example(scene: Scene, rng: random.Random) -> tuple[str, Claims | None]:
    """A training prompt for ``scene`` that is never in the held-out bucket, with its claims."""
    for _ in range(50):
        text, claims = describe(scene, rng)
        if not is_heldout(text):
            return text, claims
    return "", None  # (practically unreachable) falls back to the unconditional prompt


def train_prompt(scene: Scene, rng: random.Random) -> str:
    """A training prompt for ``scene`` that is never in the held-out bucket."""
    return train_example(scene, rng)[0]


def heldout_examples(seed: int, n: int, mix: tuple[float, float, float] = (0.5, 0.4, 0.1)):
    """Deterministic list of (scene, prompt, claims) with held-out prompts only.

    ``mix`` = fractions of 1-, 2- and 3-object scenes.  Two-object prompts
    alternate between absolute positions and a relation.
    """
    rng = random.Random(f"heldout-{seed}")
    counts = [round(n * mix[0]), round(n * mix[1])]
    counts.append(n - counts[0] - counts[1])
    out = []
    for n_obj, cnt in zip((1, 2, 3), counts, strict=True):
        for k in range(cnt):
            form = ("relation" if k % 2 else "absolute") if n_obj == 2 else None
            while True:
                scene = sample_scene(rng, n_obj)
                if form == "relation" and not relations_holding(scene, 0, 1):
                    continue
                text, claims = None, None
                for _ in range(200):
                    t, c = describe(scene, rng, full=True, form=form)
                    if is_heldout(t):
                        text, claims = t, c
                        break
                if text is not None:
                    break
            out.append((scene, text, claims))
    return out


def corpus(seed: int = 0, n: int = 20000) -> list[str]:
    """Prompt corpus used to build the tokenizer (training prompts only)."""
    rng = random.Random(f"corpus-{seed}")
    return [train_prompt(sample_training_scene(rng), rng) for _ in range(n)]
