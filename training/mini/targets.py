"""The target lines of issue #27, each measured on its own prompts and reported apart.

    python -m training.mini.evaluate --targets [--model DIR] [--n-per-line 40] [--seed 0]

Lines (docs/imagegate-mini.md, "Model 2"):

* ``ingrammar``: one shape on a plain background, described by model 2's generator (all stated);
  colour / background / shape / position / size. (Model 1's own grammar: ``evaluate`` without --targets.)
  ``ingrammar_served``: the same prompts and seeds as the server serves them (read by
  ``imagegate.mini.reading`` and restated in the model's own sentence where it can be).
* ``heldout``: the same scenes described only in held-out phrasings (``heldout.py``); mean of checks.
* ``heldout_served``: the ``heldout`` prompts and seeds again, as the server serves them to the
  built-in model (its lexicon, ``imagegate.mini.lexicon``, then its reader): what a user typing them gets.
* ``heldout_frames``: the same scenes in held-out frames (templates, background frames, position
  phrases) with the colours', sizes' and kinds' own names, which training uses; mean of checks.
* ``heldout2``, ``heldout3`` (alone and ``_served``; ``heldout2_two_served`` ...): the same scenes, and
  the ``two`` / ``three`` scenes served, in held-out splits 2 and 3 (``heldout2.py``, ``heldout3.py``:
  phrasings, synonyms and frames in neither training nor split 1, written 2026-12-04 by sessions that
  had not read the server's prompt reader). Split 2 was then the reader's development set; split 3 is
  its blind test: its author never saw its phrases. ``heldout4`` (``heldout4.py``, written 2026-12-05 the
  same way): lists of two and three things, the reader's next development set; ``heldout5``
  (``heldout5.py``, the same way, later that day): prose, sentences with verbs of place, pronouns, typing slips.
* ``everyday``: one of the 24 icons, in-grammar; recognised = right kind and colour (``checker2``).
  ``everyday_served``: the same prompts and seeds as the server serves them (a small thing drawn large, shrunk).
* ``two``, ``three``: things of any kind; fully right = each found by colour with its kind and its place as the
  prompt states it: its cell, or, where the prompt states a relation instead ("a red car left of a blue cup"), the
  relation: the two found in cells that the line's prompts describe by that relation (``language.relation_of``),
  the outer cells of the middle or the bottom row, which the words leave open, or of the centre column.
  ``all_right_cells``: each in its scene's exact cell whatever the prompt says (the check before 2026-12-06).
  ``two_served``, ``three_served``: the same prompts and seeds as the server serves them to the
  built-in model: through the lexicon, then one picture per thing, composed (``imagegate.mini.compose``).
* ``inpaint``: a two-thing scene, the box around thing 0 masked, a change-only prompt ("a yellow
  star", "add a yellow star", "replace the red circle with a yellow star", "put a yellow star there");
  drawn = the asked kind and colour found inside the box. ``inpaint_restated``: the same cases with the
  prompt restated as the new thing on the backdrop read outside the mask
  (``imagegate.mini.regions.restate_edit``, then the lexicon) and inpainted in place, as served until
  2026-12-05. ``inpaint_served``: as the server serves them now (``inpaint_served()``): restated, then the
  thing drawn alone over the whole picture and set into the mask (``imagegate.mini.inset``).
* ``nonsquare``: one-thing prompts through the real server path (create_app, the openai SDK) at
  aspect ratios 16:9, 9:16 and 21:9; duplicated = more than one thing detected.
* ``instruct``: mask-less instructions on rendered scenes, served as the server serves them (the region
  read from prompt and picture by imagegate.mini.regions, then served as an inpainting with a mask,
  ``inpaint_served()``): "make the background green", "remove the red circle", "make the red circle green";
  done = the checker reads the picture after the edit. The background form is also run as plain
  img2img (strength 0.75) for comparison.
* ``variety``: prompts that leave position, size and colour open, four seeds each.
* ``transparent``: edge colour error of the server's transparent-PNG path against rendered ground
  truth (no model: the renderer's picture goes through postprocess.finish), and on the model's own
  transparent outputs against the asked palette colour.
* ``speed``: p50 seconds per medium image, one thread.
* ``kinds_served`` (``--kinds-only``, not in the full run): each everyday kind, then each shape, on its own fresh
  prompts, served; which kinds the misses of ``everyday_served`` and ``ingrammar_served`` sit in, and what each is
  read as instead.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import random
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from . import heldout, heldout2, heldout3, heldout4, heldout5
from .checker2 import Found, match, read2
from .language import Relation, colour_word, describe2, edit_instruction, fix, kind_word, relation_of_cells
from .prompts import is_heldout
from .scenes import COLOUR_NAMES, COLOURS, SHAPES
from .world2 import ICON_NAMES, KIND_NAMES, Scene2, Thing, render2, sample_scene2

ASPECTS = ("16:9", "9:16", "21:9")
# held-out splits written after training, for the prompt reader
SPLITS = {"heldout2": heldout2, "heldout3": heldout3, "heldout4": heldout4, "heldout5": heldout5}


def _full_prompt(scene: Scene2, rng: random.Random) -> str:
    """An in-grammar, fully stated prompt that is in model 1's hash-held-out bucket (training
    rejects that bucket, so the exact text was never a training prompt)."""
    return _full_prompt_relation(scene, rng)[0]


def _full_prompt_relation(scene: Scene2, rng: random.Random) -> tuple[str, Relation | None]:
    """``_full_prompt`` and the relation it states instead of the things' cells, if it states one."""
    for _ in range(500):
        text, claims = describe2(scene, rng, full=True)
        if is_heldout(text):
            break
    return text, claims.relation


# Evaluation scenes put a single thing in any cell (home=0), with the random stream the baseline of
# docs/imagegate-mini.md was measured with.
def _one(rng: random.Random, kinds: list[str]) -> Scene2:
    return sample_scene2(rng, 1, "plain", False, [rng.choice(kinds)], home=0.0)


def single_checks(img: Image.Image, scene: Scene2, r: Any = None) -> dict[str, bool]:
    """The one-thing checks; ``r``: the checker's reading of ``img`` where the caller has it already."""
    t = scene.things[0]
    r = r if r is not None else read2(img)
    f = r.things[0] if r.things else None
    return {"colour": f is not None and f.colour == t.colour, "background": r.background == scene.background,
            "kind": f is not None and f.kind == t.kind, "position": f is not None and f.pos == t.pos,
            "size": f is not None and f.size == t.size, "count": len(r.things) == 1}


def multi_checks(img: Image.Image, scene: Scene2, relation: Relation | None = None) -> dict[str, bool]:
    """Each thing found by its colour with its kind and place: its cell, or with ``relation`` (a, "left of", b),
    cells in which the line's prompts state that relation. ``all_right_cells``: kinds and exact cells."""
    r = read2(img)
    found = match(r, scene)
    kinds = [f is not None and f.kind == t.kind for t, f in zip(scene.things, found, strict=True)]
    cells = [k and f is not None and f.pos == t.pos for k, t, f in zip(kinds, scene.things, found, strict=True)]
    ok = cells
    if relation is not None:
        a, rel, b = relation
        fa, fb = found[a], found[b]
        holds = fa is not None and fb is not None and relation_of_cells(fa.pos, fb.pos) == rel
        ok = [k and holds if i in (a, b) else c for i, (k, c) in enumerate(zip(kinds, cells, strict=True))]
    out = {f"thing{i}": v for i, v in enumerate(ok)}
    out["all_right"] = all(ok)
    out["all_right_cells"] = all(cells)
    out["background"] = r.background == scene.background
    out["count"] = len(r.things) == len(scene.things)
    return out


class Generator:
    """txt2img at the native size, one thread, timed. ``served=True``: the prompt first goes through
    the lexicon, as the server sends it (``imagegate.mini.lexicon``)."""

    def __init__(self, pipe: Any, steps: int, cfg: float) -> None:
        self.pipe, self.steps, self.cfg, self.times = pipe, steps, cfg, []  # type: ignore[var-annotated]
        self.served = served_prompt(pipe)

    def __call__(self, prompt: str, seed: int, served: bool = False) -> Image.Image:
        import torch

        from imagegate.mini import compose

        def draw(text: str) -> Image.Image:
            return self.pipe(text, num_inference_steps=self.steps, guidance_scale=self.cfg,
                             generator=torch.Generator().manual_seed(seed)).images[0]

        parts = [prompt]
        layout = None
        if served:
            prompt = self.served(prompt)
            layout = compose.plan(prompt, seed)
            parts = compose.parts(layout, prompt)
        t0 = time.perf_counter()
        images = [draw(part) for part in parts]
        if len(parts) == 1:  # several pictures per image are not a speed sample
            self.times.append(time.perf_counter() - t0)
        return layout.compose(images) if layout is not None else images[0]


def _record_single(res: dict[str, list[float]], line: str, c: dict[str, bool]) -> None:
    """A one-thing line's checks, and their mean over colour, background, kind, position and size."""
    for a, v in c.items():
        res[f"{line}/{a}"].append(v)
    res[f"{line}/mean_of_checks"].append(float(np.mean([c[a] for a in ("colour", "background", "kind",
                                                                         "position", "size")])))


def single_cases(n: int, seed: int) -> tuple[random.Random, list[tuple[Scene2, str, str]]]:
    """The one-shape scenes with their in-grammar and held-out prompts; the stream goes on to the
    other lines of ``run_lines``."""
    rng = random.Random(f"targets-{seed}")
    cases = []
    for _ in range(n):
        scene = _one(rng, SHAPES)
        full = _full_prompt(scene, rng)
        cases.append((scene, full, heldout.describe(scene, rng)))
    return rng, cases


Multi = list[tuple[str, Scene2, str, int, Relation | None]]  # line, scene, prompt, seed, stated relation


def _split_lines(gen: Generator, cases: list[tuple[Scene2, str, str]], multi: Multi,
                 seed: int, name: str, served_only: bool = False) -> dict[str, list[float]]:
    """A later held-out split (``heldout2``, ``heldout4``, ``heldout5``: the prompt reader's development sets;
    ``heldout3``: its blind test set, whose phrases the reader's author never saw): the one-shape scenes of
    ``heldout`` alone and served, and the two- and three-thing scenes of ``two`` / ``three`` served, each in the
    split's phrasings, with the seeds of the lines they mirror. ``served_only``: the served lines only."""
    split = SPLITS[name]
    res: dict[str, list[float]] = defaultdict(list)
    words = random.Random(f"targets-{name}-{seed}")
    for i, (scene, _, _) in enumerate(cases):
        text = split.describe(scene, words)
        if not served_only:
            _record_single(res, name, single_checks(gen(text, seed * 7919 + 2 * i + 1), scene))
        _record_single(res, f"{name}_served", single_checks(gen(text, seed * 7919 + 2 * i + 1, served=True), scene))
    for line, scene, _, s, _ in multi:  # the split states cells, not relations
        for a, v in multi_checks(gen(split.describe(scene, words), s, served=True), scene).items():
            res[f"{name}_{line}_served/{a}"].append(v)
    return res


def run_language(gen: Generator, n: int, seed: int) -> dict[str, float]:
    """The one-thing language lines, in-grammar and held-out, as the model reads them and as served, on
    exactly the prompts and seeds of ``run_lines`` (``evaluate --targets --language-only``)."""
    res: dict[str, list[float]] = defaultdict(list)
    for i, (scene, full, held) in enumerate(single_cases(n, seed)[1]):
        _record_single(res, "ingrammar", single_checks(gen(full, seed * 7919 + 2 * i), scene))
        _record_single(res, "ingrammar_served", single_checks(gen(full, seed * 7919 + 2 * i, served=True), scene))
        _record_single(res, "heldout", single_checks(gen(held, seed * 7919 + 2 * i + 1), scene))
        _record_single(res, "heldout_served", single_checks(gen(held, seed * 7919 + 2 * i + 1, served=True), scene))
    for name in SPLITS:
        res |= _split_lines(gen, single_cases(n, seed)[1], [], seed, name)
    return {key: float(np.mean(v)) for key, v in res.items()} | {f"n/{key.split('/')[0]}": len(v)
                                                                  for key, v in res.items()}


def run_lines(gen: Generator, n: int, seed: int, objects_only: bool = False,
              served_only: bool = False, part: str | None = None) -> dict[str, float]:
    """Every line drawn by the model alone, then the served ones. ``objects_only``: only the two- and
    three-thing lines and their served twins, on the same prompts and seeds as in the full run.
    ``served_only``: only the lines served through the prompt reader (``*_served``, each split's), on the same
    prompts and seeds: what a change to the reader or the lexicon can move. ``part``: ``"splits"`` draws only
    the later held-out splits' lines, ``"rest"`` every other line; the two are a full run's drawings, split
    for two processes."""
    if part not in (None, "splits", "rest"):
        raise ValueError(f"part must be 'splits' or 'rest', not {part!r}")
    main = part != "splits"
    alone = main and not (objects_only or served_only)
    res: dict[str, list[float]] = defaultdict(list)
    rng, cases = single_cases(n, seed)
    k = 0
    for scene, full, held in cases:  # in-grammar and held-out phrasings of the same single-shape scenes
        if alone:
            _record_single(res, "ingrammar", single_checks(gen(full, seed * 7919 + k), scene))
            _record_single(res, "heldout", single_checks(gen(held, seed * 7919 + k + 1), scene))
        k += 2
    everyday = []
    for i in range(n):  # every icon in turn
        scene = sample_scene2(rng, 1, "plain", False, [ICON_NAMES[i % len(ICON_NAMES)]], home=0.0)
        prompt = _full_prompt(scene, rng)
        everyday.append((scene, prompt, seed * 7919 + k))
        if alone:
            c = single_checks(gen(prompt, seed * 7919 + k), scene)
            res["everyday/recognised"].append(c["kind"] and c["colour"])
            res["everyday/kind"].append(c["kind"])
        k += 1
    multi: Multi = []
    for n_things, line in ((2, "two"), (3, "three")):
        for _ in range(n):
            scene = sample_scene2(rng, n_things, "plain", False)
            prompt, relation = _full_prompt_relation(scene, rng)
            multi.append((line, scene, prompt, seed * 7919 + k, relation))
            if main and not served_only:
                for a, v in multi_checks(gen(prompt, seed * 7919 + k), scene, relation).items():
                    res[f"{line}/{a}"].append(v)
            k += 1
    # last, with its own random stream, so the lines above draw what they drew before it was added
    frames = random.Random(f"targets-frames-{seed}")
    for scene, _, _ in cases:
        if alone:
            _record_single(res, "heldout_frames",
                           single_checks(gen(heldout.describe(scene, frames, words=False), seed * 7919 + k), scene))
        k += 1
    for i, (scene, full, held) in enumerate(cases):  # the same prompts again, as the server serves them
        if main and not objects_only:
            _record_single(res, "heldout_served",
                           single_checks(gen(held, seed * 7919 + 2 * i + 1, served=True), scene))
            _record_single(res, "ingrammar_served", single_checks(gen(full, seed * 7919 + 2 * i, served=True), scene))
    if main and not objects_only:  # the everyday things as served (a small one drawn large and shrunk)
        for scene, prompt, s in everyday:
            c = single_checks(gen(prompt, s, served=True), scene)
            res["everyday_served/recognised"].append(c["kind"] and c["colour"])
    for line, scene, prompt, s, relation in multi if main else []:  # as served: the lexicon, one picture a thing
        for a, v in multi_checks(gen(prompt, s, served=True), scene, relation).items():
            res[f"{line}_served/{a}"].append(v)
    if part != "rest" and not objects_only:
        for name in SPLITS:
            res |= _split_lines(gen, cases, multi, seed, name, served_only)
    return {key: float(np.mean(v)) for key, v in res.items()} | {f"n/{key.split('/')[0]}": len(v)
                                                                  for key, v in res.items()}


def run_kinds(gen: Generator, n: int, seed: int) -> dict[str, float]:
    """``n`` fresh one-thing prompts of each everyday kind in the training phrasings, served; recognised = kind
    and colour (``kinds_served/<kind>``, ``kinds_served/all`` over the everyday kinds), then ``n`` of each of the
    six shapes on the same stream (``kinds_served/<shape>``, ``kinds_served/shapes``), and the share of each
    kind's pictures read as another kind (``kinds_served_as/<kind>/<other>``). Its own random stream: the other
    lines' prompts are untouched, and the everyday prompts and seeds are those drawn before the shapes came."""
    rng = random.Random(f"targets-kinds-{seed}")
    res: dict[str, list[float]] = defaultdict(list)
    seen: dict[str, list[str]] = defaultdict(list)
    order = [(ICON_NAMES[i % len(ICON_NAMES)], "all") for i in range(n * len(ICON_NAMES))]
    order += [(SHAPES[i % len(SHAPES)], "shapes") for i in range(n * len(SHAPES))]
    for i, (kind, group) in enumerate(order):
        scene = sample_scene2(rng, 1, "plain", False, [kind], home=0.0)
        img = gen(_full_prompt(scene, rng), seed * 7919 + 500_000 + i, served=True)
        r = read2(img)
        c = single_checks(img, scene, r)
        res[f"kinds_served/{kind}"].append(c["kind"] and c["colour"])
        res[f"kinds_served/{group}"].append(c["kind"] and c["colour"])
        seen[kind] += [f.kind for f in r.things[:1] if f.kind != kind]
    out = {key: float(np.mean(v)) for key, v in res.items()}
    out |= {"n/kinds_served": len(res["kinds_served/all"]), "n/kinds_served_shapes": len(res["kinds_served/shapes"])}
    for kind, others in seen.items():
        out |= {f"kinds_served_as/{kind}/{o}": others.count(o) / n for o in sorted(set(others))}
    return out


def change_only_cases(n: int, seed: int) -> list[tuple[Scene2, Thing, str, Image.Image]]:
    rng = random.Random(f"targets-inpaint-{seed}")
    forms = ("bare", "add", "replace", "put")
    cases = []
    for i in range(n):
        scene = sample_scene2(rng, 2, "plain", False, [rng.choice(SHAPES), rng.choice(KIND_NAMES)])
        old = scene.things[0]
        colour = rng.choice([c for c in COLOUR_NAMES if c not in (scene.background, old.colour,
                                                                   scene.things[1].colour)])
        kind = rng.choice([k for k in (SHAPES if i % 2 == 0 else ICON_NAMES) if k != old.kind])
        new = Thing(kind, colour, old.size, old.pos, old.cx, old.cy, old.r)
        np_ = f"a {colour_word(rng, colour)} {kind_word(rng, kind)}"
        form = forms[i % len(forms)]
        prompt = {"bare": np_, "add": f"add {np_}",
                  "replace": f"replace the {old.colour} {kind_word(rng, old.kind)} with {np_}",
                  "put": f"put {np_} there"}[form]
        r = old.r + 6
        mask = Image.new("L", (128, 128), 0)
        ImageDraw.Draw(mask).rectangle([old.cx - r, old.cy - r, old.cx + r, old.cy + r], fill=255)
        cases.append((scene, new, fix(prompt), mask))
    return cases


def served_prompt(pipe: Any) -> Any:
    """What the server does to a prompt for the built-in model: (prompt, image, edit mask or None) ->
    the prompt the pipeline gets (an edit restated as the scene, then the lexicon)."""
    from imagegate.mini.lexicon import Lexicon, known_words
    from imagegate.mini.regions import served_prompt as served

    rewrite = Lexicon.default().rewriter(known_words(pipe.tokenizer.get_vocab()))
    return lambda prompt, image=None, mask=None: served(prompt, rewrite, image, mask)


def inpaint_served(ip: Any, served: Any, prompt: str, orig: Image.Image, mask: Image.Image, generator: Any, steps: int,
                   cfg: float) -> Image.Image:
    """An inpainting as the server serves it to the built-in model (the backend's ``_layout``): the prompt
    restated and through the lexicon; one thing drawn alone and set into the mask (``imagegate.mini.inset``),
    else inpainted in place; composited over the original."""
    from imagegate.mini.inset import plan_inset

    from .evaluate import composite

    text = served(prompt, orig, mask)
    inset = plan_inset(text, orig, mask)
    if inset is None:
        return inpaint_in_place(ip, text, orig, mask, generator, steps, cfg)
    drawn = _inpaint(ip, inset.prompts()[0], orig, inset.canvas_mask(), generator, steps, cfg)
    return composite(orig, inset.compose([drawn]), mask)


def inpaint_in_place(ip: Any, text: str, orig: Image.Image, mask: Image.Image, generator: Any, steps: int,
                     cfg: float) -> Image.Image:
    """``text`` inpainted in ``mask`` of ``orig``, composited over the original."""
    from .evaluate import composite

    return composite(orig, _inpaint(ip, text, orig, mask, generator, steps, cfg), mask)


def _inpaint(ip: Any, text: str, orig: Image.Image, mask: Image.Image, generator: Any, steps: int,
             cfg: float) -> Image.Image:
    """The inpainting pipeline's picture of ``text`` in ``mask`` of ``orig``, at the original's size."""
    return ip(text, image=orig, mask_image=mask, num_inference_steps=steps, guidance_scale=cfg, strength=1.0,
              generator=generator, height=orig.height, width=orig.width).images[0]


def run_inpaint(pipe: Any, n: int, seed: int, steps: int, cfg: float) -> dict[str, float]:
    import torch
    from diffusers import StableDiffusionInpaintPipeline

    ip = StableDiffusionInpaintPipeline(**pipe.components)
    ip.set_progress_bar_config(disable=True)
    served = served_prompt(pipe)
    hits: dict[str, list[bool]] = defaultdict(list)
    for k, (scene, new, prompt, mask) in enumerate(change_only_cases(n, seed)):
        orig = render2(scene)
        lines = (("inpaint", prompt), ("inpaint_restated", served(prompt, orig, mask)), ("inpaint_served", None))
        for line, text in lines:
            g = torch.Generator().manual_seed(seed * 100003 + k)
            out = (inpaint_served(ip, served, prompt, orig, mask, g, steps, cfg) if text is None
                   else inpaint_in_place(ip, text, orig, mask, g, steps, cfg))
            box = np.asarray(mask) > 127
            found = read2(out).things
            ok = any(f.colour == new.colour and f.kind == new.kind and box[int(f.cy), int(f.cx)] for f in found)
            hits[f"{line}/drawn"].append(ok)
            hits[f"{line}/drawn_" + ("shape" if new.kind in SHAPES else "icon")].append(ok)
            hits[f"{line}/asked_colour_in_box"].append(any(f.colour == new.colour and box[int(f.cy), int(f.cx)]
                                                           for f in found))
    return {k: float(np.mean(v)) for k, v in hits.items()} | {"n/inpaint": n}


INSTRUCT_FORMS = ("background", "remove", "recolour")


def instruct_cases(n: int, seed: int) -> list[tuple[str, Scene2, Scene2, str]]:
    """Mask-less instructions on rendered scenes, the forms in turn: (form, before, after, prompt).
    ``background``: one thing, "make the background green"; ``remove``: two things, "remove the red
    circle"; ``recolour``: two things, "make the red circle green" / "change the red circle to green"."""
    rng = random.Random(f"targets-instruct-{seed}")
    cases = []
    for k in range(n):
        form = INSTRUCT_FORMS[k % len(INSTRUCT_FORMS)]
        scene = _one(rng, KIND_NAMES) if form == "background" else sample_scene2(rng, 2, "plain", False)
        t = scene.things[0]
        used = {scene.background, *(x.colour for x in scene.things)}
        new = rng.choice([c for c in COLOUR_NAMES if c not in used])
        if form == "background":
            after = Scene2(new, list(scene.things))
            prompt = f"make the background {colour_word(rng, new)}"
        elif form == "remove":
            after = Scene2(scene.background, scene.things[1:])
            prompt = f"{rng.choice(['remove', 'delete'])} the {colour_word(rng, t.colour)} {kind_word(rng, t.kind)}"
        else:
            after = Scene2(scene.background, [Thing(t.kind, new, t.size, t.pos, t.cx, t.cy, t.r), *scene.things[1:]])
            old = f"the {colour_word(rng, t.colour)} {kind_word(rng, t.kind)}"
            prompt = rng.choice([f"make {old} {colour_word(rng, new)}", f"change {old} to {colour_word(rng, new)}"])
        cases.append((form, scene, after, fix(prompt)))
    return cases


def instruct_checks(img: Image.Image, before: Scene2, after: Scene2) -> dict[str, bool]:
    """The picture after an instruction: its background, every thing of ``after`` (colour and kind), and
    no thing of ``before`` that ``after`` lacks."""
    r = read2(img)
    found = {(f.colour, f.kind) for f in r.things}
    gone = {(t.colour, t.kind) for t in before.things} - {(t.colour, t.kind) for t in after.things}
    return {"background": r.background == after.background,
            "things": all((t.colour, t.kind) in found for t in after.things),
            "gone": not gone & found}


def run_instruct(pipe: Any, n: int, seed: int, steps: int, cfg: float, strength: float = 0.75) -> dict[str, float]:
    """Mask-less instructions the way the server serves them to the built-in model: the region is read
    from the prompt and the picture (imagegate.mini.regions), inpainted, and composited; "done" = the
    picture after the edit is what the checker reads (background, each thing by colour and kind, the
    removed one gone). The background form is also run as plain img2img (``strength``), the path
    before regions existed."""
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline

    from imagegate.mini.regions import infer_region

    i2i = StableDiffusionImg2ImgPipeline(**pipe.components)
    ip = StableDiffusionInpaintPipeline(**pipe.components)
    for p in (i2i, ip):
        p.set_progress_bar_config(disable=True)
    hits: dict[str, list[bool]] = defaultdict(list)
    served = served_prompt(pipe)

    for k, (form, before, after, prompt) in enumerate(instruct_cases(n, seed)):
        orig = render2(before)
        g = torch.Generator().manual_seed(seed * 100003 + k)
        region = infer_region(orig, prompt)
        hits[f"instruct/{form}/region_found"].append(region is not None)
        if region is None:
            out = i2i(served(prompt), image=orig, strength=strength, num_inference_steps=steps, guidance_scale=cfg,
                      generator=g).images[0]
        else:
            out = inpaint_served(ip, served, prompt, orig, region, g, steps, cfg)
        c = instruct_checks(out, before, after)
        hits[f"instruct/{form}/done"].append(all(c.values()))
        hits["instruct/done"].append(all(c.values()))
        if form == "background":
            hits["instruct/background/background_changed"].append(c["background"])
            hits["instruct/background/thing_kept"].append(c["things"])
            out = i2i(served(prompt), image=orig, strength=strength, num_inference_steps=steps, guidance_scale=cfg,
                      generator=torch.Generator().manual_seed(seed * 100003 + k)).images[0]
            c = instruct_checks(out, before, after)
            hits["instruct/background_img2img/background_changed"].append(c["background"])
            hits["instruct/background_img2img/thing_kept"].append(c["things"])
    return {k: float(np.mean(v)) for k, v in hits.items()} | {"n/instruct": n}


def run_variety(gen: Generator, n_prompts: int, seeds: int, seed: int) -> dict[str, float]:
    """Prompts that state kind and background only: position (centre, with jitter), size and colour are
    open. Spread over ``seeds`` seeds: std of the detected centre and extent, distinct colours."""
    rng = random.Random(f"targets-variety-{seed}")
    cstd, estd, ncol, diff = [], [], [], []
    for p in range(n_prompts):
        kind = rng.choice(SHAPES if p % 2 == 0 else ICON_NAMES)
        bg = rng.choice(COLOUR_NAMES)
        prompt = fix(f"a {kind_word(rng, kind)} on a {colour_word(rng, bg)} background")
        imgs = [gen(prompt, seed * 1000 + p * 17 + s) for s in range(seeds)]
        found: list[Found] = [r.things[0] for r in map(read2, imgs) if r.things]
        if len(found) >= 2:
            cstd.append(float(np.mean([np.std([f.cx for f in found]), np.std([f.cy for f in found])])))
            estd.append(float(np.std([np.sqrt(f.area) for f in found])))
        ncol.append(len({f.colour for f in found}))
        arr = [np.asarray(i, np.float32) for i in imgs]
        diff.append(float(np.mean([np.abs(a - b).mean() for i, a in enumerate(arr) for b in arr[i + 1:]])))
    return {"variety/centre_std_px": float(np.mean(cstd)) if cstd else 0.0,
            "variety/extent_std_px": float(np.mean(estd)) if estd else 0.0,
            f"variety/distinct_colours_of_{seeds}": float(np.mean(ncol)),
            "variety/mean_pairwise_abs_diff": float(np.mean(diff)), "n/variety": n_prompts * seeds}


def edge_colour_error(rgba: Image.Image, truth: Image.Image) -> dict[str, float]:
    """Colour error on the edge band of the ground truth (0 < alpha < 1, dilated by the scale), where
    both are visible: alpha-weighted mean RGB distance; and the alpha error over the whole picture."""
    out = np.asarray(rgba.convert("RGBA"), np.float32)
    gt = np.asarray(truth.convert("RGBA"), np.float32)
    ga, oa = gt[..., 3] / 255, out[..., 3] / 255
    edge = (ga > 0.02) & (ga < 0.98)
    grow = max(1, rgba.width // 128)
    for _ in range(grow):  # widen the band to the upscale's blur
        e = edge.copy()
        e[1:] |= edge[:-1]
        e[:-1] |= edge[1:]
        e[:, 1:] |= edge[:, :-1]
        e[:, :-1] |= edge[:, 1:]
        edge = e
    both = edge & (oa > 0.1) & (ga > 0.1)
    w = oa[both] * ga[both]
    err = np.linalg.norm(out[both][:, :3] - gt[both][:, :3], axis=1)
    return {"edge_colour_error": float((err * w).sum() / max(w.sum(), 1e-6)),
            "alpha_mae": float(np.abs(oa - ga).mean())}


def transparent_on_rendered(n: int, seed: int, size: int = 1024) -> dict[str, float]:
    """The server's transparent path (postprocess.finish with its ChromaKeyMatter) on the renderer's
    picture of things on a plain key colour at 128 px, against the rendered RGBA ground truth at
    ``size``: no model involved, so this isolates what the finishing step does to edges."""
    from types import SimpleNamespace

    from imagegate.postprocess import ChromaKeyMatter, finish

    rng = random.Random(f"targets-alpha-{seed}")
    matter = ChromaKeyMatter()
    errs: dict[str, list[float]] = defaultdict(list)
    for _ in range(n):
        key = rng.choice(["green", "blue", "pink", "grey"])
        scene = sample_scene2(rng, rng.choice([1, 2]), "plain", False, home=0.0)
        scene.background = key
        for t in scene.things:
            if t.colour == key:
                t.colour = rng.choice([c for c in COLOUR_NAMES if c not in {key} | {x.colour for x in scene.things}])
        # finish() reads only these fields of the ImageSpec
        spec = SimpleNamespace(width=size, height=size, background="transparent", output_format="png",
                               compression=None)
        rgba = Image.open(io.BytesIO(finish(render2(scene), spec, None, None, matter)))
        for k, v in edge_colour_error(rgba, render2(scene, size, alpha=True)).items():
            errs[k].append(v)
    return {f"transparent/rendered_{k}": float(np.mean(v)) for k, v in errs.items()} | {"n/transparent": n}


@contextlib.asynccontextmanager
async def served_sdk(data_dir: Path, config: Any = None) -> AsyncIterator[Any]:
    """The openai SDK (AsyncOpenAI) on an in-process server of ``config`` (default: the built-in model),
    once its scheduler is ready."""
    import httpx2
    from openai import AsyncOpenAI

    from imagegate.app import create_app
    from imagegate.registry import builtin_mini_config
    from imagegate.settings import Settings

    app = create_app(Settings(data_dir=data_dir, torch_threads=1), [config or builtin_mini_config()])
    async with app.router.lifespan_context(app):
        while not app.state.scheduler.ready:  # noqa: ASYNC110 - the scheduler offers no event
            await asyncio.sleep(0.05)
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://t") as http:
            yield AsyncOpenAI(api_key="x", base_url="http://t/v1", http_client=http, max_retries=0)


async def _server_lines(n_per_aspect: int, seed: int, n_alpha: int, extend: bool = True) -> dict[str, float]:
    """Non-square sizes and transparent PNGs through create_app and the openai SDK (in-process).
    ``extend=False`` serves the model as any other (its aspect bucket): the figure before the fix."""
    import dataclasses

    from imagegate.registry import builtin_mini_config

    rng = random.Random(f"targets-server-{seed}")
    out: dict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        config = builtin_mini_config() if extend else dataclasses.replace(builtin_mini_config(), builtin=False)
        async with served_sdk(Path(tmp) / "data", config) as sdk:
            for aspect in ASPECTS:
                for i in range(n_per_aspect):
                    scene = _one(rng, SHAPES)
                    t = scene.things[0]
                    prompt = fix(f"a {t.colour} {t.kind} on a {scene.background} background")
                    r = await sdk.images.generate(model="imagegate-mini", prompt=prompt, quality="medium",
                                                  extra_body={"aspect_ratio": aspect, "resolution": "0.5K",
                                                              "seed": seed * 1000 + i})
                    img = Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json or "")))
                    h = 128
                    small = img.convert("RGB").resize((max(1, round(img.width * h / img.height)), h),
                                                      Image.Resampling.BOX)
                    if small.width < 128:  # portrait: the short side is the width
                        small = img.convert("RGB").resize((128, round(img.height * 128 / img.width)),
                                                          Image.Resampling.BOX)
                    rd = read2(np.asarray(small, np.float32))
                    out[f"nonsquare/duplicated_{aspect}"].append(len(rd.things) > 1)
                    out["nonsquare/duplicated"].append(len(rd.things) > 1)
                    out["nonsquare/asked_thing_found"].append(any(f.colour == t.colour for f in rd.things))
                    out["nonsquare/background"].append(rd.background == scene.background)
            for i in range(n_alpha):
                scene = _one(rng, SHAPES)
                t = scene.things[0]
                r = await sdk.images.generate(model="imagegate-mini", prompt=f"a {t.colour} {t.kind}",
                                              quality="medium", background="transparent", output_format="png",
                                              size="1024x1024", extra_body={"seed": seed * 1000 + i})
                png = base64.b64decode(r.data[0].b64_json or "")
                rgba = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"), np.float32)
                a = rgba[..., 3] / 255
                edge = (a > 0.05) & (a < 0.95)
                if edge.any():
                    err = np.linalg.norm(rgba[edge][:, :3] - np.array(COLOURS[t.colour], np.float32), axis=1)
                    out["transparent/model_edge_colour_error"].append(float((err * a[edge]).sum() / a[edge].sum()))
                    dark = (rgba[edge][:, :3].mean(1) < np.mean(COLOURS[t.colour]) - 40)
                    out["transparent/model_edge_dark_share"].append(float(dark.mean()))
    res = {k: float(np.mean(v)) for k, v in out.items()}
    res["n/nonsquare"] = n_per_aspect * len(ASPECTS)
    res["n/transparent_model"] = n_alpha
    return res


def evaluate_targets(model_dir: Any, n: int = 40, seed: int = 0, quality: str = "medium", threads: int = 1,
                     server: bool = True, log: Any = print, language_only: bool = False,
                     edits_only: bool = False, objects_only: bool = False,
                     served_only: bool = False, kinds_only: bool = False,
                     part: str | None = None) -> dict[str, float]:
    import torch

    from imagegate.mini import QUALITY_PRESETS

    from .evaluate import load_pipeline

    torch.set_num_threads(threads)
    steps, cfg = QUALITY_PRESETS[quality]
    t0 = time.time()
    pipe = load_pipeline(model_dir, threads)
    gen = Generator(pipe, steps, cfg)
    res: dict[str, float] = {}
    if kinds_only:
        res |= run_kinds(gen, n, seed)
    elif language_only:
        res |= run_language(gen, n, seed)
    elif objects_only or served_only or part == "splits":
        res |= run_lines(gen, n, seed, objects_only=objects_only, served_only=served_only, part=part)
    elif edits_only:
        res |= run_inpaint(pipe, max(8, n // 2), seed, steps, cfg)
        res |= run_instruct(pipe, max(4, n // 4), seed, steps, cfg)
    else:
        res |= run_lines(gen, n, seed, part=part)
        res |= run_inpaint(pipe, max(8, n // 2), seed, steps, cfg)
        res |= run_instruct(pipe, max(4, n // 4), seed, steps, cfg)
        res |= run_variety(gen, max(4, n // 5), 4, seed)
        res |= transparent_on_rendered(max(8, n // 4), seed)
    if server and not (language_only or edits_only or objects_only or served_only or kinds_only
                       or part == "splits"):
        res |= asyncio.run(_server_lines(max(4, n // 6), seed, max(4, n // 8)))
    if gen.times:
        res["speed/p50_s"] = float(np.median(gen.times))
    res["speed/threads"] = threads
    log(f"targets: model {model_dir} quality={quality} steps={steps} cfg={cfg} seed={seed} "
        f"n per line {n} (see n/*) threads={threads}")
    for key in sorted(res):
        log(f"  {key:44s} {res[key]:.3f}")
    log(f"targets wall time {time.time() - t0:.0f}s")
    return res


__all__ = ["edge_colour_error", "edit_instruction", "evaluate_targets", "transparent_on_rendered"]
