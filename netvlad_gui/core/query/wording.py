"""What a result says to a user, in the words both fronts use (no Qt, no torch).

The verdict is decided in verdict.py; this module only decides how a result's parts are shown:
whether its coordinates are an answer, a guess (not in this library) or a first guess still being
checked, and the line of evidence that goes with the verdict. The window, the map and the plain
CLI all ask here, so a guess is called a guess everywhere.
"""

from __future__ import annotations

from .result import LocateResult
from .verdict import NOT_FOUND, describe

#: How a result's coordinates may be used (``coordinates_kind``).
ANSWER, GUESS, FIRST_GUESS, NO_PLACE = "answer", "guess", "first_guess", "none"

#: The headline of a stage shown while its evidence is being checked: no verdict yet.
CHECKING = "Checking the matches…"


def coordinates_kind(res: LocateResult) -> str:
    """ANSWER (a located or uncertain place), GUESS (the nearest reference of a photo not in
    the library), FIRST_GUESS (the global search's, still being checked) or NO_PLACE."""
    if res.error or res.lat is None:
        return NO_PLACE
    if res.provisional:
        return FIRST_GUESS
    return GUESS if res.guess else ANSWER


def headline(res: LocateResult, *, short: bool = False) -> str:
    """The verdict's words, CHECKING for a provisional stage, "" for a photo that failed."""
    if res.error:
        return ""
    if res.provisional:
        return "Checking…" if short else CHECKING
    return describe(res.verdict, short=short)


def evidence_line(res: LocateResult) -> str:
    """The evidence behind the verdict in a few words: match #1's inliers, or why there are none.

    Match #1 is the match the verdict rests on (answer.py orders them so), so "best match" and
    the first thumbnail always agree.
    """
    if res.provisional:
        return "verifying…"
    if not res.verified:
        return "not verified (global search only)"
    n = res.best_inliers
    first = res.matches[0].inliers if res.matches else None
    if n is None:
        return "verified: no match could be read"
    if res.verdict == NOT_FOUND or first != n:
        return f"no match shares enough points (at most {n})"
    return f"best match {n} matching points"
