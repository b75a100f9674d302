"""How a verdict looks in the window: one colour per verdict, the same in every panel.

The words come from core (``verdict.describe``), so the GUI and the CLI say the same thing.
"""

from __future__ import annotations

from PySide6.QtGui import QColor

from netvlad_gui.core.query.verdict import LOCATED, NOT_FOUND, SIMILAR_ONLY, UNCERTAIN, describe

__all__ = ["GUESS_COLOUR", "VERDICT_COLOURS", "describe", "verdict_colour"]

#: Green for evidence, amber for weak evidence, grey for "not in this library" (a guess is no
#: answer, so it must not look like one). Readable on light and dark palettes alike.
VERDICT_COLOURS = {
    LOCATED: "#1a7f37",
    UNCERTAIN: "#b35c00",
    NOT_FOUND: "#6e6e6e",
    SIMILAR_ONLY: "#35608f",  # a library without GPS: nothing wrong, only nothing to place
}
GUESS_COLOUR = "#8a8a8a"


def verdict_colour(verdict: str | None) -> QColor | None:
    """The verdict's colour, or None (no verdict: the palette's text colour)."""
    name = VERDICT_COLOURS.get(verdict or "")
    return QColor(name) if name else None
