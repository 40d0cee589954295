"""Deterministic scene checker for imagegate-mini (no learned model).

Pipeline: nearest-palette colour classification per pixel -> background =
most common class on the image border -> per colour, a morphological opening
and connected components -> simple shape measures (fill ratio of the
hole-filled mask, row-width profile, number of runs in the top/bottom rows,
hole fraction) -> nearest shape prototype.  Prototypes are the same measures
taken on the renderer's canonical shapes, computed once (deterministically).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from .scenes import COLOUR_NAMES, COLOURS, NATIVE, SHAPES, SIZES, Obj, Scene, position_name, render

_PAL = np.array([COLOURS[c] for c in COLOUR_NAMES], dtype=np.float32)
MAX_DIST = 95.0  # pixels farther than this from every palette colour are "unknown"
MIN_AREA = 40
SIZE_THRESHOLD = (SIZES["small"] + SIZES["large"]) * 0.85  # on max(bbox w, h)


@dataclass
class Detected:
    colour: str
    shape: str
    size: str
    pos: str
    cx: float
    cy: float
    area: int
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (inclusive)


@dataclass
class Reading:
    background: str
    objects: list[Detected]


def _to_array(img) -> np.ndarray:
    if isinstance(img, Image.Image):
        if img.size != (NATIVE, NATIVE):
            img = img.convert("RGB").resize((NATIVE, NATIVE), Image.BILINEAR)
        return np.asarray(img.convert("RGB"), dtype=np.float32)
    return np.asarray(img, dtype=np.float32)


def _shift(m: np.ndarray, dy: int, dx: int, fill: bool) -> np.ndarray:
    out = np.full_like(m, fill)
    h, w = m.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = m[ys, xs]
    return out


def _erode(m: np.ndarray) -> np.ndarray:
    out = m.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                out &= _shift(m, dy, dx, True)
    return out


def _dilate(m: np.ndarray) -> np.ndarray:
    out = m.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                out |= _shift(m, dy, dx, False)
    return out


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """8-connected components by iterative min-label propagation."""
    if not mask.any():
        return []
    h, w = mask.shape
    big = h * w + 1
    lab = np.where(mask, np.arange(h * w).reshape(h, w), big)
    while True:
        new = lab.copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy or dx:
                    s = np.full_like(lab, big)
                    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
                    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
                    s[yd, xd] = lab[ys, xs]
                    new = np.minimum(new, s)
        new = np.where(mask, new, big)
        # pointer jumping speeds up convergence
        flat = new.ravel()
        valid = flat < big
        flat2 = flat.copy()
        flat2[valid] = flat[flat[valid]]
        new = np.minimum(new, flat2.reshape(h, w))
        new = np.where(mask, new, big)
        if np.array_equal(new, lab):
            break
        lab = new
    return [lab == v for v in np.unique(lab[mask])]


def _fill_holes(m: np.ndarray) -> np.ndarray:
    pad = np.pad(~m, 1, constant_values=True)
    # outside = background components touching the padded border
    comps = _components(pad)
    outside = np.zeros_like(pad)
    for c in comps:
        if c[0, :].any():
            outside |= c
    return ~outside[1:-1, 1:-1]


def shape_features(m: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(m)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    crop = m[y0:y1 + 1, x0:x1 + 1]
    filled = _fill_holes(crop)
    h, w = crop.shape
    area_f = filled.sum()
    hole = (area_f - crop.sum()) / max(area_f, 1)
    fill = area_f / (h * w)
    feats = [fill * 2.0, hole * 6.0]
    for f in (0.08, 0.3, 0.5, 0.7, 0.92):
        r = min(int(f * h), h - 1)
        row = filled[r]
        idx = np.nonzero(row)[0]
        width = (idx.max() - idx.min() + 1) / w if len(idx) else 0.0
        feats.append(width)
    for f in (0.1, 0.9):
        r = min(int(f * h), h - 1)
        row = filled[r].astype(np.int8)
        runs = int(((row[1:] == 1) & (row[:-1] == 0)).sum() + row[0])
        feats.append(1.0 if runs >= 2 else 0.0)
    feats.append(min(w / max(h, 1), 2.0))
    return np.array(feats, dtype=np.float32)


@lru_cache(maxsize=1)
def _prototypes() -> dict[str, np.ndarray]:
    protos = {}
    for shape in SHAPES:
        fs = []
        for size in SIZES:
            for dx in (0.0, 0.3, 0.6):
                sc = Scene(background="white", objects=[Obj(shape, "black", size, "centre", 64 + dx, 64 + dx)])
                arr = _to_array(render(sc))
                fs.append(shape_features(arr.mean(-1) < 128))
        protos[shape] = np.mean(fs, axis=0)
    return protos


def classify_shape(m: np.ndarray) -> str:
    f = shape_features(m)
    best, bd = None, 1e9
    for s, p in _prototypes().items():
        d = float(np.abs(f - p).sum())
        if d < bd:
            best, bd = s, d
    return best


def cell_of(cx: float, cy: float, size: int = NATIVE) -> str:
    col = min(int(cx / (size / 3)), 2)
    row = min(int(cy / (size / 3)), 2)
    return position_name(col, row)


def read(img) -> Reading:
    arr = _to_array(img)
    d = ((arr[:, :, None, :] - _PAL[None, None]) ** 2).sum(-1)
    lab = d.argmin(-1)
    dmin = np.sqrt(d.min(-1))
    valid = dmin < MAX_DIST
    border = np.zeros(lab.shape, bool)
    border[:2, :] = border[-2:, :] = border[:, :2] = border[:, -2:] = True
    bl = lab[border & valid]
    if len(bl) == 0:
        bl = lab[border]
    bg_idx = int(np.bincount(bl, minlength=len(COLOUR_NAMES)).argmax())
    objs: list[Detected] = []
    for ci, cname in enumerate(COLOUR_NAMES):
        if ci == bg_idx:
            continue
        m = (lab == ci) & valid
        if m.sum() < MIN_AREA:
            continue
        m = _dilate(_erode(m))
        core = _erode(_erode(m))
        for comp in _components(m):
            area = int(comp.sum())
            if area < MIN_AREA or (core & comp).sum() < 4:
                continue
            ys, xs = np.nonzero(comp)
            x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
            cx, cy = (x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2
            ext = max(x1 - x0 + 1, y1 - y0 + 1)
            objs.append(Detected(
                colour=cname, shape=classify_shape(comp), size="large" if ext > SIZE_THRESHOLD else "small",
                pos=cell_of(cx, cy), cx=cx, cy=cy, area=area, bbox=(x0, y0, x1, y1)))
    objs.sort(key=lambda o: -o.area)
    return Reading(background=COLOUR_NAMES[bg_idx], objects=objs)


def relation_holds(a: Detected, b: Detected, rel: str, margin: float = 8.0) -> bool:
    if rel == "left of":
        return a.cx < b.cx - margin
    if rel == "right of":
        return a.cx > b.cx + margin
    if rel == "above":
        return a.cy < b.cy - margin
    if rel == "below":
        return a.cy > b.cy + margin
    raise ValueError(rel)


def check(img, scene: Scene, claims) -> dict[str, bool]:
    """Per-attribute verdicts for the claims a prompt makes about ``scene``.

    Keys: ``background``; for one object ``colour``, ``shape``, ``size``,
    ``position`` (judged on the largest detected object, independently);
    for several objects ``objN`` (object N found by its colour with the right
    shape and, for absolute prompts, position), ``relation``, ``all_objects``;
    and ``count`` (number of detected objects equals the scene's).
    """
    r = read(img)
    out: dict[str, bool] = {}
    if claims.background:
        out["background"] = r.background == scene.background
    n = len(scene.objects)
    out["count"] = len(r.objects) == n
    if n == 1:
        o, c = scene.objects[0], claims.objects[0]
        det = r.objects[0] if r.objects else None
        if c.colour:
            out["colour"] = det is not None and det.colour == o.colour
        if c.shape:
            out["shape"] = det is not None and det.shape == o.shape
        if c.size:
            out["size"] = det is not None and det.size == o.size
        if c.position:
            out["position"] = det is not None and det.pos == o.pos
        return out
    found = []
    for i, (o, c) in enumerate(zip(scene.objects, claims.objects, strict=True)):
        cands = [d for d in r.objects if d.colour == o.colour]
        det = cands[0] if cands else None
        found.append(det)
        ok = det is not None
        if ok and c.shape:
            ok = det.shape == o.shape
        if ok and c.position:
            ok = det.pos == o.pos
        out[f"obj{i}"] = ok
    if claims.relation is not None:
        a, rel, b = claims.relation
        out["relation"] = found[a] is not None and found[b] is not None and relation_holds(found[a], found[b], rel)
    out["all_objects"] = all(out[f"obj{i}"] for i in range(n)) and out.get("relation", True)
    return out
