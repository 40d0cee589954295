"""Fast checks of the scene world: renderer, prompts, checker, tokenizer (no weights needed)."""

import random

from imagegate.mini import NATIVE_SIZE, QUALITY_PRESETS, WEIGHTS_DIR
from training.mini.checker import check
from training.mini.prompts import corpus, describe, heldout_examples, is_heldout, train_prompt
from training.mini.scenes import render, sample_scene


def test_package_surface_is_cheap():
    import subprocess
    import sys

    code = "import sys, imagegate.mini as m; assert 'torch' not in sys.modules; print(m.NATIVE_SIZE)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                         env={"PYTHONPATH": str(WEIGHTS_DIR.parents[2])})
    assert out.returncode == 0, out.stderr
    assert NATIVE_SIZE == 128
    assert set(QUALITY_PRESETS) == {"low", "medium", "high"}
    assert all(isinstance(s, int) and isinstance(g, float) for s, g in QUALITY_PRESETS.values())


def test_package_keeps_weights_and_presets_only():
    """Training and evaluation live in training/mini/, outside the installed package; it holds what
    serving needs: the weights, the presets, the region reader for mask-less edits, the prompt
    lexicon, the prompt reader, the layout of several things and the inset of an edit's one thing (no torch)."""
    package = WEIGHTS_DIR.parent
    assert sorted(p.name for p in package.glob("*.py")) == ["__init__.py", "compose.py", "inset.py", "lexicon.py",
                                                             "reading.py", "regions.py"]
    for module in ("regions.py", "lexicon.py", "compose.py", "inset.py", "reading.py"):
        source = (package / module).read_text()
        assert not any(f"{w} {m}" in source for w in ("import", "from") for m in ("torch", "training"))


def test_checker_on_renderer_images():
    ok = tot = 0
    for scene, _prompt, claims in heldout_examples(123, 60):
        res = check(render(scene), scene, claims)
        res.pop("count", None)
        ok += sum(res.values())
        tot += len(res)
    assert ok / tot >= 0.99


def test_renderer_is_deterministic_and_antialiased():
    s1 = sample_scene(random.Random(5))
    s2 = sample_scene(random.Random(5))
    a, b = render(s1), render(s2)
    assert a.size == (NATIVE_SIZE, NATIVE_SIZE)
    assert a.tobytes() == b.tobytes()
    assert len(set(a.getdata())) > len(s1.objects) + 1  # edge pixels blend


def test_heldout_never_in_training():
    rng = random.Random(0)
    for _ in range(2000):
        assert not is_heldout(train_prompt(sample_scene(rng), rng))
    for _, prompt, _ in heldout_examples(0, 30):
        assert is_heldout(prompt)


def test_prompts_vary():
    scene = sample_scene(random.Random(1), 2)
    texts = {describe(scene, random.Random(i))[0] for i in range(50)}
    assert len(texts) > 30


def test_tokenizer_round_trip(tmp_path):
    from transformers import CLIPTokenizer

    from training.mini.tokenizer import build_tokenizer

    d = build_tokenizer(tmp_path / "tok", corpus(0, 2000))
    tok = CLIPTokenizer.from_pretrained(d)
    text = "a small red circle in the top left corner on a blue background"
    ids = tok(text).input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert len(ids) == len(text.split()) + 2  # every known word is one token
    assert tok.decode(ids, skip_special_tokens=True) == text
    odd = "Zebra quantum 東京 🚀 blorp"
    ids = tok(odd).input_ids  # unknown words fall back to byte-level symbols
    assert tok.decode(ids, skip_special_tokens=True).replace(" ", "") == odd.lower().replace(" ", "")


def test_parse_targets_follow_claims():
    """The text encoder's pre-training targets say exactly what the prompt claims, keyed by colour."""
    from training.mini.parse import AUX_GROUPS, IGNORE, RELS, text_targets
    from training.mini.prompts import Claims, ObjClaim
    from training.mini.scenes import COLOUR_NAMES, POSITION_NAMES, SHAPES, Obj, Scene

    n = len(COLOUR_NAMES)
    scene = Scene("blue", [Obj("star", "red", "small", "top left", 30, 30),
                           Obj("ring", "green", "large", "bottom right", 98, 98)])

    def group(t, name):
        i = [g for g, _ in AUX_GROUPS].index(name)
        return dict(zip(COLOUR_NAMES, t[1 + i * n:1 + (i + 1) * n], strict=True))

    full = text_targets(scene, Claims(True, [ObjClaim(), ObjClaim()]))
    assert len(full) == 1 + n * len(AUX_GROUPS)
    assert full[0] == COLOUR_NAMES.index("blue")
    assert group(full, "present")["red"] == 1 and group(full, "present")["pink"] == 0
    assert group(full, "shape")["green"] == SHAPES.index("ring") and group(full, "shape")["pink"] == IGNORE
    assert group(full, "pos")["red"] == POSITION_NAMES.index("top left")
    assert set(group(full, "rel").values()) == {IGNORE}

    rel = text_targets(scene, Claims(False, [ObjClaim(position=False), ObjClaim(position=False, shape=False)],
                                     relation=(0, "above", 1)))
    assert rel[0] == IGNORE
    assert group(rel, "rel")["red"] == RELS.index("above") and group(rel, "rel")["green"] == RELS.index("below")
    assert group(rel, "pos")["red"] == IGNORE and group(rel, "shape")["green"] == IGNORE
    # an object named without its colour: presence of every colour is unknown, not "absent"
    anon = text_targets(scene, Claims(True, [ObjClaim(colour=False), ObjClaim()]))
    assert group(anon, "present")["pink"] == IGNORE and group(anon, "present")["green"] == 1
    assert set(text_targets(scene, None)) == {IGNORE}  # the empty (unconditional) prompt


def test_training_prompts_leave_positions_open_only_where_the_layout_fixes_them():
    """Relation prompts come only with relation layouts and a single object goes unplaced only in the
    centre: an open position has many right answers, and the model learned to draw their average."""
    from training.mini.scenes import RELATION_CELLS, relation_layout, sample_training_scene

    rng = random.Random(0)
    relations = unplaced = 0
    for _ in range(3000):
        scene = sample_training_scene(rng)
        _, claims = describe(scene, rng)
        if claims.relation is not None:
            relations += 1
            assert relation_layout(scene)
            assert {o.pos for o in scene.objects} in [set(p) for p in RELATION_CELLS]
        elif len(scene.objects) == 1 and not claims.objects[0].position:
            unplaced += 1
            assert scene.objects[0].pos == "centre"
        else:
            assert all(c.position for c in claims.objects)
    assert 0.12 < relations / 3000 < 0.22 and unplaced > 50
    # evaluation prompts are unchanged: relations between objects anywhere, all attributes stated
    held = [(s, c) for s, _, c in heldout_examples(0, 120) if c.relation is not None]
    assert held and not all(relation_layout(s) for s, _ in held)
