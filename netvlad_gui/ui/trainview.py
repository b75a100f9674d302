"""The live view of one training run: progress bar, status line, ETA, charts and the log.

It draws the JSON progress events of ``netvlad train --json-progress`` (start, init, cache, step,
val, heldout, epoch, nothing_to_learn, whitening, done); the Retrain panel owns the form and the
process and hands it each event. A malformed event raises KeyError, TypeError or ValueError, which
the panel reports. Log lines wrap at the view's width: none is cut off on the right.
"""

from __future__ import annotations

import time

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from .traincharts import TrainCharts
from .widgets import format_eta, plain_label


class TrainRunView(QWidget):
    """Progress, status, ETA, loss/recall charts and the run's log lines."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._t_start = 0.0
        self._epochs = 0
        self._start_epoch = 1
        self.progress = QProgressBar()
        self.progress.setFormat("%p%")
        self.status_label = plain_label("Not started.")
        self.eta_label = QLabel()
        self.charts = TrainCharts()
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(3000)
        self.log_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.log_view.setPlaceholderText("Training output")

        status_row = QHBoxLayout()
        status_row.addWidget(self.status_label, 1)
        status_row.addWidget(self.eta_label)
        bottom = QSplitter(Qt.Orientation.Vertical)
        bottom.addWidget(self.charts)
        bottom.addWidget(self.log_view)
        bottom.setStretchFactor(0, 3)
        bottom.setStretchFactor(1, 1)
        bottom.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.progress)
        layout.addLayout(status_row)
        layout.addWidget(bottom, 1)

    def begin(self, epochs: int, resume: bool) -> None:
        """A run starts (a resumed one keeps its charts)."""
        self._epochs, self._start_epoch = epochs, 1
        self._t_start = time.monotonic()
        if not resume:
            self.charts.clear()
        self.charts.set_epochs(epochs)
        self.progress.setRange(0, 0)  # busy until the first step says how many there are
        self.eta_label.clear()
        self.status_label.setText("Preparing: reading photos, initialising the model…")

    def end(self, status: str) -> None:
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
        self.eta_label.clear()
        if status:
            self.status_label.setText(status)

    def log_line(self, text: str) -> None:
        self.log_view.appendPlainText(text)

    def show_event(self, ev: dict) -> None:
        kind = ev["event"]
        if kind == "start":
            self._t_start = time.monotonic()  # the ETA counts from here: set-up is done
            self._epochs = int(ev.get("epochs") or self._epochs)
            self._start_epoch = int(ev.get("start_epoch") or 1)
            self.charts.set_epochs(self._epochs)
            val = ev.get("val") or {}
            self.log_line(
                f"start on {ev.get('device')}: {ev.get('trainable_queries')} trainable queries, "
                f"{(ev.get('train') or {}).get('database')} training references"
                + (f", {val.get('queries')} validation queries" if val else "")
            )
            self.status_label.setText(f"Epoch {self._start_epoch} of {self._epochs}: caching…")
        elif kind == "init":
            self.log_line(f"NetVLAD initialised from {ev.get('images')} images")
        elif kind == "cache":
            self.status_label.setText(
                f"Epoch {ev['epoch']} of {self._epochs}: computing descriptors "
                f"{ev['done']}/{ev['total']}"
            )
        elif kind == "step":
            self._show_step(ev)
        elif kind == "val":
            recalls = {n: float(ev[f"recall@{n}"]) for n in (1, 5, 10) if f"recall@{n}" in ev}
            self.charts.add_recalls(int(ev["epoch"]), recalls)
            self.log_line(
                f"validation epoch {ev['epoch']}: "
                + ", ".join(f"R@{n} {100 * r:.1f}%" for n, r in recalls.items())
                + (" (best)" if ev.get("best") else "")
            )
        elif kind == "epoch":
            head = f"epoch {ev['epoch']}/{ev.get('epochs', self._epochs)}"
            if ev.get("all_easy"):  # no tuple: its loss 0 measures nothing, so no chart point
                self.log_line(
                    f"{head}: nothing to learn in this epoch: the model already told every "
                    "place from the others"
                )
            else:
                self.charts.add_epoch(int(ev["epoch"]), float(ev["loss"]))
                self.log_line(f"{head}: loss {ev['loss']:.4f}, {ev.get('seconds', 0):.1f} s")
        elif kind == "heldout":
            self._show_heldout(ev)
        elif kind == "nothing_to_learn":
            message = str(ev.get("message") or "nothing to learn")
            self.status_label.setText(message[:1].upper() + message[1:])
            self.log_line(message)
        elif kind == "whitening":
            self.status_label.setText(f"Fitting PCA-whitening ({ev.get('dim')}-D)…")
        elif kind == "whitening_skipped":
            self.log_line(str(ev.get("message") or "no PCA-whitening"))
        elif kind == "done":
            self.progress.setRange(0, 1)
            self.progress.setValue(1)
            self.log_line(f"done: {ev.get('model') or ''}")

    def _show_heldout(self, ev: dict) -> None:
        """Recall on the places the run never trains on: before (chart point 0) and after."""
        recalls = {n: float(ev[f"recall@{n}"]) for n in (1, 5, 10) if f"recall@{n}" in ev}
        r1, queries = 100 * recalls[1], int(ev.get("queries") or 0)
        if ev["stage"] == "before":
            self.charts.add_recalls(0, recalls)
            self.log_line(
                f"places it never trains on ({queries} photos): the right place first for "
                f"{r1:.0f} % of them before training"
            )
        else:
            self.log_line(
                f"places it never trained on: the right place first for {r1:.0f} % of "
                f"{queries} photos with the new model"
            )

    def _show_step(self, ev: dict) -> None:
        epoch, step, steps = int(ev["epoch"]), int(ev["step"]), max(int(ev["steps"]), 1)
        self.charts.add_step(epoch, step, steps, float(ev["loss"]))
        total = max(self._epochs - self._start_epoch + 1, 1) * steps
        done = (epoch - self._start_epoch) * steps + step
        self.progress.setRange(0, total)
        self.progress.setValue(min(done, total))
        self.progress.setFormat(f"epoch {epoch}/{self._epochs} · step {step}/{steps} · %p%")
        self.status_label.setText(
            f"Epoch {epoch} of {self._epochs}, step {step} of {steps}: "
            f"loss {float(ev['loss']):.4f}, lr {float(ev.get('lr', 0)):g}"
        )
        rate = (time.monotonic() - self._t_start) / max(done, 1)
        self.eta_label.setText(f"ETA {format_eta(rate * (total - done))}")
