"""The lund_street index, built once per test session with a fast model (for the GUI tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

#: Index and locate at this size in tests: 4x fewer pixels than the default 640.
TEST_IMAGE_SIZE = 320


def _build(shared_dir: Path, index_dir: Path, image_size: int) -> Path:
    from netvlad_gui.core.config import ExtractConfig
    from netvlad_gui.core.library.builder import build_index

    library = shared_dir / "data" / "lund_street" / "references"
    if not library.is_dir():
        pytest.skip(f"lund_street data not found at {library}")
    summary = build_index(
        library,
        index_dir,
        model_spec="mobilenet_v2-netvlad",
        extract_cfg=ExtractConfig(image_size=image_size, num_workers=0),
    )
    assert summary.indexed == 19 and summary.with_gps == 19, summary
    return index_dir


@pytest.fixture(scope="session")
def lund_index(shared_dir: Path, tmp_path_factory) -> Path:
    """An index of lund_street/references (mobilenet_v2-netvlad, 320 px) in a temporary folder."""
    return _build(shared_dir, tmp_path_factory.mktemp("lund_index"), TEST_IMAGE_SIZE)


@pytest.fixture(scope="session")
def lund_index_640(shared_dir: Path, tmp_path_factory) -> Path:
    """The same index at the default 640 px: what a far-away photo's verdict needs.

    At 320 px the global score cannot tell Berlin or Portland from Lund (their calibrated
    similarity is 0.41-1.0 there, 0-0.18 at 640 px), so without shared points they are
    ``uncertain``, not ``not_found`` (core/query/verdict.py).
    """
    from netvlad_gui.core.config import ExtractConfig

    return _build(shared_dir, tmp_path_factory.mktemp("lund_index_640"), ExtractConfig.image_size)
