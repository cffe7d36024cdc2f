"""Exact text-image alignment on shapes: what the judge reads in each image against what its caption states.

For every image, the caption is parsed (:func:`~t2i_lightning.data.shapes.captions.parse_caption`) and
each attribute it states is checked against the judge's reading of the image
(:func:`~t2i_lightning.data.shapes.captions.caption_checks`: count, kind, colour, kind-colour binding,
and size, position, relation and background where stated). Each attribute's accuracy is taken over
the captions that state it; ``all`` is the share of images with every stated attribute right. The same
two shares, ``all`` and ``kind``, are also split by how many objects the caption states (``all_1obj``,
``kind_1obj``, ``n_1obj``, ...): whether a generator draws one shape right, which the pooled share hides
behind the harder multi-object scenes.
"""

from __future__ import annotations

from collections import defaultdict

from ..data.shapes.captions import caption_checks, parse_caption

ATTRIBUTES = ("count", "kind", "colour", "binding", "size", "position", "relation", "background")


def alignment_report(captions: list[str], scenes: list[dict]) -> dict[str, float | int | None]:
    """``{attribute: accuracy or None when no caption states it, "all": share, "n": images}``, plus
    ``all_{c}obj``, ``kind_{c}obj`` and ``n_{c}obj`` for each object count ``c`` some caption states."""
    if len(captions) != len(scenes):
        raise ValueError(f"Need one reading per caption, got {len(scenes)} for {len(captions)} captions")
    if not captions:
        raise ValueError("Need at least one caption")
    hits: dict[str, list[bool]] = defaultdict(list)
    by_count: dict[int, list[tuple[bool, bool]]] = defaultdict(list)
    exact = 0
    for caption, scene in zip(captions, scenes, strict=True):
        spec = parse_caption(caption)
        checks = caption_checks(spec, scene)
        for name, right in checks.items():
            hits[name].append(right)
        exact += all(checks.values())
        by_count[spec.object_count].append((all(checks.values()), checks["kind"]))
    report: dict[str, float | int | None] = {
        name: (sum(hits[name]) / len(hits[name]) if hits[name] else None) for name in ATTRIBUTES
    }
    report["all"] = exact / len(captions)
    report["n"] = len(captions)
    for count, rows in sorted(by_count.items()):
        report[f"all_{count}obj"] = sum(a for a, _ in rows) / len(rows)
        report[f"kind_{count}obj"] = sum(k for _, k in rows) / len(rows)
        report[f"n_{count}obj"] = len(rows)
    return report
