"""Whether a generated caption describes an image exactly.

On the shapes data a caption is exact when everything it states holds for the scene's recorded
attributes (:func:`t2i_lightning.data.shapes.captions.caption_matches`): the same words need not be
used, since every scene has several true captions. Elsewhere (no scene attributes) it is exact when
it equals the reference caption up to case, spacing and a final full stop.
"""

from __future__ import annotations

from ..data.shapes.captions import CaptionParseError, caption_matches, parse_caption


def _normalise(caption: str) -> str:
    return " ".join(caption.lower().strip().rstrip(".").split())


def caption_is_exact(generated: str, reference: str, meta: dict | None = None) -> bool:
    """True when ``generated`` states exactly what holds for the image (shapes metadata) or equals ``reference``."""
    if meta and "objects" in meta:
        try:
            return caption_matches(parse_caption(generated), meta)
        except CaptionParseError:
            return False
    return _normalise(generated) == _normalise(reference)
