"""The built-in model's prompt reader: a prompt as things (kind, colour, size, place) on a backdrop.

The backdrop is a colour with a backdrop word or preposition ("on blue paper", "background: green",
"set against navy"), or else the one colour no thing takes ("a red circle, blue all around it"). The
rest is split into phrases at commas, "and", "with", "then", line breaks, bullets and "1)" marks ("two
shapes:" says how many the list holds); a phrase with a kind word is a thing, one without lends its
colour, size or place to the thing before it ("a boat, painted red, on the left"), or to the one after.
Places are read word by word ("upper left", "north west", "on the far left, halfway down"); a relation
places two things ("a star left of a circle"), or the second against the first where that one has a
place ("a star top left, a circle below it"). Words it does not know are passed over ("a striped
square" is a square), except a word right after "a" or a colour in a phrase with no kind: that is a
thing the model was not taught ("a yellow orb"), kept as said, and it must have a colour.

``read`` returns None unless the reading is certain: one to three things, at most one kind and one
colour per phrase, places that do not clash, one backdrop, no counts ("two stars") and no setting the
model learnt (sea, ground, night sky). ``imagegate.mini.compose`` serves what it reads. Pure Python.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from .regions import _KNOWN_COLOURS, _colour_words, _words

Read = tuple[str, tuple[tuple[str, tuple[int, int] | None, str | None], ...]]  # backdrop; (words, cell, size)s

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
_BACKDROP_NOUN = r"(?:background|backdrop|bg|canvas|paper|field|wall|surface|backing)"
_BACKDROP_PREP = r"(?:on|over|against|upon|atop|behind|with|in front of|set against|set on|surrounded by|amid|amidst)"
_SHADE = re.compile(r"\b([a-z]+) (" + "|".join(sorted(_KNOWN_COLOURS, key=len, reverse=True)) + r")\b")
_C = "(?P<c>" + "|".join(sorted(_KNOWN_COLOURS, key=len, reverse=True)) + ")"
_BACKDROPS = tuple(re.compile(r.replace("(?P<c>[a-z]+)", _C)) for r in (  # each with the colour as group "c"
    rf"\b(?:{_BACKDROP_PREP}\s+)?(?:(?:an?|the)\s+)?(?:plain\s+|solid\s+|flat\s+)?"
    rf"(?P<c>[a-z]+)(?:\s+colou?red)?\s+{_BACKDROP_NOUN}\b",  # "on a plain green background", "on blue paper"
    rf"\b{_BACKDROP_NOUN}\s*(?:colou?r\s*)?(?:is\s+|of\s+|:\s*)?(?P<c>[a-z]+)\b",  # "background: green"
    # "on green, a red circle", "against green", "surrounded by yellow please" (only filler words after it)
    rf"\b{_BACKDROP_PREP}\s+(?:an?\s+)?(?P<c>[a-z]+)(?P<rest>(?:\s+[a-z]+)*?)\s*(?:[,;:.!?]|$)",
    r"\b(?:on|over|against|upon)\s+(?:an?\s+)?(?:plain\s+)?(?P<c>[a-z]+)\s+colou?r\b",  # "on a plain pink colour"
))
# "over" and "on top of" relate two things only before one ("a star over a circle"); "over on the left" is a place
_RELATION = re.compile(r"\b(?:(?:to|on) the )?(?P<r>left|right) of\b|\bto its (?P<its>left|right)\b|"
                       r"\b(?P<v>above|over(?! (?:on|in|at|to|there|here)\b)|on top of|below|under|beneath|"
                       r"underneath)\b")
_STEP = {"left": (-1, 0), "right": (1, 0), "above": (0, -1), "below": (0, 1)}  # a cell in a relation's direction
# Places, read word by word: a row word and a column word make a corner ("upper left", "north west",
# "towards the lower right"); a centre word fills the axis that is not said ("top middle", "dead centre").
_ROW = {"top": 0, "upper": 0, "up": 0, "north": 0, "high": 0, "bottom": 2, "lower": 2, "down": 2, "south": 2, "low": 2}
_COLUMN = {"left": 0, "west": 0, "right": 2, "east": 2}
_CORNER = {"northwest": (0, 0), "northeast": (2, 0), "southwest": (0, 2), "southeast": (2, 2),
           "topleft": (0, 0), "topright": (2, 0), "bottomleft": (0, 2), "bottomright": (2, 2)}
_CENTRE = frozenset({"centre", "center", "middle", "central", "centred", "centered", "midpoint"})
# Words that name nothing to draw: the training grammars' articles, prepositions and prefixes, what people put
# around a request ("show me", "could you sketch", "I'd like", "please"), the words that say where or how a
# backdrop is ("all around it") and English function words. Any other word the reader does not know is passed
# over ("a striped square" is a square), except as the name of a thing (``_head_noun``).
_FILLER = frozenset({
    "a", "an", "the", "one", "of", "in", "on", "at", "to", "near", "is", "that", "there", "it", "its", "this",
    "side", "corner", "edge", "hand", "half", "part", "area", "position", "place", "region", "quadrant",
    "towards", "toward", "along", "over", "across", "by", "beside", "placed", "positioned", "located", "sitting",
    "sits", "situated", "dead", "smack", "bang", "exactly", "just", "far", "very", "way", "most", "all", "around",
    "surrounded", "everywhere", "behind", "set", "colour", "color", "coloured", "colored", "picture", "image",
    "drawing", "illustration", "icon", "simple", "flat", "plain", "solid", "scene", "frame", "1",
    "draw", "make", "create", "paint", "generate", "sketch", "render", "depict", "illustrate", "produce", "design",
    "show", "give", "want", "like", "need", "would", "could", "can", "will", "please", "kindly", "i", "d", "ll",
    "m", "me", "us", "we", "you", "here", "have", "has", "are", "be", "see", "get", "let", "s", "featuring",
    "showing", "containing", "with", "having", "single", "lone", "crescent", "standing",
    # English function words: they link and point, they name nothing the model could draw
    "for", "from", "into", "onto", "inside", "within", "out", "as", "so", "than", "too", "then", "but", "or", "nor",
    "if", "any", "each", "every", "else", "everything", "rest", "whole", "entire", "other", "others", "remaining",
    "where", "which", "who", "what", "how", "about", "after", "looking", "look", "was", "were", "been", "being",
    "do", "does", "did", "may", "might", "should", "shall", "must", "my", "your", "our", "their", "his", "her",
    "them", "they", "he", "she", "these", "those", "such", "only", "really", "quite", "rather", "somewhat",
    "also", "maybe", "perhaps", "okay", "ok", "thanks", "thank", "hi", "hello", "hey", "now", "today", "up",
    "down", "while", "through", "throughout", "between", "among", "without", "upon", "via", "per",
    "put", "add", "use", "using", "done", "doing", "go", "goes", "going", "holding", "had"})
# Model 2's settings (training/mini/language.py SETTING_WORDS): a prompt naming one is the model's to read whole,
# since a layout draws flat backdrops only
_SETTING = frozenset({"ground", "sea", "ocean", "seascape", "landscape", "night", "sky", "starry"})
_LINKING = frozenset({"against", "upon", "atop", "amid", "amidst", "surrounded", "behind", "above", "below", "under",
                      "beneath", "underneath", "front", "beside", "next", "left", "right", "top", "over", "and", "or",
                      "background", "backdrop", "bg", "canvas", "paper", "field", "wall", "surface", "backing"})
_SPLIT = re.compile(r"\s*(?:[,;:./&+|!?]|\b(?:and|with|plus|also|then|alongside|next to|as well as|along with|"
                    r"together with)\b)\s*")
_POINTED = re.compile(r"\b(?:four|five|six|seven|eight|[4-8])\s+point(?:ed)?\s+(?=stars?\b)")  # "a five-pointed star"
_HALFWAY = re.compile(r"\b(?:half ?way|mid ?way)\s+(?:down|up|across)\b")  # "halfway down the side": the middle
_INTENSE = re.compile(r"\bright\s+(?=(?:in|at|on)\s+the\s+(?:middle|centre|center)\b)")  # "right in the middle"
# the marks of a list: line breaks, bullets, "1)" / "2." before an item ("1) a red star 2) a blue circle")
_LIST_MARK = re.compile(r"\s*[\r\n\u2022\u00b7*]+\s*|(?:^|(?<=\s))(?:-|\(?\d{1,2}[.)])(?=\s)")
# a count of the things listed ("two shapes: a red star and a blue circle"): the list must hold that many
_TALLY = re.compile(r"\b(?P<n>one|two|three|[1-3])\s+(?:shapes|things|objects|items|icons|elements|figures)\b")
_HOLLOW = re.compile(r"\b(?:hollow|open|empty|unfilled|outlined)\s+(?:circle|disc|disk)\b")  # an outline: a ring


def _normalised(prompt: str) -> str:
    text = _words(_LIST_MARK.sub(" ; ", prompt), r"[^a-z0-9,;:./&+!?\- ]+").replace("-", " ")
    text = _HOLLOW.sub("ring", _HALFWAY.sub("middle", _INTENSE.sub("", _POINTED.sub("", text))))
    # a word it does not know right before a colour shades it: "chalk white", "carrot orange"
    text = _SHADE.sub(lambda m: m.group(2) if _is_unknown(m.group(1)) else m.group(), text)
    return re.sub(r"\b([a-z]+)(?: \1\b)+", lambda m: m.group(1) if m.group(1) in _KNOWN_COLOURS else m.group(), text)


def _is_unknown(word: str) -> bool:
    return not (any(word in words for words in (_FILLER, _LINKING, _SINGULAR, _SIZE, _KNOWN_COLOURS, _COUNT, _PLURAL))
                or _place_of([word]) is not None or not word.isalpha())


@functools.lru_cache(maxsize=256)  # n images of one request read the same prompt; only the seed differs
def read(prompt: str) -> Read | None:
    """The backdrop colour and (words, cell or None, size) per thing, with a relation's cells."""
    text = _normalised(prompt)
    spans: dict[tuple[int, int], list[str]] = {}  # where a backdrop is named, and its colour
    for pattern in _BACKDROPS:
        for m in pattern.finditer(text):
            if m.groupdict().get("rest") and not set(m.group("rest").split()) <= _FILLER:
                continue
            if len(c := _colour_words(m.group("c"))) == 1 and not any(a < m.end() and m.start() < b for a, b in spans):
                spans[m.span()] = c
    if len(spans) > 1:
        return None
    background = None
    body = text
    if spans:
        (start, end), (background,) = next(iter(spans.items()))
        body = (text[:start] + " , " + text[end:]).strip(" ,")
    tallies = [{"one": 1, "two": 2, "three": 3}.get(m.group("n")) or int(m.group("n")) for m in _TALLY.finditer(body)]
    body = _TALLY.sub(" , ", body)
    if len(tallies) > 1 or any(w in _PLURAL or w in _COUNT or w in _SETTING for w in body.split()):
        return None
    relation = None
    rel = list(_RELATION.finditer(body))
    backward = False  # "… and a blue circle below it": the thing said second is placed against the first
    if len(rel) == 1:
        r = rel[0]
        relation = r.group("r") or r.group("its") or ("above" if r.group("v") in ("above", "over", "on top of")
                                                      else "below")
        backward = bool(r.group("its")) or bool(re.match(r"\s+it\b", body[r.end():]))
        body = body[:r.start()] + " | " + body[r.end():]
    elif rel:
        return None
    found = _things(body)
    if found is None:
        return None
    things, loose = found
    if background is None and len(loose) == 1:  # "a red circle, blue all around it": the colour left over
        background, loose = loose[0], []
    if background is None or loose or not 1 <= len(things) <= 3 or (relation and len(things) != 2):
        return None
    if tallies and tallies[0] != len(things):
        return None
    if relation is not None:
        subject, anchor = (1, 0) if backward else (0, 1)
        cells = [cell for _, cell, _ in things]
        if cells[subject] is None and (at := cells[anchor]) is not None:  # "a star top left, a circle below it"
            # two cells away where the grid has room, as training's relation scenes space things, else one
            steps = [(at[0] + k * _STEP[relation][0], at[1] + k * _STEP[relation][1]) for k in (2, 1)]
            cells[subject] = next(((c, r) for c, r in steps if 0 <= c <= 2 and 0 <= r <= 2), None)
            if cells[subject] is None:
                return None
        elif all(cell is None for cell in cells):
            cells[subject], cells[anchor] = {"left": ((0, 1), (2, 1)), "right": ((2, 1), (0, 1)),
                                             "above": ((1, 0), (1, 2)), "below": ((1, 2), (1, 0))}[relation]
        things = [(words, cell, size) for (words, _, size), cell in zip(things, cells, strict=True)]
    return background, tuple(things)


def _head_noun(words: list[str]) -> str | None:
    """A thing named by a word the model was not taught: the last of the words it does not know right
    after "a" / "an" / "one" or a colour, past any sizes and colours ("a pint sized valentine", "a red
    dragon"). "the rest of the picture" names none."""
    noun = None
    run = False
    for w in words:
        if w in ("a", "an", "one", "1") or w in _KNOWN_COLOURS or w in _SIZE:
            run = True
        elif run and _is_unknown(w):
            noun = w
        else:
            run = False
    return noun


def _place_of(words: list[str]) -> tuple[int | None, int | None, bool] | bool | None:
    """What the words say of a place: (column or None, row or None, whether a centre word is said);
    None if they say nothing, False if they contradict each other."""
    row: set[int] = set()
    col: set[int] = set()
    centre = False
    for w in words:
        if w in _CORNER:
            col.add(_CORNER[w][0])
            row.add(_CORNER[w][1])
        row.update([_ROW[w]] if w in _ROW else [])
        col.update([_COLUMN[w]] if w in _COLUMN else [])
        centre = centre or w in _CENTRE
    if len(row) > 1 or len(col) > 1:
        return False
    if not (row or col or centre):
        return None
    return (next(iter(col), None), next(iter(row), None), centre)


def _merged(a: Any, b: Any) -> Any:
    """Place ``a`` with ``b`` added, or None where ``a`` is said already. A place naming one axis is whole
    ("right" is the middle of the right side, as training said it) but takes a bare centre word after it,
    which says the same: "on the far left, halfway down"."""
    if a is None or b is None:
        return a if b is None else b
    if b == (None, None, True) and not a[2] and (a[0] is None or a[1] is None):
        return (a[0], a[1], True)
    return None


def _takes(have: dict[str, Any], said: dict[str, Any]) -> bool:
    """Whether a thing (or what is pending) can take what a chunk without a kind says."""
    return all(have.get(k) is None or (k == "cell" and _merged(have[k], v) is not None) for k, v in said.items())


def _lend(have: dict[str, Any], said: dict[str, Any]) -> None:
    for k, v in said.items():
        have[k] = _merged(have.get(k), v) if k == "cell" else v


def _things(body: str) -> tuple[list[tuple[str, tuple[int, int] | None, str | None]], list[str]] | None:
    """(words, cell or None, size) per thing, and the colours of chunks that lend to no thing; a chunk
    naming no kind ("in the top left", "large") lends its place, size and colour to the thing before it,
    or else to the one after it. A thing named by a word the model was not taught ("a red orb") is kept
    with that word when its phrase says its colour: the model gets the sentence it knows around it."""
    chunks = [c for part in body.split("|") for c in _SPLIT.split(part) if c.strip()]
    found: list[dict[str, Any]] = []
    pending: dict[str, Any] = {}
    loose: list[str] = []
    for chunk in chunks:
        words = chunk.split()
        kinds = [w for w in words if w in _SINGULAR]
        colours = _colour_words(chunk)
        cell = _place_of(words)
        if len(kinds) > 1 or len(colours) > 1 or cell is False:
            return None
        if not kinds and (noun := _head_noun(words)):
            kinds = [noun]
        said: dict[str, Any] = {"cell": cell, "size": next((_SIZE[w] for w in words if w in _SIZE), None),
                                "colour": colours[0] if colours else None}
        said = {k: v for k, v in said.items() if v is not None}
        if not kinds:
            if found and list(said) == ["colour"] and found[-1].pop("borrowed", False):
                loose.append(found[-1]["colour"])  # "purple behind everything; a boat, painted red": its own colour
                found[-1]["colour"] = said["colour"]
            elif found and _takes(found[-1], said):
                _lend(found[-1], said)
            elif list(said) == ["colour"] and (found or pending.get("colour")):
                loose.append(said["colour"])  # a colour no thing can take: perhaps the backdrop
            elif said:  # else "a picture of", "draw"
                if not _takes(pending, said):
                    return None
                _lend(pending, said)
            continue
        thing: dict[str, Any] = {"kind": kinds[0], "cell": None, "size": None, "colour": None, **said}
        if "colour" in said and "colour" in pending and not loose:  # "green: a red circle"
            loose.append(pending.pop("colour"))
        if not _takes(thing, pending):
            return None
        thing["borrowed"] = "colour" in pending and thing["colour"] is None
        _lend(thing, pending)
        found.append(thing)
        pending = {}
    if pending:
        if list(pending) == ["colour"]:
            loose.append(pending["colour"])
        else:
            return None
    if any(t["kind"] not in _SINGULAR and t["colour"] is None for t in found):
        return None
    return [(" ".join(w for w in (t["size"], t["colour"], t["kind"]) if w), _cell(t["cell"]), t["size"])
            for t in found], loose


def _cell(place: tuple[int | None, int | None, bool] | None) -> tuple[int, int] | None:
    """A place as a cell: an axis it does not say is the middle one ("on the left" is the middle row)."""
    return None if place is None else (1 if place[0] is None else place[0], 1 if place[1] is None else place[1])


__all__ = ["KIND_WORDS", "Read", "read"]
