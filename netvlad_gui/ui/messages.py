"""How the window words what happened to the user's photos and library (text only, no widgets).

The rules live elsewhere (core decides, e.g. ``LibraryStatus.cannot_place``); this module only
turns their answers into the sentences the notices show.
"""

from __future__ import annotations

from netvlad_gui.core.library.status import LibraryStatus
from netvlad_gui.core.photos.images import IMAGE_EXTENSIONS

#: In the status bar while the engine loads torch and OpenCV after the window has opened.
ENGINE_LOADING = "Loading the recognition engine… photos dropped now wait for it."


def short_list(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def skipped_inputs(skipped: list[str]) -> str:
    kinds = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
    return f"Skipped {short_list(skipped)}. Photos can be {kinds}."


def cannot_place(info: LibraryStatus) -> str:
    return (
        f"None of the {info.indexed} indexed photos has GPS: the library can show similar "
        "photos but cannot place anything. Add positions (GPS in the photos' EXIF or XMP, or "
        "a gps.csv with name, lat, lon in the folder), then click “Update index”."
    )


def stale_results(count: int) -> str:
    were, them = ("s were", "them") if count > 1 else (" was", "it")
    return (
        f"{count} photo{were} located against the previous library (or model): locate {them} "
        f"again to place {them} against this one, or clear the list."
    )


def failed_photos(names: list[str], reason: str) -> str:
    """One notice for a batch's failures: the reason when one photo failed, else the names."""
    if len(names) == 1:
        return f"Cannot locate {names[0]}: {reason}"
    return f"Cannot locate {len(names)} photos: {short_list(names)}."


def already_listed(count: int, dropped: int) -> str:
    """For photos dropped again: they are in the list already (and are not added twice)."""
    if count == dropped:
        return (
            "This photo is in the list already."
            if count == 1
            else (f"These {count} photos are in the list already.")
        )
    if count == 1:
        return "1 of the photos is in the list already."
    return f"{count} of the photos are in the list already."


def no_browser(url: str) -> str:
    return f"Could not open a web browser. The OpenStreetMap link is {url}"


def build_ended(summary) -> str:
    """The notice after a build: what it did, and for a cancelled build how to go on."""
    text = (
        f"{summary.indexed} photos indexed ({summary.extracted} new), "
        f"{summary.with_gps} with GPS, {len(summary.failed)} skipped, "
        f"in {summary.elapsed_s:.1f} s."
    )
    if summary.cancelled:
        return f"Indexing cancelled: {summary.cancel_note}. {text} Click “Update index” to go on."
    return f"Index ready: {text}"


def photos_wait(has_library: bool) -> str:
    """Why dropped photos wait in the queue instead of being located."""
    if not has_library:
        return (
            "Choose a folder of geotagged photos first (the library): the dropped photos "
            "wait in the queue until it is indexed."
        )
    return "Build the library's index first (“Build index”): the dropped photos wait in the queue."


def trained_model_in_use(model_path: str, figure: str = "") -> str:
    """``figure``: what the model reaches on places it never trained on (the Retrain panel's)."""
    return (
        f"Now using the trained model {model_path}. "
        + (f"{figure} " if figure else "")
        + "It needs its own index: click “Build index” (or “Build the index” in the Retrain "
        "panel)."
    )


BUSY_BUILDING = "Wait for the index build to finish (or cancel it) before choosing another library."


def model_note(model: str) -> str:
    return f"Model: {model} (Tools → Model and settings to change it)."
