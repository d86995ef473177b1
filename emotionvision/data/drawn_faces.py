"""Drawn faces for the demo set: cartoon faces whose features show one of six emotions (PIL, no downloads).

Each image is a cartoon face whose mouth, eyebrows and eyes follow the emotion, on top of
nuisance variation (skin tone, hair, background gradient, pose, feature jitter, noise, blur).
Everything is drawn from a numpy generator seeded by `(seed, class index, image index)`, so a
set is reproducible and an image does not depend on how many others are generated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

EMOTIONS = ("anger", "disgust", "fear", "happy", "pain", "sad")
SUPERSAMPLE = 2  # faces are drawn at twice the size, then downsampled (anti-aliasing)
MAX_SHIFT = 0.05  # largest shift of the head centre, as a fraction of the image side
MAX_TILT = 10.0  # largest head rotation in degrees
HEAD_SIZE = (0.28, 0.34)  # range of the head half-width, as a fraction of the image side

Point = tuple[float, float]
Colour = tuple[int, ...]

SKIN_TONES: tuple[Colour, ...] = (
    (255, 224, 196),
    (241, 194, 155),
    (224, 172, 105),
    (198, 134, 66),
    (141, 85, 36),
    (112, 70, 42),
)
HAIR_COLOURS: tuple[Colour, ...] = ((25, 20, 15), (70, 45, 25), (140, 95, 50), (200, 170, 110))
EYE_COLOURS: tuple[Colour, ...] = ((60, 40, 25), (40, 90, 140), (60, 110, 60), (90, 70, 40))
MOUTH_DARK: Colour = (55, 10, 15)
TEETH: Colour = (245, 245, 235)


@dataclass(frozen=True)
class Expression:
    """How one emotion sets the features; lengths are in head half-widths."""

    mouth: str  # key of MOUTHS
    brow_tilt: float  # how far the inner brow ends drop (+: angry V, -: sad)
    brow_lift: tuple[float, float]  # raise of the (left, right) brow
    eye_open: tuple[float, float]  # half-height of the (left, right) eye; 0 = squeezed shut
    wrinkles: bool = False  # wrinkle lines on the nose


EXPRESSIONS: dict[str, Expression] = {
    "anger": Expression("tight", 0.17, (-0.07, -0.07), (0.075, 0.075)),
    "disgust": Expression("sneer", 0.05, (-0.10, 0.05), (0.055, 0.10), wrinkles=True),
    "fear": Expression("open", -0.06, (0.17, 0.17), (0.17, 0.17)),
    "happy": Expression("smile", 0.0, (0.03, 0.03), (0.10, 0.10)),
    "pain": Expression("grimace", 0.10, (-0.09, -0.09), (0.0, 0.0)),
    "sad": Expression("frown", -0.15, (0.05, 0.05), (0.09, 0.09)),
}


@dataclass(frozen=True)
class Face:
    """Where the face lies on the canvas: centre, unit (head half-width) and mirroring."""

    draw: ImageDraw.ImageDraw
    cx: float
    cy: float
    unit: float
    mirror: int  # -1 swaps left and right, so asymmetric expressions occur both ways round
    ink: Colour  # colour of outlines and lines
    hair: Colour

    def at(self, x: float, y: float) -> Point:
        """Canvas position of face coordinates (x right, y down, in head half-widths)."""
        return self.cx + self.mirror * x * self.unit, self.cy + y * self.unit

    def px(self, length: float) -> int:
        """A length in face units as a whole number of pixels (at least 1)."""
        return max(1, round(length * self.unit))

    def ellipse(self, x: float, y: float, rx: float, ry: float, **style: object) -> None:
        """Draw an axis-aligned ellipse centred on face coordinates (x, y)."""
        (left, top), (right, bottom) = self.at(x - rx, y - ry), self.at(x + rx, y + ry)
        box = (min(left, right), top, max(left, right), bottom)
        self.draw.ellipse(box, **style)

    def line(self, points: list[Point], width: float, fill: Colour | None = None) -> None:
        """Draw a polyline through face coordinates with a width in face units."""
        canvas = [self.at(x, y) for x, y in points]
        self.draw.line(canvas, fill=fill or self.ink, width=self.px(width), joint="curve")

    def polygon(self, points: list[Point], fill: Colour, outline: Colour | None = None) -> None:
        """Draw a filled polygon through face coordinates."""
        self.draw.polygon([self.at(x, y) for x, y in points], fill=fill, outline=outline)


def _curve(width: float, y: float, bend: float, n: int = 13) -> list[Point]:
    """Points of a parabola from x=-width to x=+width; the middle lies `bend` below the ends."""
    ts = np.linspace(-1.0, 1.0, n)
    return [(float(t * width), float(y + bend * (1 - t * t))) for t in ts]


def _mouth_smile(face: Face, y: float, rng: np.random.Generator) -> None:
    """Happy: an upward crescent, open with a row of teeth."""
    width = rng.uniform(0.36, 0.46)
    upper = _curve(width, y - 0.04, rng.uniform(0.04, 0.09))
    lower = _curve(width, y - 0.04, rng.uniform(0.20, 0.27))
    face.polygon(upper + lower[::-1], fill=MOUTH_DARK)
    face.polygon(upper + _curve(width * 0.9, y - 0.02, 0.12)[::-1], fill=TEETH)


def _mouth_frown(face: Face, y: float, rng: np.random.Generator) -> None:
    """Sad: a downward arc with drooping corners."""
    bend = -rng.uniform(0.14, 0.2)
    face.line(_curve(rng.uniform(0.3, 0.38), y + 0.08, bend), 0.11, fill=MOUTH_DARK)


def _mouth_tight(face: Face, y: float, rng: np.random.Generator) -> None:
    """Anger: a short, straight, pressed mouth."""
    width = rng.uniform(0.22, 0.3)
    face.line(_curve(width, y, -rng.uniform(0.0, 0.03), n=5), 0.13, fill=MOUTH_DARK)


def _mouth_open(face: Face, y: float, rng: np.random.Generator) -> None:
    """Fear: an open, tall "O"."""
    rx, ry = rng.uniform(0.13, 0.17), rng.uniform(0.19, 0.25)
    face.ellipse(0.0, y + 0.02, rx, ry, fill=MOUTH_DARK, outline=face.ink, width=face.px(0.04))


def _mouth_sneer(face: Face, y: float, rng: np.random.Generator) -> None:
    """Disgust: a wavy, asymmetric mouth with one corner pulled up."""
    wave, lift = rng.uniform(0.025, 0.045), rng.uniform(0.12, 0.17)
    ts = np.linspace(-1.0, 1.0, 17)
    ys = y + wave * np.sin(3 * math.pi * ts) - lift * (1 - ts) ** 2 / 4
    face.line(list(zip(0.34 * ts, ys, strict=True)), 0.1, fill=MOUTH_DARK)


def _mouth_grimace(face: Face, y: float, rng: np.random.Generator) -> None:
    """Pain: a wide, square grimace showing clenched teeth."""
    rx, ry = rng.uniform(0.40, 0.48), rng.uniform(0.09, 0.12)
    (left, top), (right, bottom) = face.at(-rx, y - ry), face.at(rx, y + ry)
    box = (min(left, right), top, max(left, right), bottom)
    face.draw.rounded_rectangle(
        box, radius=face.px(ry * 0.8), fill=TEETH, outline=MOUTH_DARK, width=face.px(0.04)
    )
    face.line([(-rx, y), (rx, y)], 0.025, fill=MOUTH_DARK)
    for x in np.linspace(-rx, rx, 7)[1:-1]:
        face.line([(float(x), y - ry), (float(x), y + ry)], 0.02, fill=MOUTH_DARK)


MOUTHS: dict[str, Callable[[Face, float, np.random.Generator], None]] = {
    "smile": _mouth_smile,
    "frown": _mouth_frown,
    "tight": _mouth_tight,
    "open": _mouth_open,
    "sneer": _mouth_sneer,
    "grimace": _mouth_grimace,
}


def _draw_eye(face: Face, side: int, half_height: float, iris: Colour, gaze: Point) -> None:
    """One eye at x = side * 0.4: white and iris when open, a squeezed chevron when shut."""
    x, y = side * 0.4, -0.2
    if half_height <= 0:
        outer = x - side * 0.17
        face.line([(outer, y - 0.09), (x + side * 0.1, y), (outer, y + 0.09)], 0.07)
        return
    white = {"fill": (250, 250, 250), "outline": face.ink, "width": face.px(0.04)}
    face.ellipse(x, y, 0.17, half_height, **white)
    radius = min(0.07, half_height * 0.9)
    gx, gy = gaze
    face.ellipse(x + gx, y + gy, radius, radius, fill=iris)
    face.ellipse(x + gx, y + gy, radius * 0.45, radius * 0.45, fill=(10, 10, 10))


def _draw_brow(face: Face, side: int, lift: float, tilt: float, pen: tuple[float, Colour]) -> None:
    """One eyebrow drawn with pen = (width, colour); `tilt` lowers its inner end."""
    base = -0.5 - lift
    outer, inner = (side * 0.62, base), (side * 0.17, base + tilt)
    middle = (side * 0.4, base + tilt / 2 - 0.04)
    face.line([outer, middle, inner], pen[0], fill=pen[1])


def _draw_nose(face: Face, wrinkles: bool) -> None:
    """A simple nose, with wrinkle lines across the bridge for disgust."""
    face.line([(0.02, -0.08), (0.08, 0.22), (-0.04, 0.26)], 0.035)
    if wrinkles:
        for y in (-0.06, 0.03, 0.12):
            face.line(_curve(0.16, y, -0.04, n=5), 0.03)


def _draw_features(face: Face, emotion: str, rng: np.random.Generator, identity: np.random.Generator) -> None:
    """Eyes, brows, nose and mouth for `emotion`, each jittered a little (eye and brow colour drawn
    from `identity`)."""
    expression = EXPRESSIONS[emotion]
    iris = EYE_COLOURS[identity.integers(len(EYE_COLOURS))]
    gaze = (rng.uniform(-0.04, 0.04), rng.uniform(-0.02, 0.02))
    brow_colour = tuple(int(c * 0.6) for c in face.hair) if identity.random() < 0.5 else face.ink
    pen = (rng.uniform(0.09, 0.13), brow_colour)
    for index, side in enumerate((-1, 1)):
        opening = expression.eye_open[index]
        opening = opening * rng.uniform(0.85, 1.15) if opening > 0 else 0.0
        _draw_eye(face, side, opening, iris, gaze)
        lift = expression.brow_lift[index] + rng.normal(0, 0.025)
        tilt = expression.brow_tilt + rng.normal(0, 0.025)
        _draw_brow(face, side, lift, tilt, pen)
    _draw_nose(face, expression.wrinkles)
    MOUTHS[expression.mouth](face, 0.62 + rng.normal(0, 0.03), rng)


def _jitter(colour: Colour, rng: np.random.Generator, spread: float) -> Colour:
    """A colour with Gaussian noise added to each channel."""
    values = np.clip(np.asarray(colour) + rng.normal(0, spread, 3), 0, 255)
    return tuple(int(v) for v in values)


def _background(size: int, rng: np.random.Generator) -> Image.Image:
    """A linear gradient between two random colours in a random direction (RGBA)."""
    start, end = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    grid = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    t = math.cos(angle) * grid[None, :] + math.sin(angle) * grid[:, None] + 0.5
    t = np.clip(t, 0, 1)[..., None]
    pixels = start * (1 - t) + end * t
    return Image.fromarray(pixels.astype(np.uint8), "RGB").convert("RGBA")


def _face_layer(
    image_size: int, emotion: str, rng: np.random.Generator, identity: np.random.Generator
) -> Image.Image:
    """A transparent layer with one face (hair, head, features) at a random pose; skin, hair, head
    size and eye colour are drawn from `identity`."""
    size = image_size * SUPERSAMPLE
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    skin = _jitter(SKIN_TONES[identity.integers(len(SKIN_TONES))], identity, 8)
    hair = _jitter(HAIR_COLOURS[identity.integers(len(HAIR_COLOURS))], identity, 10)
    ink = tuple(int(c * 0.35) for c in skin)
    cx, cy = (0.5 + rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2)) * size
    unit = size * identity.uniform(*HEAD_SIZE)
    mirror = 1 if rng.random() < 0.5 else -1
    face = Face(ImageDraw.Draw(layer), cx, cy, unit, mirror, ink, hair)
    if identity.random() < 0.7:
        face.ellipse(0.0, -0.3, 1.08, 1.1, fill=hair)
    face.ellipse(0.0, 0.0, 1.0, 1.3, fill=skin, outline=ink, width=face.px(0.03))
    _draw_features(face, emotion, rng, identity)
    # Rotate the downsampled layer with premultiplied alpha, so its edges do not darken.
    small = layer.reduce(SUPERSAMPLE).convert("RGBa")
    centre = (cx / SUPERSAMPLE, cy / SUPERSAMPLE)
    posed = small.rotate(rng.uniform(-MAX_TILT, MAX_TILT), Image.Resampling.BILINEAR, center=centre)
    return posed.convert("RGBA")


def render_face(
    emotion: str, image_size: int, rng: np.random.Generator, identity: np.random.Generator | None = None
) -> Image.Image:
    """One RGB image of a face showing `emotion`, with random nuisance variation. `identity` (a
    generator seeded per person) fixes the person's looks; None draws them from `rng` too."""
    canvas = _background(image_size, rng)
    canvas.alpha_composite(_face_layer(image_size, emotion, rng, rng if identity is None else identity))
    image = canvas.convert("RGB")
    if rng.random() < 0.25:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    pixels = np.asarray(image, dtype=np.float32)
    pixels += rng.uniform(2, 10) * rng.standard_normal(pixels.shape, dtype=np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
