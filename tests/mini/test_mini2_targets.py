"""The issue #27 target lines judge the renderer's own pictures as right (so a miss is the model's),
and their prompts say what the line claims (fast: no model)."""

import random
from typing import Any

import pytest

from training.mini import heldout
from training.mini.checker2 import read2
from training.mini.evaluate import composite
from training.mini.targets import (
    _full_prompt_relation,
    change_only_cases,
    edge_colour_error,
    multi_checks,
    single_checks,
)
from training.mini.world2 import Scene2, place, render2, sample_scene2


def test_lines_pass_on_rendered_ground_truth():
    rng = random.Random(0)
    for _ in range(20):
        scene = sample_scene2(rng, 1, "plain", False)
        assert all(single_checks(render2(scene), scene).values())
    right = [multi_checks(render2(s), s)["all_right"] for s in (sample_scene2(rng, 3, "plain", False)
                                                                for _ in range(20))]
    assert sum(right) >= 19


def test_a_stated_relation_is_judged_as_a_relation_not_as_its_row():
    rng = random.Random(3)
    asked = Scene2("white", [place(rng, "car", "red", "bottom left", "small"),
                             place(rng, "cup", "blue", "bottom right", "small")])
    text, relation = "", None
    while relation is None:  # the line's own prompt for that pair: mostly "A left of B" / "B right of A"
        text, relation = _full_prompt_relation(asked, rng)
    assert relation[1] in ("left of", "right of") and "bottom" not in text.lower()
    row_up = Scene2("white", [place(rng, "car", "red", "left", "small"), place(rng, "cup", "blue", "right", "small")])
    swapped = Scene2("white", [place(rng, "car", "red", "right", "small"), place(rng, "cup", "blue", "left", "small")])
    up = multi_checks(render2(row_up), asked, relation)
    assert up["all_right"] and not up["all_right_cells"]  # the prompt did not say which row
    assert multi_checks(render2(asked), asked, relation)["all_right"]
    assert not multi_checks(render2(swapped), asked, relation)["all_right"]
    askew = Scene2("white", [place(rng, "car", "red", "top left", "small"),
                             place(rng, "cup", "blue", "bottom right", "small")])
    assert not multi_checks(render2(askew), asked, relation)["all_right"]  # left of it, but not side by side
    assert not multi_checks(render2(row_up), asked)["all_right"]  # cells stated: the row counts


def test_change_only_prompts_state_only_the_change():
    for scene, new, prompt, mask in change_only_cases(16, 0):
        low = prompt.lower()
        assert "background" not in low and not heldout.uses_heldout(prompt)
        assert new.colour in low or any(w in low for w in ("crimson", "scarlet", "navy", "azure", "lime", "emerald",
                                                            "golden", "gold", "amber", "violet", "magenta", "gray"))
        truth = scene.__class__(scene.background, [new, scene.things[1]])
        out = composite(render2(scene), render2(truth), mask)  # a perfect inpainting
        assert any(f.colour == new.colour and f.kind == new.kind
                   for f in read2(out).things)


def test_edge_error_is_zero_on_the_truth():
    scene = sample_scene2(random.Random(1), 2, "plain", False)
    truth = render2(scene, 256, alpha=True)
    assert edge_colour_error(truth, truth)["edge_colour_error"] == 0.0


def test_instruct_cases_are_done_by_a_perfect_edit_of_the_inferred_region():
    from imagegate.mini.regions import infer_region
    from training.mini.targets import INSTRUCT_FORMS, instruct_cases, instruct_checks

    cases = instruct_cases(30, 0)
    assert {c[0] for c in cases} == set(INSTRUCT_FORMS)
    for form, before, after, prompt in cases:
        orig = render2(before)
        assert not all(instruct_checks(orig, before, after).values()), prompt  # the edit is needed
        region = infer_region(orig, prompt)
        assert region is not None, prompt
        out = composite(orig, render2(after), region)  # the model draws exactly the scene after
        assert all(instruct_checks(out, before, after).values()), (form, prompt)


def test_served_change_only_prompts_name_the_new_thing_on_the_scenes_backdrop():
    from imagegate.mini.regions import restate_edit

    for scene, new, prompt, mask in change_only_cases(40, 0):
        served = restate_edit(render2(scene), mask, prompt)
        article = "an" if scene.background[0] in "aeiou" else "a"
        head = served.removesuffix(f" on {article} {scene.background} background")
        assert head != served and head.startswith(("a ", "an ")), (prompt, served)
        # the new thing as asked, with its size and place from the mask
        said = set(prompt.lower().rstrip(".!").split()) | {"a", "an", new.size}
        assert set(head.split()) - said <= {"in", "the", "at", "on", "top", "bottom", "left", "right", "centre",
                                            "corner"}, (prompt, served)


def test_line_selectors_are_refused_where_they_would_be_ignored():
    from training.mini.evaluate import main

    for argv in (["--edits-only"], ["--language-only"], ["--objects-only"],
                 ["--served-only"], ["--targets", "--language-only", "--edits-only"],
                 ["--targets", "--objects-only", "--edits-only"], ["--targets", "--served-only", "--objects-only"],
                 ["--kinds-only"], ["--targets", "--kinds-only", "--served-only"],
                 ["--part", "splits"], ["--targets", "--part", "rest", "--served-only"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2


class _Recorder:
    """A stand-in for the model's generator that records its calls and draws a blank picture."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, bool]] = []

    def __call__(self, prompt: str, seed: int, served: bool = False) -> Any:  # a PIL image
        from PIL import Image

        self.calls.append((prompt, seed, served))
        return Image.new("RGB", (128, 128), (250, 250, 250))


def test_objects_only_draws_the_full_runs_prompts_and_seeds():
    """--objects-only gives the two- and three-thing lines (and their served twins) exactly the prompts
    and seeds of a full run. The generator here is a stand-in that records its calls (no model)."""
    from training.mini.targets import run_lines

    full, only = _Recorder(), _Recorder()
    res_full = run_lines(full, 6, 0)  # type: ignore[arg-type]
    res_only = run_lines(only, 6, 0, objects_only=True)  # type: ignore[arg-type]
    assert set(res_only) == {k for k in res_full if k.split("/")[0].split("_")[0] in ("two", "three")
                             or k in ("n/two", "n/three", "n/two_served", "n/three_served")}
    assert len(only.calls) == 24 and set(only.calls) <= set(full.calls)
    assert sum(served for _, _, served in only.calls) == 12


def test_run_lines_refuses_a_part_other_than_splits_or_rest_before_drawing():
    """A Python caller's unknown ``part`` is a ValueError, not a full run drawn under a wrong name."""
    from training.mini.targets import run_lines

    gen = _Recorder()
    with pytest.raises(ValueError, match="splits"):
        run_lines(gen, 2, 0, part="both")  # type: ignore[arg-type]
    assert gen.calls == []


def test_served_only_draws_the_full_runs_served_prompts_and_seeds():
    """--served-only gives every line served through the prompt reader exactly the prompts and seeds of a
    full run, and draws nothing the model alone would (a stand-in generator that records its calls)."""
    from training.mini.targets import run_lines

    full, only = _Recorder(), _Recorder()
    res_full = run_lines(full, 6, 0)  # type: ignore[arg-type]
    res_only = run_lines(only, 6, 0, served_only=True)  # type: ignore[arg-type]
    assert set(res_only) == {k for k in res_full if "_served" in k.split("/")[1 if k.startswith("n/") else 0]}
    assert only.calls == [c for c in full.calls if c[2]] and all(served for _, _, served in only.calls)


def test_the_two_parts_draw_exactly_a_full_runs_lines():
    """--part splits and --part rest (two processes) draw between them exactly what a full run draws, each
    drawing once, with the same prompts and seeds, and report between them every line it reports."""
    from collections import Counter

    from training.mini.targets import run_lines

    full, splits, rest = _Recorder(), _Recorder(), _Recorder()
    res_full = run_lines(full, 6, 0)  # type: ignore[arg-type]
    res_splits = run_lines(splits, 6, 0, part="splits")  # type: ignore[arg-type]
    res_rest = run_lines(rest, 6, 0, part="rest")  # type: ignore[arg-type]
    assert Counter(splits.calls) + Counter(rest.calls) == Counter(full.calls)
    assert splits.calls and rest.calls and not set(res_splits) & set(res_rest)
    assert set(res_splits) | set(res_rest) == set(res_full)
    assert all(k.removeprefix("n/").startswith("heldout") and k.removeprefix("n/")[7].isdigit() for k in res_splits)


def test_kinds_only_asks_each_everyday_kind_and_shape_served_and_says_what_it_was_read_as():
    """--kinds-only (run_kinds): n served prompts of each of the 24 everyday kinds, then of each of the six shapes,
    each its own seed, and for a stand-in that always draws a red umbrella, every other kind is read as an
    umbrella every time; the shapes come after the everyday kinds, whose prompts and seeds stay as they were."""
    from training.mini.scenes import SHAPES
    from training.mini.targets import _full_prompt, run_kinds
    from training.mini.world2 import ICON_NAMES, Scene2, Thing

    umbrella = render2(Scene2("white", [Thing("umbrella", "red", "large", "centre", 64, 64, 25.0)]))

    class _Umbrellas(_Recorder):
        def __call__(self, prompt: str, seed: int, served: bool = False) -> Any:
            super().__call__(prompt, seed, served)
            return umbrella

    gen = _Umbrellas()
    res = run_kinds(gen, 3, 0)  # type: ignore[arg-type]
    assert res["n/kinds_served"] == 3 * len(ICON_NAMES)
    assert res["n/kinds_served_shapes"] == 3 * len(SHAPES)
    assert len(gen.calls) == len({s for _, s, _ in gen.calls}) == 3 * (len(ICON_NAMES) + len(SHAPES))
    assert all(served for _, _, served in gen.calls)
    assert all(res[f"kinds_served_as/{k}/umbrella"] == 1.0 for k in ICON_NAMES + SHAPES if k != "umbrella")
    assert res["kinds_served/all"] == res["kinds_served/umbrella"] / len(ICON_NAMES)
    assert res["kinds_served/shapes"] == 0.0 and all(res[f"kinds_served/{k}"] == 0.0 for k in SHAPES)
    assert not any(k.startswith("kinds_served_as/umbrella/") for k in res)
    rng = random.Random("targets-kinds-0")  # the everyday stream as it was before the shapes were added
    before = []
    for i in range(3 * len(ICON_NAMES)):
        scene = sample_scene2(rng, 1, "plain", False, [ICON_NAMES[i % len(ICON_NAMES)]], home=0.0)
        before.append((_full_prompt(scene, rng), 500_000 + i, True))
    assert gen.calls[:len(before)] == before
