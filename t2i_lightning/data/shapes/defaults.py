"""The shapes dataset's generation settings that ``t2i data shapes`` offers as defaults, without numpy, so
that its parser is built without importing the generator."""

from __future__ import annotations

POSITION_PROB = 0.3
"""The demo dataset's chance of a position word per single object in a caption."""
