"""The retraining panel: run ``netvlad train --json-progress`` in its own process, show it live.

Training is a separate ``QProcess`` (``sys.executable -m netvlad_gui.cli train …``, so it runs in
the app's own venv): a crash, a CUDA out-of-memory or a killed process ends that process only, and
the panel reports it as a non-blocking notice with the last stderr line. Stop sends SIGTERM, then
SIGKILL after a few seconds; checkpoints are written atomically, so the run folder's ``last.pt``
stays usable and Resume (the same folder with ``--resume``) continues after the last finished
epoch.

A run says what it reaches on places it never trains on (its held-out places): Recall@1 before
training and of the model it writes, beside "Use this model" and in its tooltip, so the choice
comes with the figure. When the photos cannot teach anything (no place seen twice, or the model
already tells every place apart: known from the first pass over the photos), the panel says so
in plain words and disables Start and Resume until other data is chosen.

"Use this model" hands ``RUN_DIR/model.pt`` to the window, which makes it the app's model. An index
keeps the model its descriptors came from (``build_index`` refuses another one and the engine
keeps an existing index's model), so the new model needs a new index folder: the window uses
:func:`model_index_dir`, the library's default index folder plus the run's name, and the old index
stays as it was (switching back to the old model in Settings and clearing the index folder returns
to it). "Build the index" then indexes the library there with the new model.

The process itself is a :class:`~.trainprocess.LineProcess`; its events are drawn by
:class:`~.trainview.TrainRunView`. This module holds the form, its command line and the run's state.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from netvlad_gui.core.config import DEFAULT_MODEL
from netvlad_gui.core.training.runs import (
    LAST,
    has_state,
    heldout_change,
    heldout_summary,
    new_run_dir,
)

from .notices import ERROR, INFO, WARNING
from .trainform import TrainParams
from .trainprocess import LineProcess
from .trainview import TrainRunView
from .widgets import PathRow, Reflow, double_spin_box, plain_label

log = logging.getLogger(__name__)

IDLE, RUNNING, STOPPING = "idle", "running", "stopping"
KILL_AFTER_MS = 5000
#: How ``netvlad train`` begins the message of photos that cannot teach (core/training/runs.py).
NOTHING_TO_LEARN_PREFIX = "nothing to learn"


class TrainPanel(QWidget):
    """Train panel. ``library`` is called for the app's current library folder ("" when none).

    Signals: ``useModelRequested(model_path)``, ``buildRequested()``, ``notice(text, level)``,
    ``stateChanged(state)`` (idle/running/stopping), ``event(dict)`` (every JSON progress line) and
    ``finished(exit_code, ok)``.
    """

    useModelRequested = Signal(str)
    buildRequested = Signal()
    notice = Signal(str, str)
    stateChanged = Signal(str)
    event = Signal(dict)
    finished = Signal(int, bool)

    def __init__(
        self,
        library=lambda: "",
        model: str = DEFAULT_MODEL,
        backbone_weights: str = "",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._library = library
        self.state = IDLE
        self.process: LineProcess | None = None
        self.last_args: list[str] = []
        self.last_stderr = ""
        self.error_message = ""
        self.model_path = ""
        self.heldout: dict = {}  # {"before": {...}, "after": {...}} of the last run
        self.nothing_to_learn = ""  # the plain message, when the chosen data cannot teach
        self._futile_data: list[str] | None = None  # the data it was said for
        self._user_stopped = False
        self._auto_out = True
        self._build_ui(model, backbone_weights)
        self._set_state(IDLE)

    # ---- construction ------------------------------------------------------------------------

    def _build_ui(self, model: str, backbone_weights: str) -> None:
        # Training data
        data_box = self.data_box = QGroupBox("Training data")
        self.use_library = QRadioButton("The current library")
        self.use_library.setToolTip(
            "Train on the library's geotagged photos, split by geography into train and "
            "validation parts (--data LIBRARY)"
        )
        self.use_folders = QRadioButton("Database and queries folders")
        self.use_folders.setToolTip("Two folders of photos with GPS (--database, --queries)")
        group = QButtonGroup(self)
        group.addButton(self.use_library)
        group.addButton(self.use_folders)
        self.use_library.setChecked(True)
        self.library_label = plain_label()
        self.library_label.setStyleSheet("color: #555;")
        db_row = self.database_row = PathRow("Reference photos (--database)")
        q_row = self.queries_row = PathRow("Query photos (--queries)")
        self.database_edit, self.queries_edit = db_row.editor, q_row.editor
        for row in (db_row, q_row):
            row.editor.setToolTip(row.title)
        self.spacing = double_spin_box(
            0,
            10_000,
            0,
            1,
            1,
            "For image sequences without GPS: frame i sits at i×S metres along a line "
            "(--frame-spacing-m). 0 = use the photos' GPS.",
        )
        self.spacing.setSpecialValueText("off (GPS)")
        self.spacing.setSuffix(" m")
        grid = QGridLayout(data_box)
        grid.addWidget(self.use_library, 0, 0, 1, 2)
        grid.addWidget(self.library_label, 1, 0, 1, 2)
        grid.addWidget(self.use_folders, 2, 0, 1, 2)
        grid.addWidget(QLabel("Database"), 3, 0)
        grid.addWidget(db_row, 3, 1)
        grid.addWidget(QLabel("Queries"), 4, 0)
        grid.addWidget(q_row, 4, 1)
        grid.addWidget(QLabel("Frame spacing"), 5, 0)
        grid.addWidget(self.spacing, 5, 1)
        grid.setRowStretch(6, 1)  # rows stay together at the top when the box is taller
        self.use_folders.toggled.connect(self._update_data_enabled)
        for edit in (self.database_edit, self.queries_edit):
            edit.textChanged.connect(lambda _t: self._update_buttons())
        self.spacing.valueChanged.connect(lambda _v: self._update_buttons())

        # Hyper-parameters (defaults: core/config.py's TrainConfig), in their own box.
        params = self.params_box = TrainParams(model)
        self.epochs, self.batch, self.lr = params.epochs, params.batch, params.lr
        self.margin, self.image_size, self.loss = params.margin, params.image_size, params.loss
        self.layers, self.device, self.model_edit = params.layers, params.device, params.model_edit
        self.extra_edit = params.extra_edit
        self.weights = backbone_weights

        # Run folder and buttons
        self.out_row = PathRow("Run folder", text=str(new_run_dir()))
        self.out_edit, self.out_browse = self.out_row.editor, self.out_row.button
        self.out_edit.setToolTip("Checkpoints go here (last.pt each epoch, model.pt at the end)")
        self.out_edit.textEdited.connect(self._on_out_edited)
        self.out_edit.textChanged.connect(lambda _: self._update_buttons())
        self.out_row.browsed.connect(self._on_out_edited)
        out_row = QHBoxLayout()
        out_row.addWidget(QLabel("Run folder"))
        out_row.addWidget(self.out_row, 1)

        self.start_button = QPushButton("Start")
        self.start_button.setToolTip("Start a new training run in the run folder")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop training; the last finished epoch is kept for Resume")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue the run in the run folder (--resume)")
        self.use_button = QPushButton("Use this model")
        self.use_button.setToolTip("Make the trained model.pt the app's model")
        self.build_button = QPushButton("Build the index")
        self.build_button.setToolTip("Index the library with the new model (a new index folder)")
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.resume_button.clicked.connect(self.resume)
        self.use_button.clicked.connect(self._use_model)
        self.build_button.clicked.connect(self.buildRequested)
        run_buttons, model_buttons = QWidget(), QWidget()
        row = QHBoxLayout(run_buttons)
        row.setContentsMargins(0, 0, 0, 0)
        for b in (self.start_button, self.stop_button, self.resume_button):
            row.addWidget(b)
        row.addStretch(1)
        row = QHBoxLayout(model_buttons)
        row.setContentsMargins(0, 0, 0, 0)
        row.addStretch(1)
        row.addWidget(self.use_button)
        row.addWidget(self.build_button)
        buttons = Reflow([run_buttons, model_buttons])  # two rows when the dock is narrow

        self.heldout_label = plain_label()
        self.heldout_label.setToolTip(
            "Recall@1: how often the right place comes first, on places kept out of training"
        )
        self.heldout_label.hide()

        self.view = TrainRunView()
        self.progress, self.status_label = self.view.progress, self.view.status_label
        self.charts, self.log_view = self.view.charts, self.view.log_view

        # The panel fits a dock beside the map on a 1280x720 screen: the settings stack (data
        # above training) when narrow and scroll when short, above a splitter; the run's
        # progress, charts and log keep the room below it.
        for box in (self.loss, self.layers, self.device):
            box.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            box.setMinimumContentsLength(12)
        settings = QWidget()
        column = QVBoxLayout(settings)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(Reflow([data_box, params]))
        column.addLayout(out_row)
        column.addStretch(1)
        self.settings_area = QScrollArea()
        self.settings_area.setWidget(settings)
        self.settings_area.setWidgetResizable(True)
        self.settings_area.setFrameShape(QFrame.Shape.NoFrame)
        self.settings_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.settings_area.setMinimumSize(
            settings.minimumSizeHint().width()
            + self.settings_area.verticalScrollBar().sizeHint().width(),
            120,
        )
        run = QWidget()
        column = QVBoxLayout(run)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.heldout_label)
        column.addWidget(buttons)
        column.addWidget(self.view, 1)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(self.settings_area)
        self.splitter.addWidget(run)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([260, 420])  # the charts get the larger part at first
        layout = QVBoxLayout(self)
        layout.addWidget(self.splitter)
        self.refresh_library()
        self._update_data_enabled()

    def _on_out_edited(self, _text: str) -> None:
        self._auto_out = False

    def _update_data_enabled(self) -> None:
        folders = self.use_folders.isChecked()
        for w in (self.database_row, self.queries_row, self.spacing):
            w.setEnabled(folders)
        self._update_buttons()

    def refresh_library(self) -> None:
        library = self._library() or ""
        self.library_label.setText(library or "(no library chosen yet)")
        self.use_library.setEnabled(bool(library))
        if not library and self.use_library.isChecked():
            self.use_folders.setChecked(True)
        self._update_buttons()

    def set_model(self, model: str, backbone_weights: str = "") -> None:
        self.model_edit.setText(model or DEFAULT_MODEL)
        self.weights = backbone_weights

    # ---- state -------------------------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        return Path(self.out_edit.text().strip()).expanduser()

    def _set_state(self, state: str) -> None:
        self.state = state
        self._update_buttons()
        self.stateChanged.emit(state)

    def _update_buttons(self) -> None:
        if not hasattr(self, "build_button"):  # signals while the form is being built
            return
        idle = self.state == IDLE
        text = self.out_edit.text().strip()
        resumable = bool(text) and has_state(self.run_dir)
        finished = bool(self.model_path) and Path(self.model_path).is_file()
        futile = self._futile_data is not None and self._current_data() == self._futile_data
        self.start_button.setEnabled(idle and not futile)
        self.start_button.setToolTip(
            self.nothing_to_learn[:1].upper() + self.nothing_to_learn[1:]
            if futile
            else "Start a new training run in the run folder"
        )
        self.stop_button.setEnabled(self.state == RUNNING)
        self.resume_button.setEnabled(idle and resumable and not futile)
        self.use_button.setEnabled(idle and finished)
        self.use_button.setToolTip(
            "Make the trained model.pt the app's model"
            + (f". {self.heldout_summary()}" if finished and self.heldout_summary() else "")
        )
        self.build_button.setEnabled(idle and finished and bool(self._library()))
        for w in (
            self.data_box,
            self.params_box,
            self.out_row,
        ):  # no edits while it runs
            w.setEnabled(idle)

    def _current_data(self) -> list[str] | None:
        try:
            return self.data_args()
        except ValueError:
            return None

    def heldout_summary(self) -> str:
        """The held-out figure in a sentence ("" when the run had no held-out places)."""
        return heldout_summary(self.heldout)

    def _show_heldout(self) -> None:
        change = heldout_change(self.heldout)
        when = "trained" if self.heldout.get("after") else "trains"
        self.heldout_label.setText(f"Places it never {when} on: {change}" if change else "")
        self.heldout_label.setVisible(bool(change))

    # ---- the command line ----------------------------------------------------------------------

    def data_args(self) -> list[str]:
        if self.use_library.isChecked():
            library = self._library()
            if not library:
                raise ValueError("Choose a library first, or train on two folders.")
            return ["--data", library]
        db, q = self.database_edit.text().strip(), self.queries_edit.text().strip()
        if not db or not q:
            raise ValueError("Name both the database and the queries folder.")
        args = ["--database", db, "--queries", q]
        if self.spacing.value() > 0:
            args += ["--frame-spacing-m", f"{self.spacing.value():g}"]
        return args

    def train_args(self, resume: bool = False) -> list[str]:
        """``netvlad train`` arguments for the form (raises ValueError for a missing choice).

        A resume of a run with a finished epoch passes only what a resume may change (the run's
        stored config holds the rest), so edits to the form cannot make it refuse to continue.
        """
        out = str(self.run_dir)
        common = ["--out", out, "--json-progress", "--epochs", str(self.epochs.value())]
        common += ["--device", self.device.currentData()]
        if resume and (self.run_dir / LAST).is_file():
            return common + ["--resume"]
        args = self.data_args() + common
        args += ["--model", self.model_edit.text().strip() or DEFAULT_MODEL]
        if self.weights:
            args += ["--backbone-weights", self.weights]
        args += self.params_box.args()
        try:
            args += shlex.split(self.extra_edit.text())
        except ValueError as exc:
            raise ValueError(f"More options: {exc}") from None
        if resume:
            args.append("--resume")
        return args

    # ---- running -----------------------------------------------------------------------------

    def start(self) -> bool:
        """A new run. An auto-named run folder that is already used is replaced by a fresh one."""
        if self.state != IDLE:
            return False
        if self._auto_out and self.run_dir.exists() and any(self.run_dir.iterdir()):
            self.out_edit.setText(str(new_run_dir()))
        if (self.run_dir / LAST).is_file():
            self._notice(
                f"{self.run_dir} already holds a training run: Resume it, or choose another "
                "run folder.",
                WARNING,
            )
            return False
        return self._launch(resume=False)

    def resume(self) -> bool:
        if self.state != IDLE:
            return False
        return self._launch(resume=True)

    def _launch(self, resume: bool) -> bool:
        self.refresh_library()
        try:
            args = self.train_args(resume)
        except ValueError as exc:
            self._notice(str(exc), WARNING)
            return False
        self.last_args = args
        self.error_message, self.last_stderr, self.model_path = "", "", ""
        self.nothing_to_learn, self._futile_data = "", None
        if not resume:
            self.heldout = {}
        self._show_heldout()
        self._user_stopped = False
        self.view.begin(self.epochs.value(), resume)

        proc = self.process = LineProcess(self)
        proc.stdoutLine.connect(self._handle_stdout_line)
        proc.stderrLine.connect(self._handle_stderr_line)
        proc.finished.connect(self._on_finished)
        proc.failedToStart.connect(self._on_failed_to_start)
        command = self.command(args)
        self._log_line("$ " + shlex.join(["netvlad", "train", *args]))
        log.info("training: %s", shlex.join(command))
        self._set_state(RUNNING)
        proc.start(command)
        return True

    def command(self, args: list[str]) -> list[str]:
        """The process to run: this interpreter (the app's venv) with the CLI's train command."""
        return [sys.executable, "-m", "netvlad_gui.cli", "train", *args]

    def stop(self) -> None:
        """Terminate the process, and kill it if it has not ended after a few seconds."""
        if self.process is None or self.state != RUNNING:
            return
        self._user_stopped = True
        self._set_state(STOPPING)
        self.status_label.setText("Stopping…")
        self.process.terminate(KILL_AFTER_MS)

    def shutdown(self) -> None:
        """Stop training for good (the window is closing); waits briefly for the process."""
        if self.process is None or not self.process.running:
            return
        self._user_stopped = True
        self.process.shutdown(KILL_AFTER_MS)

    # ---- process output ----------------------------------------------------------------------

    def _handle_stderr_line(self, line: str) -> None:
        if line.strip():
            self.last_stderr = line.strip()
            if self.error_message and line.strip() == f"netvlad: error: {self.error_message}":
                return  # the notice says it (the JSON error event came first)
            self._log_line(line)

    def _handle_stdout_line(self, line: str) -> None:
        if not line.strip():
            return
        try:
            ev = json.loads(line)
        except ValueError:
            ev = None
        if not isinstance(ev, dict) or "event" not in ev:
            self._log_line(line)
            return
        try:
            self._handle_event(ev)
        except (KeyError, TypeError, ValueError) as exc:  # a malformed event must not crash
            self._log_line(f"(unreadable progress line: {exc}) {line}")
        self.event.emit(ev)

    def _handle_event(self, ev: dict) -> None:
        self.view.show_event(ev)
        kind = ev["event"]
        if kind == "epoch":
            self._update_buttons()  # last.pt exists now: Resume becomes possible after a stop
        elif kind == "heldout":
            self.heldout[str(ev["stage"])] = {k: v for k, v in ev.items() if k != "event"}
            self._show_heldout()
        elif kind == "done":
            self.model_path = str(ev.get("model") or "")
            if isinstance(ev.get("heldout"), dict) and ev["heldout"]:
                self.heldout = dict(ev["heldout"])
                self._show_heldout()
        elif kind == "nothing_to_learn":
            self.nothing_to_learn = str(ev.get("message") or "")
        elif kind == "error":
            self.error_message = str(ev.get("message") or "")
            if self.error_message.startswith(NOTHING_TO_LEARN_PREFIX):
                self.nothing_to_learn = self.nothing_to_learn or self.error_message

    def _on_failed_to_start(self, reason: str) -> None:
        self._notice(f"Training could not start: {reason}", ERROR)
        self._finish(-1, False)

    def _on_finished(self, code: int, crashed: bool) -> None:
        ok = code == 0 and not crashed and not self.error_message
        if self._user_stopped:
            self._notice(
                "Training stopped. The last finished epoch is kept in "
                f"{self.run_dir}: Resume continues from there.",
                INFO,
            )
            status = "Stopped."
        elif ok:
            figure = self.heldout_summary()
            self._notice(
                f"Training finished: {self.model_path or self.run_dir}. "
                + (f"{figure} " if figure else "")
                + "“Use this model” switches the app to it.",
                INFO,
            )
            status = "Finished."
        elif self.nothing_to_learn:
            # Said in plain words, as a fact about the photos rather than a failure; Start and
            # Resume stay off until other data is chosen.
            self._futile_data = self._current_data()
            message = self.nothing_to_learn
            self._notice(message[:1].upper() + message[1:] + ".", WARNING)
            status = "Nothing to learn from these photos."
        else:
            reason = self.error_message or self.last_stderr or f"exit code {code}"
            if crashed and not self.error_message:
                reason = f"the training process crashed ({reason})"
            hint = ""
            if "out of memory" in reason.lower():
                hint = " Try a smaller batch size or image size, or the CPU."
            self._notice(f"Training failed: {reason}.{hint}".replace("..", "."), ERROR)
            status = "Failed; see the log below."
        self._finish(code, ok and not self._user_stopped, status)

    def _finish(self, code: int, ok: bool, status: str = "") -> None:
        self.view.end(status)
        proc, self.process = self.process, None
        if proc is not None:
            proc.deleteLater()
        self._set_state(IDLE)
        self.finished.emit(code, ok)

    # ---- output helpers ----------------------------------------------------------------------

    def _use_model(self) -> None:
        if self.model_path and Path(self.model_path).is_file():
            self.useModelRequested.emit(self.model_path)

    def _log_line(self, text: str) -> None:
        self.view.log_line(text)

    def _notice(self, text: str, level: str) -> None:
        self._log_line(text)
        self.notice.emit(text, level)
