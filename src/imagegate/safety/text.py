"""The input stage for text: shipped category lists (lists/*.txt) and the operator's allow
and deny files, matched on normalised forms of the prompt so that obfuscated spellings
(case, accents, homoglyphs, leetspeak, separators inside words, repeated letters) meet the
same entries as plain ones.

Each category gets a score: 0 (no entry matched), MEDIUM (a plain entry: blocked at
moderation=auto) or HIGH (a `high:` entry, an operator deny entry, or anything in
sexual/minors: blocked at every level). The thresholds that turn scores into blocks live
in moderation.py."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

MEDIUM = 0.6
HIGH = 0.95
MINORS = "sexual/minors"
# Shipped files → OpenAI's category names.
CATEGORY_FILES = {
    "sexual_minors.txt": MINORS,
    "sexual.txt": "sexual",
    "violence_graphic.txt": "violence/graphic",
    "self_harm.txt": "self-harm",
    "hate.txt": "hate",
}

# Look-alike letters from other scripts → the Latin letter they imitate (the confusables
# that occur in obfuscated prompts; NFKC already folds fullwidth and mathematical forms).
_HOMOGLYPHS = str.maketrans({
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",  # noqa: RUF001 - look-alikes are the point
    "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ɡ": "g", "һ": "h",  # noqa: RUF001 - look-alikes are the point
    "ӏ": "l", "ո": "n", "ս": "u", "ԛ": "q", "ԝ": "w",  # noqa: RUF001 - look-alikes are the point
    # Greek
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",  # noqa: RUF001 - look-alikes are the point
    "υ": "u", "χ": "x", "ω": "w", "ς": "s", "σ": "o",  # noqa: RUF001 - look-alikes are the point
    # Latin extensions and symbols
    "ı": "i", "ł": "l", "ø": "o", "đ": "d", "ß": "ss", "æ": "ae", "œ": "oe", "ſ": "s",  # noqa: RUF001 - look-alikes are the point
    # Zero-width characters hide nothing
    "\u200b": "", "\u200c": "", "\u200d": "", "\u2060": "", "\ufeff": "", "\u00ad": "",
})
# Leetspeak inside words that also have letters ("p0rn", "s3x", "k!ll"); a token of digits
# only ("12 year old") keeps its digits. `1` reads as i and, in a second pass, as l.
_LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g", "@": "a", "$": "s",
         "!": "i", "|": "l", "+": "t", "€": "e", "¡": "i"}
_LEET_L = {**_LEET, "1": "l", "!": "l"}
_TOKEN = re.compile(r"[^\s]+")
_NON_WORD = re.compile(r"[^a-z0-9]+")
# Separators people put inside a word to slip past filters: p.o.r.n, p-o-r-n, p_o_r_n, p*o*r*n.
_INNER_SEPARATORS = re.compile(r"(?<=[a-z0-9])[.\-_*'`´’·•~^:,/\\]+(?=[a-z0-9])")  # noqa: RUF001 - look-alikes are the point
_REPEATS = re.compile(r"([a-z])\1+")


def _fold(text: str) -> str:
    """Case, compatibility forms, homoglyphs and accents folded away."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_HOMOGLYPHS)
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c))


def _deleet(token: str, table: dict[str, str]) -> str:
    """Digits in a word that has letters, and symbols standing before a letter or digit
    ("$ex", "k!ll"); a trailing "!" stays punctuation."""
    if token.isdigit() or not any(c.isalpha() for c in token):
        return token
    out = []
    for i, c in enumerate(token):
        nxt = token[i + 1] if i + 1 < len(token) else ""
        if c.isdigit() or (c in table and nxt.isalnum()):
            out.append(table.get(c, c))
        else:
            out.append(c)
    return "".join(out)


def _words(text: str) -> str:
    return " ".join(_NON_WORD.split(text)).strip()


def _join_spelled(words: str, article: bool = False) -> str:
    """Runs of three or more single letters ("p o r n") joined into one word; `article`:
    a run's leading "a" or "i" stays a word of its own ("a n u d e" → "a nude")."""
    out: list[str] = []
    run: list[str] = []
    for w in [*words.split(" "), ""]:
        if len(w) == 1 and w.isalpha():
            run.append(w)
            continue
        if article and len(run) >= 4 and run[0] in ("a", "i"):
            out.append(run.pop(0))
        out.extend(["".join(run)] if len(run) >= 3 else run)
        run = []
        if w:
            out.append(w)
    return " ".join(out)


def variants(text: str) -> list[str]:
    """The normalised forms an entry is looked for in (each a string of words separated by
    single spaces). A hit in any form counts."""
    base = _fold(text)
    forms: list[str] = []
    for table in (None, _LEET, _LEET_L):
        t = base if table is None else " ".join(_deleet(tok, table) for tok in _TOKEN.findall(base))
        joined = _INNER_SEPARATORS.sub("", t)
        for form in (_words(t), _words(joined)):
            forms.extend((form, _join_spelled(form), _join_spelled(form, article=True)))
    squeezed = [_REPEATS.sub(r"\1", f) for f in forms]
    return list(dict.fromkeys([*forms, *squeezed]))


@dataclass(frozen=True)
class Entry:
    category: str
    phrase: str
    score: float
    minor: bool = False  # names a minor (sexual_minors.txt `minor:` lines)


def _pattern(phrase: str) -> str:
    words = _words(_fold(phrase)).split(" ")
    wild = phrase.rstrip().endswith("*")
    body = r"\s".join(re.escape(w) for w in words if w)
    return rf"\b{body}[a-z]*\b" if wild else rf"\b{body}(?:s|es)?\b"


def _squeezed_pattern(phrase: str) -> str:
    return _pattern(_REPEATS.sub(r"\1", _words(_fold(phrase))) + ("*" if phrase.rstrip().endswith("*") else ""))


def parse_lines(lines: Iterable[str], category: str | None) -> list[Entry]:
    """One entry a line: `phrase`, `high: phrase`, `minor: phrase`, or (operator files)
    `category: phrase`. `category` None: an operator deny file (every entry HIGH)."""
    out: list[Entry] = []
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        head, sep, rest = line.partition(":")
        head = head.strip().lower()
        if category is None:  # operator deny file: `category: phrase` or a bare phrase
            cat, phrase = (head, rest.strip()) if sep and rest.strip() and " " not in head else ("operator", line)
            out.append(Entry(cat, phrase, HIGH))
        elif sep and head in ("high", "minor"):
            out.append(Entry(category, rest.strip(), HIGH, minor=head == "minor"))
        else:
            out.append(Entry(category, line, MEDIUM))
    return out


def _shipped(name: str) -> list[str]:
    return (resources.files("imagegate.safety") / "lists" / name).read_text(encoding="utf-8").splitlines()


def shipped_entries() -> list[Entry]:
    entries: list[Entry] = []
    for name, category in CATEGORY_FILES.items():
        entries += parse_lines(_shipped(name), category)
    return entries


@dataclass
class _Compiled:
    entry: Entry
    regexes: tuple[re.Pattern[str], ...]


@dataclass
class TextScores:
    scores: dict[str, float] = field(default_factory=dict)
    matched: dict[str, list[str]] = field(default_factory=dict)  # category → entries hit (for the operator)


class WordLists:
    """The shipped lists plus the operator's deny entries; allow entries are phrases whose
    words are taken out of the text before matching (they cannot unblock a deny entry)."""

    def __init__(self, entries: list[Entry], deny: list[Entry] | None = None, allow: list[str] | None = None) -> None:
        self.entries = [self._compile(e) for e in entries]
        self.deny = [self._compile(e) for e in deny or []]
        self.allow = [re.compile(_pattern(a)) for a in allow or [] if _words(_fold(a))]

    @classmethod
    def from_files(cls, deny_file: Path | None = None, allow_file: Path | None = None) -> WordLists:
        deny = parse_lines(_read(deny_file), None) if deny_file else []
        allow = [e.phrase for e in parse_lines(_shipped("allow.txt"), "allow")]
        if allow_file:
            allow += [e.phrase for e in parse_lines(_read(allow_file), "allow")]
        return cls(shipped_entries(), deny, allow)

    @staticmethod
    def _compile(e: Entry) -> _Compiled:
        patterns = [_pattern(e.phrase)]
        # Repeated letters squeezed on both sides ("naaaked" meets "naked"), unless that
        # leaves too little of the entry to mean anything ("xxx" would become "x").
        if len(_REPEATS.sub(r"\1", _words(_fold(e.phrase))).replace(" ", "")) >= 3:
            patterns.append(_squeezed_pattern(e.phrase))
        return _Compiled(e, tuple(re.compile(p) for p in dict.fromkeys(patterns)))

    def score(self, text: str) -> TextScores:
        forms = variants(text)
        out = TextScores()
        for c in self.deny:
            self._hit(out, c, forms)
        if self.allow:
            forms = [self._without_allowed(f) for f in forms]
        minor = False
        sexual = False
        for c in self.entries:
            if not any(r.search(f) for r in c.regexes for f in forms):
                continue
            if c.entry.minor:
                minor = True
                continue
            sexual = sexual or c.entry.category in ("sexual", MINORS)
            self._add(out, c.entry)
        if minor and sexual:  # a minor named beside anything sexual
            self._add(out, Entry(MINORS, "minor + sexual", HIGH))
        return out

    def _without_allowed(self, form: str) -> str:
        for r in self.allow:
            form = r.sub(" ", form)
        return form

    def _hit(self, out: TextScores, c: _Compiled, forms: list[str]) -> None:
        if any(r.search(f) for r in c.regexes for f in forms):
            self._add(out, c.entry)

    @staticmethod
    def _add(out: TextScores, e: Entry) -> None:
        out.scores[e.category] = max(out.scores.get(e.category, 0.0), e.score)
        out.matched.setdefault(e.category, []).append(e.phrase)


def _read(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the moderation list {path}: {exc}") from None
