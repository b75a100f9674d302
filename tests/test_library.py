"""core.library: where an index lives, what state it is in; a warm session from one call."""

from __future__ import annotations

from pathlib import Path

import pytest
from _lund import TEST_IMAGE_SIZE

from netvlad_gui.core import paths
from netvlad_gui.core.config import ExtractConfig
from netvlad_gui.core.errors import LibraryIndexError
from netvlad_gui.core.library.status import resolve_index_dir
from netvlad_gui.core.query.session import open_session as open_library


def test_resolve_index_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "data_dir", lambda: tmp_path / "data")
    assert resolve_index_dir(tmp_path / "lib", tmp_path / "idx") == tmp_path / "idx"
    assert resolve_index_dir(tmp_path / "lib") == paths.default_index_dir(tmp_path / "lib")
    assert resolve_index_dir(tmp_path / "lib").is_relative_to(tmp_path / "data")
    with pytest.raises(LibraryIndexError):
        resolve_index_dir(None, None)


def test_open_library_without_an_index(tmp_path):
    status, locator = open_library(tmp_path / "nothing", ExtractConfig())
    assert locator is None and not status.exists and not status.ready
    assert status.problem == "not indexed yet"


def test_open_library_gives_status_and_a_warm_locator(lund_index: Path, shared_dir: Path):
    cfg = ExtractConfig(image_size=TEST_IMAGE_SIZE, num_workers=0)
    status, locator = open_library(lund_index, cfg)
    try:
        assert status.ready and status.exists and not status.problem
        assert status.indexed == status.with_gps == 19 and status.no_gps == []
        assert status.model == "mobilenet_v2-netvlad" and len(status.references) == 19
        assert status.library.endswith("references")
        assert locator is not None and locator.index.dir == Path(lund_index)
        query = min((shared_dir / "data" / "lund_street" / "queries").glob("*.jpg"))
        assert locator.locate(query).lat is not None
    finally:
        locator.index.close()


def test_a_library_without_any_gps_cannot_place() -> None:
    """Issue 12 item 9: the rule the GUI words as a warning instead of "Index ready"."""
    from netvlad_gui.core.library.status import LibraryStatus

    assert LibraryStatus(index_dir="x", indexed=4, with_gps=0).cannot_place
    assert not LibraryStatus(index_dir="x", indexed=4, with_gps=1).cannot_place
    assert not LibraryStatus(index_dir="x", indexed=0, with_gps=0).cannot_place  # nothing yet
