"""Live training curves: the loss per step and Recall@1/5/10 on the held-out places (the
validation set) per epoch, from the model the run starts with (epoch 0) on (QtCharts)."""

from __future__ import annotations

import math

from PySide6.QtCharts import QChart, QChartView, QLineSeries, QValueAxis
from PySide6.QtCore import QMargins, QPointF, Qt
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QHBoxLayout, QWidget

# Wider pens first: equal recalls (common on easy sets) then still show all three lines.
RECALLS = ((1, "#1f77b4", 7.0), (5, "#2ca02c", 4.5), (10, "#d62728", 2.0))


def _chart(title: str, x_title: str, y_title: str) -> tuple[QChart, QValueAxis, QValueAxis]:
    chart = QChart()
    chart.setTitle(title)
    chart.setMargins(QMargins(4, 4, 4, 4))
    chart.legend().setAlignment(Qt.AlignmentFlag.AlignBottom)
    x, y = QValueAxis(), QValueAxis()
    x.setTitleText(x_title)
    y.setTitleText(y_title)
    x.setLabelFormat("%g")
    y.setLabelFormat("%.3g")
    chart.addAxis(x, Qt.AlignmentFlag.AlignBottom)
    chart.addAxis(y, Qt.AlignmentFlag.AlignLeft)
    return chart, x, y


def _view(chart: QChart) -> QChartView:
    view = QChartView(chart)
    view.setRenderHint(QPainter.RenderHint.Antialiasing)
    view.setMinimumSize(180, 150)  # two side by side fit a narrow dock
    return view


def _nice_step(span: float, ticks: int = 8) -> float:
    """1, 2 or 5 times a power of ten, so that ``span`` needs at most ``ticks`` steps."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * power >= raw:
            return m * power
    return 10 * power


class TrainCharts(QWidget):
    """Two charts side by side. x is in epochs (fractional within an epoch) on both."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.loss_chart, self._loss_x, self._loss_y = _chart("Loss per step", "epoch", "loss")
        self.loss_series = QLineSeries()
        self.loss_series.setName("step loss")
        self.loss_series.setPen(QPen(QColor("#555"), 1.2))
        self.epoch_series = QLineSeries()
        self.epoch_series.setName("epoch mean")
        self.epoch_series.setPen(QPen(QColor("#e67e22"), 2.5))
        for s in (self.loss_series, self.epoch_series):
            self.loss_chart.addSeries(s)
            s.attachAxis(self._loss_x)
            s.attachAxis(self._loss_y)

        self.recall_chart, self._rec_x, self._rec_y = _chart(
            "Places it never trains on", "epoch (0: before training)", "Recall@N (%)"
        )
        self._rec_y.setRange(0, 105)  # a little headroom: 100 % is not hidden by the frame
        self._rec_y.setTickType(QValueAxis.TickType.TicksDynamic)
        self._rec_y.setTickAnchor(0)
        self._rec_y.setTickInterval(20)
        self._rec_y.setLabelFormat("%d")
        for axis in (self._loss_x, self._rec_x):
            axis.setTickType(QValueAxis.TickType.TicksDynamic)
            axis.setTickAnchor(0)
            axis.setTickInterval(1)
        self._loss_y.setTickType(QValueAxis.TickType.TicksDynamic)
        self._loss_y.setTickAnchor(0)
        self._loss_y.setTickInterval(0.05)
        self.recall_series: dict[int, QLineSeries] = {}
        for n, colour, width in RECALLS:
            s = QLineSeries()
            s.setName(f"R@{n}")
            s.setPointsVisible(True)
            s.setMarkerSize(width + 3)
            s.setPen(QPen(QColor(colour), width))
            self.recall_chart.addSeries(s)
            s.attachAxis(self._rec_x)
            s.attachAxis(self._rec_y)
            self.recall_series[n] = s

        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.loss_view, self.recall_view = _view(self.loss_chart), _view(self.recall_chart)
        layout.addWidget(self.loss_view)
        layout.addWidget(self.recall_view)
        self.clear()

    def clear(self) -> None:
        self.loss_series.clear()
        self.epoch_series.clear()
        for s in self.recall_series.values():
            s.clear()
        self._loss_max = 0.0
        self._loss_x.setRange(0, 1)
        self._loss_y.setRange(0, 0.2)
        self._loss_y.setTickInterval(0.05)
        self._rec_x.setRange(0, 1)

    def add_step(self, epoch: int, step: int, steps: int, loss: float) -> None:
        if not math.isfinite(loss):  # a diverged step: said in the log, not plotted
            return
        x = (epoch - 1) + step / max(steps, 1)
        self.loss_series.append(QPointF(x, loss))
        self._set_loss_max(loss)
        self._grow_x(self._loss_x, x)

    def add_epoch(self, epoch: int, loss: float) -> None:
        if not math.isfinite(loss):
            return
        self.epoch_series.append(QPointF(epoch, loss))
        self._set_loss_max(loss)
        self._grow_x(self._loss_x, epoch)

    def add_recalls(self, epoch: int, recalls: dict[int, float]) -> None:
        for n, series in self.recall_series.items():
            if n in recalls:
                series.append(QPointF(epoch, 100.0 * recalls[n]))
        self._grow_x(self._rec_x, epoch)

    def set_epochs(self, epochs: int) -> None:
        """The x axes span the whole run from the start, so curves grow left to right."""
        epochs = max(epochs, 1)
        for axis in (self._loss_x, self._rec_x):
            axis.setRange(0, epochs)
            axis.setTickInterval(max(1.0, _nice_step(epochs)))

    def _set_loss_max(self, loss: float) -> None:
        """Round axis steps (0.05, 0.1, 0.2…) up to just above the largest loss so far."""
        if loss <= self._loss_max:
            return
        self._loss_max = loss
        step = _nice_step(loss * 1.05, ticks=5)
        self._loss_y.setTickInterval(step)
        self._loss_y.setRange(0, math.ceil(loss * 1.05 / step) * step)

    @staticmethod
    def _grow_x(axis: QValueAxis, x: float) -> None:
        if x > axis.max():
            axis.setMax(x)

    def points(self) -> dict[str, list[tuple[float, float]]]:
        """The plotted data (for tests)."""
        out = {"loss": [(p.x(), p.y()) for p in self.loss_series.points()]}
        for n, s in self.recall_series.items():
            out[f"recall@{n}"] = [(p.x(), p.y()) for p in s.points()]
        return out
