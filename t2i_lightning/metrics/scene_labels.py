"""Shapes scenes as the judge's targets, and the judge's outputs back as scenes.

Every shapes object sits in its own cell of a 3x3 grid (:mod:`t2i_lightning.data.shapes.scene`), so a
scene is exactly nine slots, one per cell, each empty or holding one object with a kind, a colour and a
size, plus the background colour. The slot gives the position word and the relations; the object count
is the number of occupied slots. These are the judge's targets (:class:`t2i_lightning.nn.judge.SceneJudge`)
and, decoded from its logits, what it saw in an image.
"""

from __future__ import annotations

import torch

from ..data.shapes.scene import COLOURS, KINDS, SIZES, cell_relations, position_word

CELLS = 9
EMPTY = 0  # slot class 0; kind k is class 1 + KINDS.index(k)
SLOT_CLASSES = ("empty", *KINDS)
COLOUR_NAMES = tuple(COLOURS)
IGNORE = -100  # cross-entropy's ignore_index: colour and size of an empty slot


def scene_targets(metas: list[dict]) -> dict[str, torch.Tensor]:
    """Targets of a batch of shapes metadata: ``slot`` (B x 9, 0 = empty), ``colour`` and ``size``
    (B x 9, IGNORE where empty) and ``background`` (B)."""
    slot = torch.full((len(metas), CELLS), EMPTY, dtype=torch.long)
    colour = torch.full((len(metas), CELLS), IGNORE, dtype=torch.long)
    size = torch.full((len(metas), CELLS), IGNORE, dtype=torch.long)
    background = torch.empty(len(metas), dtype=torch.long)
    for i, meta in enumerate(metas):
        if "objects" not in meta:
            raise ValueError("The judge needs shapes scene metadata (`objects` in each sample's .json)")
        for obj in meta["objects"]:
            cell = 3 * obj["cell"][0] + obj["cell"][1]
            slot[i, cell] = 1 + KINDS.index(obj["kind"])
            colour[i, cell] = COLOUR_NAMES.index(obj["colour"])
            size[i, cell] = SIZES.index(obj["size"])
        background[i] = COLOUR_NAMES.index(meta["background"]["colour"])
    return {"slot": slot, "colour": colour, "size": size, "background": background}


def decode_scenes(logits: dict[str, torch.Tensor]) -> list[dict]:
    """The judge's most likely reading of each image, in the metadata's form (what
    :func:`~t2i_lightning.data.shapes.captions.caption_matches` reads): ``objects`` (kind, colour, size,
    position, cell) in row-major cell order, ``count``, ``relations`` and ``background`` (``{"colour": ...}``)."""
    slot = logits["slot"].argmax(-1).tolist()
    colour = logits["colour"].argmax(-1).tolist()
    size = logits["size"].argmax(-1).tolist()
    background = logits["background"].argmax(-1).tolist()
    scenes = []
    for i in range(len(slot)):
        objects = [
            {"kind": KINDS[slot[i][c] - 1], "colour": COLOUR_NAMES[colour[i][c]], "size": SIZES[size[i][c]],
             "position": position_word(*divmod(c, 3)), "cell": list(divmod(c, 3))}
            for c in range(CELLS) if slot[i][c] != EMPTY
        ]  # fmt: skip
        scenes.append({
            "objects": objects, "count": len(objects),
            "relations": [list(r) for r in cell_relations([tuple(o["cell"]) for o in objects])],
            "background": {"colour": COLOUR_NAMES[background[i]]},
        })  # fmt: skip
    return scenes


def attribute_hits(logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-attribute correctness of the judge against the true scenes, as 0/1 tensors to be averaged.

    Per true object: ``kind``, ``colour``, ``size`` and ``position`` (its cell read as occupied). Per
    image: ``count`` (the number of occupied slots), ``background`` and ``scene`` (every slot and the
    background right: the scene read exactly).
    """
    slot = logits["slot"].argmax(-1)
    present = targets["slot"] != EMPTY
    slot_right = slot == targets["slot"]
    colour_right = logits["colour"].argmax(-1) == targets["colour"]
    size_right = logits["size"].argmax(-1) == targets["size"]
    background_right = logits["background"].argmax(-1) == targets["background"]
    object_right = slot_right & colour_right & size_right
    return {
        "kind": slot_right[present].float(),
        "colour": colour_right[present].float(),
        "size": size_right[present].float(),
        "position": (slot != EMPTY)[present].float(),
        "count": ((slot != EMPTY).sum(1) == present.sum(1)).float(),
        "background": background_right.float(),
        "scene": (torch.where(present, object_right, slot_right).all(1) & background_right).float(),
    }
