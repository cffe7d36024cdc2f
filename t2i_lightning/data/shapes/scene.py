"""Scene vocabulary and sampling for the shapes dataset.

A scene is 1 to 3 objects (kind, colour, size) on a coloured background. Each object sits in
its own cell of a 3x3 grid, so its position word ("top left", "centre", ...) and its relations
to the other objects ("left of", "above", ...) are exact, and no two objects overlap.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

KINDS = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 38, 38),
    "orange": (245, 135, 20),
    "yellow": (245, 215, 35),
    "green": (40, 160, 60),
    "blue": (35, 80, 215),
    "purple": (130, 50, 180),
    "pink": (245, 125, 190),
    "brown": (125, 75, 35),
    "cyan": (30, 200, 210),
    "white": (245, 245, 245),
    "grey": (128, 128, 128),
    "black": (25, 25, 25),
}
SIZES = ("small", "large")
# Object radius as a fraction of the image side, per size word.
SIZE_RADIUS = {"small": (0.070, 0.090), "large": (0.130, 0.155)}
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "centre", "right")
BACKGROUND_STYLES = ("plain", "gradient", "texture")
RELATIONS = ("left of", "right of", "above", "below")
MAX_OBJECTS = 3
CELL_JITTER = 0.15  # centre offset from the cell centre, as a fraction of the cell side
GAP = 0.01  # least free space between two objects and around the border, as a fraction of the side


def position_word(row: int, col: int) -> str:
    """The position word of a 3x3 grid cell: "top left", "top", "left", "centre", ..."""
    vertical, horizontal = ROWS[row], COLUMNS[col]
    if vertical == "middle":
        return horizontal
    if horizontal == "centre":
        return vertical
    return f"{vertical} {horizontal}"


POSITIONS = tuple(position_word(r, c) for r in range(3) for c in range(3))


def flip_position(position: str) -> str:
    """The position word after a horizontal flip (left and right swap)."""
    swap = {"left": "right", "right": "left"}
    return " ".join(swap.get(word, word) for word in position.split())


def cell_relations(cells: list[tuple[int, int]]) -> list[tuple[int, str, int]]:
    """Every pairwise relation ``(i, rel, j)`` between objects in grid cells ``(row, col)``: object i is
    ``rel`` object j ("left of", "right of", "above", "below")."""
    result = []
    for i, (row_a, col_a) in enumerate(cells):
        for j, (row_b, col_b) in enumerate(cells):
            if i == j:
                continue
            if col_a < col_b:
                result.append((i, "left of", j))
            if col_a > col_b:
                result.append((i, "right of", j))
            if row_a < row_b:
                result.append((i, "above", j))
            if row_a > row_b:
                result.append((i, "below", j))
    return result


@dataclass
class ShapeObject:
    kind: str
    colour: str
    size: str
    row: int
    col: int
    centre: tuple[float, float]
    radius: float

    @property
    def position(self) -> str:
        return position_word(self.row, self.col)


@dataclass
class Scene:
    image_size: int
    background: str
    background_style: str
    objects: list[ShapeObject] = field(default_factory=list)
    gradient_angle: float = 0.0
    texture_seed: int = 0

    def relations(self) -> list[tuple[int, str, int]]:
        """Every true pairwise relation ``(i, rel, j)``: object i is ``rel`` object j (by grid cell)."""
        return cell_relations([(obj.row, obj.col) for obj in self.objects])

    def to_dict(self) -> dict:
        return asdict(self)


def sample_scene(rng: np.random.Generator, image_size: int) -> Scene:
    """Draw a random scene: object count, kinds, colours, sizes, cells, jittered centres, background.

    With probability 0.2 a multi-object scene repeats one kind and colour ("two blue squares").
    The background colour is never one of the objects' colours.
    """
    count = int(rng.integers(1, MAX_OBJECTS + 1))
    names = list(COLOURS)
    if count > 1 and rng.random() < 0.2:
        kind, colour = str(rng.choice(KINDS)), str(rng.choice(names))
        specs = [(kind, colour)] * count
    else:
        specs = [(str(rng.choice(KINDS)), str(rng.choice(names))) for _ in range(count)]
    used = {colour for _, colour in specs}
    background = str(rng.choice([c for c in names if c not in used]))
    style = str(rng.choice(BACKGROUND_STYLES, p=[0.5, 0.25, 0.25]))
    cells = rng.choice(9, size=count, replace=False)
    objects = []
    for (kind, colour), cell in zip(specs, cells, strict=True):
        size = str(rng.choice(SIZES))
        lo, hi = SIZE_RADIUS[size]
        row, col = divmod(int(cell), 3)
        radius = float(rng.uniform(lo, hi)) * image_size
        objects.append(ShapeObject(kind, colour, size, row, col, (0.0, 0.0), radius))
    _place(objects, rng, image_size)
    angle = float(rng.uniform(0, 2 * np.pi))
    texture_seed = int(rng.integers(0, 2**31))
    return Scene(image_size, background, style, objects, angle, texture_seed)


def _place(objects: list[ShapeObject], rng: np.random.Generator, image_size: int) -> None:
    """Set each object's centre: its cell centre plus a random jitter, kept inside the image.

    Jitters that would make two objects touch are redrawn; after 50 tries the objects sit at
    their cell centres, which never touch (two of the largest radii plus the gap are less than
    a cell side). Sizes, cells, positions and relations therefore stay exact.
    """
    cell_side = image_size / 3
    gap = GAP * image_size
    for attempt in range(51):
        scale = CELL_JITTER if attempt < 50 else 0.0
        for obj in objects:
            jitter = rng.uniform(-scale, scale, size=2) * cell_side
            margin = obj.radius + gap
            obj.centre = (
                float(np.clip((obj.col + 0.5) * cell_side + jitter[0], margin, image_size - margin)),
                float(np.clip((obj.row + 0.5) * cell_side + jitter[1], margin, image_size - margin)),
            )
        if all(
            np.hypot(a.centre[0] - b.centre[0], a.centre[1] - b.centre[1]) >= a.radius + b.radius + gap
            for i, a in enumerate(objects)
            for b in objects[i + 1 :]
        ):
            return
