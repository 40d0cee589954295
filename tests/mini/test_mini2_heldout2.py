"""Held-out phrasing split 2 (``training/mini/heldout2.py``): its prompts state every attribute in words
that map back to the scene, and neither training generator nor the first held-out split uses its phrases."""

import random

import pytest

from training.mini import heldout, heldout2
from training.mini.heldout import found_in, terms_in
from training.mini.language import corpus2
from training.mini.prompts import corpus
from training.mini.scenes import COLOUR_NAMES, POSITION_NAMES
from training.mini.world2 import KIND_NAMES, sample_scene2

N_SAMPLE = 20_000


COLOUR_TERMS = {**{c: c for c in COLOUR_NAMES}, **heldout2.COLOUR_OF}
KIND_TERMS = {**{k: k for k in KIND_NAMES}, **heldout2.KIND_OF}


def test_heldout2_phrases_are_found_on_word_boundaries():
    assert heldout2.uses_heldout2("A Massive ROBIN  on solid MAUVE") == ["massive", "mauve", "robin", "solid"]
    assert heldout2.uses_heldout2("I'm after a wee ball, low down on the left") == [
        "ball", "i'm after", "low down on the left", "wee"]
    assert heldout2.uses_heldout2("a red circle on a blue background") == []
    assert heldout2.uses_heldout2("a balloon, massively solidly blocked, then-ish") == ["then"]  # "-" is a boundary
    assert heldout2.uses_heldout2("balloons in the elmo spotlight") == []  # "ball", "elm", "spot" only as words


def test_ground_truth_maps_each_word_to_one_palette_name():
    assert set(heldout2.COLOURS) == set(COLOUR_NAMES)
    assert set(heldout2.KINDS) <= set(KIND_NAMES)
    assert set(heldout2.POSITIONS) == set(POSITION_NAMES)
    assert set(heldout2.SIZES) == {"small", "large"}
    for table, inverse in ((heldout2.COLOURS, heldout2.COLOUR_OF), (heldout2.KINDS, heldout2.KIND_OF),
                           (heldout2.SIZES, heldout2.SIZE_OF), (heldout2.POSITIONS, heldout2.POSITION_OF)):
        words = [w for ws in table.values() for w in ws]
        assert len(words) == len(set(words))  # no word stands for two things
        assert all(inverse[w] == name for name, ws in table.items() for w in ws)
    # a colour word names its own palette colour and no other, a kind word no other kind
    for w, c in heldout2.COLOUR_OF.items():
        assert terms_in(w, COLOUR_TERMS) == [c] and terms_in(w, KIND_TERMS) == [], w
    for w, k in heldout2.KIND_OF.items():
        assert terms_in(w, KIND_TERMS) == [k] and terms_in(w, COLOUR_TERMS) == [], w
    for frame in heldout2.BG_TAIL + heldout2.BG_HEAD:
        assert heldout2.uses_heldout2(frame.format(c="red")), frame  # every frame has its marker


@pytest.mark.parametrize("n", [1, 2, 3])
def test_heldout2_prompts_state_every_attribute(n):
    rng = random.Random(f"heldout2-{n}")
    for _ in range(300):
        scene = sample_scene2(rng, n, setting="plain")
        text = heldout2.describe(scene, rng)
        assert len(heldout2.uses_heldout2(text)) >= 3, text  # size, position, background frame at least
        assert heldout.uses_heldout(text) == [], text  # nothing of the first held-out split
        # every thing's colour, kind, size and position said, in the order of the things, and the background
        colours = terms_in(text, COLOUR_TERMS)
        assert colours.count(scene.background) == 1, text
        assert [c for c in colours if c != scene.background] == [t.colour for t in scene.things], text
        assert terms_in(text, KIND_TERMS) == [t.kind for t in scene.things], text
        assert terms_in(text, heldout2.SIZE_OF) == [t.size for t in scene.things], text
        assert terms_in(text, heldout2.POSITION_OF) == [t.pos for t in scene.things], text


def test_heldout2_prompts_vary():
    rng = random.Random(5)
    texts = [heldout2.describe(sample_scene2(rng, setting="plain"), rng) for _ in range(3000)]
    said = set(heldout2.uses_heldout2("\n".join(texts)))
    assert said == set(heldout2.PHRASES)  # every phrase comes up
    mentions = [w for t in texts for w in found_in(t, COLOUR_TERMS)]
    assert 0.2 < sum(w in COLOUR_NAMES for w in mentions) / len(mentions) < 0.4  # ~30% keep the palette word
    assert any(t[:1].isupper() for t in texts) and any(t[:1].islower() for t in texts)


def test_training_prompts_never_use_heldout2_phrases():
    for texts in (corpus2(0, N_SAMPLE), corpus(0, N_SAMPLE)):  # model 2's generator, and model 1's
        assert len(texts) >= N_SAMPLE
        assert [t for t in texts if heldout2.uses_heldout2(t)] == []


def test_the_two_heldout_splits_share_no_phrase():
    assert not set(heldout2.PHRASES) & set(heldout.PHRASES)
    assert [p for p in heldout2.PHRASES if heldout.uses_heldout(p)] == []
    assert [p for p in heldout.PHRASES if heldout2.uses_heldout2(p)] == []
    rng = random.Random(6)
    for _ in range(500):  # nor does split 1 say any phrase of split 2
        scene = sample_scene2(rng, setting="plain")
        for words in (True, False):
            text = heldout.describe(scene, rng, words=words)
            assert heldout2.uses_heldout2(text) == [], text
