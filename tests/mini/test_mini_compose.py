"""imagegate.mini.compose: prompts with several things read as a layout, drawn one picture per thing
and composed; the built-in backend serves them that way (previews included)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from imagegate.backends.diffusers.backend import DiffusersBackend
from imagegate.backends.diffusers.planning import plan as plan_job
from imagegate.engine.base import JobRuntime
from imagegate.mini import compose
from imagegate.mini.compose import KIND_WORDS, plan
from imagegate.mini.lexicon import Lexicon
from imagegate.normalize import build_spec
from imagegate.registry import builtin_mini_config
from training.mini.language import KIND_WORDS as TRAINED_KIND_WORDS
from training.mini.language import SETTING_WORDS
from training.mini.prompts import SHAPE_WORDS, heldout_examples, relations_holding
from training.mini.scenes import POSITIONS, Obj, Scene, render


def test_the_kind_words_are_the_trained_ones():
    """Both models' training words (model 2's with plurals; "crescent moon" is two words and "moon" is
    already one), and nothing else."""
    trained = {kind: {pair for pair in forms if pair[0] != "crescent moon"}
               for kind, forms in TRAINED_KIND_WORDS.items()}
    assert {kind: set(forms) for kind, forms in KIND_WORDS.items()} == trained
    assert all(w in {s for s, _ in KIND_WORDS[shape]} for shape, words in SHAPE_WORDS.items() for w in words)


def test_model_1s_held_out_scenes_are_read_as_they_were_drawn():
    """Every held-out prompt of model 1 with two or three things (300) is laid out with the scene's
    backdrop, and each thing with its colour, kind, size and cell; relation prompts get cells where
    the relation holds."""
    rewrite = Lexicon.default().rewrite
    for k, (scene, prompt, claims) in enumerate(heldout_examples(3, 300, mix=(0.0, 0.5, 0.5))):
        layout = plan(rewrite(prompt, set()), k)
        assert layout is not None, prompt
        assert layout.background == scene.background and len(layout.things) == len(scene.objects), prompt
        cells = [t.cell for t in layout.things]
        if claims.relation:
            _, rel, _ = claims.relation  # "A left of B": A is named first, and laid out first
            laid = Scene(scene.background, [Obj("circle", "red", "small", _name(c), 0, 0) for c in cells])
            assert rel in relations_holding(laid, 0, 1), prompt
            continue
        want = sorted((o.colour, o.shape, o.size, POSITIONS[o.pos]) for o in scene.objects)
        got = sorted((t.words.split()[1], _kind(t.words.split()[2]), t.size, t.cell) for t in layout.things)
        assert got == want, prompt


def _name(cell: tuple[int, int]) -> str:
    return next(name for name, c in POSITIONS.items() if c == cell)


def _kind(word: str) -> str:
    return next(kind for kind, forms in KIND_WORDS.items() if word in {s for s, _ in forms})


@pytest.mark.parametrize("prompt", [
    "a red circle and a blue square",  # no backdrop
    "two red stars and a blue square on a green background",  # a count
    "a red circle and three stars on white",
    "a red circle in the top left corner and a blue square in the top left corner on white",  # one cell
    "a red circle, a blue square, a yellow star and a pink heart on a white background",  # four things
    "a red blue circle and a square on a green background",  # two colours for one thing
    "a red circle left of a blue square above a star on white",  # two relations
    "a small red circle, a blue square and a dragon on a white background",  # a thing it does not know
    "a red circle and a yellow star at night on a blue background",  # a setting: the model's to read whole
    "a red circle and a blue square on the sea, green sky",
])
def test_what_it_cannot_read_is_left_to_the_model(prompt):
    assert plan(prompt, 0) is None


@pytest.mark.parametrize("prompt", [
    "i want 1 big red square at the bottom centre. 1 large blue triangle at the top left background white",
    "on white; a large red square at the bottom center / a blue triangle, large at the top left.",
    "a large red square at the bottom centre and a large blue triangle in the top left corner against white",
    "A Large Red Square At The Bottom Centre, A Large Blue Triangle Top Left, On A Plain White Colour",
    "background: white. bottom centre: 1 large red square. top left: a large blue triangle",
])
def test_model_2s_training_phrasings_are_read(prompt):
    """Model 2's training grammar: "1", sentences, slashes, colons, a backdrop named last without a
    preposition or as "a plain … colour"."""
    layout = plan(prompt, 0)
    assert layout is not None and layout.background == "white"
    assert sorted((t.words, t.cell) for t in layout.things) == [("large blue triangle", (0, 0)),
                                                                ("large red square", (1, 2))]


@pytest.mark.parametrize("prompt", [
    "1) a red star in the top left 2) a blue circle in the bottom right; background green",
    "- a red star (top left)\n- a blue circle (bottom right)\n- green background",
    "\u2022 a red star, top left\n\u2022 a blue circle, bottom right\nbackground: green",
    "two shapes: a red star top left and a blue circle bottom right, on green",
    "a red star in the top left and a blue circle below it, on green",
    "a red star in the top left and a blue circle to its right, on green",
])
def test_lists_and_things_placed_against_the_one_before_are_read(prompt):
    """Line breaks, bullets and "1)" mark a list's items; "two shapes:" counts them; "below it" / "to its
    right" place the second thing against the first (two cells away where the grid has room)."""
    from imagegate.mini.reading import read

    got = read(prompt)
    assert got is not None and got[0] == "green"
    (first, first_cell, _), (second, second_cell, _) = got[1]
    assert (first, first_cell) == ("red star", (0, 0))
    assert second == "blue circle" and second_cell in ((2, 2), (0, 2), (2, 0))


@pytest.mark.parametrize("prompt", [
    "three shapes: a red star top left and a blue circle bottom right, on green",  # the count does not hold
    "a red star at the top and a blue circle above it, on green",  # no room above it
])
def test_a_list_that_does_not_hold_together_is_left_to_the_model(prompt):
    from imagegate.mini.reading import read

    assert read(prompt) is None


@pytest.mark.parametrize(("prompt", "background", "things"), [
    # a row or column heading places the things after it; "the middle of that row" is no heading
    ("upper row: a red star at the far left, then a blue circle in the middle of that row. background: green",
     "green", [("blue circle", (1, 0)), ("red star", (0, 0))]),
    ("left column: a red star at the top; right column: a blue circle near the bottom, on a green field",
     "green", [("blue circle", (2, 2)), ("red star", (0, 0))]),
    # things named first, placed after by their colour or their kind
    ("a red star and a blue circle, placed so: the blue one top right and the red one bottom left, on white",
     "white", [("blue circle", (2, 0)), ("red star", (0, 2))]),
    ("a red star and a blue circle; the star goes top left, the circle bottom right. the wall is yellow",
     "yellow", [("blue circle", (2, 2)), ("red star", (0, 0))]),
    # an order along an axis, a count that says what the things share, "both"
    ("going left to right: a red star and a blue circle, grey behind them", "grey",
     [("blue circle", (2, 1)), ("red star", (0, 1))]),
    ("2 large shapes: a red star (top left) and a blue circle (bottom right). set the backdrop to pink", "pink",
     [("large blue circle", (2, 2)), ("large red star", (0, 0))]),
    ("a red star and a blue circle, both tiny, where the top and right edges meet and at the centre, on black",
     None, None),  # one place for two things: not read
    ("a red star in the corner where the bottom and left sides meet, with a sheet of white behind", "white",
     [("red star", (0, 2))]),
    ("a red star, a blue circle and a yellow heart in a row on pink", "pink",
     [("blue circle", (1, 1)), ("red star", (0, 1)), ("yellow heart", (2, 1))]),
    ("a red star and a blue circle on green; star top left, circle in the bottom right of the canvas", "green",
     [("blue circle", (2, 2)), ("red star", (0, 0))]),
    ("a red star sits up top while a blue circle sits down low, on green", "green",
     [("blue circle", (1, 2)), ("red star", (1, 0))]),
    # prose: a thing "blue all over", sentences joined by "one more thing:", a backdrop that "fills the rest",
    # a shape said by its adjective, a shade in a hyphenated compound, a size it cannot read passed over, a verb
    # of place after a thing it does not know, a lunar crescent
    ("a star, blue all over, rests up top. one more thing: a circular shape that is red sits at the bottom, "
     "and egg-yolk yellow fills the rest", "yellow", [("blue star", (1, 0)), ("red circle", (1, 2))]),
    ("a bite-sized three-sided figure whose colour is pink, top left; a green lunar crescent bottom right, on black",
     "black", [("green moon", (2, 2)), ("pink triangle", (0, 0))]),
    ("a red zeppelin rests near the left edge, on a white background", "white", [("red zeppelin", (0, 1))]),
    # "green apple" and "apple" are colour names too: here an apple, its colour green
    ("a green apple where the bottom and left edges meet, a white apple up top, on a blue backing", "blue",
     [("green apple", (0, 2)), ("white apple", (1, 0))]),
])
def test_headings_back_references_and_orders_are_read(prompt, background, things):
    """Rows and columns as headings, things said again to be placed ("the blue one", "the star"), an order
    ("left to right"), a count that shares a size, corners said as edges meeting, backdrop sentences."""
    from imagegate.mini.reading import read

    got = read(prompt)
    if background is None:
        assert got is None
        return
    assert got is not None and got[0] == background
    assert sorted((words, cell) for words, cell, _ in got[1]) == things


@pytest.mark.parametrize("prompt", [
    "a pewter cup in the top left, on green",  # a word before the thing that may be a colour it does not know
    "a cup, painted pewter, top left, on green",
    "a red star and a blue star; the star goes top left, on green",  # "the star": which one?
    "a red star and a blue circle; the green one goes top left, on white",  # no green one was said
])
def test_what_may_be_an_unknown_colour_or_an_unclear_reference_is_left_to_the_model(prompt):
    from imagegate.mini.reading import read

    assert read(prompt) is None


@pytest.mark.parametrize(("prompt", "restated"), [
    ("show me a red star towards the upper right, set against navy",
     "a red star in the top right corner on a blue background"),
    ("Could you draw a big crimson heart? Put it dead centre, and make everything else lime.",
     "a large red heart in the centre on a green background"),
    ("a blue square, green background", "a blue square on a green background"),  # the example
    ("a red circle, blue all around it", "a red circle on a blue background"),  # the colour no thing takes
    ("purple behind everything; a boat, painted red, on the left", "a red boat on the left on a purple background"),
    ("a pink heart over on the left hand side against white", "a pink heart on the left on a white background"),
    ("a snow-white star on a cherry red background", "a white star on a red background"),  # shades, by the lexicon
    ("on blue paper: a yellow orb, up in the north-west corner",  # a noun it does not know, kept
     "a yellow orb in the top left corner on a blue background"),
    ("a red circle with stripes on a green background", "a red circle on a green background"),  # passed over
    ("a large hollow circle that's pink, in the upper right corner, on purple",  # a circle's outline
     "a large pink ring in the top right corner on a purple background"),
    ("a triangle, painted chalk white, surrounded by yellow please",  # a word it does not know shades a colour
     "a white triangle on a yellow background"),
    ("the backdrop is carrot orange, and on it a boat on the far right", "a boat on the right on an orange background"),
])
def test_one_thing_is_restated_in_the_models_own_grammar(prompt, restated):
    """Whatever the sentence around it, one thing on a backdrop reaches the model as the sentence it was
    trained on; what the prompt leaves open (place, size) stays open."""
    layout = plan(Lexicon.default().rewrite(prompt, set()), 0)
    assert layout is not None and layout.prompts() == [restated]


@pytest.mark.parametrize(("place", "cell"), [
    ("upper left", (0, 0)), ("north west", (0, 0)), ("towards the lower right", (2, 2)), ("up top", (1, 0)),
    ("down low", (1, 2)), ("on the far left, halfway down", (0, 1)), ("right in the middle", (1, 1)),
    ("centred at the bottom", (1, 2)), ("high up on the right", (2, 0)), ("in the middle of the left side", (0, 1)),
    ("on the left", (0, 1)), ("top", (1, 0)), ("bottom right", (2, 2)), ("southeast", (2, 2)),
])
def test_places_are_read_word_by_word(place, cell):
    layout = plan(f"a large red star {place}, on a blue background", 0)
    assert layout is not None and layout.things[0].cell == cell


def test_a_colour_after_a_thing_that_borrowed_one_is_its_own():
    """A colour before the first thing is lent to it, but a colour said after it is its own, and the one
    it borrowed is then the backdrop ("green: a red circle" is read the same way)."""
    layout = plan("purple, a boat, painted red", 0)
    assert layout is not None and layout.prompts() == ["a red boat on a purple background"]
    layout = plan("green: a red circle", 0)
    assert layout is not None and layout.prompts() == ["a red circle on a green background"]


@pytest.mark.parametrize("phrase", sorted({p for ps in SETTING_WORDS.values() for p in ps}))
def test_a_setting_is_left_to_the_model(phrase):
    """Model 2 learnt ground, sea and night skies; a layout draws flat backdrops, so it does not take them."""
    text = phrase.format(s="blue", b="green")
    assert plan(f"a red circle {text}, green background", 0) is None


def test_one_small_thing_is_laid_out_in_its_cell_or_the_centre():
    layout = plan("a tiny crimson star on a green background", 4)
    assert layout is not None and layout.prompts() == ["a large red star in the centre on a green background"]
    assert layout.things[0].size == "small"
    layout = plan("a small blue heart at the bottom on white", 4)
    assert layout is not None and layout.things[0].cell == (1, 2)


def test_the_prompts_are_the_model_grammar_and_open_places_vary_with_the_seed():
    layout = plan("in the top left corner, a crimson disc, and a box that is blue, large; on a plain green bg", 0)
    assert layout is not None
    assert layout.prompts()[0] == "a red disc in the top left corner on a green background"
    assert layout.prompts()[1].startswith("a large blue box ")
    laid = {plan("a red circle and a blue square on a green background", seed).things  # type: ignore[union-attr]
            for seed in range(30)}
    assert len(laid) > 5
    for things in laid:  # spaced as training spaced them: unsaid sizes may be large
        (a, b) = (t.cell for t in things)
        assert np.hypot(34 * (a[0] - b[0]), 34 * (a[1] - b[1])) >= 25 + 25 + 5
    rel = plan("a red circle to the left of a blue square on white", 0)
    assert rel is not None and [t.cell for t in rel.things] == [(0, 1), (2, 1)]
    rel = plan("a red circle under a blue square on white", 0)
    assert rel is not None and [t.cell for t in rel.things] == [(1, 2), (1, 0)]


def test_composing_rendered_things_gives_the_rendered_scene():
    """The renderer's pictures of each thing alone, composed, are the renderer's scene of all of them
    (up to the antialiased rims where a neighbour's backdrop pixels differ by rounding)."""
    rng = random.Random(0)
    for _ in range(20):
        cells = rng.sample(list(POSITIONS.values()), 3)
        if any(np.hypot(34 * (a[0] - b[0]), 34 * (a[1] - b[1])) < 55 for a in cells for b in cells if a != b):
            continue
        objs = [Obj(rng.choice(["circle", "star", "heart"]), colour, "large", _name(c), 30 + 34 * c[0], 30 + 34 * c[1])
                for c, colour in zip(cells, ["red", "blue", "yellow"], strict=True)]
        layout = compose.Layout("green", tuple(compose.Thing(f"{o.colour} {o.shape}", c, "large")
                                               for o, c in zip(objs, cells, strict=True)))
        alone = [render(Scene("green", [o])) for o in objs]
        got = np.asarray(layout.compose(alone), np.int16)
        want = np.asarray(render(Scene("green", objs)), np.int16)
        assert np.abs(got - want).max() <= 2


@pytest.fixture(scope="module")
def backend() -> DiffusersBackend:
    b = DiffusersBackend(builtin_mini_config())
    b.load()
    return b


def test_the_backend_serves_a_layout_with_n_images_and_n_previews(backend):
    config = backend.config
    prompt = "a red circle in the top left corner, a blue square at the bottom and a yellow star on the right on white"
    spec = build_spec(task="generate", model=config, requested_model=None, prompt=prompt, n=2, size="1536x1024",
                      quality="low", background=None, output_format=None, output_compression=None,
                      response_format=None, stream=True, partial_images=2, seed=7)
    previews: list[tuple[int, int, tuple[int, int]]] = []
    runtime = JobRuntime(on_preview=lambda i, k, im: previews.append((i, k, im.size)))
    images = backend.run(plan_job(config, False, spec, "txt2img", [], None), runtime)
    assert len(images) == 2 and all(im.width == 1.5 * im.height for im in images)  # extended to 3:2
    assert sorted((i, k) for i, k, _ in previews) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    alone = backend.run(plan_job(config, False, spec, "txt2img", [], None))
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, alone, strict=True))


@pytest.mark.parametrize("shape", ["star", "heart", "triangle", "ring", "square", "circle"])
def test_a_small_thing_is_asked_for_large_and_shrunk_in_its_cell(shape):
    """Model 1 draws small silhouettes badly (a small star comes out round), so a small thing is
    drawn large and shrunk about its cell centre: the checker reads the result as the small thing."""
    from training.mini.checker import read

    layout = compose.Layout("green", (compose.Thing(f"small red {shape}", (2, 0), "small"),
                                      compose.Thing("blue circle", (0, 2), None)))
    assert layout.prompts()[0] == f"a large red {shape} in the top right corner on a green background"
    drawn = [render(Scene("green", [Obj(shape, "red", "large", "top right", 98, 30)])),
             render(Scene("green", [Obj("circle", "blue", "large", "bottom left", 30, 98)]))]
    found = sorted((o.colour, o.shape, o.size, o.pos) for o in read(layout.compose(drawn)).objects)
    assert found == [("blue", "circle", "large", "bottom left"), ("red", shape, "small", "top right")]


@pytest.mark.parametrize("shape", ["star", "heart", "circle"])
def test_one_small_thing_alone_is_shrunk_and_nothing_of_its_large_drawing_is_left(shape):
    from training.mini.checker import read

    layout = compose.Layout("blue", (compose.Thing(f"small yellow {shape}", (0, 0), "small"),))
    drawn = render(Scene("blue", [Obj(shape, "yellow", "large", "top left", 30, 30)]))
    found = [(o.colour, o.shape, o.size, o.pos) for o in read(layout.compose([drawn])).objects]
    assert found == [("yellow", shape, "small", "top left")]
