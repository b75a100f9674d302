"""The shipped weights and web assets are found both from a checkout and from an installed wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from netvlad_gui.core import paths

REPO = Path(__file__).resolve().parents[1]


def test_checkout_finds_shipped_files():
    assert (paths.models_dir() / "mobilenet_v2_imagenet.pth").is_file()
    assert (paths.models_dir() / "mobilenet_v2_imagenet.json").is_file()
    assert (paths.resources_dir() / "web" / "leaflet.js").is_file()


def test_wheel_carries_and_finds_shipped_files(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(REPO),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    wheel = next((tmp_path / "dist").glob("netvlad_gui-*.whl"))
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
        shipped = {Path(n).parent.as_posix() for n in zf.namelist() if n.endswith("/__init__.py")}
    # every package of the checkout (pyproject lists them by hand) travels in the wheel
    packages = {
        p.parent.relative_to(REPO).as_posix() for p in (REPO / "netvlad_gui").rglob("__init__.py")
    }
    assert packages <= shipped, sorted(packages - shipped)
    probe = (
        "from netvlad_gui.core import paths; "
        "print(paths.models_dir()); print(paths.resources_dir())"
    )
    res = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site)},
        check=True,
        capture_output=True,
        text=True,
    )
    models, resources = map(Path, res.stdout.split())
    assert models == site / "netvlad_gui/_models"
    assert (models / "mobilenet_v2_imagenet.pth").stat().st_size > 10_000_000
    assert (resources / "web/leaflet.js").is_file()
    assert (resources / "web/images/marker-icon.png").is_file()
