"""The Retrain dock beside the map, and the settings that make a trained model the app's own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDockWidget, QMainWindow

from .settingsdialog import AppSettings


class TrainDock(QDockWidget):
    """The Retrain panel (``panel``) docked on the window's right, as narrow as it allows, so
    the results beside it keep room for their matches."""

    def __init__(
        self, library: Callable[[], str], settings: AppSettings, window: QMainWindow
    ) -> None:
        from .trainpanel import TrainPanel  # QtCharts loads only now, on first use

        super().__init__("Retrain", window)
        self.setObjectName("trainDock")
        self.panel = TrainPanel(library, settings.model, settings.backbone_weights)
        self.setWidget(self.panel)
        window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self)
        width = self.panel.minimumSizeHint().width()
        window.resizeDocks([self], [width], Qt.Orientation.Horizontal)


def trained_model_settings(settings: AppSettings, library: str, model_path: str) -> AppSettings:
    """``settings`` with a trained checkpoint as the model, indexed in its own folder."""
    from netvlad_gui.core.training.runs import model_index_dir

    new = AppSettings(**settings.__dict__)
    new.model, new.backbone_weights = str(Path(model_path).resolve()), ""
    if library:
        new.index_dir = str(model_index_dir(library, model_path))
    return new
