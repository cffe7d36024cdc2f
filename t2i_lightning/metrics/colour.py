"""Colour-and-layout error between image pairs: a quick, model-free check of reconstructions.

Both images are average-pooled to a coarse ``cells x cells`` grid and compared cell by cell, so the
error measures whether the right colours are in the right places (background, objects, rough
layout) and ignores fine detail. Reported in 8-bit units (0-255); the baseline is the same
measure over random pairs (each reconstruction against another source), which says how much of
the error is explained by matching nothing at all. On shapes, whose metadata says where each object
is, :func:`object_colour_report` asks the finer questions the coarse grid blurs: does each object
come back in its own colour, in its place, near its place and anywhere in the image?
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def coarse_colour_error(a: torch.Tensor, b: torch.Tensor, cells: int = 4) -> torch.Tensor:
    """Per-pair mean absolute difference of ``cells x cells`` average colours, in 0-255 units.

    ``a`` and ``b``: B x 3 x H x W in [-1, 1] (the same B; sizes may differ).
    """
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"Need the same number of images, got {a.shape[0]} and {b.shape[0]}")
    pooled_a = F.adaptive_avg_pool2d(a.float(), cells)
    pooled_b = F.adaptive_avg_pool2d(b.float(), cells)
    return (pooled_a - pooled_b).abs().mean(dim=(1, 2, 3)) * 127.5


def reconstruction_colour_report(sources: torch.Tensor, reconstructions: torch.Tensor) -> dict[str, float]:
    """Mean coarse colour error of matched pairs and of random pairs (each reconstruction against
    the next source, a derangement), and their ratio (below 1: the reconstructions follow their sources)."""
    if sources.shape[0] < 2:
        raise ValueError("Need at least two images for a random-pair baseline")
    matched = coarse_colour_error(sources, reconstructions).mean().item()
    shuffled = coarse_colour_error(sources.roll(1, dims=0), reconstructions).mean().item()
    return {"matched": matched, "random_pairs": shuffled, "ratio": matched / max(shuffled, 1e-8)}


def dominant_object_colour(
    image: torch.Tensor, palette: dict[str, tuple[int, int, int]], background_distance: float = 60.0
) -> str | None:
    """The palette colour most of an image's object pixels are nearest to, or None when no pixel stands out.

    ``image``: 3 x H x W in [-1, 1]. The background is the median colour of the border pixels; object
    pixels are those farther than ``background_distance`` (8-bit RGB, Euclidean) from it; each votes
    for its nearest palette colour. A colour-histogram check of "is the prompt's colour there", usable
    until a trained judge exists; it ignores shape, size and position.
    """
    image = _rgb255(image)
    pixels = image.reshape(3, -1).T  # N x 3
    border = torch.cat([image[:, 0], image[:, -1], image[:, :, 0], image[:, :, -1]], dim=1)
    background = border.median(dim=1).values
    foreground = pixels[(pixels - background).norm(dim=1) > background_distance]
    if len(foreground) == 0:
        return None
    names = list(palette)
    colours = torch.tensor([palette[name] for name in names], dtype=torch.float32)
    nearest = torch.cdist(foreground, colours).argmin(dim=1)
    return names[int(torch.bincount(nearest, minlength=len(names)).argmax())]


def object_pixel_mask(source: torch.Tensor, obj: dict, image_size: int, tolerance: float = 40.0) -> torch.Tensor:
    """Where one object of a shapes scene shows in ``source`` (3 x H x W in [-1, 1]): the pixels inside
    its ``bbox`` (given in ``image_size`` units) whose colour is within ``tolerance`` (8-bit RGB,
    Euclidean) of its ``rgb``. Antialiased edges and hollow centres (rings) are left out."""
    return box_mask(obj["bbox"], image_size, source.shape[-2:]) & _near(_rgb255(source), obj["rgb"], tolerance)


def box_mask(bbox: list[float], image_size: int, shape: tuple[int, int], margin: int = 0) -> torch.Tensor:
    """H x W mask of ``bbox`` (x0, y0, x1, y1 in ``image_size`` units) on an image of ``shape``, grown by
    ``margin`` pixels on every side (clipped to the image)."""
    height, width = shape
    scale_x, scale_y = width / image_size, height / image_size
    x0, y0, x1, y1 = bbox
    box = torch.zeros(height, width, dtype=torch.bool)
    rows = slice(max(int(y0 * scale_y) - margin, 0), min(int(y1 * scale_y) + 1 + margin, height))
    columns = slice(max(int(x0 * scale_x) - margin, 0), min(int(x1 * scale_x) + 1 + margin, width))
    box[rows, columns] = True
    return box


def _rgb255(image: torch.Tensor) -> torch.Tensor:
    """``image`` in [-1, 1] as float 8-bit units (0-255), the units every tolerance here is given in."""
    return (image.float().clamp(-1, 1) + 1) * 127.5


def _near(pixels: torch.Tensor, rgb: tuple[int, int, int], tolerance: float) -> torch.Tensor:
    """H x W mask of the ``pixels`` (3 x H x W, 0-255) within ``tolerance`` of ``rgb`` (Euclidean)."""
    return (pixels - torch.tensor(rgb, dtype=torch.float32)[:, None, None]).norm(dim=0) < tolerance


def object_colour_report(
    sources: torch.Tensor,
    reconstructions: torch.Tensor,
    metas: list[dict],
    palette: dict[str, tuple[int, int, int]],
    min_pixels: int = 4,
    present_share: float = 0.25,
    tolerance: float = 40.0,
    near_share: float = 0.1,
    near_margin: float = 1 / 8,
) -> dict[str, float]:
    """Does each object come back in its own colour, where it was and anywhere at all? For every
    object in the scene metadata (``metas[i]["objects"]``, the shapes generator's):

    - ``object_colour_hits``: the mean colour of the reconstruction over the object's pixels in the
      source (:func:`object_pixel_mask`), named by the nearest ``palette`` colour, is the object's
      ``colour`` (colour and place);
    - ``object_colour_present``: the reconstruction has, anywhere, at least ``present_share`` of the
      object's pixel count within ``tolerance`` of its ``rgb`` (colour regardless of place; another
      object of the same colour in the scene also counts);
    - ``object_colour_near``: the same with the place kept roughly: at least ``near_share`` of the
      object's pixel count within ``tolerance`` of its ``rgb`` inside its bounding box grown by
      ``near_margin`` of the image side on every side (rough layout: a fragment of the right colour
      near the right place counts, where ``hits`` needs the object's own pixels to be mostly its colour).

    Baseline for each (``*_random_pairs``): the same object read from another image's reconstruction
    (the next one, a derangement). Objects showing fewer than ``min_pixels`` pixels are not counted.
    Returns the rates and the number of objects (0, with NaN rates, when the metadata has no objects:
    datasets other than shapes)."""
    if not (len(sources) == len(reconstructions) == len(metas)) or len(sources) < 2:
        raise ValueError("Need as many sources, reconstructions and metadata entries, at least two")
    names = list(palette)
    colours = torch.tensor([palette[name] for name in names], dtype=torch.float32)
    reconstructions = _rgb255(reconstructions)
    shuffled = reconstructions.roll(1, dims=0)

    def named(pixels: torch.Tensor, mask: torch.Tensor) -> str:
        mean = pixels[:, mask].mean(dim=1)
        return names[int(torch.cdist(mean[None], colours).argmin())]

    def present(pixels: torch.Tensor, obj: dict, needed: float, where: torch.Tensor | None = None) -> bool:
        close = _near(pixels, obj["rgb"], tolerance)
        return int((close if where is None else close & where).sum()) >= needed

    scores = ("hits", "present", "near")
    counts = dict.fromkeys([f"{score}{suffix}" for score in scores for suffix in ("", "_random_pairs")], 0)
    objects = 0
    for source, recon, other, meta in zip(sources, reconstructions, shuffled, metas, strict=True):
        image_size = meta.get("image_size", source.shape[-1])
        margin = round(near_margin * source.shape[-1])
        for obj in meta.get("objects", []):
            mask = object_pixel_mask(source, obj, image_size, tolerance)
            area = int(mask.sum())
            if area < min_pixels:
                continue
            objects += 1
            counts["hits"] += named(recon, mask) == obj["colour"]
            counts["hits_random_pairs"] += named(other, mask) == obj["colour"]
            needed = max(min_pixels, present_share * area)
            counts["present"] += present(recon, obj, needed)
            counts["present_random_pairs"] += present(other, obj, needed)
            around = box_mask(obj["bbox"], image_size, source.shape[-2:], margin)
            needed = max(min_pixels, near_share * area)
            counts["near"] += present(recon, obj, needed, around)
            counts["near_random_pairs"] += present(other, obj, needed, around)
    rates = {f"object_colour_{name}": count / objects if objects else float("nan") for name, count in counts.items()}
    return rates | {"objects": float(objects)}
