"""The built-in model's prompt reader: a prompt as things (kind, colour, size, place) on a backdrop.

The backdrop is a colour with a backdrop word or preposition ("on blue paper", "background: green",
"set against navy"), or else the one colour no thing takes ("a red circle, blue all around it"). The
rest is split into phrases at commas, "and", "with", "then", line breaks, bullets and "1)" marks ("two
shapes:" says how many the list holds); a phrase with a kind word is a thing, one without lends its
colour, size or place to the thing before it ("a boat, painted red, on the left"), or to the one after.
Places are read word by word ("upper left", "north west", "on the far left, halfway down", "where the
top and left edges meet"); a relation places two things ("a star left of a circle"), or the second
against the first where that one has a place ("a star top left, a circle below it"). Things may be
named first and placed after, said again by their colour, size or kind ("a star and a circle: the red
one top left, the circle bottom right"); a heading places the things after it ("top row: …"); an order
spaces things that have no place ("from left to right: …", "in a row"); "both small" and "two small
items:" say what every thing shares. Words it does not know are passed over ("a striped square" is a
square), except a word right after "a" or a colour in a phrase with no kind: that is a thing the model
was not taught ("a yellow orb"), kept as said, and it must have a colour, as must a thing whose phrase
holds a word the reader does not know ("a pewter cup": perhaps a colour it was not taught).

``read`` returns None unless the reading is certain: one to three things, at most one kind and one
colour per phrase, places that do not clash, one backdrop, no counts ("two stars") and no setting the
model learnt (sea, ground, night sky). ``imagegate.mini.compose`` serves what it reads. Pure Python.

A little over 400 lines (about 470): one grammar, whose word tables, patterns and phrase walker read each
other's state; split apart, each half would import the other's private names.
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
_BACKDROP_VERB = ("is|are|of|in|to|be|as|should|ought|must|will|would|can|could|shall|needs?|has|gets?|"
                  "done|made|painted|coloured|colored|set|filled|kept|left")
_ANY_COLOUR = "|".join(sorted(_KNOWN_COLOURS, key=len, reverse=True))  # longest first
_SHADE = re.compile(r"\b([a-z]+) (" + _ANY_COLOUR + r")\b")
_C = "(?P<c>" + _ANY_COLOUR + ")"
_BACKDROPS = tuple(re.compile(r.replace("(?P<c>[a-z]+)", _C)) for r in (  # each with the colour as group "c"
    # "against a plain wash of blue", "on a field of green"
    rf"\b(?:{_BACKDROP_PREP}\s+)?(?:(?:an?|the)\s+)?(?:plain\s+|solid\s+|flat\s+)?"
    rf"(?:{_BACKDROP_NOUN}|wash|expanse|sheet|sea|splash)\s+of\s+(?:plain\s+|solid\s+|pure\s+)?(?P<c>[a-z]+)\b",
    rf"\b(?:{_BACKDROP_PREP}\s+)?(?:(?:an?|the)\s+)?(?:plain\s+|solid\s+|flat\s+)?"
    rf"(?P<c>[a-z]+)(?:\s+colou?red)?\s+{_BACKDROP_NOUN}\b",  # "on a plain green background", "on blue paper"
    # "background: green", "set the background to green", "the backdrop ought to be green", "background = green"
    rf"\b{_BACKDROP_NOUN}\s*(?:colou?r\s*)?(?:(?:{_BACKDROP_VERB})\s+|:\s*)*(?P<c>[a-z]+)\b",
    # "pink fills the rest", "and blue covers everything else"
    r"\b(?P<c>[a-z]+)\s+(?:fills|covers|colou?rs)\s+(?:in\s+)?(?:the\s+|all\s+the\s+)?(?:rest|remainder|background|"
    r"backdrop|everything(?:\s+else)?)\b",
    # "orange behind it", "blue all around them"
    r"\b(?P<c>[a-z]+)\s+(?:all\s+)?(?:behind|around|surrounding|beneath|underneath)\s+(?:it|them|everything|all)\b",
    # "on green, a red circle", "against green", "surrounded by yellow please" (only filler words after it)
    rf"\b{_BACKDROP_PREP}\s+(?:an?\s+)?(?P<c>[a-z]+)(?P<rest>(?:\s+[a-z]+)*?)\s*(?:[,;:.!?]|$)",
    r"\b(?:on|over|against|upon)\s+(?:an?\s+)?(?:plain\s+)?(?P<c>[a-z]+)\s+colou?r\b",  # "on a plain pink colour"
))
# "over" and "on top of" relate two things only before one ("a star over a circle"); "over on the left" is a place
# "the bottom right of the picture" is a place, not a relation
_RELATION = re.compile(r"\b(?:(?:to|on) the )?(?<!top )(?<!bottom )(?<!upper )(?<!lower )(?P<r>left|right) of\b|"
                       r"\bto its (?P<its>left|right)\b|"
                       r"\b(?P<v>above|(?<!all )over(?! (?:on|in|at|to|there|here)\b)|on top of|below|under|beneath|"
                       r"underneath)\b")
_STEP = {"left": (-1, 0), "right": (1, 0), "above": (0, -1), "below": (0, 1)}  # a cell in a relation's direction
# Places, read word by word: a row word and a column word make a corner ("upper left", "north west",
# "towards the lower right"); a centre word fills the axis that is not said ("top middle", "dead centre").
_ROW = {"top": 0, "upper": 0, "up": 0, "north": 0, "high": 0, "bottom": 2, "lower": 2, "down": 2, "south": 2, "low": 2}
_COLUMN = {"left": 0, "west": 0, "right": 2, "east": 2}
_CORNER = {"northwest": (0, 0), "northeast": (2, 0), "southwest": (0, 2), "southeast": (2, 2),
           "topleft": (0, 0), "topright": (2, 0), "bottomleft": (0, 2), "bottomright": (2, 2)}
_CENTRE = frozenset({"centre", "center", "middle", "central", "centred", "centered", "midpoint", "mid"})
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
    "showing", "containing", "with", "having", "single", "lone", "crescent", "standing", "whose",
    # English function words: they link and point, they name nothing the model could draw
    "for", "from", "into", "onto", "inside", "within", "out", "as", "so", "than", "too", "then", "but", "or", "nor",
    "if", "any", "each", "every", "else", "everything", "rest", "whole", "entire", "other", "others", "remaining",
    "where", "which", "who", "what", "how", "about", "after", "looking", "look", "was", "were", "been", "being",
    "do", "does", "did", "may", "might", "should", "shall", "must", "my", "your", "our", "their", "his", "her",
    "them", "they", "he", "she", "these", "those", "such", "only", "really", "quite", "rather", "somewhat",
    "also", "maybe", "perhaps", "okay", "ok", "thanks", "thank", "hi", "hello", "hey", "now", "today", "up",
    "down", "while", "through", "throughout", "between", "among", "without", "upon", "via", "per",
    "put", "add", "use", "using", "done", "doing", "go", "goes", "going", "holding", "had",
    # verbs that say where a thing is and nothing else: "a siamese rests near the right edge"
    "sit", "rests", "lie", "lies", "float", "floats", "hang", "hangs", "stand", "stands", "hover", "hovers",
    "appear", "appears", "fill", "fills", "cover", "covers"})
# Model 2's settings (training/mini/language.py SETTING_WORDS): a prompt naming one is the model's to read whole,
# since a layout draws flat backdrops only
_SETTING = frozenset({"ground", "sea", "ocean", "seascape", "landscape", "night", "sky", "starry"})
_LINKING = frozenset({"against", "upon", "atop", "amid", "amidst", "surrounded", "behind", "above", "below", "under",
                      "beneath", "underneath", "front", "beside", "next", "left", "right", "top", "over", "and", "or",
                      "background", "backdrop", "bg", "canvas", "paper", "field", "wall", "surface", "backing"})
_SPLIT = re.compile(r"\s*(?:[,;:./&+|!?]|\b(?:and|with|plus|also|then|alongside|next to|as well as|along with|"
                    r"together with|while|whereas)\b)\s*")
_POINTED = re.compile(r"\b(?:four|five|six|seven|eight|[4-8])\s+point(?:ed)?\s+(?=stars?\b)")  # "a five-pointed star"
_PARTICIPLE = re.compile(r"^(?:[a-z]{2,}(?:ing|ed)|shown|drawn|grown|thrown|blown|flown)$")  # "tucked", "shown"
_HALFWAY = re.compile(r"\b(?:half ?way|mid ?way)\s+(?:down|up|across|along)\b")  # "halfway down the side": the middle
_INTENSE = re.compile(r"\bright\s+(?=(?:in|at|on)\s+the\s+(?:middle|centre|center)\b)")  # "right in the middle"
# the marks of a list: line breaks, bullets, "1)" / "2." before an item ("1) a red star 2) a blue circle")
_LIST_MARK = re.compile(r"\s*[\r\n\u2022\u00b7*]+\s*|(?:^|(?<=\s))(?:-|\(?\d{1,2}[.)])(?=\s)")
# a count of the things listed ("two shapes: a red star and a blue circle"): the list must hold that many
# the count may carry what the things share: "three small items:"
_TALLY = re.compile(r"\b(?P<n>one|two|three|[1-3])\s+(?P<shared>(?:[a-z]+\s+){0,2}?)"
                    r"(?:shapes|things|objects|items|icons|elements|figures)\b")
_ALL = re.compile(r"\b(?:all|the)\s+(?:two|three|[23])\b|\bboth\b")  # "all three small": what every thing shares
# a thing said again by its colour or size ("the pink one in the top right") or its kind ("the star at the top")
_AGAIN = re.compile(r"\bthe\s+(?P<said>(?:[a-z]+\s+){1,2}?)ones?\b")
# a heading for the things after it: "top row:", "left column:" (a word no prompt has after _normalised stands for it)
_HEADING = re.compile(r"(?:^|(?<=[;:,.!?]))\s*(?:(?:in|on|along|across)\s+)?(?:the\s+)?(?P<w>[a-z]+)\s+"
                      r"(?P<line>row|column)\s*:")
_LINE = {"row": ({**_ROW, "first": 0, "second": 1, "third": 2}, 1), "column": ({**_COLUMN, "first": 0, "second": 1,
                                                                                  "third": 2}, 0)}
# "where the top and left edges meet": the corner ("top left")
_EDGES = re.compile(r"\b(?:where|at which|at the point where|in the corner where)\s+(?:the\s+)?"
                    r"(?P<a>top|bottom|upper|lower|left|right)\s+and\s+(?:the\s+)?(?P<b>top|bottom|upper|lower|left|"
                    r"right)\s+(?:edges?|sides?|borders?)\s+(?:meet|join|touch|cross|intersect)\b")
# "and over and above that, ...", "on top of that", "one more thing:": also, no relation and no thing
_IDIOMS = re.compile(r"\b(?:over and above|on top of (?:that|this|it all)|one more thing|another thing|what s more|"
                     r"apart from that|besides that|in addition)\b")
_ALL_OVER = re.compile(r"\ball over\b")  # "a star, blue all over": entirely, not every thing
# "from left to right: a star and a circle": the things in that order along the axis
_SEQUENCE = re.compile(r"\b(?:from|going)\s+(?P<a>left|right|top|bottom)\s+to\s+(?P<b>left|right|top|bottom)\b|"
                       r"\b(?P<row>in a row|side by side|in a line)\b|\b(?P<column>in a column|stacked|one above the "
                       r"other)\b")
_HOLLOW = re.compile(r"\b(?:(?:hollow|open|empty|unfilled|outlined)\s+(?:circle|disc|disk)|(?:circle|circular)\s+"
                     r"outline)\b")  # an outline: a ring
# a shape said by its adjective: "a circular shape", "a three-sided figure"
_SHAPED = re.compile(r"\b(?P<a>circular|round|triangular|three sided|rectangular|four sided|(?:star|heart|ring) "
                     r"shaped)\s+(?:shape|form|figure)\b")
_SHAPE_OF = {"circular": "circle", "round": "circle", "triangular": "triangle", "three sided": "triangle",
             "rectangular": "square", "four sided": "square", "star shaped": "star", "heart shaped": "heart",
             "ring shaped": "ring"}
_SIZED = re.compile(r"\b([a-z]+) siz(?:e|ed)\b")  # "pocket-sized", "good-sized"
_CRESCENT = re.compile(r"\b(?:lunar\s+)?crescent\b(?!\s+moons?\b)")  # "a crescent", "a lunar crescent": the moon
# a shade said in a hyphenated compound: "egg-yolk yellow", "traffic-cone orange"
_COMPOUND_SHADE = re.compile(r"\b([a-z]+(?:-[a-z]+)+)[ -](" + _ANY_COLOUR + r")\b")


def _normalised(prompt: str) -> str:
    text = re.sub(r"[()\[\]{}]", " , ", _LIST_MARK.sub(" ; ", prompt))  # "(in the top left)" is a phrase of its own
    text = _words(text, r"[^a-z0-9,;:./&+!?\- ]+")
    text = _COMPOUND_SHADE.sub(lambda m: m.group(2) if all(map(_is_unknown, m.group(1).split("-"))) else m.group(),
                               text).replace("-", " ")
    text = _HOLLOW.sub("ring", _HALFWAY.sub("middle", _INTENSE.sub("", _POINTED.sub("", text))))
    text = _CRESCENT.sub("moon", _SHAPED.sub(lambda m: _SHAPE_OF[m.group("a")], text))
    text = _SIZED.sub(lambda m: " " if _is_unknown(m.group(1)) else m.group(), text)  # a size it cannot read
    text = _IDIOMS.sub("and", _EDGES.sub(lambda m: f"{m.group('a')} {m.group('b')}", _ALL_OVER.sub(" ", text)))
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
    sequence = _SEQUENCE.search(body)  # "from left to right: ..."
    body = _SEQUENCE.sub(" ; ", body)
    tallies = [({"one": 1, "two": 2, "three": 3}.get(m.group("n")) or int(m.group("n")), m.group("shared").split())
               for m in _TALLY.finditer(body)]
    body = _ALL.sub("all", _TALLY.sub(" , ", body))
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
    shared = tallies[0][1] if len(tallies) == 1 else []
    if any(w not in _SIZE and w not in _KNOWN_COLOURS and w not in _FILLER for w in shared):
        return None  # "two striped items": more than the reader knows is shared
    body = _HEADING.sub(_heading, body)
    found = _things(body + " ; all " + " ".join(shared) if shared else body)
    if found is None:
        return None
    things, loose = found
    if background is None and len(loose) == 1:  # "a red circle, blue all around it": the colour left over
        background, loose = loose[0], []
    if background is None or loose or not 1 <= len(things) <= 3 or (relation and len(things) != 2):
        return None
    if tallies and tallies[0][0] != len(things):
        return None
    if sequence and len(things) > 1 and all(cell is None for _, cell, _ in things):
        axis = 0 if sequence.group("row") or {sequence.group("a"), sequence.group("b")} <= {"left", "right"} else 1
        order = [0, 2] if len(things) == 2 else [0, 1, 2]
        if sequence.group("a") in ("right", "bottom"):
            order.reverse()
        things = [(words, (k, 1) if axis == 0 else (1, k), size) for (words, _, size), k in zip(things, order,
                                                                                               strict=True)]
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
        elif run and _is_unknown(w) and not (noun and _PARTICIPLE.match(w)):  # "a bumbershoot shown …", "a red sled"
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
    line: tuple[int, int] | None = None  # (axis, index) of the last "top row:" heading
    for chunk in chunks:
        words = chunk.split()
        if words[0].startswith("_line_"):  # "top row:" (``_heading``)
            line = (int(words[0][6]), int(words[0][8]))
            continue
        kinds = [w for w in words if w in _SINGULAR]
        colours = _colour_words(chunk)
        cell = _place_of(words)
        if len(kinds) > 1 or len(colours) > 1 or cell is False:
            return None
        said: dict[str, Any] = {"cell": cell, "size": next((_SIZE[w] for w in words if w in _SIZE), None),
                                "colour": colours[0] if colours else None}
        said = {k: v for k, v in said.items() if v is not None}
        if (again := _again(words, kinds, said, found)) is None and not kinds and (noun := _head_noun(words)):
            kinds = [noun]
        elif again is not None:
            said_again, rest = again
            if said_again is None or not _takes(said_again, rest):
                return None
            _lend(said_again, rest)
            continue
        if not kinds and "all" in words and found and said:  # "both small", "all three red": every thing
            for each in found:
                if any(each.get(k) not in (None, v) for k, v in said.items() if k != "cell") or "cell" in said:
                    return None
                _lend(each, said)
            continue
        if not kinds:
            if found and not said and any(_is_unknown(w) for w in words):
                found[-1]["unsure"] = True  # "a cup, painted pewter": perhaps its colour, not known
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
        thing["unsure"] = any(_is_unknown(w) for w in words)  # "a pewter cup": perhaps a colour not known
        if "colour" in said and "colour" in pending and not loose:  # "green: a red circle"
            loose.append(pending.pop("colour"))
        if not _takes(thing, pending):
            return None
        thing["borrowed"] = "colour" in pending and thing["colour"] is None
        thing["line"] = line
        _lend(thing, pending)
        found.append(thing)
        pending = {}
    if pending:
        if list(pending) == ["colour"]:
            loose.append(pending["colour"])
        else:
            return None
    if any((t["kind"] not in _SINGULAR or t["unsure"]) and t["colour"] is None for t in found):
        return None  # a thing the model was not taught, or one after a word that may be its colour, must have one
    for t in found:  # a row's things are in that row: "top row: a star at the left end"
        if t["line"] is not None:
            axis, index = t["line"]
            place = list(t["cell"] or (None, None, False))
            if place[axis] not in (None, index):
                return None
            place[axis] = index
            t["cell"] = tuple(place)
    return [(" ".join(w for w in (t["size"], t["colour"], t["kind"]) if w), _cell(t["cell"]), t["size"])
            for t in found], loose


def _heading(m: re.Match[str]) -> str:
    """A heading for the things after it ("top row:", "left column:") as a word no prompt has after
    ``_normalised``: "_line_1_0" (axis, index)."""
    index, axis = _LINE[m.group("line")]
    at = 1 if m.group("w") in _CENTRE else index.get(m.group("w"))
    return m.group() if at is None else f" ; _line_{axis}_{at} ; "


def _again(words: list[str], kinds: list[str], said: dict[str, Any],
           found: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, dict[str, Any]] | None:
    """A thing said before, said again to place it: "the pink one in the top right", "the star at the top":
    (the one thing so described, what the words add to it), (None, {}) where the words fit no one thing or
    more than one, None where they say no thing said before."""
    if kinds:
        at = words.index(kinds[0])
        # "the star goes top left", or the kind alone at the phrase's start: "…; star top left, circle bottom right"
        if not ((at > 0 and words[at - 1] == "the") or (at == 0 and len(found) > 1)):
            return None
        named = {"kind": kinds[0]}
    elif (m := _AGAIN.search(" ".join(words))) is not None:
        named = {}
        for w in m.group("said").split():
            if w in _SIZE:
                named["size"] = _SIZE[w]
            elif w in _KNOWN_COLOURS:
                named["colour"] = _colour_words(w)[0]
            elif w not in _FILLER:
                return None, {}
        if not named:
            return None
    else:
        return None
    same = [t for t in found if all(t.get(k) in (None, v) if k != "kind" else t["kind"] == v for k, v in
                                    ({**named, **{k: v for k, v in said.items() if k != "cell"}}).items())]
    if kinds and not same:
        return None  # "the star" with no star before it is a new thing
    return (same[0], {k: v for k, v in said.items() if k not in named}) if len(same) == 1 else (None, {})


def _cell(place: tuple[int | None, int | None, bool] | None) -> tuple[int, int] | None:
    """A place as a cell: an axis it does not say is the middle one ("on the left" is the middle row)."""
    return None if place is None else (1 if place[0] is None else place[0], 1 if place[1] is None else place[1])


__all__ = ["KIND_WORDS", "Read", "read"]
