"""Image decoding, colour-mode conversion, square resizing and encoding for shards.

Every image that enters a shard or a batch passes through :func:`to_rgb`, so greyscale,
16-bit, RGBA/LA, palette and CMYK inputs all become 8-bit RGB the same way.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps

from .shards import atomic_path

ResizeMode = Literal["border", "center-crop"]
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp")


def open_image(data: bytes | str) -> Image.Image:
    """Open and fully decode an image from bytes or a path; truncated or invalid data raises ValueError
    (a missing path FileNotFoundError)."""
    try:
        image = Image.open(io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data)
        image.load()
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:  # what PIL raises for bad data
        where = "image bytes" if isinstance(data, (bytes, bytearray)) else str(data)
        raise ValueError(f"Not a readable image: {where} ({error})") from error
    return image


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparency is composited onto ``background``."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        hi = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, background)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if image.mode == "CMYK":
        return image.convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def resize_square(
    image: Image.Image,
    size: int,
    mode: ResizeMode = "border",
    fill: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Make ``image`` a ``size`` x ``size`` square with antialiased resampling.

    ``border`` pads the short side with ``fill`` (the unCLIP-lite study's white border) so
    nothing is cropped; ``center-crop`` scales the short side to ``size`` and crops the centre.
    """
    if mode == "border":
        side = max(image.size)
        canvas = Image.new("RGB", (side, side), fill)
        canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        image = canvas
    elif mode == "center-crop":
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    else:
        raise ValueError(f"Unknown resize mode {mode!r}: use 'border' or 'center-crop'")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return image


def encode_image(image: Image.Image, fmt: str = "png", quality: int = 95) -> bytes:
    """Encode an RGB image as PNG (lossless, deterministic) or JPEG bytes."""
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", optimize=False, compress_level=6)
    elif fmt in ("jpg", "jpeg"):
        image.save(buffer, format="JPEG", quality=quality, subsampling=0)
    else:
        raise ValueError(f"Unknown image format {fmt!r}: use 'png' or 'jpg'")
    return buffer.getvalue()


def tensor_to_images(batch: torch.Tensor) -> list[Image.Image]:
    """A B x 3 x H x W tensor in [-1, 1] -> RGB PIL images (values clamped, rounded to 8 bits)."""
    array = ((batch.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(dtype=torch.uint8)
    return [Image.fromarray(a) for a in array.permute(0, 2, 3, 1).cpu().numpy()]


def save_png_atomic(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write ``image`` as PNG to ``path`` (parents created) under a temporary name, then rename."""
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


def grid_image(images: list[Image.Image], columns: int) -> Image.Image:
    """Tile equally sized images left to right, top to bottom, with no borders."""
    side_w, side_h = images[0].size
    rows = math.ceil(len(images) / columns)
    grid = Image.new("RGB", (columns * side_w, rows * side_h), (255, 255, 255))
    for i, image in enumerate(images):
        grid.paste(image, ((i % columns) * side_w, (i // columns) * side_h))
    return grid
