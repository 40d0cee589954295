"""Model 2's language: the richer training generator, and the held-out phrasing split that it never
uses (sampled over 20,000+ training prompts)."""

import random
import re

from training.mini import heldout
from training.mini.language import EDITS, corpus2, describe2, edit_instruction
from training.mini.prompts import corpus
from training.mini.world2 import COLOUR_NAMES, Scene2, Thing, sample_scene2, sample_training_scene2

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


def test_heldout_frames_keep_the_frames_and_name_things_with_training_words():
    rng = random.Random(1)
    words = {w for ws in (*heldout.COLOURS.values(), *heldout.KINDS.values(), *heldout.SIZES.values()) for w in ws}
    for _ in range(200):
        scene = sample_scene2(rng, setting="plain")
        text = heldout.describe(scene, rng, words=False)
        found = heldout.uses_heldout(text)
        assert found and not words & set(found), text  # held-out frames, no held-out word
        for t in scene.things:
            assert re.search(rf"\b{t.size} {t.colour} {t.kind}\b", text), text
        assert re.search(rf"\b{scene.background}\b", text), text


def test_training_prompts_never_use_heldout_phrases():
    for texts in (corpus2(0, N_SAMPLE), corpus(0, N_SAMPLE)):  # model 2's generator, and model 1's
        assert len(texts) >= N_SAMPLE
        assert [t for t in texts if heldout.uses_heldout(t)] == []


def test_generator_covers_the_issue_list():
    texts = [t.lower() for t in corpus2(1, 5000)]
    joined = "\n".join(texts)
    for phrase in ("backdrop", "background", " on ", " over ", "against", "in front of", "centre", "center",
                   "grey", "gray", "colour", "color", ";", "crimson", "navy", "violet", "lime", " two ", " 2 ",
                   "add ", "put ", "replace ", "remove ", "make the background", "change the "):
        assert phrase in joined, phrase
    assert any(t != t.lower() for t in corpus2(1, 500))  # capitalisation noise
    assert any(not re.search(r"\b(a|an|the)\b", t) for t in texts)  # fragments without articles


def test_counts_are_things_and_backdrops_are_not():
    rng = random.Random(2)
    scene = Scene2("blue", [Thing("star", "red", "small", "left", 30, 64, 14),
                            Thing("star", "red", "small", "right", 98, 64, 14)])
    for _ in range(100):
        text, claims = describe2(scene, rng, full=True)
        assert len(claims.things) == 1 and claims.things[0].idx == [0, 1], text  # one counted group
        assert re.search(r"\b(two|2)\b", text.lower()), text
    one = Scene2("blue", [Thing("circle", "red", "large", "centre", 64, 64, 25)])
    for _ in range(300):  # "in front of a plain blue backdrop" names the background, not a second thing
        text, claims = describe2(one, rng)
        assert len(claims.things) == 1 and claims.relation is None, text


def test_edit_instructions_claim_only_the_change():
    rng = random.Random(3)
    for _ in range(300):
        scene = sample_training_scene2(rng)
        verb = rng.choice(EDITS)
        text, claims = edit_instruction(scene, rng, verb)
        assert claims.edit == verb
        present = {(t.colour, t.kind) for t in scene.things}
        assert not set(claims.absent) & present, (text, claims.absent)
        if verb == "background":
            assert claims.background and not claims.things
        elif verb == "remove":
            assert claims.absent and not claims.things
        else:
            assert len(claims.things) == 1 and not claims.background
        assert all(c in COLOUR_NAMES for c, _ in claims.absent)


def test_the_issues_examples_are_training_phrasings():
    """"a white boat on a blue sea" (the boat at its home on the sea, position unsaid) and "a red car
    under a yellow sun ..." (a relation with its layout) are among what the generator says of such scenes."""
    from training.mini.world2 import place

    rng = random.Random(7)
    boat = Scene2("white", [place(rng, "boat", "white", "bottom", "large")], "sea", "blue")
    car = Scene2("blue", [place(rng, "car", "red", "bottom", "small"), place(rng, "sun", "yellow", "top", "small")],
                 "ground", "green")
    said = {describe2(s, rng)[0].lower().rstrip(".!") for s in (boat, car) for _ in range(4000)}
    assert "a white boat on a blue sea" in said
    assert any("red car under a yellow sun" in t for t in said)
