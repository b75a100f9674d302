"""The window opens before the engine loads, and the engine then loads in its own thread.

The engine's warm-up loads ONNX Runtime, faiss and OpenCV, not torch (issue 24): torch loads
later, only for a job torch runs. Loading torch after QtWebEngine has started used to crash the
process (SIGSEGV in triton's native library, core/preload.py), so the real sequence runs here in
a subprocess: window and map first, then the engine worker's warm-up, then torch loaded in
another thread as such a job would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from netvlad_gui.ui.messages import ENGINE_LOADING

CHILD = r"""
import json, sys
from PySide6.QtCore import QObject, QTimer, Slot
from PySide6.QtWidgets import QApplication
from netvlad_gui.ui.mainwindow import LaunchOptions, MainWindow

seen = {"torch_before_window": "torch" in sys.modules}
app = QApplication([])
win = MainWindow(LaunchOptions())
win.show()
seen["torch_when_shown"] = "torch" in sys.modules
seen["status_when_shown"] = win.statusBar().currentMessage()

class Probe(QObject):  # lives in the GUI thread, so the worker's signal is queued to it
    @Slot()
    def warmed(self):
        seen["torch_when_warm"] = "torch" in sys.modules
        seen["ort_when_warm"] = "onnxruntime" in sys.modules
        import threading
        from netvlad_gui.core.preload import load_engine
        job = threading.Thread(target=load_engine)  # a job torch runs, after Chromium started
        job.start()
        job.join()
        seen["torch_after_a_torch_job"] = "torch" in sys.modules and "torchvision" in sys.modules
        QTimer.singleShot(0, self.done)  # after the window's own slot for the same signal

    @Slot()
    def done(self):
        seen["status_when_warm"] = win.statusBar().currentMessage()
        win.shutdown()
        app.quit()

probe = Probe()
win.engine.warmedUp.connect(probe.warmed)
QTimer.singleShot(120_000, app.quit)
app.exec()
print("SEEN " + json.dumps(seen), flush=True)
"""


def test_window_opens_without_torch_then_the_engine_loads(tmp_path) -> None:
    env = dict(os.environ)
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        env[var] = str(tmp_path / var.lower())
    proc = subprocess.run(
        [sys.executable, "-c", CHILD],
        check=False,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (
        f"the window's process ended with {proc.returncode}:\n" + (proc.stderr[-3000:])
    )
    line = next(x for x in proc.stdout.splitlines() if x.startswith("SEEN "))
    seen = json.loads(line[len("SEEN ") :])
    assert seen["torch_before_window"] is False
    assert seen["torch_when_shown"] is False
    assert seen["torch_when_warm"] is False  # issue 24: the engine warms up without torch
    assert seen["ort_when_warm"] is True
    assert seen["torch_after_a_torch_job"] is True  # and torch still loads safely when needed
    # The window says why a dropped photo would wait, and stops saying it once it need not.
    assert seen["status_when_shown"] == ENGINE_LOADING
    assert seen["status_when_warm"] == ""
