"""Horizontal flips that keep captions and shapes metadata true.

Mirroring an image swaps left and right, so the words "left"/"right" in its captions and the
positions, boxes, cells and relations of its objects must swap too; otherwise a flip teaches
the model that "a circle to the left of a star" may show the circle on the right.
"""

from __future__ import annotations

import copy
import re

from .shapes.scene import flip_position

_SIDE = re.compile(r"\b(left|right|Left|Right|LEFT|RIGHT)\b")
_SWAP = {"left": "right", "right": "left", "Left": "Right", "Right": "Left", "LEFT": "RIGHT", "RIGHT": "LEFT"}
_RELATION_SWAP = {"left of": "right of", "right of": "left of"}


def flip_caption(caption: str) -> str:
    """Swap the words left and right (whole words, case kept)."""
    return _SIDE.sub(lambda m: _SWAP[m.group(0)], caption)


def flip_meta(meta: dict) -> dict:
    """A copy of a sample's metadata as it reads after a horizontal flip.

    Captions are flipped for any dataset; for shapes metadata (``objects`` with boxes) the x
    coordinates are mirrored about the image width, and positions, grid columns and relations
    swap sides.
    """
    meta = copy.deepcopy(meta)
    for field in ("caption", "captions"):
        if isinstance(meta.get(field), str):
            meta[field] = flip_caption(meta[field])
        elif isinstance(meta.get(field), list):
            meta[field] = [flip_caption(c) for c in meta[field]]
    width = meta.get("image_size")
    for obj in meta.get("objects", []) if width else []:
        x0, y0, x1, y1 = obj["bbox"]
        obj["bbox"] = [round(width - x1, 2), y0, round(width - x0, 2), y1]
        for point in ("centre", "anchor"):
            obj[point] = [round(width - obj[point][0], 2), obj[point][1]]
        obj["position"] = flip_position(obj["position"])
        obj["cell"] = [obj["cell"][0], 2 - obj["cell"][1]]
    if "relations" in meta:
        meta["relations"] = [[i, _RELATION_SWAP.get(rel, rel), j] for i, rel, j in meta["relations"]]
    meta["flipped"] = not meta.get("flipped", False)
    return meta
