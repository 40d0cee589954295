"""Held-out phrasing split 4 (``training/mini/heldout4.py``, lists of two or three things): its prompts state
every attribute of every thing in words that map back to the scene, and neither training generator nor an
earlier held-out split uses its phrases."""

import random

import pytest

from training.mini import heldout, heldout2, heldout3, heldout4
from training.mini.heldout import found_in, terms_in
from training.mini.language import corpus2
from training.mini.prompts import corpus
from training.mini.scenes import COLOUR_NAMES, POSITION_NAMES, position_name
from training.mini.world2 import KIND_NAMES, sample_scene2

N_SAMPLE = 20_000


COLOUR_TERMS = {**{c: c for c in COLOUR_NAMES}, **heldout4.COLOUR_OF}
KIND_TERMS = {**{k: k for k in KIND_NAMES}, **heldout4.KIND_OF}
SIZE_TERMS = {"small": "small", "large": "large", **heldout4.SIZE_OF}
# a place: a cell phrase, or a row heading followed by places in that row
PLACE_TERMS = {**{w: ("cell", p) for w, p in heldout4.POSITION_OF.items()},
               **{w: ("row", r) for w, r in heldout4.ROW_OF.items()},
               **{w: ("col", c) for w, c in heldout4.COLUMN_OF.items()}}


def _cells(text: str) -> list[str]:
    out, row = [], None
    for what, v in terms_in(text, PLACE_TERMS):
        if what == "cell":
            out.append(v)
        elif what == "row":
            row = v
        else:
            assert row is not None, text  # a place in a row comes after its row
            out.append(position_name(v, row))
    return out


def _check(scene, text: str) -> None:
    """Every thing's colour, kind, size and place said, and the background: the things in the order of the
    first mention of their (distinct) colours, kind / size / place in that same order (a size said once for
    all where they share it)."""
    bg, things = scene.background, scene.things
    colours = terms_in(text, COLOUR_TERMS)
    assert colours.count(bg) == 1, text
    assert set(colours) == {bg} | {t.colour for t in things}, text
    order = list(dict.fromkeys(c for c in colours if c != bg))
    by_colour = {t.colour: t for t in things}
    assert len(by_colour) == len(things)  # distinct colours (sample_scene2(..., count_group=False))
    things = [by_colour[c] for c in order]
    assert terms_in(text, KIND_TERMS) == [t.kind for t in things], text
    sizes = terms_in(text, SIZE_TERMS)
    assert sizes == [t.size for t in things] or (
        len(things) > 1 and sizes == [things[0].size] and {t.size for t in things} == set(sizes)), text
    assert _cells(text) == [t.pos for t in things], text


def test_heldout4_phrases_are_found_on_word_boundaries():
    assert heldout4.uses_heldout4("Firstly, a WHOPPING  Lark at the left end") == [
        "at the left end", "firstly", "lark", "whopping"]
    assert heldout4.uses_heldout4("1) a red circle\n2) a blue star on a green background") == ["1)", "2)"]
    assert heldout4.uses_heldout4("a red circle on a blue background") == []
    assert heldout4.uses_heldout4("larks in the villages, justly") == []  # "lark", "villa", "just" only as words


def test_ground_truth_maps_each_word_to_one_palette_name():
    assert set(heldout4.COLOURS) == set(COLOUR_NAMES)
    assert set(heldout4.KINDS) <= set(KIND_NAMES)
    assert set(heldout4.POSITIONS) == set(POSITION_NAMES)
    assert set(heldout4.SIZES) == {"small", "large"}
    assert set(heldout4.ROWS) == set(heldout4.IN_ROW) == {0, 1, 2}
    for table, inverse in ((heldout4.COLOURS, heldout4.COLOUR_OF), (heldout4.KINDS, heldout4.KIND_OF),
                           (heldout4.SIZES, heldout4.SIZE_OF), (heldout4.POSITIONS, heldout4.POSITION_OF),
                           (heldout4.ROWS, heldout4.ROW_OF), (heldout4.IN_ROW, heldout4.COLUMN_OF)):
        words = [w for ws in table.values() for w in ws]
        assert len(words) == len(set(words))  # no word stands for two things
        assert all(inverse[w] == name for name, ws in table.items() for w in ws)
    places = [*heldout4.POSITION_OF, *heldout4.ROW_OF, *heldout4.COLUMN_OF]
    assert len(places) == len(set(places))
    # a colour word names its own palette colour and no other, a kind word no other kind
    for w, c in heldout4.COLOUR_OF.items():
        assert terms_in(w, COLOUR_TERMS) == [c] and terms_in(w, KIND_TERMS) == [], w
    for w, k in heldout4.KIND_OF.items():
        assert terms_in(w, KIND_TERMS) == [k] and terms_in(w, COLOUR_TERMS) == [], w
    for w in [*places, *heldout4.SIZE_OF]:  # places and sizes name no colour or kind
        assert terms_in(w, COLOUR_TERMS) == [] and terms_in(w, KIND_TERMS) == [], w
    for frame in heldout4.BG_TAIL:
        assert heldout4.uses_heldout4(frame.format(c="red", colour="colour", them="them")), frame


@pytest.mark.parametrize("n", [1, 2, 3])
def test_heldout4_prompts_state_every_attribute(n):
    rng = random.Random(f"heldout4-{n}")
    for _ in range(1000):
        scene = sample_scene2(rng, n, "plain", False)
        text = heldout4.describe(scene, rng)
        assert len(heldout4.uses_heldout4(text)) >= 2, text  # a place and the background sentence at least
        assert heldout.uses_heldout(text) == [] and heldout2.uses_heldout2(text) == [], text
        _check(scene, text)


def test_heldout4_prompts_vary():
    rng = random.Random(5)
    texts = [heldout4.describe(sample_scene2(rng, rng.choice([1, 2, 2, 3, 3]), "plain", False), rng)
             for _ in range(3000)]
    said = set(heldout4.uses_heldout4("\n".join(texts)))
    assert said == set(heldout4.PHRASES)  # every phrase comes up
    assert len(set(texts)) == len(texts)
    mentions = [w for t in texts for w in found_in(t, COLOUR_TERMS)]
    assert 0.4 < sum(w in COLOUR_NAMES for w in mentions) / len(mentions) < 0.6  # half keep the palette word
    kinds = [w for t in texts for w in found_in(t, KIND_TERMS)]
    assert 0.4 < sum(w in KIND_NAMES for w in kinds) / len(kinds) < 0.8
    assert any("\n" in t for t in texts) and any(t[:1].isupper() for t in texts) and any(t[:1].islower() for t in texts)


def test_training_prompts_never_use_heldout4_phrases():
    for texts in (corpus2(0, N_SAMPLE), corpus(0, N_SAMPLE)):  # model 2's generator, and model 1's
        assert len(texts) >= N_SAMPLE
        assert [t for t in texts if heldout4.uses_heldout4(t)] == []


def test_no_phrase_shared_with_the_other_heldout_splits():
    for other, uses in ((heldout, heldout.uses_heldout), (heldout2, heldout2.uses_heldout2)):
        assert not set(heldout4.PHRASES) & set(other.PHRASES)
        assert [p for p in heldout4.PHRASES if uses(p)] == []
        assert [p for p in other.PHRASES if heldout4.uses_heldout4(p)] == []
    rng = random.Random(6)
    for _ in range(500):  # nor do splits 1 and 2 say any phrase of split 4
        scene = sample_scene2(rng, setting="plain")
        for text in (heldout.describe(scene, rng), heldout.describe(scene, rng, words=False),
                     heldout2.describe(scene, rng)):
            assert heldout4.uses_heldout4(text) == [], text
    # split 3 is compared by its phrase set only, and only the number shared is ever reported (a count, not
    # the set, in the assertion: pytest would print the set's contents)
    shared = len(set(heldout4.PHRASES) & set(heldout3.PHRASES))
    assert shared == 0, f"{shared} phrases shared with split 3"
