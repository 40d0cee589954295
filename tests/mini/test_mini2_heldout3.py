"""Held-out phrasing split 3, the blind split (``training/mini/heldout3.py``): its prompts state every
attribute in words that map back to the scene, and neither training generator nor the earlier held-out splits
use its phrases."""

import random
import re

import pytest

from training.mini import heldout, heldout2, heldout3
from training.mini.language import corpus2
from training.mini.prompts import corpus
from training.mini.scenes import COLOUR_NAMES, POSITION_NAMES
from training.mini.world2 import KIND_NAMES, Scene2, sample_scene2

N_SAMPLE = 20_000


def _found(text: str, words: dict[str, str]) -> list[str]:
    """The terms of ``words`` in ``text``, in order (longest first, on word boundaries: a two-word synonym
    that ends in a palette or kind word is found whole)."""
    t = " ".join(text.lower().split())
    return re.findall("|".join(rf"(?<![a-z]){re.escape(w)}(?![a-z])" for w in sorted(words, key=len, reverse=True)), t)


def _terms(text: str, words: dict[str, str]) -> list[str]:
    """The palette names that the terms of ``words`` in ``text`` stand for, in order."""
    return [words[m] for m in _found(text, words)]


COLOUR_TERMS = {**{c: c for c in COLOUR_NAMES}, **heldout3.COLOUR_OF}
KIND_TERMS = {**{k: k for k in KIND_NAMES}, **heldout3.KIND_OF}
PLAIN_SIZE_TERMS = {w: s for s, ws in heldout3.PLAIN_SIZES.items() for w in ws}
SIZE_TERMS = {**PLAIN_SIZE_TERMS, **heldout3.SIZE_OF}


def _sample(tag: str, n: int | None = None, count: int = 300) -> list[tuple[Scene2, str]]:
    rng = random.Random(tag)
    out = []
    for _ in range(count):
        scene = sample_scene2(rng, n, setting="plain")
        out.append((scene, heldout3.describe(scene, rng)))
    return out


def test_heldout3_phrases_are_found_on_word_boundaries():
    assert heldout3.uses_heldout3("A GIGANTIC  Wren, Laid Out On Carmine") == ["carmine", "gigantic", "laid out on",
                                                                            "wren"]
    assert heldout3.uses_heldout3("Could I get a teensy hut, up in the top left?") == [
        "could i get", "hut", "teensy", "up in the top left"]
    assert heldout3.uses_heldout3("a red circle on a blue background") == []
    assert heldout3.uses_heldout3("a shut hutch, roses and lilywhite wrens") == []  # "hut", "rose", ... as words only
    assert heldout3.uses_heldout3("a rose-finally") == ["finally", "rose"]  # "-" is a boundary


def test_ground_truth_maps_each_word_to_one_palette_name():
    assert set(heldout3.COLOURS) == set(COLOUR_NAMES)
    assert set(heldout3.KINDS) <= set(KIND_NAMES)
    assert set(heldout3.POSITIONS) == set(POSITION_NAMES)
    assert set(heldout3.SIZES) == set(heldout3.PLAIN_SIZES) == {"small", "large"}
    for table, inverse in ((heldout3.COLOURS, heldout3.COLOUR_OF), (heldout3.KINDS, heldout3.KIND_OF),
                           (heldout3.SIZES, heldout3.SIZE_OF), (heldout3.POSITIONS, heldout3.POSITION_OF)):
        words = [w for ws in table.values() for w in ws]
        assert len(words) == len(set(words))  # no word stands for two things
        assert all(inverse[w] == name for name, ws in table.items() for w in ws)
    # a colour word names its own palette colour and no other, a kind word no other kind, and neither says a
    # size or a position; sizes and positions say nothing else either
    for w, c in heldout3.COLOUR_OF.items():
        assert _terms(w, COLOUR_TERMS) == [c] and _terms(w, KIND_TERMS) == [] == _found(w, SIZE_TERMS), w
    for w, k in heldout3.KIND_OF.items():
        assert _terms(w, KIND_TERMS) == [k] and _terms(w, COLOUR_TERMS) == [] == _found(w, SIZE_TERMS), w
    for w, s in heldout3.SIZE_OF.items():
        assert _terms(w, SIZE_TERMS) == [s] and _found(w, COLOUR_TERMS) == [] == _found(w, KIND_TERMS), w
    for w, p in heldout3.POSITION_OF.items():
        assert _terms(w, heldout3.POSITION_OF) == [p], w
        assert _found(w, COLOUR_TERMS) == _found(w, KIND_TERMS) == _found(w, SIZE_TERMS) == [], w
    # the frames say no colour, kind, size or position of their own
    frames = [*heldout3.BG_TAIL, *heldout3.BG_HEAD, *heldout3.TAIL_TEMPLATES, *heldout3.HEAD_TEMPLATES,
              heldout3.LIST_TEMPLATE, *heldout3.CONNECTIVES, *heldout3.LAST_CONNECTIVES]
    for frame in frames:
        for words in (COLOUR_TERMS, KIND_TERMS, SIZE_TERMS, heldout3.POSITION_OF):
            assert _found(frame, words) == [], frame
    for frame in heldout3.BG_TAIL + heldout3.BG_HEAD:
        assert heldout3.uses_heldout3(frame.format(c="red")), frame  # every frame has its marker
    assert all(heldout3.uses_heldout3(c) for c in heldout3.CONNECTIVES + heldout3.LAST_CONNECTIVES)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_heldout3_prompts_state_every_attribute(n):
    for scene, text in _sample(f"heldout3-{n}", n):
        assert len(heldout3.uses_heldout3(text)) >= 2, text  # position and background frame at least
        assert heldout.uses_heldout(text) == [] == heldout2.uses_heldout2(text), text  # nothing of splits 1, 2
        # every thing's colour, kind, size and position said, in the order of the things, and the background
        colours = _terms(text, COLOUR_TERMS)
        assert colours.count(scene.background) == 1, text
        assert [c for c in colours if c != scene.background] == [t.colour for t in scene.things], text
        assert _terms(text, KIND_TERMS) == [t.kind for t in scene.things], text
        assert _terms(text, SIZE_TERMS) == [t.size for t in scene.things], text
        assert _terms(text, heldout3.POSITION_OF) == [t.pos for t in scene.things], text


def test_heldout3_prompts_vary():
    texts = [text for _, text in _sample("heldout3-variety", count=3000)]
    said = set(heldout3.uses_heldout3("\n".join(texts)))
    assert said == set(heldout3.PHRASES)  # every phrase comes up
    mentions = [w for t in texts for w in _found(t, COLOUR_TERMS)]
    assert 0.2 < sum(w in COLOUR_NAMES for w in mentions) / len(mentions) < 0.4  # ~30% keep the palette word
    sizes = [w for t in texts for w in _found(t, SIZE_TERMS)]
    assert 0.2 < sum(w in PLAIN_SIZE_TERMS for w in sizes) / len(sizes) < 0.4  # ~30% plain size words
    assert set(sizes) == set(SIZE_TERMS)
    assert any(t[:1].isupper() for t in texts) and any(t[:1].islower() for t in texts)
    assert any(t.endswith("?") for t in texts) and any(t[-1:].isalpha() for t in texts)
    # the background comes first in some prompts and last in others
    firsts = {_terms(t, COLOUR_TERMS)[0] == s.background for s, t in _sample("heldout3-order", count=300)}
    assert firsts == {True, False}


def test_training_prompts_never_use_heldout3_phrases():
    for texts in (corpus2(0, N_SAMPLE), corpus(0, N_SAMPLE)):  # model 2's generator, and model 1's
        assert len(texts) >= N_SAMPLE
        assert [t for t in texts if heldout3.uses_heldout3(t)] == []


def test_heldout3_shares_no_phrase_with_the_earlier_splits():
    for other, uses in ((heldout, heldout.uses_heldout), (heldout2, heldout2.uses_heldout2)):
        assert not set(heldout3.PHRASES) & set(other.PHRASES)
        assert [p for p in heldout3.PHRASES if uses(p)] == []  # none contains an earlier phrase
        assert [p for p in other.PHRASES if heldout3.uses_heldout3(p)] == []  # nor is contained in one
    rng = random.Random(6)
    for _ in range(500):  # nor do the prompts of splits 1 and 2 say any phrase of split 3
        scene = sample_scene2(rng, setting="plain")
        for words in (True, False):
            text = heldout.describe(scene, rng, words=words)
            assert heldout3.uses_heldout3(text) == [], text
        text = heldout2.describe(scene, rng)
        assert heldout3.uses_heldout3(text) == [], text
