"""Exact text-image alignment on shapes: what the judge reads in each image against what its caption states.

For every image, the caption is parsed (:func:`~t2i_lightning.data.shapes.captions.parse_caption`) and
each attribute it states is checked against the judge's reading of the image
(:func:`~t2i_lightning.data.shapes.captions.caption_checks`: count, kind, colour, kind-colour binding,
and size, position, relation and background where stated). Each attribute's accuracy is taken over
the captions that state it; ``all`` is the share of images with every stated attribute right.
"""

from __future__ import annotations

from collections import defaultdict

from ..data.shapes.captions import caption_checks, parse_caption

ATTRIBUTES = ("count", "kind", "colour", "binding", "size", "position", "relation", "background")


def alignment_report(captions: list[str], scenes: list[dict]) -> dict[str, float | int | None]:
    """``{attribute: accuracy or None when no caption states it, "all": share, "n": images}``."""
    if len(captions) != len(scenes):
        raise ValueError(f"Need one reading per caption, got {len(scenes)} for {len(captions)} captions")
    if not captions:
        raise ValueError("Need at least one caption")
    hits: dict[str, list[bool]] = defaultdict(list)
    exact = 0
    for caption, scene in zip(captions, scenes, strict=True):
        checks = caption_checks(parse_caption(caption), scene)
        for name, right in checks.items():
            hits[name].append(right)
        exact += all(checks.values())
    report: dict[str, float | int | None] = {
        name: (sum(hits[name]) / len(hits[name]) if hits[name] else None) for name in ATTRIBUTES
    }
    report["all"] = exact / len(captions)
    report["n"] = len(captions)
    return report
