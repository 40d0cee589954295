"""Model 2's language: the held-out phrasing split is never used by the training generator."""

import random

from training.mini import heldout
from training.mini.prompts import corpus
from training.mini.world2 import sample_scene2

N_SAMPLE = 20_000


def test_heldout_phrases_are_found_on_word_boundaries():
    assert heldout.uses_heldout("A RUBY orb set against cobalt") == ["cobalt", "orb", "ruby", "set against"]
    assert heldout.uses_heldout("a red circle on a blue background") == []
    assert heldout.uses_heldout("a rendered orbit") == []  # "render", "orb" only as words


def test_heldout_prompts_use_heldout_words():
    rng = random.Random(0)
    for _ in range(200):
        scene = sample_scene2(rng, setting="plain")
        text = heldout.describe(scene, rng)
        assert len(heldout.uses_heldout(text)) >= 3, text  # colour, size, position at least


def test_model1_training_prompts_never_use_heldout_phrases():
    hits = [t for t in corpus(0, N_SAMPLE) if heldout.uses_heldout(t)]
    assert hits == []
