"""The prompt reader alone, without the model: how often the server reads a phrasing as the scene it
describes (``imagegate.mini.reading`` after the lexicon, as ``targets.served_prompt`` serves it).

    python -m training.mini.reader_check [--n 1000] [--seed 0] [--show heldout2] [--blind]

For model 2's own grammar (``ingrammar``) and each held-out split (``heldout``, ``heldout2``,
``heldout3``; ``heldout4``: lists of several things, ``heldout5``: prose, development splits), one, two and three things
on a plain backdrop, every thing's colour, kind, size and place stated: ``read`` = the reader did not
decline, ``right`` = the backdrop and every thing (kind, colour, size, cell) read as the scene has them,
``wrong`` = read, but not as the scene (worse than declining: the model is then told something else).
A relation ("left of") says no row, so the model's own two-thing sentences are not all "right".
Seconds, no torch. Split 3 is the reader's blind test: it is counted only with ``--blind`` (a final
figure, not one to develop against), and ``--show``, which prints what a development split reads wrong
or declines, refuses it.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imagegate.mini.lexicon import Lexicon, known_words
from imagegate.mini.reading import KIND_WORDS, read
from imagegate.mini.regions import PALETTE

from . import heldout, heldout2, heldout3, heldout4, heldout5
from .language import describe2
from .scenes import POSITIONS
from .world2 import Scene2, sample_scene2


class _InGrammar:
    """Model 2's own generator, every attribute stated: what the reader must never misread."""

    @staticmethod
    def describe(scene: Scene2, rng: random.Random) -> str:
        return describe2(scene, rng, full=True)[0]


SPLITS: dict[str, Any] = {"ingrammar": _InGrammar, "heldout": heldout, "heldout2": heldout2, "heldout3": heldout3,
                          "heldout4": heldout4, "heldout5": heldout5}
BLIND = {"heldout3"}
_KIND = {s: kind for kind, forms in KIND_WORDS.items() for s, _ in forms}
TOKENIZER = Path(__file__).resolve().parents[2] / "src/imagegate/mini/weights/tokenizer/vocab.json"


def rewriter() -> Callable[[str], str]:
    import json

    return Lexicon.default().rewriter(known_words(json.loads(TOKENIZER.read_text())))


def verdict(scene: Scene2, served: str) -> tuple[str, str]:
    """("declined" | "right" | "wrong", what was read) for ``served``, a prompt as the model gets it."""
    got = read(served)
    if got is None:
        return "declined", ""
    background, things = got
    said = [(_KIND.get(words.split()[-1], words.split()[-1]), next((w for w in words.split() if w in PALETTE), None),
             size, cell) for words, cell, size in things]
    want = sorted((t.kind, t.colour, t.size, POSITIONS[t.pos]) for t in scene.things)
    ok = background == scene.background and sorted(said, key=str) == sorted(want, key=str)
    return ("right" if ok else "wrong"), f"{background}: {said}"


def run(n: int, seed: int, show: str | None, blind: bool = False) -> dict[str, Counter[str]]:
    rewrite = rewriter()
    out: dict[str, Counter[str]] = {}
    for name, split in SPLITS.items():
        if name in BLIND and not blind:
            continue
        for count in (1, 2, 3):
            rng = random.Random(f"reader-{name}-{count}-{seed}")
            tally: Counter[str] = Counter()
            for _ in range(n):
                scene = sample_scene2(rng, count, "plain", False)
                text = split.describe(scene, rng)
                served = rewrite(text)
                v, got = verdict(scene, served)
                tally[v] += 1
                if show == name and v != "right":
                    print(f"{v:8} {text!r}\n         -> {served!r}\n         read {got}\n         want "
                          f"{scene.background}: {[(t.kind, t.colour, t.size, t.pos) for t in scene.things]}")
            out[f"{name}/{count}"] = tally
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show", choices=[s for s in SPLITS if s not in BLIND], help="print what a split reads wrong")
    ap.add_argument("--blind", action="store_true", help="count the blind split 3 too")
    args = ap.parse_args()
    table = run(args.n, args.seed, args.show, args.blind)
    print(f"{'split/things':16} {'read':>7} {'right':>7} {'wrong':>7}   (n = {args.n} each)")
    for key, t in table.items():
        print(f"{key:16} {1 - t['declined'] / args.n:7.1%} {t['right'] / args.n:7.1%} {t['wrong'] / args.n:7.1%}")


if __name__ == "__main__":
    main()
