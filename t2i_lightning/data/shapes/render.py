"""Anti-aliased rendering of shapes scenes with PIL.

Each object's mask is drawn at ``supersample`` times the output resolution inside the object's
own box and box-filtered down (exact area coverage), then its flat colour is pasted through the
mask onto the background. Object pixels away from edges therefore carry exactly the named colour.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .scene import COLOURS, Scene, ShapeObject

GRADIENT_AMPLITUDE = 0.12  # +/- relative brightness across the image
TEXTURE_AMPLITUDE = 10.0  # +/- grey levels of the smooth texture
TEXTURE_GRID = 6  # coarse noise grid upsampled to the image


def _regular_polygon(cx: float, cy: float, r: float, n: int, start_deg: float) -> list[tuple[float, float]]:
    return [
        (
            cx + r * math.cos(math.radians(start_deg + 360 * k / n)),
            cy + r * math.sin(math.radians(start_deg + 360 * k / n)),
        )
        for k in range(n)
    ]


def outline(obj: ShapeObject) -> list[tuple[float, float]] | None:
    """The polygon of ``obj`` in output pixel coordinates, or None for the round kinds."""
    (cx, cy), r = obj.centre, obj.radius
    if obj.kind in ("circle", "ring"):
        return None
    if obj.kind == "square":
        h = 0.8 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if obj.kind == "triangle":
        return _regular_polygon(cx, cy, r, 3, -90)
    if obj.kind == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else 0.45 * r
            angle = math.radians(-90 + 36 * k)
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return points
    if obj.kind == "cross":
        a = 0.32 * r
        return [
            (cx - a, cy - r), (cx + a, cy - r), (cx + a, cy - a), (cx + r, cy - a),
            (cx + r, cy + a), (cx + a, cy + a), (cx + a, cy + r), (cx - a, cy + r),
            (cx - a, cy + a), (cx - r, cy + a), (cx - r, cy - a), (cx - a, cy - a),
        ]  # fmt: skip
    if obj.kind == "diamond":
        return [(cx, cy - r), (cx + 0.75 * r, cy), (cx, cy + r), (cx - 0.75 * r, cy)]
    if obj.kind == "hexagon":
        return _regular_polygon(cx, cy, r, 6, 0)
    raise ValueError(f"Unknown shape kind {obj.kind!r}")


RING_INNER = 0.55  # inner radius of a ring, relative to its outer radius


def bbox(obj: ShapeObject) -> tuple[float, float, float, float]:
    """Tight bounding box ``(x0, y0, x1, y1)`` of the drawn object in output pixels."""
    points = outline(obj)
    if points is None:
        (cx, cy), r = obj.centre, obj.radius
        return (cx - r, cy - r, cx + r, cy + r)
    xs, ys = zip(*points, strict=True)
    return (min(xs), min(ys), max(xs), max(ys))


def anchor(obj: ShapeObject) -> tuple[float, float]:
    """A point well inside the painted area: the box centre, or the middle of a ring's band."""
    if obj.kind == "ring":
        (cx, cy), r = obj.centre, obj.radius
        return (cx - r * (1 + RING_INNER) / 2, cy)
    x0, y0, x1, y1 = bbox(obj)
    return ((x0 + x1) / 2, (y0 + y1) / 2)


def _mask(obj: ShapeObject, supersample: int, image_size: int) -> tuple[Image.Image, tuple[int, int]]:
    """Coverage mask of ``obj`` over its integer pixel box, and the box's top-left corner."""
    x0, y0, x1, y1 = bbox(obj)
    left, top = max(0, math.floor(x0) - 1), max(0, math.floor(y0) - 1)
    right, bottom = min(image_size, math.ceil(x1) + 1), min(image_size, math.ceil(y1) + 1)
    f = supersample
    canvas = Image.new("L", ((right - left) * f, (bottom - top) * f), 0)
    draw = ImageDraw.Draw(canvas)

    def scaled(x: float, y: float) -> tuple[float, float]:
        return ((x - left) * f, (y - top) * f)

    points = outline(obj)
    if points is None:
        (cx, cy), r = obj.centre, obj.radius
        draw.ellipse([*scaled(cx - r, cy - r), *scaled(cx + r, cy + r)], fill=255)
        if obj.kind == "ring":
            ri = RING_INNER * r
            draw.ellipse([*scaled(cx - ri, cy - ri), *scaled(cx + ri, cy + ri)], fill=0)
    else:
        draw.polygon([scaled(x, y) for x, y in points], fill=255)
    return canvas.reduce(f), (left, top)


def background(scene: Scene) -> np.ndarray:
    """The background as an ``(S, S, 3)`` uint8 array: plain, a linear gradient, or a smooth texture."""
    size = scene.image_size
    base = np.array(COLOURS[scene.background], dtype=np.float32)
    if scene.background_style == "plain":
        return np.broadcast_to(base.astype(np.uint8), (size, size, 3)).copy()
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    if scene.background_style == "gradient":
        t = (
            math.cos(scene.gradient_angle) * coords[None, :]
            + math.sin(scene.gradient_angle) * coords[:, None]
        )
        image = base * (1 + GRADIENT_AMPLITUDE * t / math.sqrt(2))[..., None]
    elif scene.background_style == "texture":
        coarse = np.random.default_rng(scene.texture_seed).uniform(-1, 1, (TEXTURE_GRID, TEXTURE_GRID))
        smooth = Image.fromarray(coarse.astype(np.float32), "F").resize(
            (size, size), Image.Resampling.BICUBIC
        )
        image = base + TEXTURE_AMPLITUDE * np.asarray(smooth)[..., None]
    else:
        raise ValueError(f"Unknown background style {scene.background_style!r}")
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def render(scene: Scene, supersample: int = 4) -> Image.Image:
    """Draw ``scene`` as an anti-aliased RGB image of ``scene.image_size`` pixels square."""
    image = Image.fromarray(background(scene), "RGB")
    for obj in scene.objects:
        mask, corner = _mask(obj, supersample, scene.image_size)
        image.paste(COLOURS[obj.colour], (*corner, corner[0] + mask.width, corner[1] + mask.height), mask)
    return image
