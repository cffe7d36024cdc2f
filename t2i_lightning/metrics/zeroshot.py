"""Zero-shot colour and shape classification of single-object shapes scenes with a CLIP.

Each image is compared with the prompts "a {colour} {kind}" for every colour and kind; the
best prompt's colour and kind are the predictions (CLIP, Radford et al. 2021, sec. 3.1.2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..data.shapes.scene import COLOURS, KINDS


def zero_shot_prompts() -> tuple[list[str], list[tuple[str, str]]]:
    pairs = [(colour, kind) for colour in COLOURS for kind in KINDS]
    return [f"a {colour} {kind}" for colour, kind in pairs], pairs


def zero_shot_accuracy(
    image_features: torch.Tensor, metas: Sequence[dict], encode_text: Callable[[list[str]], torch.Tensor]
) -> dict[str, float]:
    """Colour and shape accuracy over the single-object scenes among ``metas`` (features normalised).

    Returns ``{"colour_acc", "shape_acc", "n"}``; accuracies are NaN when there is no such scene.
    """
    single = [i for i, m in enumerate(metas) if m and len(m.get("objects", [])) == 1]
    if not single:
        return {"colour_acc": float("nan"), "shape_acc": float("nan"), "n": 0}
    prompts, pairs = zero_shot_prompts()
    text = encode_text(prompts)
    best = (image_features[single] @ text.T).argmax(dim=1).tolist()
    truth = [(metas[i]["objects"][0]["colour"], metas[i]["objects"][0]["kind"]) for i in single]
    colour = sum(pairs[b][0] == t[0] for b, t in zip(best, truth, strict=True)) / len(single)
    shape = sum(pairs[b][1] == t[1] for b, t in zip(best, truth, strict=True)) / len(single)
    return {"colour_acc": colour, "shape_acc": shape, "n": len(single)}
