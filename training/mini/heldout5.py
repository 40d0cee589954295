"""Held-out phrasing split 5 of imagegate-mini 2: how people describe a picture in FREE PROSE, in ordinary
sentences rather than lists. A development set for the server's prompt reader, written 2026-12-05 by a session
that had not read the reader.

The split is mainly about sentences: "there should be ...", "you can see ...", a thing that "sits", "rests",
"floats", "hangs", "is parked" or "is tucked away" somewhere; the place said first ("in the corner at the top
left sits ..."); a colour said after the kind ("a car which should be red", "whose colour is ...", "..., red all
over"); a size said after it ("a red car that is quite small") or in a sentence of its own with a pronoun ("...
It is on the small side."); things in several sentences joined by "apart from that", "what's more", "one more
thing:", "elsewhere", "meanwhile", "and lastly"; "a picture where ... while ..."; "a <colour> background with
..."; request openers and background sentences ("the rest is ...", "everything sits on ...", "... from edge to
edge"); capitalisation, punctuation and a few common misspellings (``TYPOS``). Positions are said in new words
(``POSITIONS``, every thing its own absolute cell, never a relation); about half of the colour and kind mentions
keep the palette's / kind's own name. Only its test imports this module: no training prompt (20,000+ of each
generator) and no other held-out split uses its phrases (``uses_heldout5``, matched on word boundaries of the
normalised text). Scenes with no setting, things of distinct colours.
"""

from __future__ import annotations

import random
import re

from .heldout import phrase_finder, reverse
from .scenes import POSITIONS as CELLS
from .world2 import KIND_NAMES, SHAPES, Scene2, Thing

# colour words that neither training nor an earlier split uses; _Say keeps the palette word half the time
COLOURS = {
    "red": ["chilli red", "ketchup red"], "green": ["frog green", "lettuce green"],
    "blue": ["lapis blue", "swimming-pool blue"],
    "yellow": ["butter yellow", "egg-yolk yellow"], "orange": ["mandarin orange", "traffic-cone orange"],
    "purple": ["aubergine purple", "damson purple"], "pink": ["fluorescent pink", "barbie pink"],
    "white": ["brilliant white", "arctic white"], "black": ["midnight black", "liquorice black"],
    "grey": ["smoke grey", "stone gray"],
}
# synonyms and hyponyms that clearly are the kind; heart and crown keep their own name
KINDS = {
    "circle": ["circular shape"], "square": ["perfect square"], "triangle": ["three-sided shape"],
    "star": ["pentagram"],
    "ring": ["circle outline", "halo"], "house": ["townhouse", "chalet"], "tree": ["willow", "pine"],
    "sun": ["sunburst", "shining sun"], "moon": ["half moon", "lunar crescent"], "cloud": ["raincloud", "cumulus"],
    "car": ["taxi", "convertible"], "boat": ["tugboat", "rowboat"], "fish": ["haddock", "carp"],
    "flower": ["petunia", "geranium"], "mountain": ["volcano"], "cat": ["siamese", "alley cat"],
    "dog": ["labrador", "poodle"], "bird": ["owl", "seagull"], "cup": ["beaker"], "key": ["door key", "skeleton key"],
    "umbrella": ["golf umbrella", "bumbershoot"], "balloon": ["birthday balloon", "helium balloon"],
    "rocket": ["toy rocket"], "apple": ["pippin"], "bell": ["church bell", "handbell"], "mushroom": ["fungus"],
    "leaf": ["maple leaf", "frond"], "arrow": ["pointing arrow"],
}
# common misspellings of a palette colour, a kind or "background": said now and then for the word itself
TYPOS = {"yellow": ["yelow"], "purple": ["purpel"], "orange": ["ornage"], "triangle": ["traingle"],
         "balloon": ["baloon"], "umbrella": ["umbrela"], "background": ["backround"]}
# the plain "small" / "large" are said 40% of the time; the "on the ... side" ones only after the thing
SIZES = {"small": ["quite small", "fairly small", "pocket-sized", "bite-sized", "on the small side"],
         "large": ["fairly big", "really big", "good-sized", "hefty", "on the big side"]}
PREDICATIVE = {"on the small side", "on the big side"}
POSITIONS = {
    "top left": ["in the corner at the top left", "up at the top on the left"],
    "top": ["up at the top in the middle", "near the top edge"],
    "top right": ["in the corner at the top right", "up at the top on the right"],
    "left": ["near the left edge", "over at the left, halfway up"],
    "centre": ["bang in the middle", "in the middle of the image"],
    "right": ["near the right edge", "over at the right, halfway up"],
    "bottom left": ["in the corner at the bottom left", "down at the bottom on the left"],
    "bottom": ["down at the bottom in the middle", "near the bottom edge"],
    "bottom right": ["in the corner at the bottom right", "down at the bottom on the right"],
}
# how a thing is placed: finite verbs (after the thing, or before it when the place comes first) and participles;
# the floating ones for things that can float or hang (sky things, fish, boats, flat shapes); a kind's own verb
SITS = ["sits", "rests", "is placed", "is positioned", "is drawn", "is shown", "is tucked away"]
FLOATS = ["floats", "hangs"]
PLACED = ["placed", "positioned", "drawn", "shown", "resting", "tucked away"]
FLOATING = ["floating", "hanging"]
FLOATERS = {"sun", "moon", "cloud", "bird", "balloon", "rocket", "star", "fish", "boat", *SHAPES}
OWN_VERB = {"car": "parked", "bird": "flying", "rocket": "flying"}
VERB_MARKERS = ["sits", "rests", "placed", "positioned", "drawn", "shown", "tucked away", "floats", "hangs", "resting",
                "floating", "hanging", *OWN_VERB.values()]
# a colour after the kind ({c}); a thing said to be there; the pronoun of a second sentence
COLOUR_AFTER = [" which should be {c}", " whose colour is {c}", " whose color is {c}", ", {c} all over"]
THERE = ["there is", "there should be", "you can see", "we see"]
PRONOUNS = ["it is", "it's"]
# between the sentences of different things ("and lastly" before the third)
CONNECTIVES = ["apart from that,", "what's more,", "one more thing:", "elsewhere,", "meanwhile,"]
LAST = "and lastly,"
# request openers (a list of things follows), and the openers of a sentence of finite clauses
OPENERS = ["draw me", "could you make", "can i get", "i would like", "imagine", "an image showing"]
QUESTIONS = ("could you make", "can i get")
WHERE = ["a picture where", "an image in which"]
# background sentences: {c} colour word; HEAD ones may lead, TAIL ones (with their separator) follow
BG_HEAD = ["the entire background is {c}", "the background should be {c}", "give it a {c} background",
           "fill the background with {c}"]
BG_TAIL = [". the entire background is {c}", ". the background should be {c}", ", and fill the background with {c}",
           ". everything sits on {c}", ", and the rest is {c}", ", and {c} fills the rest", ", all of it against {c}",
           ". the background is {c} from edge to edge"]
BG_WITH = "a {c} background with"  # the things follow
BG_MARKERS = ["the entire background is", "the background should be", "give it a", "fill the background with",
              "everything sits on", "the rest is", "fills the rest", "all of it against", "from edge to edge",
              "background with"]

PHRASES: tuple[str, ...] = tuple(sorted({
    *(w for ws in COLOURS.values() for w in ws),
    *(w for ws in KINDS.values() for w in ws),
    *(w for ws in TYPOS.values() for w in ws),
    *(w for ws in SIZES.values() for w in ws),
    *(w for ws in POSITIONS.values() for w in ws),
    *VERB_MARKERS, *(re.sub(r"[,\s]*\{c\}[,\s]*", " ", f).strip() for f in COLOUR_AFTER), *THERE[1:], *PRONOUNS,
    *(c.rstrip(",:") for c in CONNECTIVES), LAST.rstrip(","), "while", *OPENERS, *WHERE, *BG_MARKERS,
}))
_find = phrase_finder(PHRASES)

# ground truth, the other way: each held-out word (and misspelling) to the palette colour / kind / size / cell
COLOUR_OF = {**reverse(COLOURS), **{w: c for c, ws in TYPOS.items() if c in COLOURS for w in ws}}
KIND_OF = {**reverse(KINDS), **{w: k for k, ws in TYPOS.items() if k in KIND_NAMES for w in ws}}
SIZE_OF, POSITION_OF = reverse(SIZES), reverse(POSITIONS)


def uses_heldout5(text: str) -> list[str]:
    """The held-out-5 phrases that ``text`` contains (empty for every training prompt)."""
    return _find(text)


def _mid(np: str) -> str:
    """A noun phrase followed by more of its clause: one with a comma in it is closed by another."""
    return np + "," if "," in np else np


class _Say:
    """One word per colour and per kind within a prompt, as people do; sizes vary per mention."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.words: dict[tuple[str, str], str] = {}

    def _pick(self, name: str, synonyms: list[str]) -> str:
        rng = self.rng
        if synonyms and rng.random() < 0.5:
            return rng.choice(synonyms)
        return rng.choice(TYPOS[name]) if name in TYPOS and rng.random() < 0.1 else name

    def colour(self, c: str) -> str:
        return self.words.setdefault(("c", c), self._pick(c, COLOURS[c]))

    def noun(self, k: str) -> str:
        return self.words.setdefault(("k", k), self._pick(k, KINDS.get(k, [])))

    def size(self, s: str, after: bool = False) -> str:
        """A size word; ``after``: said after the thing ("a car that is ...", "it is ..."), where every one fits."""
        return s if self.rng.random() < 0.4 else self.rng.choice([w for w in SIZES[s] if after or w not in PREDICATIVE])

    def place(self, t: Thing) -> str:
        return self.rng.choice(POSITIONS[t.pos])

    def np(self, t: Thing, size: bool = True, colour: bool = True) -> str:
        """The thing without its place; its size or colour left out where a later sentence says it."""
        rng, u = self.rng, self.rng.random()
        if colour and u < 0.25:  # "a big car which should be red", "a car, red all over"
            pre = f"{self.size(t.size)} " if size else ""
            return f"a {pre}{self.noun(t.kind)}" + rng.choice(COLOUR_AFTER).format(c=self.colour(t.colour))
        if size and u < 0.45:  # "a red car that is quite small", "a red car, on the small side"
            pre = f"{self.colour(t.colour)} " if colour else ""
            return f"a {pre}{self.noun(t.kind)}" + rng.choice([" that is ", ", "]) + self.size(t.size, True)
        s, c = f"{self.size(t.size)} " if size else "", f"{self.colour(t.colour)} " if colour else ""
        return f"a {s}{c}{self.noun(t.kind)}"

    def finite(self, t: Thing) -> str:
        """The verb of "<thing> ... <place>": "sits", "is tucked away", "floats", "is parked"."""
        rng = self.rng
        if t.kind in OWN_VERB and rng.random() < 0.5:
            return "is " + OWN_VERB[t.kind]
        return rng.choice(SITS + FLOATS if t.kind in FLOATERS else SITS)

    def participle(self, t: Thing) -> str:
        rng = self.rng
        if t.kind in OWN_VERB and rng.random() < 0.5:
            return OWN_VERB[t.kind]
        return rng.choice(PLACED + FLOATING if t.kind in FLOATERS else PLACED)

    def placed(self, t: Thing, front: bool = True) -> str:
        """The thing and its place, for a list: "a red car parked near ...", "in the corner ..., a red car"."""
        rng, where = self.rng, self.place(t)
        if front and rng.random() < 0.2:
            return f"{where}, {self.np(t)}"
        part = f"{self.participle(t)} " if rng.random() < 0.5 else ""
        return f"{_mid(self.np(t))} {part}{where}"

    def clause(self, t: Thing) -> str:
        """A finite clause: "a red car is parked in the corner ..."."""
        return f"{_mid(self.np(t))} {self.finite(t)} {self.place(t)}"

    def sentence(self, t: Thing) -> str:
        """One or two sentences (no final full stop) that say everything about the thing."""
        rng, u = self.rng, self.rng.random()
        if u < 0.2:  # there should be a red car near ...
            return f"{rng.choice(THERE)} {_mid(self.np(t))} {self.place(t)}"
        if u < 0.4:  # a red car sits near ...
            return self.clause(t)
        if u < 0.55:  # near the left edge sits a red car
            where = self.place(t)
            verbs = ["sits", "rests", *(FLOATS if t.kind in FLOATERS else [])]
            return f"{where}{',' if ',' in where else ''} {rng.choice(verbs)} {self.np(t)}"
        if u < 0.65:  # near the left edge, you can see a red car
            return f"{self.place(t)}, {rng.choice(THERE)} {self.np(t)}"
        if u < 0.77:  # a red car sits near .... it is quite small
            return f"{_mid(self.np(t, size=False))} {self.finite(t)} {self.place(t)}. {rng.choice(PRONOUNS)} " \
                   f"{self.size(t.size, True)}"
        if u < 0.89:  # a small car sits near .... it's red
            return f"{_mid(self.np(t, colour=False))} {self.finite(t)} {self.place(t)}. {rng.choice(PRONOUNS)} " \
                   f"{self.colour(t.colour)}"
        return f"{rng.choice(THERE)} {self.np(t)}. it {self.finite(t)} {self.place(t)}"  # there is ... . it sits ...


def _listed(say: _Say, things: list[Thing], rng: random.Random, lead: bool) -> str:
    """The things one after another in one sentence; ``lead``: something comes before the first."""
    items = [say.placed(t, front=i > 0 or not lead) for i, t in enumerate(things)]
    if len(items) == 1:
        return items[0]
    last = rng.choice([" and ", ", and "])
    return rng.choice([", ", "; "]).join(items[:-1]) + last + items[-1]


def _sentences(say: _Say, things: list[Thing], rng: random.Random) -> str:
    out = []
    for i, t in enumerate(things):
        s = say.sentence(t)
        if i and rng.random() < 0.6:
            last = i == 2 and rng.random() < 0.4
            s = f"{LAST if last else rng.choice(CONNECTIVES)} {s}"
        out.append(s)
    return ". ".join(out)


def _where(say: _Say, things: list[Thing], rng: random.Random) -> str:
    """"a picture where a red car is parked ... while an owl hangs ..."."""
    text = f"{rng.choice(WHERE)} {say.clause(things[0])}"
    for i, t in enumerate(things[1:], 1):
        join = " while " if i == 1 and rng.random() < 0.6 else (", and " if i == len(things) - 1 else ", ")
        text += join + say.clause(t)
    return text


def _noise(rng: random.Random, text: str) -> str:
    """Capitalisation and end punctuation as people type them."""
    if rng.random() < 0.5:
        text = re.sub(r"\bi\b", "I", text)
        text = re.sub(r"(^|[.?!:]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)
    if text[-1] not in "?!.":
        u = rng.random()
        text += "." if u < 0.4 else ("!" if u < 0.5 else "")
    return text


def describe(scene: Scene2, rng: random.Random) -> str:
    """A held-out-5 phrasing of a scene with no setting: background colour and every thing's colour, kind,
    size and position stated, in free prose (one sentence or several)."""
    say, things = _Say(rng), list(scene.things)
    if len(things) > 1 and rng.random() < 0.4:  # in reading order
        things.sort(key=lambda t: (CELLS[t.pos][1], CELLS[t.pos][0]))
    bg, u = say.colour(scene.background), rng.random()
    opener = rng.choice(OPENERS) if u < 0.45 and rng.random() < 0.6 else None
    if u < 0.3:  # draw me a red car parked near ..., and ... . the rest is blue
        body = _listed(say, things, rng, opener is not None)
    elif u < 0.45:  # a blue background with a red car parked near ...
        body, bg = f"{BG_WITH.format(c=bg)} {_listed(say, things, rng, True)}", ""
    elif u < 0.6:  # a picture where a red car is parked ... while ...
        body = _where(say, things, rng)
    else:  # sentences
        body = _sentences(say, things, rng)
    if opener:
        body = f"{opener} {body}"
    end = "?" if opener in QUESTIONS else ("." if u >= 0.6 else "")
    if not bg:
        text = body + end
    elif rng.random() < 0.3:
        text = f"{rng.choice(BG_HEAD).format(c=bg)}{rng.choice(['. ', '; '])}{body}{end}"
    else:
        tail = rng.choice(BG_TAIL).format(c=bg)
        # a question, then a background sentence: "could you make ...? the rest is blue."
        text = body + (f"{end} {tail[2:]}." if end == "?" and tail.startswith(". ") else tail + end)
    if rng.random() < 0.08:
        text = text.replace("background", TYPOS["background"][0], 1)
    return _noise(rng, re.sub(r"\ba (?=[aeiou])", "an ", text))


__all__ = ["COLOURS", "COLOUR_OF", "KINDS", "KIND_NAMES", "KIND_OF", "PHRASES", "POSITIONS", "POSITION_OF", "SIZES",
           "SIZE_OF", "TYPOS", "describe", "uses_heldout5"]
