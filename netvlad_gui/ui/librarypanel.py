"""The library panel: which folder is the reference library, building it, and what it holds."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from netvlad_gui.core.library.status import LibraryStatus

from .widgets import EtaClock, dropped_paths, format_eta, plain_label

STAGE_NAMES = {
    "scan": "Scanning the folder",
    "model": "Loading the model",
    "prepare": "Preparing the model for fast inference (once)",
    "init": "Fitting NetVLAD to your photos",
    "extract": "Indexing photos",
    "finalize": "Finishing",
}
OPENING = "Opening the library…"


class SkippedDialog(QDialog):
    """The photos the index left out or could not place, with the reason for each."""

    def __init__(
        self,
        failures: list[tuple[str, str]],
        no_gps: list[tuple[str, str]],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Skipped photos")
        self.resize(640, 400)
        layout = QVBoxLayout(self)
        layout.addWidget(
            plain_label(
                f"{len(failures)} not indexed (cannot be read) · {len(no_gps)} indexed without GPS "
                "(they can be found, but carry no position)"
            )
        )
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Photo", "Reason"])
        self.tree.setRootIsDecorated(False)
        self.tree.setAlternatingRowColors(True)
        for path, reason in failures:
            self.tree.addTopLevelItem(QTreeWidgetItem([path, f"not indexed: {reason}"]))
        for path, reason in no_gps:
            self.tree.addTopLevelItem(QTreeWidgetItem([path, f"no GPS: {reason}"]))
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        layout.addWidget(self.tree)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)


class ElidedLabel(QLabel):
    """One line of plain text elided in the middle to fit (a path keeps both ends visible)."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setMinimumWidth(40)
        self._full = ""
        self.set_full_text(text)

    @property
    def full_text(self) -> str:
        return self._full

    def set_full_text(self, text: str) -> None:
        self._full = text
        self._elide()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        shown = self.fontMetrics().elidedText(
            self._full, Qt.TextElideMode.ElideMiddle, max(self.width(), 1)
        )
        if shown != self.text():
            self.setText(shown)


class LibraryPanel(QGroupBox):
    """Choose the reference folder (button or folder drop), build/update it, cancel, stats.

    Signals: ``chooseRequested`` (the window opens a folder dialog), ``libraryDropped(path)``,
    ``buildRequested``, ``cancelRequested``.
    """

    chooseRequested = Signal()
    libraryDropped = Signal(str)
    buildRequested = Signal()
    cancelRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Library", parent)
        self.setAcceptDrops(True)
        self._info: LibraryStatus | None = None
        self._eta = EtaClock()
        self._busy = False
        self._opening = False
        self._library: str | None = None

        self.path_label = ElidedLabel("No folder chosen")
        self.path_label.setObjectName("libraryPath")
        self.choose_button = QPushButton("Choose folder…")
        self.choose_button.setToolTip(
            "The folder of geotagged reference photos (or drop a folder here)"
        )
        self.build_button = QPushButton("Build index")
        self.build_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(True)
        self.progress_bar.hide()
        self.progress_label = plain_label()
        self.progress_label.hide()
        self.stats_label = plain_label()
        self.stats_label.setObjectName("libraryStats")
        self.model_label = plain_label()
        self.model_label.setObjectName("libraryModel")
        self.model_label.setStyleSheet("color: palette(mid);")
        self.skipped_button = QPushButton("Show skipped…")
        self.skipped_button.setFlat(True)
        self.skipped_button.setStyleSheet("text-align: left; color: palette(link);")
        self.skipped_button.hide()

        buttons = QHBoxLayout()
        buttons.addWidget(self.build_button, 1)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        row = QHBoxLayout()  # the path gets the panel's whole width: it is elided in the middle
        row.addStretch(1)
        row.addWidget(self.choose_button)
        layout.addWidget(self.path_label)
        layout.addLayout(row)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.progress_label)
        layout.addWidget(self.stats_label)
        layout.addWidget(self.model_label)
        layout.addWidget(self.skipped_button)

        self.choose_button.clicked.connect(self.chooseRequested)
        self.build_button.clicked.connect(self.buildRequested)
        self.cancel_button.clicked.connect(self.cancelRequested)
        self.skipped_button.clicked.connect(self.show_skipped)
        self.set_library(None)

    # ---- state from the window ---------------------------------------------------------------

    def set_library(self, library: str | None) -> None:
        self._library = library or None
        if library:
            self.path_label.set_full_text(library)
            self.path_label.setToolTip(html.escape(library))
        else:
            self.path_label.set_full_text("No folder chosen")
            self.path_label.setToolTip("")
        self.build_button.setEnabled(bool(library) and not self._busy and not self._opening)

    def set_opening(self) -> None:
        """The index is being opened (it takes seconds: the model loads): say so, and offer no
        "Build index" for a library that may well be indexed, until ``set_info`` comes."""
        self._info, self._opening = None, True
        self.build_button.setText("Opening…")
        self.build_button.setEnabled(False)
        self.stats_label.setText(OPENING)
        self.model_label.setText("")
        self.model_label.hide()
        self.skipped_button.hide()

    def open_failed(self) -> None:
        """Opening failed (the window's notice says why): building is the way on."""
        if self._opening:
            self.set_info(None)
            self.stats_label.setText("The index could not be opened: “Build index” rebuilds it.")

    def set_info(self, info: LibraryStatus | None) -> None:
        """Show what the index holds (or that there is none yet)."""
        self._info, self._opening = info, False
        self.build_button.setEnabled(self._library is not None and not self._busy)
        if info is None or not info.exists:
            self.build_button.setText("Build index")
            self.stats_label.setText("Not indexed yet. Click “Build index” to index this folder.")
            self.model_label.setText("")
            self.skipped_button.hide()
            return
        self.build_button.setText("Update index")
        skipped = info.failed
        parts = [f"{info.indexed} indexed", f"{info.with_gps} with GPS", f"{skipped} skipped"]
        text = " · ".join(parts)
        if info.pending:
            text += f"\n{info.pending} not indexed yet: click “Update index” to finish."
        if info.lost or info.damaged:
            text += (
                f"\n{info.lost + info.damaged} not searchable (index data lost or damaged): "
                "click “Update index” to extract them again."
            )
        for note in info.notes:
            text += f"\n{note[0].upper()}{note[1:]}."
        if info.cannot_place:
            text += "\nNo photo has GPS: similar photos are found, but nothing can be placed."
        if info.problem and not info.ready:
            text += f"\n{info.problem[0].upper()}{info.problem[1:]}."
        self.stats_label.setText(text)
        self.model_label.setText(f"Model: {info.model}" if info.model else "")
        self.model_label.setVisible(bool(info.model) and not self._busy)
        n = len(info.failures) + len(info.no_gps)
        self.skipped_button.setVisible(n > 0)
        self.skipped_button.setText(
            f"Show skipped and no-GPS photos ({n})…" if info.no_gps else f"Show skipped ({n})…"
        )

    def set_busy(self, busy: bool) -> None:
        self._busy = busy
        self.cancel_button.setEnabled(busy)
        self.build_button.setEnabled(not busy and self._library is not None)
        self.choose_button.setEnabled(not busy)
        self.progress_bar.setVisible(busy)
        self.progress_label.setVisible(busy)
        self.stats_label.setVisible(not busy)
        self.model_label.setVisible(not busy and bool(self.model_label.text()))
        if busy:
            self.progress_bar.setRange(0, 0)
            self.progress_label.setText("Starting…")
            self._eta = EtaClock()

    def on_progress(self, stage: str, done: int, total: int) -> None:
        if stage not in STAGE_NAMES:
            return
        eta = self._eta.update(stage, done, total)
        if total > 1:
            self.progress_bar.setRange(0, total)
            self.progress_bar.setValue(min(done, total))
            self.progress_bar.setFormat(f"{done} / {total}")
        else:  # one step (loading the model, finishing): busy, neither full nor empty
            self.progress_bar.setRange(0, 0)
            self.progress_bar.setFormat("")
        if total > 1:
            text = f"{STAGE_NAMES[stage]}: {done} of {total}"
            if eta is not None and done < total:
                text += f" · about {format_eta(eta)} left"
        else:  # a single step (loading the model, finishing): its name, not "0 of 1"
            text = f"{STAGE_NAMES[stage]}…"
        self.progress_label.setText(text)

    def show_summary_line(self, text: str) -> None:
        self.progress_label.setText(text)
        self.progress_label.show()

    def show_skipped(self) -> None:
        if self._info is None:
            return
        SkippedDialog(self._info.failures, self._info.no_gps, self).exec()

    # ---- folder drops ------------------------------------------------------------------------

    def dragEnterEvent(self, event) -> None:
        # Only folders are for this panel; photos fall through to the window, which locates them.
        if not self._busy and _dropped_folder(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event) -> None:
        folder = _dropped_folder(event.mimeData())
        if folder:
            event.acceptProposedAction()
            self.libraryDropped.emit(folder)
        else:
            event.ignore()


def _dropped_folder(mime) -> str | None:
    return next((p for p in dropped_paths(mime) if Path(p).is_dir()), None)
