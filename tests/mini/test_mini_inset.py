"""imagegate.mini.inset: an edit with a mask that asks for one thing is drawn alone (as text-to-image
serves one thing) and set into the mask. The model here is a fake: model 2's renderer draws what
each prompt asks for; the last test runs the real built-in model through the backend."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from imagegate.mini.inset import Inset, plan_inset
from imagegate.mini.lexicon import Lexicon
from imagegate.mini.regions import _CELLS, served_prompt
from training.mini.checker2 import read2
from training.mini.targets import change_only_cases
from training.mini.world2 import Scene2, Thing, render2

_RW = Lexicon.default().rewrite


def _served(prompt: str, image: Image.Image, mask: Image.Image) -> str:
    return served_prompt(prompt, lambda p: _RW(p, set()), image, mask)


def _draw(inset: Inset, kind: str, colour: str) -> Image.Image:
    """The fake model: the asked thing large in the layout's cell (the centre when the place is open)
    on the layout's backdrop, as ``inset.prompts()`` asks for it."""
    col, row = inset.things[0].cell or (1, 1)
    assert colour in inset.prompts()[0] and "small" not in inset.prompts()[0]
    return render2(Scene2(inset.background, [Thing(kind, colour, "large", "", _CELLS[col], _CELLS[row], 25.0)]))


def _box(x0: int, y0: int, x1: int, y1: int, size: int = 128) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rectangle([x0, y0, x1, y1], fill=255)
    return mask


def test_change_only_edits_are_drawn_alone_and_set_into_the_box():
    """The evaluation's change-only cases ("a yellow star", "add …", "replace the red circle with …",
    "put … there"): each is planned as an inset, the thing found by the checker inside the box with its
    colour and kind, the old thing gone, and every pixel outside the mask the original's."""
    for scene, new, prompt, mask in change_only_cases(40, 3):
        orig = render2(scene)
        inset = plan_inset(_served(prompt, orig, mask), orig, mask)
        assert inset is not None, prompt
        assert inset.canvas_mask().getextrema() == (255, 255)  # the pipeline draws the whole picture
        out = inset.compose([_draw(inset, new.kind, new.colour)])
        box = np.asarray(mask) > 127
        assert np.array_equal(np.asarray(out)[~box], np.asarray(orig)[~box]), prompt
        found = read2(out).things
        assert any(f.colour == new.colour and f.kind == new.kind and box[int(f.cy), int(f.cx)] for f in found), prompt
        old = scene.things[0]
        assert not any(f.colour == old.colour and box[int(f.cy), int(f.cx)] for f in found), prompt


def test_a_tight_box_centres_the_thing_and_a_large_one_keeps_where_it_was_drawn():
    orig = render2(Scene2("green", [Thing("circle", "red", "large", "", 98, 98, 25.0)]))
    mask = _box(32, 20, 72, 60)  # a small box off the grid's cells
    inset = plan_inset(_served("add a yellow star", orig, mask), orig, mask)
    assert inset is not None and inset.things[0].size == "small"
    (star,) = [f for f in read2(inset.compose([_draw(inset, "star", "yellow")])).things if f.colour == "yellow"]
    assert abs(star.cx - 52) <= 2 and abs(star.cy - 40) <= 2 and star.kind == "star"
    mask = _box(3, 3, 124, 124)  # nearly the whole picture: "in the top left corner" is where it goes
    inset = plan_inset(_served("add a yellow star in the top left corner", orig, mask), orig, mask)
    assert inset is not None
    out = read2(inset.compose([_draw(inset, "star", "yellow")]))
    (star,) = [f for f in out.things if f.colour == "yellow"]
    assert star.cx < 45 and star.cy < 45
    assert not any(f.colour == "red" for f in out.things)  # under the mask: repainted as backdrop


def test_a_thing_larger_than_its_box_is_shrunk_to_fit():
    orig = render2(Scene2("blue", []))
    mask = _box(50, 50, 80, 80)
    inset = plan_inset("a large white house in the centre on a blue background", orig, mask)
    assert inset is not None
    out = np.asarray(inset.compose([_draw(inset, "house", "white")]))
    white = np.linalg.norm(out.astype(np.float32) - 250, axis=-1) < 60
    ys, xs = np.nonzero(white)
    assert white.sum() > 100 and xs.min() >= 50 and xs.max() <= 80 and ys.min() >= 50 and ys.max() <= 80


def test_the_box_takes_the_backdrop_around_it_when_the_model_draws_nothing():
    """Nothing drawn: the mask is the backdrop read just outside it (the old thing gone), no seam."""
    orig = render2(Scene2("pink", [Thing("square", "black", "large", "", 64, 64, 25.0)]))
    mask = _box(30, 30, 98, 98)
    inset = plan_inset(_served("replace the black square with a red heart", orig, mask), orig, mask)
    assert inset is not None
    out = np.asarray(inset.compose([render2(Scene2("pink", []))]))
    assert np.abs(out.astype(int) - np.asarray(orig)[2, 2].astype(int)).max() <= 1


@pytest.mark.parametrize("prompt", ["remove the red circle", "erase the red circle on a green background",
                                    "make the background blue", "make it nicer", "two red circles and a blue star"])
def test_what_is_not_one_thing_on_a_backdrop_is_inpainted_in_place(prompt):
    orig = render2(Scene2("green", [Thing("circle", "red", "large", "", 64, 64, 25.0)]))
    mask = _box(30, 30, 98, 98)
    assert plan_inset(_served(prompt, orig, mask), orig, mask) is None


def test_an_empty_or_mismatched_mask_or_a_wide_picture_is_not_an_inset():
    orig = render2(Scene2("green", []))
    text = "a small red star in the centre on a green background"
    assert plan_inset(text, orig, Image.new("L", (128, 128), 0)) is None
    assert plan_inset(text, orig, _box(10, 10, 40, 40, size=256)) is None
    assert plan_inset(text, orig, _box(10, 10, 40, 40)) is not None
    wide = render2(Scene2("green", [])).resize((192, 128))
    mask = Image.new("L", wide.size, 0)
    ImageDraw.Draw(mask).rectangle([10, 10, 40, 40], fill=255)
    assert plan_inset(text, wide, mask) is None  # a wide canvas: inpainted in place


def test_the_builtin_backend_sets_the_thing_into_the_mask_and_keeps_the_rest():
    """The real model through the backend, an upload's size: outside the mask every pixel is the
    original's (before the service's own composite); n images, one per seed."""
    from imagegate.backends.diffusers.backend import DiffusersBackend
    from imagegate.backends.diffusers.planning import plan
    from imagegate.normalize import build_spec
    from imagegate.registry import builtin_mini_config

    config = builtin_mini_config()
    backend = DiffusersBackend(config)
    backend.load()
    picture = render2(Scene2("green", [Thing("circle", "red", "large", "", 98, 98, 25.0)]), size=512)
    mask = _box(60, 60, 200, 200, size=512)
    spec = build_spec(task="edit", model=config, requested_model=None, prompt="add a yellow star", n=2,
                      size="512x512", quality="low", background=None, output_format=None, output_compression=None,
                      response_format=None, stream=False, partial_images=None, seed=3)
    job = plan(config, False, spec, "inpaint", [picture], mask)
    assert isinstance(backend._layout(job, "a small yellow star in the top left corner on a green background", 3),
                      Inset)
    images = backend.run(job)
    keep = np.asarray(job.edit_mask) <= 127
    assert len(images) == 2
    for im in images:
        assert im.size == job.init_image.size
        assert np.array_equal(np.asarray(im)[keep], np.asarray(job.init_image.convert("RGB"))[keep])
