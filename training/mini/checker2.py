"""The checker of imagegate-mini 2: reads a picture of ``world2`` back into things.

Segmentation is model 1's (``checker.py``): nearest palette colour per pixel, a 3x3 opening, 8-connected
components of at least 40 px with a core. The background is the most common colour on the top border
(the sky, in a scene); a band (ground, sea) is the commonest colour of the bottom rows, if it is another
one and covers half of them.

The kind of a component (30: six shapes, 24 icons) is the majority of its 3 nearest neighbours (L1) in a
bank of features fitted on the renderer's own output: each kind drawn alone at random sizes (both named
sizes, with the renderer's jitter) and sub-pixel offsets, segmented the same way. A feature is the
component's mask cropped to its bounding box, padded to a square (so the aspect stays) and area-averaged
to 16x16, plus its aspect ratio. Each rendered thing enters the bank as drawn and twice more with its outline
wobbled (``wobble``: a smooth random displacement of 0.5-2 px, the ragged edge a drawing has and a render has not;
fitted on pristine renders only, the reader got half of the squares with a 2 px wobble wrong: ``validate_ragged``).
Deterministic from ``BANK_SEED``; no learned weights are stored.
The size is judged on the radius the kind's typical extent implies (icons fill their square unevenly).
Its own accuracy on freshly rendered scenes is measured by ``validate`` (tests/mini requires it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from .checker import MAX_DIST, MIN_AREA, _components, _dilate, _erode, _to_array, cell_of
from .scenes import COLOUR_NAMES, COLOURS
from .world2 import KIND_NAMES, SIZES, Scene2, Thing, render2

_PAL = np.array([COLOURS[c] for c in COLOUR_NAMES], dtype=np.float32)
_PAL_SQ = (_PAL * _PAL).sum(1)[None]
GRID = 16
BANK_SEED = 0
BANK_PER_KIND = 40
K = 3
WOBBLE = (0.5, 2.0)  # px: range of the outline wobble amplitude of the bank's wobbled copies
WOBBLED_COPIES = 2
SIZE_SPLIT = (SIZES["small"] + SIZES["large"]) / 2  # on the implied radius


@dataclass
class Found:
    colour: str
    kind: str
    size: str
    pos: str
    cx: float
    cy: float
    area: int


@dataclass
class Reading2:
    background: str
    band: str | None
    things: list[Found]


def features(comp: np.ndarray) -> tuple[np.ndarray, float]:
    """(feature vector, larger bounding-box side in px) of one component mask."""
    ys, xs = np.nonzero(comp)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    h, w = y1 - y0 + 1, x1 - x0 + 1
    side = max(h, w)
    sq = np.zeros((side, side), np.float32)
    oy, ox = (side - h) // 2, (side - w) // 2
    sq[oy:oy + h, ox:ox + w] = comp[y0:y1 + 1, x0:x1 + 1]
    small = np.asarray(Image.fromarray((sq * 255).astype(np.uint8)).resize((GRID, GRID), Image.BOX),
                       np.float32) / 255.0
    return np.concatenate([small.ravel(), [2.0 * w / h if h else 0.0]]), float(side)


def wobble(arr: np.ndarray, amp: float, rng: random.Random, cells: int = 6) -> np.ndarray:
    """``arr`` (H x W x C) resampled through a smooth random displacement field: a ``cells`` x ``cells`` grid of
    normal draws, bicubic up-sampled and scaled to ``amp`` px (standard deviation), nearest-neighbour lookup."""
    h, w = arr.shape[:2]

    def field() -> np.ndarray:
        grid = np.array([[rng.gauss(0.0, 1.0) for _ in range(cells)] for _ in range(cells)], np.float32)
        return np.asarray(Image.fromarray(grid, mode="F").resize((w, h), Image.BICUBIC)) * amp

    dx, dy = field(), field()
    ys, xs = np.mgrid[0:h, 0:w]
    sx = np.clip(np.round(xs + dx), 0, w - 1).astype(int)
    sy = np.clip(np.round(ys + dy), 0, h - 1).astype(int)
    return arr[sy, sx]


def _label(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # |x - p|^2 = |x|^2 - 2 x.p + |p|^2, as one matrix product (the broadcast difference took 6 ms a picture)
    x = arr.reshape(-1, 3)
    d = (x * x).sum(1, keepdims=True) - 2 * x @ _PAL.T + _PAL_SQ
    lab = d.argmin(1)
    near = np.take_along_axis(d, lab[:, None], 1)[:, 0] < MAX_DIST ** 2
    return lab.reshape(arr.shape[:2]), near.reshape(arr.shape[:2])


def _open(m: np.ndarray) -> np.ndarray:
    return _dilate(_erode(m))


@lru_cache(maxsize=1)
def bank() -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """(features, kind indices, extent/radius per kind), fitted on the renderer's own output."""
    rng = random.Random(f"checker2-bank-{BANK_SEED}")
    feats, labels, ratio = [], [], {}
    for ki, kind in enumerate(KIND_NAMES):
        ratios = []
        for j in range(BANK_PER_KIND):
            size = "small" if j % 2 else "large"
            r = SIZES[size] * (1 + rng.uniform(-0.12, 0.12))
            t = Thing(kind, "black", size, "centre", 64 + rng.uniform(-1, 1), 64 + rng.uniform(-1, 1), r)
            arr = _to_array(render2(Scene2("white", [t])))
            for copy in range(1 + WOBBLED_COPIES):
                lab, valid = _label(wobble(arr, rng.uniform(*WOBBLE), rng) if copy else arr)
                m = _open((lab == COLOUR_NAMES.index("black")) & valid)
                f, side = features(m)
                feats.append(f)
                labels.append(ki)
                if not copy:
                    ratios.append(side / r)
        ratio[kind] = float(np.median(ratios))
    return np.stack(feats), np.array(labels), ratio


def classify(comp: np.ndarray) -> tuple[str, float]:
    """(kind, implied radius) of a component."""
    fb, lb, ratio = bank()
    f, side = features(comp)
    d = np.abs(fb - f).sum(1)
    near = lb[np.argsort(d, kind="stable")[:K]]
    votes = np.bincount(near, minlength=len(KIND_NAMES))
    best = int(votes.argmax()) if votes.max() > 1 else int(near[0])
    kind = KIND_NAMES[best]
    return kind, side / ratio[kind]


def read2(img: Image.Image | np.ndarray) -> Reading2:
    arr = _to_array(img)
    lab, valid = _label(arr)
    top = lab[:2][valid[:2]]
    bg = int(np.bincount(top if len(top) else lab[:2].ravel(), minlength=len(COLOUR_NAMES)).argmax())
    bottom = lab[-2:].ravel()
    bc = np.bincount(bottom, minlength=len(COLOUR_NAMES))
    # a thing standing on the band may hide up to half of its bottom rows
    band = int(bc.argmax()) if bc.argmax() != bg and bc.max() >= 0.5 * len(bottom) else None
    things: list[Found] = []
    for ci, cname in enumerate(COLOUR_NAMES):
        if ci in (bg, band):
            continue
        m = (lab == ci) & valid
        if m.sum() < MIN_AREA:
            continue
        m = _open(m)
        core = _erode(_erode(m))
        for comp in _components(m):
            area = int(comp.sum())
            if area < MIN_AREA or (core & comp).sum() < 4:
                continue
            ys, xs = np.nonzero(comp)
            cx, cy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
            kind, radius = classify(comp)
            things.append(Found(cname, kind, "large" if radius > SIZE_SPLIT else "small", cell_of(cx, cy),
                                float(cx), float(cy), area))
    things.sort(key=lambda t: -t.area)
    return Reading2(COLOUR_NAMES[bg], None if band is None else COLOUR_NAMES[band], things)


def match(reading: Reading2, scene: Scene2) -> list[Found | None]:
    """For each scene thing, the detection of its colour nearest its centre (each used once)."""
    used: set[int] = set()
    out: list[Found | None] = []
    for t in scene.things:
        cands = [(abs(f.cx - t.cx) + abs(f.cy - t.cy), i) for i, f in enumerate(reading.things)
                 if f.colour == t.colour and i not in used]
        if not cands:
            out.append(None)
            continue
        _, i = min(cands)
        used.add(i)
        out.append(reading.things[i])
    return out


def validate(n: int = 200, seed: int = 0) -> dict[str, float]:
    """The checker's own accuracy on freshly rendered scenes (not the bank's): per thing, the kind,
    colour, size and cell of its matched detection; per scene, background, band and count."""
    from .world2 import sample_training_scene2

    rng = random.Random(f"checker2-validate-{seed}")
    hits: dict[str, list[bool]] = {"kind": [], "colour": [], "size": [], "position": [], "background": [],
                                   "band": [], "count": []}
    for _ in range(n):
        scene = sample_training_scene2(rng)
        r = read2(render2(scene))
        hits["background"].append(r.background == scene.background)
        hits["band"].append(r.band == scene.band)
        hits["count"].append(len(r.things) == len(scene.things))
        for t, f in zip(scene.things, match(r, scene), strict=True):
            hits["colour"].append(f is not None)
            hits["kind"].append(f is not None and f.kind == t.kind)
            hits["size"].append(f is not None and f.size == t.size)
            hits["position"].append(f is not None and f.pos == t.pos)
    return {k: float(np.mean(v)) for k, v in hits.items()}


def validate_ragged(n: int = 20, amp: float = 1.5, seed: int = 0) -> dict[str, float]:
    """The kind read right per kind on ``n`` one-thing renders of each kind, their outlines wobbled by ``amp`` px
    with fields of another stream than the bank's (``amp`` 0: as rendered)."""
    from .world2 import sample_scene2

    rng, fields = random.Random(f"checker2-ragged-{seed}"), random.Random(f"checker2-ragged-field-{seed}")
    right = dict.fromkeys(KIND_NAMES, 0)
    for kind in KIND_NAMES:
        for _ in range(n):
            scene = sample_scene2(rng, 1, "plain", False, [kind], home=0.0)
            arr = _to_array(render2(scene))
            things = read2(wobble(arr, amp, fields) if amp > 0 else arr).things
            right[kind] += bool(things) and things[0].kind == kind
    return {kind: v / n for kind, v in right.items()}


if __name__ == "__main__":  # python -m training.mini.checker2 [n] [amplitudes...]: the table of docs/imagegate-mini.md
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    for amp in [float(a) for a in sys.argv[2:]] or [0.0, 1.0, 1.5, 2.0, 3.0]:
        acc = validate_ragged(n, amp)
        worst = sorted(acc.items(), key=lambda kv: kv[1])[:5]
        print(f"wobble {amp:.1f} px: kind {np.mean(list(acc.values())):.3f}; circle {acc['circle']:.2f} "
              f"square {acc['square']:.2f}; lowest " + ", ".join(f"{k} {v:.2f}" for k, v in worst), flush=True)
