"""The built-in model's segmenter (imagegate.mini.regions): the region a mask-less instruction names,
checked on rendered scenes of model 2's world, at the native size and at an upload's size."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image, ImageDraw

from imagegate.mini.regions import PALETTE, infer_region, restate_edit
from training.mini.scenes import COLOURS
from training.mini.world2 import Scene2, render2, sample_scene2


def _scene(seed: int, n: int, kinds: list[str] | None = None) -> Scene2:
    return sample_scene2(random.Random(seed), n, "plain", False, kinds)


def _pixels(img: Image.Image, colour: str) -> np.ndarray:
    return np.linalg.norm(np.asarray(img, np.float32) - np.array(PALETTE[colour], np.float32), axis=-1) < 20


def _mask(img: Image.Image, prompt: str) -> np.ndarray:
    region = infer_region(img, prompt)
    assert region is not None, prompt
    assert region.mode == "L" and region.size == img.size
    return np.asarray(region) > 127


def test_the_renderer_draws_with_the_served_palette():
    assert COLOURS == PALETTE


@pytest.mark.parametrize("prompt", ["make the background {c}", "Change the background to {c}.",
                                    "turn the backdrop {c}", "{c} background instead", "{c} background",
                                    "make the backround {c}", "turn the backdorp {c}"])  # slips read as the word
def test_background_instruction_takes_the_backdrop_and_keeps_the_things(prompt):
    for seed in range(6):
        scene = _scene(seed, 2)
        img = render2(scene)
        new = next(c for c in PALETTE if c not in (scene.background, *(t.colour for t in scene.things)))
        m = _mask(img, prompt.format(c=new))
        assert m[_pixels(img, scene.background)].all()
        for t in scene.things:
            inner = _pixels(img, t.colour)
            # grown 2 px into each thing's edge, never through a thing
            assert inner.sum() > 0 and m[inner].mean() < 0.75


@pytest.mark.parametrize("verb", ["remove the {c} {k}", "delete the {c} {k}", "get rid of the {c} {k}"])
def test_remove_takes_the_named_thing_only(verb):
    for seed in range(6):
        scene = _scene(100 + seed, 2)
        img = render2(scene)
        gone, kept = scene.things
        m = _mask(img, verb.format(c=gone.colour, k=gone.kind))
        assert m[_pixels(img, gone.colour)].all()
        assert m[_pixels(img, kept.colour)].mean() < 0.3


def test_colour_names_beyond_the_palette_name_the_thing_through_the_lexicon():
    names = {"red": "maroon", "blue": "navy", "green": "teal", "purple": "indigo", "yellow": "mustard"}
    tried = 0
    for seed in range(30):
        scene = _scene(200 + seed, 2)
        gone, kept = scene.things
        if gone.colour not in names:
            continue
        img = render2(scene)
        m = _mask(img, f"remove the {names[gone.colour]} {gone.kind}")
        assert m[_pixels(img, gone.colour)].all()
        assert m[_pixels(img, kept.colour)].mean() < 0.3
        tried += 1
    assert tried >= 5


def test_replace_and_change_take_a_box_around_the_named_thing_at_the_upload_size():
    scene = _scene(7, 2)
    img = render2(scene, size=512)
    old, other = scene.things
    for prompt in (f"replace the {old.colour} {old.kind} with a star", f"swap the {old.colour} {old.kind} for a cup",
                   f"change the {old.colour} {old.kind} to green", f"make the {old.colour} {old.kind} black"):
        m = _mask(img, prompt)
        ys, xs = np.nonzero(m)
        box = m[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        assert box.all(), prompt  # one rectangle
        assert m[_pixels(img, old.colour)].all()
        assert m[_pixels(img, other.colour)].mean() < 0.5


def test_a_thing_named_without_colour_is_found_when_it_is_the_only_one():
    scene = _scene(3, 1)
    img = render2(scene)
    assert _mask(img, f"remove the {scene.things[0].kind}")[_pixels(img, scene.things[0].colour)].all()
    two = render2(_scene(4, 2))
    assert infer_region(two, "remove the thing") is None  # which one: image-to-image instead


def test_add_takes_the_named_cell_or_the_emptiest():
    img = Image.new("RGB", (128, 128), PALETTE["blue"])
    tl = _mask(img, "add a red star in the top left corner")
    assert tl[30, 30] and not tl[98, 98]
    centre = _mask(img, "add a red star")
    assert centre[64, 64] and not centre[10, 10]
    scene = sample_scene2(random.Random(1), 1, "plain", False, ["circle"], cells=["centre"])
    busy = render2(scene)
    free = _mask(busy, "put a yellow cup here")
    assert not free[64, 64]


@pytest.mark.parametrize("prompt", ["a red circle on a blue background", "make it nicer", "",
                                    "remove the pink star", "replace the green square with a cat"])
def test_no_region_means_image_to_image(prompt):
    img = Image.new("RGB", (128, 128), PALETTE["blue"])
    ImageDraw.Draw(img).ellipse([40, 40, 88, 88], fill=PALETTE["red"])  # no pink, no green in it
    assert infer_region(img, prompt) is None


def test_the_colour_named_for_the_result_is_not_taken_for_the_thing():
    img = Image.new("RGB", (128, 128), PALETTE["blue"])
    ImageDraw.Draw(img).ellipse([40, 40, 88, 88], fill=PALETTE["red"])
    for prompt in ("change the circle to green", "make it green", "turn the red circle into a green star",
                   "make the red circle green", "Please recolour the circle to yellow"):
        m = _mask(img, prompt)
        assert m[64, 64] and not m[5, 5], prompt



def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


_PLACE = {"top left": "in the top left corner", "top": "at the top", "top right": "in the top right corner",
          "left": "on the left", "centre": "in the centre", "right": "on the right",
          "bottom left": "in the bottom left corner", "bottom": "at the bottom",
          "bottom right": "in the bottom right corner"}


@pytest.mark.parametrize(("prompt", "expected"), [
    ("a {n} star", "{s} {n} star {p}"),
    ("Add a {n} star.", "{s} {n} star {p}"),
    ("put a {n} star there", "{s} {n} star {p}"),
    ("put a small {n} star in the top left", "small {n} star in the top left"),
    ("replace the {o} {k} with a {n} star", "{s} {n} star {p}"),
    ("swap the {o} {k} for a big {n} star", "big {n} star {p}"),
    ("change the {o} {k} to {n}", "{s} {n} {k} {p}"),
    ("make the {o} {k} {n}", "{s} {n} {k} {p}"),
    ("star", "{s} star {p}"),
])
def test_change_only_edit_prompts_are_restated_on_the_backdrop_outside_the_mask(prompt, expected):
    """The model learnt to draw scenes, so "add a yellow star" is inpainted as "a small yellow star in
    the top left corner on a green background": the backdrop read from the picture where the mask
    leaves it, size and place from the mask's box (at any picture size) unless the prompt says them."""
    for seed in range(12):
        scene = _scene(300 + seed, 2)
        img = render2(scene)
        old = scene.things[0]
        new = next(c for c in PALETTE if c not in (scene.background, *(t.colour for t in scene.things)))
        r = old.r + 6
        mask = Image.new("L", img.size, 0)
        ImageDraw.Draw(mask).rectangle([old.cx - r, old.cy - r, old.cx + r, old.cy + r], fill=255)
        words = {"n": new, "o": old.colour, "k": old.kind, "s": old.size, "p": _PLACE[old.pos]}
        got = restate_edit(img.resize((1024, 1024)), mask.resize((1024, 1024)), prompt.format(**words))
        assert got == f"{_article(expected.format(**words))} on {_article(scene.background)} background"


@pytest.mark.parametrize("prompt", ["make the background blue", "Change the backdrop to navy.",
                                    "blue background instead", "change the background from red to blue"])
def test_background_instructions_are_restated_as_the_new_backdrop(prompt):
    img = render2(_scene(9, 1))
    assert restate_edit(img, Image.new("L", img.size, 255), prompt) == "a blue background"


@pytest.mark.parametrize("prompt", ["make the background nicer", "remove the red circle", "make it nicer",
                                    "make it blue", "a yellow star on a blue backdrop", ""])
def test_prompts_that_are_not_a_change_only_drawing_are_left_as_they_are(prompt):
    img = render2(_scene(7, 2))
    mask = Image.new("L", img.size, 0)
    ImageDraw.Draw(mask).rectangle([40, 40, 80, 80], fill=255)
    assert restate_edit(img, mask, prompt) == prompt


def test_no_flat_backdrop_outside_the_mask_leaves_the_prompt():
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8))
    img = render2(_scene(8, 1))
    assert restate_edit(photo, Image.new("L", (128, 128), 0), "add a star") == "add a star"
    assert restate_edit(img, Image.new("L", (128, 128), 255), "add a star") == "add a star"
    assert restate_edit(img, Image.new("L", (128, 128), 0), "add a star") == "add a star"  # nothing to paint


def test_colour_words_are_the_trained_ones_and_the_rest_come_from_the_lexicon():
    """regions reads the colour words both models were trained on as trained; a held-out name
    ("cobalt", "tangerine") is read through the lexicon, not a hand table written beside the split."""
    from imagegate.mini.regions import _COLOUR_OF, _colour_words, _words
    from training.mini.language import COLOUR_WORDS as WORDS2
    from training.mini.prompts import COLOUR_WORDS as WORDS1

    trained = {w: colour for table in (WORDS1, WORDS2) for colour, words in table.items() for w in words}
    assert trained == _COLOUR_OF
    assert _colour_words(_words("remove the cobalt circle and the tangerine star", r"[^a-z ]+")) == ["blue", "orange"]
