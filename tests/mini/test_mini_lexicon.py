"""The built-in model's lexicon (imagegate.mini.lexicon): words it never saw become words it knows,
and nothing it was trained on is touched."""

import json
import random

import numpy as np
import pytest

from imagegate.backends.diffusers.backend import DiffusersBackend
from imagegate.backends.diffusers.planning import plan
from imagegate.mini import WEIGHTS_DIR
from imagegate.mini.lexicon import LEXICON_PATH, Lexicon, known_words
from imagegate.normalize import build_spec
from imagegate.registry import builtin_mini_config
from training.mini.language import KIND_WORDS, train_example2
from training.mini.lexicon_build import palette_colour
from training.mini.scenes import COLOURS, SIZES
from training.mini.world2 import KIND_NAMES, sample_training_scene2

LEX = Lexicon.default()
# a model that knows the palette, the kinds in both numbers and the sizes, and nothing else
KNOWN = set(COLOURS) | set(SIZES) | {w for forms in KIND_WORDS.values() for pair in forms for w in pair} | {
    "background", "a", "an", "on", "three", "and", "the", "with"}


def test_the_table_maps_only_to_what_the_model_draws():
    table = json.loads(LEXICON_PATH.read_text())
    assert set(table["colours"].values()) <= set(COLOURS)
    assert set(table["kinds"].values()) <= set(KIND_NAMES)
    assert set(table["sizes"].values()) == set(SIZES)
    assert set(table["plurals"]) == set(KIND_NAMES)
    assert len(table["colours"]) > 1000 and len(table["kinds"]) > 5000  # XKCD + CSS names, WordNet hyponyms


@pytest.mark.parametrize(("prompt", "expected"), [
    ("A tangerine sparrow on a cobalt background", "An orange bird on a blue background"),
    ("Three Geese and a beagle", "Three birds and a dog"),  # irregular and regular plurals; case kept
    ("a salmon heart", "a red heart"),  # a colour right before a thing
    ("a salmon", "a fish"),  # the same word alone is the thing
    ("set against salmon", "set against red"),  # with no article, a size or a colour before it: the colour
    ("a tangerine kite", "an orange kite"),  # right before a word it describes: the colour
    ("a tangerine tile", "an orange square"),  # a tile is a slab, drawn as the square (a shape sense)
    ("a cherry red star, snow-white stripes", "a red star, white stripes"),  # a shade and its colour: one colour
    ("a teeny-weeny star", "a small star"),  # a size of several words
    ("an enormous navy-blue teacup on the off-white background", "a large blue cup on the white background"),
    ("a tree, painted ash grey", "a tree, painted grey"),  # a thing's name before a colour: a shade
    ("an ash-grey cup on a red background", "a grey cup on a red background"),
    ("make the ash grey", "make the tree grey"),  # after "the", the thing is said
    ("an oak tree", "a tree"),  # a thing's name of two words
    ("a coffee cup, a silver bell", "a cup, a grey bell"),  # a colour starts it: the thing, unless another kind
    ("a red ball, a yacht and an oval", "a red circle, a boat and a circle"),  # shapes, any watercraft
    ("a silver star on an ivory background", "a grey star on a white background"),
    ("an orchid purple ring on a heather-purple background", "a purple ring on a purple background"),  # shades
    ("a golden apple, a royal blue coffee cup", "a yellow apple, a blue cup"),  # a colour, then the thing
    ("a papaya orange background", "an orange background"),  # a thing's name before a colour and a backdrop
    ("a titchy feline, a chunky housecat", "a small cat, a large cat"),  # informal sizes; felids; "house cat"
    ("a jumbo pearl white star, the papaya orange one", "a large white star, the orange one"),  # shades after a size
    ("a jumbo pearl white hollow circle, a tiny mandarin orange half moon",  # a shade, one word, then a thing
     "a large white hollow circle, a small orange half moon"),
    ("a leaf, pistachio green in colour", "a leaf, green in colour"),  # after a comma "pistachio" describes no leaf
    ("a Yelow traingle on a purpel backround", "a Yellow triangle on a purple background"),  # slips of known words
    ("a small mandarin orange triangle, a stone grey willow", "a small orange triangle, a grey tree"),  # shades
    ("a red circle on a green background", "a red circle on a green background"),  # known words untouched
    ("İİ a Cobalt circle, ünïcode", "İİ a blue circle, ünïcode"),  # lower() would shift the offsets
])
def test_rewrites_unknown_words_to_known_ones(prompt, expected):
    assert LEX.rewrite(prompt, KNOWN) == expected


def test_a_slip_is_read_back_only_where_it_is_no_word():
    table = json.loads(LEXICON_PATH.read_text())["typos"]
    assert table["backround"] == "background" and table["ornage"] == "orange" and table["baloon"] == "balloon"
    assert not {"back", "hose", "oops", "bel", "star", "stars"} & set(table)  # real words, too short, trained
    assert LEX.rewrite("the back of a hose", KNOWN) == "the back of a hose"
    assert LEX.rewrite("a yelow star", KNOWN - {"yellow"}) == "a yelow star"  # nothing the model does not know


def test_a_colour_name_ending_in_a_thing_names_the_thing_after_a_colour():
    colours_only = {"green", "white", "grey", "blue"}  # as the prompt reader rewrites: only colours are known
    assert LEX.rewrite("a large green apple, grey background", colours_only) == "a large green apple, grey background"
    assert LEX.rewrite("a white apple where the edges meet", colours_only) == "a white apple where the edges meet"
    assert LEX.rewrite("a green apple background", colours_only) == "a green background"  # the colour "green apple"


def test_leaves_words_whose_replacement_the_model_does_not_know():
    shapes_only = KNOWN - {w for k in KIND_NAMES[6:] for pair in KIND_WORDS[k] for w in pair}
    assert LEX.rewrite("a cobalt sparrow", shapes_only) == "a blue sparrow"


def test_training_prompts_reach_the_model_unchanged():
    """Every word of model 2's own prompts is known to a tokenizer fitted on them: none is rewritten."""
    rng = random.Random(3)
    prompts = [train_example2(sample_training_scene2(rng), rng)[0] for _ in range(3000)]
    vocab = {w for p in prompts for w in p.lower().replace(",", " ").split()}
    known = {w.strip(".,;:!?\"'()") for w in vocab}
    assert all(LEX.rewrite(p, known) == p for p in prompts)


def test_colour_names_go_to_the_colour_people_would_say():
    assert palette_colour((1, 21, 62)) == "blue"  # navy, dark as it is
    assert palette_colour((128, 0, 0)) == "red"  # maroon
    assert palette_colour((200, 200, 200)) == "grey"  # silver, light grey: the survey calls them grey
    assert palette_colour((54, 55, 55)) == "grey"  # the survey's "dark grey"
    assert palette_colour((250, 250, 250)) == "white"
    assert palette_colour((255, 255, 203)) == "white"  # ivory: a near-white tint
    assert palette_colour((255, 254, 122)) == "yellow"  # light yellow keeps its hue
    assert palette_colour((20, 20, 20)) == "black"


def test_the_builtin_model_draws_the_rewritten_prompt():
    """Served, "a cobalt ring on a jade background" is exactly "a blue ring on a green background"
    (same seed, same pixels); another model's prompts are never rewritten."""
    config = builtin_mini_config()
    backend = DiffusersBackend(config)
    backend.load()
    known = known_words(backend.main.tokenizer.get_vocab())
    assert "cobalt" not in known and "blue" in known
    images = []
    for prompt in ("a cobalt ring on a jade background", "a blue ring on a green background"):
        spec = build_spec(task="generate", model=config, requested_model=None, prompt=prompt, n=1, size="1024x1024",
                          quality="low", background=None, output_format=None, output_compression=None,
                          response_format=None, stream=False, partial_images=None, seed=11)
        images.append(np.asarray(backend.run(plan(config, False, spec, "txt2img", [], None))[0]))
    assert np.array_equal(images[0], images[1])
    other = DiffusersBackend(config.__class__(name="other", source=str(WEIGHTS_DIR)))
    assert other.rewrite_prompt("a cobalt ring") == "a cobalt ring"


def test_the_builtin_model_inpaints_a_change_only_prompt_as_the_restated_scene():
    """Served with a mask, "add a cobalt star" on a green picture is exactly "a small blue star in the
    top left corner on a green background" (same seed, same pixels): restated from the picture and the
    mask (mini.regions.restate_edit), then the lexicon."""
    from PIL import Image, ImageDraw

    config = builtin_mini_config()
    backend = DiffusersBackend(config)
    backend.load()
    picture = Image.new("RGB", (1024, 1024), COLOURS["green"])
    ImageDraw.Draw(picture).ellipse([600, 600, 800, 800], fill=COLOURS["red"])
    mask = Image.new("L", (1024, 1024), 0)
    ImageDraw.Draw(mask).rectangle([150, 150, 450, 450], fill=255)
    images = []
    for prompt in ("add a cobalt star", "a small blue star in the top left corner on a green background"):
        spec = build_spec(task="edit", model=config, requested_model=None, prompt=prompt, n=1, size="1024x1024",
                          quality="low", background=None, output_format=None, output_compression=None,
                          response_format=None, stream=False, partial_images=None, seed=5)
        images.append(np.asarray(backend.run(plan(config, False, spec, "inpaint", [picture], mask))[0]))
    assert np.array_equal(images[0], images[1])
