"""Where the shared test data lives (../shared beside the checkout); tests skip when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared data folder, or a skip saying where it was looked for."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DIR}")
    return SHARED_DIR
