"""The world of imagegate-mini 2: the six flat shapes plus 24 everyday things drawn as clean flat
icons, on a plain background or in a simple scene (sky with ground, sea, night sky).

Every thing is one colour (details such as a door or a window are cut out in the colour behind it)
and one connected silhouette, so the checker can segment it by colour; two things of the same kind
and colour ("two red stars") are separate components. Sizes and positions vary continuously around
the named ones, so that what a prompt leaves open can vary with the seed.

Model 1's world (``scenes.py``) is untouched: ``make train-mini`` still reproduces the shipped weights.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from .scenes import CELL_CENTRES, COLOUR_NAMES, COLOURS, NATIVE, POSITION_NAMES, POSITIONS, SHAPES, draw_shape

SUPERSAMPLE = 4
SIZES = {"small": 14.0, "large": 25.0}  # half extent in px at 128 (as model 1)
SIZE_JITTER = 0.12  # +-12% around the named size: the size a prompt leaves open varies
JITTER = 7.0  # px around the cell centre (model 1: 5)

Pt = tuple[float, float]
RGB = tuple[int, int, int]


class _Pen:
    """Draws in unit coordinates: (-1, -1) .. (1, 1) is the thing's bounding square."""

    def __init__(self, d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: RGB, bg: RGB) -> None:
        self.d, self.cx, self.cy, self.r, self.fill, self.bg = d, cx, cy, r, fill, bg

    def p(self, x: float, y: float) -> Pt:
        return (self.cx + x * self.r, self.cy + y * self.r)

    def poly(self, pts: list[Pt], cut: bool = False) -> None:
        self.d.polygon([self.p(x, y) for x, y in pts], fill=self.bg if cut else self.fill)

    def rect(self, x0: float, y0: float, x1: float, y1: float, cut: bool = False) -> None:
        self.d.rectangle([self.p(x0, y0), self.p(x1, y1)], fill=self.bg if cut else self.fill)

    def ellipse(self, x0: float, y0: float, x1: float, y1: float, cut: bool = False) -> None:
        self.d.ellipse([self.p(x0, y0), self.p(x1, y1)], fill=self.bg if cut else self.fill)

    def circle(self, x: float, y: float, rr: float, cut: bool = False) -> None:
        self.ellipse(x - rr, y - rr, x + rr, y + rr, cut)

    def pie(self, x0: float, y0: float, x1: float, y1: float, a0: float, a1: float) -> None:
        self.d.pieslice([self.p(x0, y0), self.p(x1, y1)], a0, a1, fill=self.fill)


def _house(q: _Pen) -> None:
    q.rect(-0.7, -0.1, 0.7, 0.9)
    q.poly([(-0.95, -0.05), (0, -0.9), (0.95, -0.05)])
    q.rect(-0.16, 0.4, 0.16, 0.9, cut=True)


def _tree(q: _Pen) -> None:
    q.rect(-0.17, 0.2, 0.17, 0.95)
    q.circle(0, -0.28, 0.66)


def _sun(q: _Pen) -> None:
    q.circle(0, 0, 0.55)
    for k in range(8):
        a = k * math.pi / 4
        q.poly([(0.45 * math.cos(a - 0.3), 0.45 * math.sin(a - 0.3)), (0.97 * math.cos(a), 0.97 * math.sin(a)),
                (0.45 * math.cos(a + 0.3), 0.45 * math.sin(a + 0.3))])


def _moon(q: _Pen) -> None:
    q.circle(0, 0, 0.9)
    q.circle(0.42, -0.25, 0.72, cut=True)


def _cloud(q: _Pen) -> None:
    q.circle(-0.5, 0.18, 0.4)
    q.circle(0.02, -0.12, 0.55)
    q.circle(0.52, 0.22, 0.38)
    q.rect(-0.5, 0.2, 0.52, 0.58)


def _car(q: _Pen) -> None:
    q.rect(-0.95, -0.05, 0.95, 0.45)
    q.poly([(-0.55, -0.05), (-0.32, -0.55), (0.35, -0.55), (0.58, -0.05)])
    q.poly([(-0.3, -0.1), (-0.18, -0.42), (0.2, -0.42), (0.35, -0.1)], cut=True)
    q.circle(-0.52, 0.5, 0.3)
    q.circle(0.52, 0.5, 0.3)


def _boat(q: _Pen) -> None:
    q.poly([(-0.95, 0.3), (0.95, 0.3), (0.6, 0.8), (-0.6, 0.8)])
    q.rect(-0.13, -0.95, 0.13, 0.3)
    q.poly([(0.0, -0.85), (0.0, 0.2), (0.85, 0.2)])
    q.poly([(-0.1, -0.45), (-0.1, 0.2), (-0.65, 0.2)])


def _fish(q: _Pen) -> None:
    q.ellipse(-0.85, -0.5, 0.45, 0.5)
    q.poly([(0.3, 0.0), (0.95, -0.55), (0.95, 0.55)])
    q.circle(-0.45, -0.12, 0.12, cut=True)


def _flower(q: _Pen) -> None:
    q.rect(-0.13, 0.0, 0.13, 0.95)
    q.ellipse(0.0, 0.4, 0.6, 0.72)
    for k in range(6):
        a = k * math.pi / 3
        q.circle(0.32 * math.cos(a), -0.3 + 0.32 * math.sin(a), 0.27)
    q.circle(0, -0.3, 0.14, cut=True)


def _mountain(q: _Pen) -> None:
    q.poly([(-0.97, 0.8), (-0.35, -0.45), (0.0, 0.05), (0.38, -0.9), (0.97, 0.8)])


def _cat(q: _Pen) -> None:
    q.circle(0, 0.2, 0.62)
    q.poly([(-0.62, 0.0), (-0.55, -0.95), (-0.08, -0.38)])
    q.poly([(0.62, 0.0), (0.55, -0.95), (0.08, -0.38)])
    q.circle(-0.24, 0.1, 0.1, cut=True)
    q.circle(0.24, 0.1, 0.1, cut=True)


def _dog(q: _Pen) -> None:
    q.circle(0, -0.05, 0.55)
    q.ellipse(-0.95, -0.45, -0.45, 0.55)
    q.ellipse(0.45, -0.45, 0.95, 0.55)
    q.ellipse(-0.35, 0.2, 0.35, 0.85)
    q.circle(-0.2, -0.12, 0.09, cut=True)
    q.circle(0.2, -0.12, 0.09, cut=True)


def _bird(q: _Pen) -> None:
    q.ellipse(-0.65, -0.25, 0.45, 0.45)
    q.circle(0.45, -0.3, 0.3)
    q.poly([(0.68, -0.42), (0.98, -0.28), (0.68, -0.16)])
    q.poly([(-0.5, 0.05), (-0.97, -0.35), (-0.97, 0.3)])
    q.poly([(-0.25, 0.05), (0.1, -0.75), (0.25, 0.05)])


def _cup(q: _Pen) -> None:
    q.ellipse(0.2, -0.35, 0.9, 0.45)
    q.ellipse(0.42, -0.12, 0.68, 0.22, cut=True)
    q.poly([(-0.65, -0.55), (0.5, -0.55), (0.38, 0.7), (-0.53, 0.7)])
    q.rect(-0.85, 0.68, 0.7, 0.86)


def _key(q: _Pen) -> None:
    q.circle(-0.42, 0, 0.58)
    q.circle(-0.42, 0, 0.14, cut=True)
    q.rect(-0.2, -0.22, 0.95, 0.22)
    q.rect(0.45, 0.1, 0.65, 0.45)
    q.rect(0.75, 0.1, 0.95, 0.55)


def _umbrella(q: _Pen) -> None:
    q.pie(-0.97, -0.85, 0.97, 0.95, 180, 360)
    q.rect(-0.13, 0.0, 0.13, 0.82)
    q.rect(-0.5, 0.66, 0.13, 0.92)
    q.rect(-0.5, 0.45, -0.26, 0.92)


def _balloon(q: _Pen) -> None:
    q.ellipse(-0.58, -0.95, 0.58, 0.45)
    q.poly([(0, 0.38), (-0.15, 0.6), (0.15, 0.6)])
    q.rect(-0.05, 0.58, 0.07, 0.97)


def _rocket(q: _Pen) -> None:
    q.poly([(0, -0.97), (0.4, -0.45), (0.4, 0.55), (-0.4, 0.55), (-0.4, -0.45)])
    q.poly([(-0.4, -0.05), (-0.85, 0.85), (-0.4, 0.55)])
    q.poly([(0.4, -0.05), (0.85, 0.85), (0.4, 0.55)])
    q.poly([(-0.22, 0.55), (0, 0.97), (0.22, 0.55)])
    q.circle(0, -0.15, 0.16, cut=True)


def _apple(q: _Pen) -> None:
    q.circle(-0.27, 0.18, 0.6)
    q.circle(0.27, 0.18, 0.6)
    q.rect(-0.12, -0.9, 0.12, -0.3)
    q.ellipse(0.0, -0.95, 0.7, -0.5)


def _bell(q: _Pen) -> None:
    q.poly([(-0.18, -0.9), (0.18, -0.9), (0.5, -0.45), (0.58, 0.4), (0.88, 0.62), (-0.88, 0.62),
            (-0.58, 0.4), (-0.5, -0.45)])
    q.circle(0, 0.72, 0.22)


def _mushroom(q: _Pen) -> None:
    q.pie(-0.97, -0.9, 0.97, 0.5, 180, 360)
    q.rect(-0.3, -0.25, 0.3, 0.9)


def _crown(q: _Pen) -> None:
    q.poly([(-0.9, 0.62), (-0.9, -0.6), (-0.45, -0.05), (0, -0.8), (0.45, -0.05), (0.9, -0.6), (0.9, 0.62)])


def _leaf(q: _Pen) -> None:
    pts: list[Pt] = []
    for k in range(21):  # a lens between two arcs, along the diagonal
        t = -1 + k / 10
        pts.append((t * 0.85, 0.45 * (1 - t * t)))
    for k in range(21):
        t = 1 - k / 10
        pts.append((t * 0.85, -0.45 * (1 - t * t)))
    c, s = math.cos(-math.pi / 4), math.sin(-math.pi / 4)
    q.poly([(x * c - y * s, x * s + y * c) for x, y in pts])
    q.poly([(-0.62, 0.5), (-0.95, 0.9), (-0.85, 0.97), (-0.5, 0.62)])


def _arrow(q: _Pen) -> None:
    q.poly([(-0.95, -0.22), (0.2, -0.22), (0.2, -0.65), (0.97, 0), (0.2, 0.65), (0.2, 0.22), (-0.95, 0.22)])


ICONS: dict[str, Callable[[_Pen], None]] = {
    "house": _house, "tree": _tree, "sun": _sun, "moon": _moon, "cloud": _cloud, "car": _car, "boat": _boat,
    "fish": _fish, "flower": _flower, "mountain": _mountain, "cat": _cat, "dog": _dog, "bird": _bird,
    "cup": _cup, "key": _key, "umbrella": _umbrella, "balloon": _balloon, "rocket": _rocket, "apple": _apple,
    "bell": _bell, "mushroom": _mushroom, "crown": _crown, "leaf": _leaf, "arrow": _arrow,
}
ICON_NAMES = list(ICONS)
KIND_NAMES = SHAPES + ICON_NAMES

# Settings: a plain background, or a simple scene. The band (ground, sea) fills the bottom of the
# picture; things in the bottom row stand on it.
SETTINGS = ("plain", "ground", "sea", "night")
# Where things belong in a scene: on the ground or the sea they stand in the bottom row (a boat on the
# sea, a house on the ground), things of the sky keep to the upper two rows. In a plain picture, anywhere.
GROUNDED = {"ground": {"house", "tree", "car", "dog", "cat", "flower", "mountain", "mushroom"},
            "sea": {"boat"}}
SKY = {"sun", "moon", "cloud", "bird", "balloon", "rocket", "star"}
BOTTOM_ROW = ["bottom left", "bottom", "bottom right"]
UPPER_ROWS = [p for p in POSITION_NAMES if p not in BOTTOM_ROW]


def home_cell(kind: str, setting: str) -> str:
    """Where one thing goes when the prompt does not say: a grounded thing at the bottom centre, else
    the centre. A prompt may leave a single thing's position unsaid only there (``language``)."""
    return "bottom" if kind in GROUNDED.get(setting, ()) else "centre"


def _cells(rng: random.Random, kinds: list[str], setting: str) -> list[str]:
    """Distinct cells, grounded things in the bottom row and sky things above it (when the setting has a
    band); any free cell where a row is full."""
    if setting not in GROUNDED:
        return rng.sample(POSITION_NAMES, len(kinds))
    free = set(POSITION_NAMES)
    out = []
    for k in kinds:
        pool = BOTTOM_ROW if k in GROUNDED[setting] else (UPPER_ROWS if k in SKY else POSITION_NAMES)
        options = [c for c in pool if c in free] or sorted(free)
        c = rng.choice(sorted(options))
        free.discard(c)
        out.append(c)
    return out
BAND_TOP = {"ground": 96, "sea": 88}
NIGHT_STARS = 14  # small white dots, below the checker's minimum object area


@dataclass
class Thing:
    kind: str
    colour: str
    size: str
    pos: str
    cx: float
    cy: float
    r: float


@dataclass
class Scene2:
    background: str  # the sky in a scene
    things: list[Thing] = field(default_factory=list)
    setting: str = "plain"
    band: str | None = None  # colour of the ground or the sea
    seed: int = 0  # decorative detail (night stars)


def place(rng: random.Random, kind: str, colour: str, cell: str, size: str | None = None) -> Thing:
    size = size or rng.choice(list(SIZES))
    col, row = POSITIONS[cell]
    return Thing(kind, colour, size, cell, CELL_CENTRES[col] + rng.uniform(-JITTER, JITTER),
                 CELL_CENTRES[row] + rng.uniform(-JITTER, JITTER),
                 SIZES[size] * (1 + rng.uniform(-SIZE_JITTER, SIZE_JITTER)))


def overlaps(things: list[Thing]) -> bool:
    return any(math.hypot(a.cx - b.cx, a.cy - b.cy) < a.r + b.r + 4
               for i, a in enumerate(things) for b in things[i + 1:])


def sample_scene2(rng: random.Random, n: int | None = None, setting: str | None = None,
                  count_group: bool | None = None, kinds: list[str] | None = None,
                  cells: list[str] | None = None, home: float = 0.3) -> Scene2:
    """A random scene: 1-3 things (35/40/25%), in distinct cells; a quarter of multi-thing scenes
    repeat one kind and colour ("two red stars"); other things have distinct colours. ``home`` of single
    things stand at their home cell, where a prompt may leave the position unsaid (0 for evaluation:
    every cell as likely)."""
    if n is None:
        u = rng.random()
        n = 1 if u < 0.35 else (2 if u < 0.75 else 3)
    if setting is None:
        u = rng.random()
        setting = "plain" if u < 0.5 else ("ground" if u < 0.7 else ("sea" if u < 0.85 else "night"))
    if setting == "night":
        background, band = "black", None
    elif setting == "sea":
        band = "blue"
        background = rng.choice([c for c in COLOUR_NAMES if c not in ("blue", "black")])
    elif setting == "ground":
        band = rng.choice(["green", "yellow", "orange", "grey"])
        background = rng.choice([c for c in ("blue", "white", "pink", "purple") if c != band])
    else:
        background, band = rng.choice(COLOUR_NAMES), None
    used = {background, band}
    if count_group is None:
        count_group = n > 1 and rng.random() < 0.25
    free = [c for c in COLOUR_NAMES if c not in used]
    colours = [rng.choice(free)] * n if count_group else rng.sample(free, n)
    kinds = kinds or ([rng.choice(KIND_NAMES)] * n if count_group else
                      [rng.choice(KIND_NAMES if rng.random() < 0.6 else SHAPES) for _ in range(n)])
    while True:
        if cells:
            where = cells
        elif n == 1 and home and rng.random() < home:  # single things at their home (``home_cell``)
            where = [home_cell(kinds[0], setting)]
        else:
            where = _cells(rng, kinds, setting)
        things = [place(rng, k, c, cell) for k, c, cell in zip(kinds, colours, where, strict=True)]
        if not overlaps(things):
            break
    return Scene2(background, things, setting, band, rng.randrange(1 << 30))


def draw_thing(d: ImageDraw.ImageDraw, t: Thing, scale: float, fill: RGB, bg: RGB) -> None:
    cx, cy, r = t.cx * scale, t.cy * scale, t.r * scale
    if t.kind in ICONS:
        ICONS[t.kind](_Pen(d, cx, cy, r, fill, bg))
    else:
        draw_shape(d, t.kind, cx, cy, r, fill, bg)


def render2(scene: Scene2, size: int = NATIVE, alpha: bool = False) -> Image.Image:
    """The scene at ``size`` (square), 4x supersampled and box-filtered. ``alpha``: the things alone on
    a transparent canvas (RGBA, colour exact wherever alpha > 0), the ground truth for transparency."""
    ss = SUPERSAMPLE
    scale = size / NATIVE * ss
    bg = COLOURS[scene.background]
    if alpha:
        img = Image.new("RGBA", (size * ss, size * ss), (0, 0, 0, 0))
        d = ImageDraw.Draw(img)
        for t in scene.things:
            # cut-outs are transparent here; each thing's colour goes on its own layer so the
            # premultiplied box filter below keeps it exact
            layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
            draw_thing(ImageDraw.Draw(layer), t, scale, COLOURS[t.colour] + (255,), (0, 0, 0, 0))  # type: ignore[arg-type]
            img = Image.alpha_composite(img, layer)
        return img.resize((size, size), Image.BOX)
    img = Image.new("RGB", (size * ss, size * ss), bg)
    d = ImageDraw.Draw(img)
    if scene.band:
        d.rectangle([0, BAND_TOP[scene.setting] * scale, size * ss, size * ss], fill=COLOURS[scene.band])
    if scene.setting == "night":
        srng = random.Random(scene.seed)
        for _ in range(NIGHT_STARS):
            x, y = srng.uniform(4, NATIVE - 4) * scale, srng.uniform(4, NATIVE * 0.6) * scale
            d.ellipse([x - 0.9 * scale, y - 0.9 * scale, x + 0.9 * scale, y + 0.9 * scale], fill=COLOURS["white"])
    for t in scene.things:
        # a cut-out shows what is behind the thing: the band where the thing stands on it
        behind = COLOURS[scene.band] if scene.band and t.cy > BAND_TOP[scene.setting] else bg
        draw_thing(d, t, scale, COLOURS[t.colour], behind)
    return img.resize((size, size), Image.BOX)


# model 1's relation layouts (things on the ground side by side: the outer cells of the bottom row)
RELATION_CELLS = (("left", "right"), ("top", "bottom"))
RELATION_SHARE = 0.4  # of two-thing training scenes with distinct things


def sample_training_scene2(rng: random.Random, one_share: float = 0.0, hard: tuple[str, ...] = (),
                           hard_weight: float = 1.0) -> Scene2:
    """A training scene: ``RELATION_SHARE`` of the two-thing scenes in a relation layout, which
    ``language.describe2`` mostly describes by the relation ("a red car under a yellow sun").
    ``one_share`` of the scenes (0: none, the recipe of runs 13-23) are one thing of any of the 30 kinds
    (four in five an everyday thing), the picture the server asks for each thing of a prompt it lays out;
    the rest are drawn as before. The kinds in ``hard`` are ``hard_weight`` times as likely as the others
    to be that one thing (run 29: the kinds run 27 missed most)."""
    if one_share and rng.random() < one_share:
        if not hard:
            return sample_scene2(rng, 1, None, False, [rng.choice(KIND_NAMES)])
        weights = [hard_weight if k in hard else 1.0 for k in KIND_NAMES]
        return sample_scene2(rng, 1, None, False, rng.choices(KIND_NAMES, weights))
    scene = sample_scene2(rng)
    if len(scene.things) == 2 and scene.things[0].colour != scene.things[1].colour and rng.random() < RELATION_SHARE:
        grounded = GROUNDED.get(scene.setting, set())
        pairs = [("bottom left", "bottom right")] if all(t.kind in grounded for t in scene.things) else \
            list(RELATION_CELLS)
        cells = list(rng.choice(pairs))
        rng.shuffle(cells)
        scene = sample_scene2(rng, 2, scene.setting, False, [t.kind for t in scene.things], cells)
    return scene
