"""Cross-modal retrieval recall where several items can be correct.

On shapes many scenes share a caption, so a text-to-image hit counts as correct when the
retrieved image's attributes satisfy the caption exactly (and an image-to-text hit when the
retrieved caption is true of the image); elsewhere only the paired item is correct.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..data.shapes.captions import CaptionParseError, caption_matches, parse_caption


def recall_at_k(
    similarity: torch.Tensor, is_correct: Callable[[int, int], bool], ks: Sequence[int] = (1, 5)
) -> dict[int, float]:
    """Share of queries (rows) with a correct item among their top-k columns, for each k."""
    top = similarity.topk(max(ks), dim=1).indices.tolist()
    hits = {k: 0 for k in ks}
    for query, ranked in enumerate(top):
        first = next((rank for rank, item in enumerate(ranked) if is_correct(query, item)), None)
        for k in ks:
            hits[k] += first is not None and first < k
    return {k: hits[k] / max(1, len(top)) for k in ks}


def caption_truth(captions: Sequence[str], metas: Sequence[dict]) -> Callable[[int, int], bool]:
    """``truth(c, i)``: caption ``c`` is true of image ``i`` (shapes attributes), else ``c == i``."""
    specs = []
    for caption in captions:
        try:
            specs.append(parse_caption(caption))
        except CaptionParseError:
            specs.append(None)
    usable = all(s is not None for s in specs) and all(m and "objects" in m for m in metas)

    def truth(c: int, i: int) -> bool:
        return c == i or (usable and caption_matches(specs[c], metas[i]))

    return truth


def retrieval_metrics(
    image_features: torch.Tensor, text_features: torch.Tensor, captions: Sequence[str], metas: Sequence[dict]
) -> dict[str, float]:
    """Text-to-image and image-to-text R@1/R@5 and the mean cosine of matched pairs (features normalised)."""
    similarity = text_features @ image_features.T
    truth = caption_truth(captions, metas)
    t2i = recall_at_k(similarity, truth)
    i2t = recall_at_k(similarity.T, lambda i, c: truth(c, i))
    return {
        "t2i_R@1": t2i[1],
        "t2i_R@5": t2i[5],
        "i2t_R@1": i2t[1],
        "i2t_R@5": i2t[5],
        "pair_cosine": float(similarity.diagonal().mean()),
    }
