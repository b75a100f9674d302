"""core/preload.py: loading the engine with the garbage collector paused, in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import gc, json, sys
from netvlad_gui.core.preload import load_engine
before = "torch" in sys.modules
gc.disable() if sys.argv[1] == "off" else None
load_engine()
print(json.dumps({
    "before": before,
    "loaded": "torch" in sys.modules and "torchvision" in sys.modules,
    "enabled": gc.isenabled(),
    "frozen": gc.get_freeze_count(),
}))
"""


def _run(mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_load_engine_imports_torch_and_restores_the_collector() -> None:
    seen = _run("on")
    assert seen["before"] is False and seen["loaded"] is True
    assert seen["enabled"] is True  # paused for the imports only
    assert seen["frozen"] > 10_000  # what the imports made is out of later passes' reach
    assert _run("off")["enabled"] is False  # a collector the caller had off stays off
