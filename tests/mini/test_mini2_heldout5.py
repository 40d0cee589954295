"""Held-out phrasing split 5 (``training/mini/heldout5.py``, free prose: things described in ordinary sentences):
its prompts state every attribute of every thing in words that map back to the scene, and neither training
generator nor an earlier held-out split uses its phrases."""

import random
import re

import pytest

from training.mini import heldout, heldout2, heldout3, heldout4, heldout5
from training.mini.heldout import found_in, terms_in
from training.mini.language import corpus2
from training.mini.prompts import corpus
from training.mini.scenes import COLOUR_NAMES, POSITION_NAMES
from training.mini.world2 import KIND_NAMES, sample_scene2

N_SAMPLE = 20_000
EARLIER = ((heldout, heldout.uses_heldout), (heldout2, heldout2.uses_heldout2), (heldout4, heldout4.uses_heldout4))


COLOUR_TERMS = {**{c: c for c in COLOUR_NAMES}, **heldout5.COLOUR_OF}
KIND_TERMS = {**{k: k for k in KIND_NAMES}, **heldout5.KIND_OF}
SIZE_TERMS = {"small": "small", "large": "large", **heldout5.SIZE_OF}


def _check(scene, text: str) -> None:
    """Every thing's colour, kind, size and place said, and the background: the things in the order of the
    first mention of their (distinct) colours, kind / size / place in that same order (each said once, in
    whichever sentence)."""
    bg, things = scene.background, scene.things
    colours = terms_in(text, COLOUR_TERMS)
    assert colours.count(bg) == 1, text
    assert set(colours) == {bg} | {t.colour for t in things}, text
    order = list(dict.fromkeys(c for c in colours if c != bg))
    by_colour = {t.colour: t for t in things}
    assert len(by_colour) == len(things)  # distinct colours (sample_scene2(..., count_group=False))
    things = [by_colour[c] for c in order]
    assert terms_in(text, KIND_TERMS) == [t.kind for t in things], text
    assert terms_in(text, SIZE_TERMS) == [t.size for t in things], text
    assert terms_in(text, heldout5.POSITION_OF) == [t.pos for t in things], text


def test_heldout5_phrases_are_found_on_word_boundaries():
    assert heldout5.uses_heldout5("What's more, a HEFTY  Seagull is flying near the top edge") == [
        "flying", "hefty", "near the top edge", "seagull", "what's more"]
    assert heldout5.uses_heldout5("A car, barbie pink all over. It's small.") == ["all over", "barbie pink", "it's"]
    assert heldout5.uses_heldout5("a red circle on a blue background") == []
    assert heldout5.uses_heldout5("pineapples in the hutch on a carpet, whiles drawing") == []  # "pine", "hut", ...


def test_ground_truth_maps_each_word_to_one_palette_name():
    assert set(heldout5.COLOURS) == set(COLOUR_NAMES)
    assert set(heldout5.KINDS) <= set(KIND_NAMES)
    assert set(heldout5.POSITIONS) == set(POSITION_NAMES)
    assert set(heldout5.SIZES) == {"small", "large"}
    assert set(heldout5.TYPOS) <= {*COLOUR_NAMES, *KIND_NAMES, "background"}
    for table, inverse in ((heldout5.COLOURS, heldout5.COLOUR_OF), (heldout5.KINDS, heldout5.KIND_OF),
                           (heldout5.SIZES, heldout5.SIZE_OF), (heldout5.POSITIONS, heldout5.POSITION_OF)):
        words = [w for ws in table.values() for w in ws]
        assert len(words) == len(set(words))  # no word stands for two things
        assert all(inverse[w] == name for name, ws in table.items() for w in ws)
    for name, typos in heldout5.TYPOS.items():  # a misspelling stands for its own word only
        for w in typos:
            assert w in heldout5.PHRASES and w not in heldout5.SIZE_OF and w not in heldout5.POSITION_OF
            assert heldout5.COLOUR_OF.get(w, name) == name and heldout5.KIND_OF.get(w, name) == name, w
            assert (w in heldout5.COLOUR_OF) + (w in heldout5.KIND_OF) == (name != "background"), w
    # a colour word names its own palette colour and no other, a kind word no other kind
    for w, c in heldout5.COLOUR_OF.items():
        assert terms_in(w, COLOUR_TERMS) == [c] and terms_in(w, KIND_TERMS) == [], w
    for w, k in heldout5.KIND_OF.items():
        assert terms_in(w, KIND_TERMS) == [k] and terms_in(w, COLOUR_TERMS) == [], w
    for w in [*heldout5.POSITION_OF, *heldout5.SIZE_OF]:  # places and sizes name no colour, kind or other size
        assert terms_in(w, COLOUR_TERMS) == [] and terms_in(w, KIND_TERMS) == [], w
        assert len(found_in(w, SIZE_TERMS)) == (w in heldout5.SIZE_OF) and len(found_in(w, heldout5.POSITION_OF)) == (
            w in heldout5.POSITION_OF), w
    # the other phrases (frames, verbs, connectives) name no colour, kind, size or place
    words = {**COLOUR_TERMS, **KIND_TERMS, **SIZE_TERMS, **heldout5.POSITION_OF}
    for p in heldout5.PHRASES:
        if p not in words:
            assert found_in(p, words) == [], p
    for frame in [*heldout5.BG_HEAD, *heldout5.BG_TAIL, heldout5.BG_WITH]:
        assert heldout5.uses_heldout5(frame.format(c="red")), frame  # every background frame has its marker


@pytest.mark.parametrize("n", [1, 2, 3])
def test_heldout5_prompts_state_every_attribute(n):
    rng = random.Random(f"heldout5-{n}")
    for _ in range(1000):
        scene = sample_scene2(rng, n, "plain", False)
        text = heldout5.describe(scene, rng)
        assert len(heldout5.uses_heldout5(text)) >= 2, text  # a place and a background marker at least
        for _, uses in EARLIER:  # nothing of an earlier split
            assert uses(text) == [], text
        _check(scene, text)


def test_heldout5_prompts_vary():
    rng = random.Random(5)
    texts = [heldout5.describe(sample_scene2(rng, rng.choice([1, 2, 2, 3, 3]), "plain", False), rng)
             for _ in range(3000)]
    said = set(heldout5.uses_heldout5("\n".join(texts)))
    assert said == set(heldout5.PHRASES)  # every phrase comes up
    assert len(set(texts)) == len(texts)
    mentions = [w for t in texts for w in found_in(t, COLOUR_TERMS)]
    assert 0.4 < sum(w in COLOUR_NAMES for w in mentions) / len(mentions) < 0.6  # half keep the palette word
    kinds = [w for t in texts for w in found_in(t, KIND_TERMS)]
    assert 0.4 < sum(w in KIND_NAMES for w in kinds) / len(kinds) < 0.7
    sentences = [len(re.findall(r"[.?!](?= )", t)) for t in texts]
    assert 0.3 < sum(s >= 1 for s in sentences) / len(texts) < 0.8  # prose of several sentences, and of one
    assert any(t[:1].isupper() for t in texts) and any(t[:1].islower() for t in texts)
    assert any(t.endswith("?") for t in texts) and any(t[-1:].isalpha() for t in texts)


def test_training_prompts_never_use_heldout5_phrases():
    for texts in (corpus2(0, N_SAMPLE), corpus(0, N_SAMPLE)):  # model 2's generator, and model 1's
        assert len(texts) >= N_SAMPLE
        assert [t for t in texts if heldout5.uses_heldout5(t)] == []


def test_no_phrase_shared_with_the_other_heldout_splits():
    for other, uses in EARLIER:
        assert not set(heldout5.PHRASES) & set(other.PHRASES)
        assert [p for p in heldout5.PHRASES if uses(p)] == []
        assert [p for p in other.PHRASES if heldout5.uses_heldout5(p)] == []
    rng = random.Random(6)
    for _ in range(500):  # nor do splits 1, 2 and 4 say any phrase of split 5
        scene = sample_scene2(rng, setting="plain")
        for text in (heldout.describe(scene, rng), heldout.describe(scene, rng, words=False),
                     heldout2.describe(scene, rng)):
            assert heldout5.uses_heldout5(text) == [], text
        scene = sample_scene2(rng, rng.choice([1, 2, 3]), "plain", False)
        text = heldout4.describe(scene, rng)
        assert heldout5.uses_heldout5(text) == [], text
    # split 3 is compared by its phrase set only, and only the number shared is ever reported (a count, not
    # the set, in the assertion: pytest would print the set's contents)
    shared = len(set(heldout5.PHRASES) & set(heldout3.PHRASES))
    assert shared == 0, f"{shared} phrases shared with split 3"
