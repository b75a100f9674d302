"""Screenshot mode in a real X server: `netvlad-gui --locate PHOTO --screenshot FILE.png`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _lund import TEST_IMAGE_SIZE
from PIL import Image

SCREEN = "-screen 0 1400x900x24"


def _x_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("QT_QPA_PLATFORM", None)  # conftest asks for offscreen; this test wants X
    env.update(
        XDG_CONFIG_HOME=str(tmp_path / "config"),  # QSettings of a fresh user
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        QTWEBENGINE_DISABLE_SANDBOX="1",
    )
    return env


def _run_gui(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    if shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run is not installed (apt-get install xvfb): no X server to draw in")
    cmd = ["xvfb-run", "-a", "-s", SCREEN, sys.executable, "-m", "netvlad_gui.ui.app", *args]
    return subprocess.run(
        cmd, check=False, env=_x_env(tmp_path), capture_output=True, text=True, timeout=400
    )


def _colours(img: Image.Image) -> int:
    return len(img.convert("RGB").getcolors(maxcolors=1 << 20) or [])


def test_screenshot_of_a_located_photo(tmp_path: Path, lund_index: Path, shared_dir: Path) -> None:
    shot = tmp_path / "shot.png"
    query = shared_dir / "data" / "lund_street" / "queries" / "02.jpg"
    proc = _run_gui(
        tmp_path,
        "--index",
        str(lund_index),
        "--image-size",
        str(TEST_IMAGE_SIZE),
        "--locate",
        str(query),
        "--screenshot",
        str(shot),
        "--measure-stalls",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "02.jpg: 55.69" in proc.stdout
    assert shot.is_file()
    img = Image.open(shot).convert("RGB")
    assert img.width >= 800 and img.height >= 600
    assert _colours(img) > 500  # photos and a map, not a blank window

    match = re.search(r"map area: (\d+) (\d+) (\d+) (\d+)", proc.stdout)
    assert match, proc.stdout
    x, y, w, h = map(int, match.groups())
    assert w > 200 and h > 200
    map_area = img.crop((x, y, x + w, y + h))
    assert _colours(map_area) > 20, "the map area is (almost) a single colour"
    stalls = re.search(r"worst GUI stall: (.*)", proc.stdout)
    assert stalls, proc.stdout
    print(f"\n{stalls.group(0)}")


def test_screenshot_of_the_first_start_page(tmp_path: Path) -> None:
    shot = tmp_path / "first.png"
    proc = _run_gui(tmp_path, "--screenshot", str(shot))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    img = Image.open(shot).convert("RGB")
    assert _colours(img) > 50  # text is drawn (anti-aliased), not an empty frame


def test_screenshot_locates_the_folders_given_as_arguments(
    tmp_path: Path, lund_index: Path, shared_dir: Path
) -> None:
    """`netvlad-gui --screenshot FILE FOLDER`: the folder's photos are located, then drawn."""
    shot = tmp_path / "folder.png"
    queries = shared_dir / "data" / "lund_street" / "queries"
    proc = _run_gui(
        tmp_path,
        "--index",
        str(lund_index),
        "--image-size",
        str(TEST_IMAGE_SIZE),
        "--screenshot",
        str(shot),
        str(queries),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    located = re.findall(r"(\d\d\.jpg): 55\.69", proc.stdout)
    assert sorted(located) == sorted(p.name for p in queries.glob("*.jpg")), proc.stdout
    assert shot.is_file() and _colours(Image.open(shot)) > 500
