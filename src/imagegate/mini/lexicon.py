"""Words the built-in model never saw, rewritten to the ones it knows before it reads a prompt.

The model learnt its vocabulary from its own prompt generator: 10 drawn colours, its kinds and two
sizes, each under a few names. People type "a tangerine sparrow on a cobalt background". The
lexicon (``lexicon.json``, built by ``make mini-lexicon`` from the XKCD colour survey, the CSS
colour names and WordNet: ``training/mini/lexicon_build.py``) maps 1,000+ colour names to the
nearest drawn colour, WordNet's hyponyms of each kind to the kind ("sparrow" → bird, "beagle" →
dog) and WordNet's size adjectives to small / large.

A word is rewritten only when the model's tokenizer has no whole-word token for it and has one
for its replacement, so whatever the model was trained on reaches it unchanged; models other than
the built-in one are never rewritten. A word that is both a colour and a thing ("salmon", "rose")
names the thing after an article, a size or a colour ("a plum", "a big plum") unless a thing, a
background word, a colour or a word it describes follows ("a salmon heart", "cherry red", "a
tangerine kite"); anywhere else it is the colour ("set against plum"). A shade and a colour's name
are one colour, the last one's ("cherry red", "heather purple"), and so are a thing's name and a
colour ("painted ash grey", but "make the ash grey" names the tree). A size may be several words
("teeny-weeny"), and so may a thing's name ("coffee cup" is a cup, "cruise ship" a boat: it wins over
a shorter colour name inside it). Plurals follow WordNet's irregular forms and the English rules
("geese" → birds, "puppies" → dogs). A slip of the keyboard in one of the model's own words that makes no
English word ("yelow", "backround") is that word.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Container, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

LEXICON_PATH = Path(__file__).with_name("lexicon.json")
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?", re.IGNORECASE | re.ASCII)
_JOIN = re.compile(r"^[ \-]+$")  # what may sit between the words of a several-word name
BACKDROP_WORDS = frozenset({"background", "backdrop", "backgrounds", "backdrops", "backing", "canvas", "bg"})
MAX_NAME_WORDS = 3
# words that may follow a thing's name without being described by it ("a plum on ...", "a plum and ...")
_LINKS = frozenset({"on", "in", "at", "over", "under", "above", "below", "beside", "near", "next", "by", "with", "and",
                    "or", "against", "upon", "atop", "to", "of", "for", "from", "is", "are", "plus", "alongside",
                    "behind", "inside", "into", "onto", "up", "down", "left", "right", "top", "bottom", "that",
                    "which", "that's", "thats", "please", "sitting", "standing", "floating", "towards", "toward",
                    "along", "there", "here", "too", "as", "it", "now", "again", "instead", "then", "so", "but", "if",
                    "when", "while", "like", "the", "a", "an", "each", "both", "all", "only", "just", "across",
                    "around", "through", "between", "painted", "coloured", "colored", "facing", "flying", "low", "high",
                    "centred", "centered", "midway", "halfway", "middle", "centre", "center", "smack", "dead", "far",
                    "placed", "positioned", "located", "sits", "set", "drawn", "shown", "lower", "upper", "where",
                    "whose", "who", "sat", "lies", "rests", "hangs", "floats", "stands", "goes", "should", "must",
                    "will", "would", "can", "could", "has", "without", "beneath", "underneath", "amid", "bang", "slap",
                    "plumb", "squarely", "exactly", "directly", "roughly", "slightly", "somewhere", "nearly", "close",
                    "resting", "hanging", "lying", "hovering", "perched", "parked", "tucked", "nestled", "pictured"})
_DETERMINERS = frozenset({"a", "an", "the", "one", "this", "that", "my", "your", "our", "their", "another", "some",
                          "any", "each", "every"})


def singular(word: str, irregular: dict[str, str]) -> list[str]:
    """Candidate singulars of ``word`` (itself first)."""
    out = [word]
    if word in irregular:
        out.append(irregular[word])
    if word.endswith("ies") and len(word) > 4:
        out.append(word[:-3] + "y")
    if word.endswith("ves"):
        out += [word[:-3] + "f", word[:-3] + "fe"]
    if word.endswith("es"):
        out.append(word[:-2])
    if word.endswith("s") and not word.endswith("ss"):
        out.append(word[:-1])
    return out


class Lexicon:
    def __init__(self, table: dict[str, Any]) -> None:
        self.colours: dict[str, str] = table["colours"]
        self.kinds: dict[str, str] = table["kinds"]
        self.sizes: dict[str, str] = table["sizes"]
        self.plurals: dict[str, str] = table["plurals"]
        self.irregular: dict[str, str] = table["irregular"]
        self.typos: dict[str, str] = table["typos"]
        self.palette = frozenset(self.colours.values())
        self.size_names = frozenset(self.sizes.values())
        # a prompt's words are looked up several times each (alone, in longer names, as the next word), and a
        # word missing from the table is tried at every cut: remember the recent answers
        self._thing: Callable[[str], tuple[str, bool] | None] = lru_cache(maxsize=8192)(self._find_thing)

    @classmethod
    @lru_cache(maxsize=1)
    def default(cls) -> Lexicon:
        return cls(json.loads(LEXICON_PATH.read_text()))

    def _find_thing(self, word: str) -> tuple[str, bool] | None:
        """(kind, plural) for a word naming a thing, in any number; a name of two words may be written as
        one ("housecat": WordNet's "house cat")."""
        forms = singular(word, self.irregular)
        for i, form in enumerate(forms):
            kind = self.kinds.get(form) or (form if form in self.plurals else None)
            if kind is not None:
                return kind, i > 0 and form != word
        for i, form in enumerate(forms):
            for cut in range(3, len(form) - 2):
                if (kind := self.kinds.get(f"{form[:cut]} {form[cut:]}")) is not None:
                    return kind, i > 0 and form != word
        return None

    def rewriter(self, known: Container[str]) -> Callable[[str], str]:
        """A function rewriting prompts for a model whose tokenizer knows the words in ``known``."""
        return lambda prompt: self.rewrite(prompt, known)

    def rewrite(self, prompt: str, known: Container[str]) -> str:
        prompt = _WORD.sub(lambda m: self._unslipped(m.group(), known), prompt)
        # words are found in the prompt itself: lower() can change a string's length ("İ")
        spans = [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(prompt)]
        edits: list[tuple[int, int, str]] = []  # (start, end, replacement) in the prompt
        i = 0
        while i < len(spans):
            new, n = self._rewrite_at(prompt, spans, i, known)
            if new is not None:
                if i and spans[i - 1][2] in ("a", "an") and not prompt[spans[i - 1][1]:spans[i][0]].strip():
                    article = "an" if new[0] in "aeiou" else "a"
                    if prompt[spans[i - 1][0]].isupper():
                        article = article.capitalize()
                    edits.append((spans[i - 1][0], spans[i - 1][1], article))
                edits.append((spans[i][0], spans[i + n - 1][1], new))
            i += n
        out, at = [], 0
        for start, end, new in edits:
            out += [prompt[at:start], new]
            at = end
        return "".join(out) + prompt[at:]

    def _unslipped(self, word: str, known: Container[str]) -> str:
        """A typing slip of a word the model knows, as that word ("yelow", "Backround"); any other word as it is."""
        low = word.lower()
        if low in known or (right := self.typos.get(low)) is None or right not in known:
            return word
        return right.capitalize() if word[:1].isupper() else right

    def _rewrite_at(self, text: str, spans: list[tuple[int, int, str]], i: int,
                    known: Container[str]) -> tuple[str | None, int]:
        """(replacement or None, words consumed) at word i."""
        word = spans[i][2]
        n, colour = self._colour_at(text, spans, i)
        if n > 1:
            n, colour = self._colour_before_thing(text, spans, i)
        n_thing, named = self._name_at(text, spans, i)
        # a thing's name of several words ("coffee cup", "cruise ship"); one that starts with a colour and ends in
        # a thing's own name only where both name the same kind and the colour is not a drawn one: "a coffee cup" is
        # a cup, but "a white oak" is white and "a silver bell" (WordNet: a tree) a bell
        head = self._thing(spans[i + n_thing - 1][2]) if n_thing > 1 else None
        if head is not None and (colour is not None or word in self.palette) and (
                word in self.palette or named is None or named[0] != head[0]):
            n_thing = 1
        if word in known:  # the model reads its own words: "small boat", "lime tree" are a size and a colour
            n_thing = 1
        if n_thing > 1 and spans[i + n_thing - 1][2] in self.palette and not self._names_a_thing(text, spans, i,
                                                                                                 n_thing):
            n_thing = 1  # "a mandarin orange triangle", "whose colour is mandarin orange": orange, not the tree
        if n_thing > max(n, 1) and named is not None:
            return self._form(named, known), n_thing
        nxt = spans[i + n][2] if i + n < len(spans) else ""
        thing = self._thing(word)
        if colour is not None and (thing is None or not self._names_a_thing(text, spans, i, n)):
            n2, then = self._colour_at(text, spans, i + n)
            if nxt in self.palette:
                n2, then = 1, nxt
            elif then is not None and ((nxt not in known and self._name_at(text, spans, i + n)[1] is not None) or (
                    self._thing(nxt) is not None and self._names_a_thing(text, spans, i + n, n2))):
                then = None  # "a golden apple", "a royal blue coffee cup": a colour and a thing, not two colours
            if then is not None and _JOIN.match(text[spans[i + n - 1][1]:spans[i + n][0]]):
                # a shade and a colour's name are one colour, the last one's: "cherry red", "snow white",
                # "heather purple" (heather alone is a pink), "pistachio green"
                n, colour = n + n2, then
            words = [s[2] for s in spans[i:i + n]]
            return (colour if colour in known and any(w not in known for w in words) else None), n
        if word in known:
            return None, 1
        if thing is not None and (shade := self._shade_at(text, spans, i)) is not None:
            return (shade[1] if shade[1] in known else None), shade[0]
        if thing is not None and self._thing(nxt) is not None and _JOIN.match(text[spans[i][1]:spans[i + 1][0]]):
            return None, 1  # a thing's name that describes the next one: "an oak tree" is a tree
        if thing is not None:
            return self._form(thing, known), 1
        n, size = self._size_at(text, spans, i)
        return (size if size in known else None), n

    def _names_a_thing(self, text: str, spans: list[tuple[int, int, str]], i: int, n: int) -> bool:
        """Whether a word that is both a colour and a thing ("salmon", "plum", "apple") names the thing
        here: after an article, a count, a size or a colour ("a plum", "a big red plum"), and not before
        a thing, a backdrop word or a colour ("a salmon heart", "a plum background", "an orchid purple
        ring": a shade), nor right before another word it describes ("a tangerine kite"). Elsewhere it is the colour
        ("set against plum", "with plum all around")."""
        nxt = spans[i + n][2] if i + n < len(spans) else ""
        if self._thing(nxt) is not None or nxt in BACKDROP_WORDS:
            return False
        adjacent = bool(nxt) and not text[spans[i + n - 1][1]:spans[i + n][0]].strip()
        prev = _before(text, spans, i)
        described = any(prev in words for words in (self.sizes, self.size_names, self.colours, self.palette))
        n2, then = (1, nxt) if nxt in self.palette else self._colour_at(text, spans, i + n)
        if adjacent and then is not None and (not described or self._describes_a_thing(text, spans, i + n + n2)):
            # a shade of the colour named next ("an orchid purple ring", "to be orchid purple"), but "a tiny
            # salmon lime background" is a salmon and its colour, as model 2's sentences say it
            return False
        if adjacent and nxt not in _LINKS and nxt not in self.palette and nxt not in self.colours:
            return False
        return described or prev in _DETERMINERS or self._thing(prev) is not None  # "a maple leaf"

    def _describes_a_thing(self, text: str, spans: list[tuple[int, int, str]], i: int) -> bool:
        """Whether word i is a thing's name, or a size or colour before one."""
        while i < len(spans) and (spans[i][2] in self.palette or spans[i][2] in self.size_names
                                  or self._colour_at(text, spans, i)[1] or self._size_at(text, spans, i)[1]):
            i += 1
        return i < len(spans) and (self._thing(spans[i][2]) is not None or self._name_at(text, spans, i)[1] is not None)

    def _form(self, thing: tuple[str, bool], known: Container[str]) -> str | None:
        """The kind's own name, in the number said, if the model knows it."""
        kind, plural = thing
        form = self.plurals.get(kind, kind) if plural else kind
        return form if form in known else None

    def _shade_at(self, text: str, spans: list[tuple[int, int, str]], i: int) -> tuple[int, str] | None:
        """(words, colour) where a thing's name at word i is a shade of the colour named right after it
        ("painted ash grey", "a pumpkin-orange hat"): not after a size or a colour in the same phrase ("a tiny
        heart lime background" says the heart's colour) unless a thing follows, at once or after one more word
        ("a jumbo pearl white star", "… pearl white hollow circle"), nor
        after a determiner ("make the ash grey", where the thing is said) unless a thing, "one" or a backdrop word
        follows the colour ("an ash grey cup", "a papaya orange background", "the papaya orange one")."""
        if i + 1 >= len(spans) or not _JOIN.match(text[spans[i][1]:spans[i + 1][0]]):
            return None
        n, colour = self._colour_before_thing(text, spans, i + 1)
        if colour is None and spans[i + 1][2] in self.palette:
            n, colour = 1, spans[i + 1][2]
        if colour is None:
            return None
        after = spans[i + 1 + n][2] if i + 1 + n < len(spans) else ""
        prev = _before(text, spans, i)
        if any(prev in words for words in (self.sizes, self.size_names, self.colours, self.palette)) and not (
                self._thing_follows(text, spans, i + 1 + n)):
            return None  # "a tiny heart lime background": the thing, then its colour
        if prev in _DETERMINERS and self._thing(after) is None and after not in BACKDROP_WORDS and after not in (
                "one", "ones"):
            return None  # but "the papaya orange one" is said back by its colour
        return 1 + n, colour

    def _thing_follows(self, text: str, spans: list[tuple[int, int, str]], j: int) -> bool:
        """A thing's name starts at word j, or at the word after it in the same phrase ("a jumbo pearl white
        hollow circle", "... pearl white outlined star")."""
        for k in (j, j + 1):
            if k >= len(spans) or (k > j and not _JOIN.match(text[spans[j][1]:spans[k][0]])):
                return False
            if self._thing(spans[k][2]) is not None or self._name_at(text, spans, k)[1] is not None:
                return True
        return False

    def _colour_before_thing(self, text: str, spans: list[tuple[int, int, str]], i: int) -> tuple[int, str | None]:
        """``_colour_at``, but a colour name whose last word names a thing here is the colour before that thing
        ("a green apple" is an apple, not the colour "green apple"; "a frog green apple" a green apple) or no
        colour ("a maple leaf": the leaf)."""
        n, colour = self._colour_at(text, spans, i)
        if colour is not None and self._thing(spans[i + n - 1][2]) is not None and self._names_a_thing(
                text, spans, i + n - 1, 1):
            return self._colour_at(text, spans, i, n - 1) if n > 1 else (1, None)
        return n, colour

    def _name_at(self, text: str, spans: list[tuple[int, int, str]], i: int) -> tuple[int, tuple[str, bool] | None]:
        """The longest thing's name of two or more words starting at word i: (words, (kind, plural)), else
        (1, None); a one-word name is ``_thing``'s."""
        for n in range(min(MAX_NAME_WORDS, len(spans) - i), 1, -1):
            if all(_JOIN.match(text[spans[j][1]:spans[j + 1][0]]) for j in range(i, i + n - 1)):
                words = [s[2] for s in spans[i:i + n]]
                for join in (" ", "-"):
                    if (thing := self._thing(join.join(words))) is not None:
                        return n, thing
        return 1, None

    def _size_at(self, text: str, spans: list[tuple[int, int, str]], i: int) -> tuple[int, str | None]:
        """The longest size word starting at word i, hyphenated or not ("king-size", "teeny weeny")."""
        for n in range(min(MAX_NAME_WORDS, len(spans) - i), 0, -1):
            if all(_JOIN.match(text[spans[j][1]:spans[j + 1][0]]) for j in range(i, i + n - 1)):
                words = [s[2] for s in spans[i:i + n]]
                if (size := self.sizes.get("-".join(words)) or self.sizes.get(" ".join(words))) is not None:
                    return n, size
        return 1, None

    def _colour_at(self, text: str, spans: list[tuple[int, int, str]], i: int,
                   most: int = MAX_NAME_WORDS) -> tuple[int, str | None]:
        """The longest colour name of at most ``most`` words starting at word i: (its length in words, its
        palette colour)."""
        for n in range(min(most, len(spans) - i), 0, -1):
            if all(_JOIN.match(text[spans[j][1]:spans[j + 1][0]]) for j in range(i, i + n - 1)):
                name = " ".join(s[2] for s in spans[i:i + n])
                if name in self.colours:
                    return n, self.colours[name]
        return 1, None


def _before(text: str, spans: list[tuple[int, int, str]], i: int) -> str:
    """The word before word i in the same phrase: "" after punctuation ("a leaf, pistachio green in colour")."""
    return spans[i - 1][2] if i and _JOIN.match(text[spans[i - 1][1]:spans[i][0]]) else ""


def known_words(vocab: Iterable[str]) -> set[str]:
    """The whole words of a CLIP BPE vocabulary (tokens ending in </w>)."""
    return {t[:-4] for t in vocab if t.endswith("</w>")}


__all__ = ["LEXICON_PATH", "Lexicon", "known_words", "singular"]
