"""The main window: library, photo queue, map and results, wired to the engine worker.

The window holds no model or index: it sends requests to the EngineWorker (its own QThread) and
draws what comes back. Files dropped anywhere on the window (the map included) are located;
a folder dropped on the library panel, or on the first-start page, becomes the library.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QApplication,
    QLabel,
    QMainWindow,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QWidget,
)

from netvlad_gui.core.library.status import LibraryStatus, resolve_index_dir
from netvlad_gui.core.photos.images import expand_inputs
from netvlad_gui.core.query.export import ExportError, write_results
from netvlad_gui.core.query.mappage import MapPageError

from . import filedialogs, messages
from .errors import failure_text
from .launch import LaunchOptions, launch_settings
from .librarypanel import STAGE_NAMES, LibraryPanel
from .locating import Locating
from .mapdata import result_to_map
from .mapview import MapView
from .menus import build_menus
from .notices import ERROR, INFO, WARNING, FloatOver, LogDock, NoticeBar
from .queuepanel import QueuePanel
from .resultspanel import ResultsPanel
from .sequencing import Sequencing
from .settingsdialog import AppSettings, SettingsDialog, model_problem
from .stallmeter import StallMeter, stall_label
from .thumbnails import ThumbnailLoader
from .traindock import TrainDock, trained_model_settings
from .welcome import WelcomePage
from .widgets import dropped_paths, restore_window_state, save_window_state
from .workarea import WorkArea, column
from .workers import EngineWorker, WorkerThread

log = logging.getLogger("netvlad_gui.ui")

INDEXING, LOCATING = "indexing", "locating"


class MainWindow(QMainWindow):
    """netvlad-gui's window. Public signals serve the screenshot mode and the tests.

    ``resultArrived(token)`` is a photo's final result: the verified one when verification is on.
    """

    indexChanged = Signal(object)
    resultArrived = Signal(int)
    buildEnded = Signal(object)
    noticeShown = Signal(str, str)

    _warmRequested = Signal()
    _openRequested = Signal(str, object)
    _buildRequested = Signal(str, str, str, str, object)

    def __init__(self, options: LaunchOptions | None = None) -> None:
        super().__init__()
        self.options = options or LaunchOptions()
        # Qt adds the application's name ("— netvlad-gui") to the title itself.
        self.setWindowTitle("Where was this photo taken?")
        self.setAcceptDrops(True)
        self.settings = launch_settings(self.options)
        self.info: LibraryStatus | None = None
        self._building = False
        self.build_summaries: list = []
        self._closing = False
        self._auto_built = False
        self.train_panel = None  # the Retrain dock, made on first use

        self.stalls = StallMeter(parent=self, on_demand=not self.options.measure_stalls)
        self.thumbs = ThumbnailLoader(parent=self)
        self._build_ui()
        actions = build_menus(self)
        self.open_action, self.export_action = actions["open"], actions["export"]
        self.copy_action, self.osm_action = actions["copy"], actions["osm"]
        self._start_engine()
        self.sequencing.attach(self.engine, actions["together"])
        restore_window_state(self, [self.splitter, self._right], (1280, 820))
        self._show_page()
        self._refresh_model_banner()
        if self.options.measure_stalls:
            self.stalls.start()
        if self.library or self.settings.index_dir:
            self._open_index()
        if self.options.inputs:
            QTimer.singleShot(0, lambda: self.open_inputs(self.options.inputs))

    # ---- construction ------------------------------------------------------------------------

    def _build_ui(self) -> None:
        self.notice = NoticeBar(self)
        self.model_banner = NoticeBar(self, action="Settings…")
        self.model_banner.setObjectName("modelBanner")
        self.model_banner.close_button.hide()

        self.welcome = WelcomePage()
        self.library_panel = LibraryPanel()
        self.queue = QueuePanel(self.thumbs)
        self.locating = Locating(self.queue, self)
        self.map = MapView(tiles_online=self.settings.online_tiles, tile_url=self.settings.tile_url)
        self.results = ResultsPanel(self.thumbs)
        self.splitter = WorkArea(self.library_panel, self.queue, self.map, self.results)
        self._right = self.splitter.right
        self.pages = QStackedWidget()
        self.pages.addWidget(self.welcome)
        self.pages.addWidget(self.splitter)
        self.setCentralWidget(column([self.model_banner, self.pages]))
        # Notices float over the map's top: coming and going, they move nothing else.
        self.notice.setParent(self.centralWidget())
        self._notice_float = FloatOver(self.notice, [self.map, self.pages])

        self.log_dock = LogDock(self)
        self.log_view, self.warnings_button = self.log_dock.view, self.log_dock.warnings_button
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.log_dock)
        self.log_dock.hide()

        self.status_text = QLabel()
        self.stall_label = stall_label(self.stalls)
        self.stall_label.setVisible(self.options.measure_stalls)  # else: figures go to the log
        self.stop_button = QPushButton("Stop locating")
        self.stop_button.hide()
        self.statusBar().addPermanentWidget(self.warnings_button)
        self.statusBar().addPermanentWidget(self.stop_button)
        self.statusBar().addPermanentWidget(self.stall_label)

        # Wiring between widgets (the engine is wired in _start_engine).
        self.welcome.chooseRequested.connect(self.choose_library)
        self.library_panel.chooseRequested.connect(self.choose_library)
        self.library_panel.libraryDropped.connect(self.set_library)
        self.library_panel.buildRequested.connect(self.build_index)
        self.library_panel.cancelRequested.connect(self.cancel_build)
        self.queue.currentChanged.connect(self.show_token)
        self.queue.relocateRequested.connect(self.locate_again)
        self.results.stepRequested.connect(self.queue.step)
        self.results.matchSelected.connect(self.map.select)
        self.results.message.connect(lambda text: self.statusBar().showMessage(text, 5000))
        self.results.browserFailed.connect(self._on_browser_failed)
        self.map.matchClicked.connect(self.results.select_rank)
        self.map.onlineTilesRequested.connect(self.use_online_tiles)
        self.model_banner.actionTriggered.connect(self.open_settings)
        self.stop_button.clicked.connect(self.cancel_locating)
        self.locating.shown.connect(self.show_token)
        self.locating.resultArrived.connect(self.resultArrived)
        self.locating.idle.connect(self._on_locating_idle)
        self.locating.notice.connect(self._on_locating_notice)
        self.sequencing = Sequencing(self)

    def _start_engine(self) -> None:
        self.engine = EngineWorker()
        self._engine_thread = WorkerThread(self.engine, "netvlad-engine", self)
        self._warmRequested.connect(self.engine.warm_up)
        self.engine.warmedUp.connect(self._on_engine_warm)
        self.statusBar().showMessage(messages.ENGINE_LOADING)
        QTimer.singleShot(0, self._warmRequested.emit)  # once the window is up
        self._openRequested.connect(self.engine.open_index)
        self._buildRequested.connect(self.engine.build)
        self.locating.requested.connect(self.engine.locate)
        self.engine.progress.connect(self._on_progress)
        self.engine.buildFinished.connect(self._on_build_finished)
        self.engine.indexOpened.connect(self._on_index_opened)
        self.engine.staged.connect(self.locating.on_stage)
        self.engine.locateFinished.connect(self._on_locate_finished)
        self.engine.failed.connect(self._on_failed)

    def _on_engine_warm(self) -> None:
        if self.statusBar().currentMessage() == messages.ENGINE_LOADING:
            self.statusBar().clearMessage()

    # ---- state -------------------------------------------------------------------------------

    @property
    def library(self) -> str:
        return self.settings.library

    @property
    def image_size(self) -> int:
        return self.options.image_size or self.settings.image_size

    @property
    def index_dir(self) -> str:
        if not (self.library or self.settings.index_dir):
            return ""
        return str(resolve_index_dir(self.library, self.settings.index_dir))

    @property
    def busy(self) -> bool:
        return self._building or bool(self.locating.in_flight)

    @property
    def locate_times(self) -> list[float]:
        """Seconds from drop to final answer, per photo (benchmarks, tests)."""
        return self.locating.times

    def _show_page(self) -> None:
        has_library = bool(self.library or self.settings.index_dir)
        self.pages.setCurrentIndex(1 if has_library else 0)
        # Only the page on show sets the window's least size (the first-start page is wide).
        for i in range(self.pages.count()):
            policy = (
                QSizePolicy.Policy.Preferred
                if i == self.pages.currentIndex()
                else (QSizePolicy.Policy.Ignored)
            )
            self.pages.widget(i).setSizePolicy(policy, policy)
        self.library_panel.set_library(self.library or None)

    def show_notice(
        self, text: str, level: str = INFO, *, action="", on_action=None, file="", log_text=""
    ) -> None:
        """Tell the user something without blocking (and log it, as ``log_text`` if given).
        ``action`` is a button on the notice that calls ``on_action``; ``file`` makes the log
        count one warning per file."""
        levelno = {ERROR: logging.ERROR, WARNING: logging.WARNING}.get(level, logging.INFO)
        log.log(levelno, log_text or text, extra={"file": file} if file else None)
        self.notice.show_notice(text, level, action=action, on_action=on_action)
        self._notice_float.place()
        self.noticeShown.emit(level, text)

    def _refresh_model_banner(self, message: str = "") -> None:
        if self.info is not None and self.info.ready and not message:
            self.model_banner.hide()
            return
        text = message or model_problem(self.settings.model, self.settings.backbone_weights)
        if text:
            self.model_banner.show_notice(text, ERROR)
            self.welcome.set_model_note("")
        else:
            self.model_banner.hide()
            self.welcome.set_model_note(messages.model_note(self.settings.model))

    # ---- library and index -------------------------------------------------------------------

    def choose_library(self) -> None:
        folder = filedialogs.choose_library(self, self.library)
        if folder:
            self.set_library(folder)

    def set_library(self, folder: str) -> None:
        """Make ``folder`` the reference library and open its index (if it has one)."""
        if self._building:
            self.show_notice(messages.BUSY_BUILDING, WARNING)
            return
        path = Path(folder).expanduser().resolve()
        if not path.is_dir():
            self.show_notice(f"Not a folder: {folder}", WARNING)
            return
        changed = str(path) != self.library
        if changed:
            self.settings.index_dir = ""  # a custom index folder was for the old library
        self.settings.library = str(path)
        self.settings.save()
        self.info = None
        self.map.clear(references=True)
        self._show_page()
        if changed:
            self._mark_stale()
        self._open_index()
        log.info("library: %s", path)

    def _open_index(self) -> None:
        self.library_panel.set_opening()
        self._openRequested.emit(self.index_dir, self.settings.extract_config(self.image_size))

    def build_index(self) -> None:
        if not self.library:
            self.show_notice("Choose the library folder first.", WARNING)
            return
        if self._building:
            return
        self._building = True
        self.library_panel.set_busy(True)
        self.stalls.begin(INDEXING)
        log.info("building the index of %s", self.library)
        self._buildRequested.emit(
            self.library,
            self.settings.model,
            self.settings.backbone_weights,
            self.settings.index_dir,
            self.settings.extract_config(self.image_size),
        )

    def cancel_build(self) -> None:
        if self._building:
            self.engine.cancel()
            self.library_panel.show_summary_line("Cancelling: keeping what is finished…")

    def cancel_locating(self) -> None:
        if (self.locating.in_flight or self.sequencing.sampling) and not self._building:
            self.engine.cancel()

    def _on_progress(self, stage: str, done: int, total: int) -> None:
        if self._building:
            self.library_panel.on_progress(stage, done, total)
        elif stage == "locate" and total > 1:
            self.statusBar().showMessage(f"Locating {done} of {total}…")
        elif stage == "frames":
            self.sequencing.on_progress(done, total)
        elif stage in STAGE_NAMES and done < total:  # opening a library: the one-off export
            self.statusBar().showMessage(f"{STAGE_NAMES[stage]}…")

    def _on_build_finished(self, summary) -> None:
        self._building = False
        self.library_panel.set_busy(False)
        self.stalls.end(INDEXING)
        self.buildEnded.emit(summary)
        if summary is None:
            return
        self.build_summaries.append(summary)
        self.show_notice(messages.build_ended(summary), WARNING if summary.cancelled else INFO)

    def _on_index_opened(self, info: LibraryStatus) -> None:
        self.info = info
        if info.cannot_place:
            self.show_notice(messages.cannot_place(info), WARNING)
        if info.library and not self.library:
            self.settings.library = info.library  # an --index given alone names its library
            self.settings.save()
            self._show_page()
        if self.train_panel is not None:
            self.train_panel.refresh_library()  # opened before the index: "no library" is stale
        self.library_panel.set_info(info)
        self.map.set_references(info.references)
        current = self.queue.current()
        if current is None or current.stale or current.result is None or current.result.error:
            self.map.fit_all()  # no result drawn: this library's photos (the world if none)
        self._refresh_model_banner()
        self.indexChanged.emit(info)
        if info.ready:
            log.info(
                "index open: %d photos (%d with GPS), model %s",
                info.indexed,
                info.with_gps,
                info.model,
            )
            self.send_waiting()
        elif self.options.auto_build and not self._building and not self._auto_built:
            self._auto_built = True  # once: a failed build must not start over and over
            self.build_index()

    def _on_failed(self, what: str, message: str) -> None:
        if what in ("open", "weights"):
            self.library_panel.open_failed()
        if what == "weights":
            self._refresh_model_banner(message)  # the banner says how to fix it
        self.show_notice(failure_text(what, message), ERROR)

    # ---- photos ------------------------------------------------------------------------------

    def open_photos_dialog(self) -> None:
        files = filedialogs.photos(self, self.library)
        if files:
            self.open_inputs(files)

    def open_folder_dialog(self) -> None:
        folder = filedialogs.photo_folder(self, self.library)
        if folder:
            self.open_inputs([folder])

    def open_inputs(self, items: list[str]) -> list[int]:
        """Photos, folders and videos to locate (drops, File → Open, command line). Returns the
        photos' tokens (a video's frames are listed once the engine has read them)."""
        t0 = time.perf_counter()
        inputs = expand_inputs(items)
        photos = [str(p.resolve()) for p in inputs.photos]
        skipped = [f"{p.name or p} ({reason})" for p, reason in inputs.skipped]
        if skipped:
            self.show_notice(messages.skipped_inputs(skipped), WARNING)
        for video in inputs.videos:  # always a sequence of frames
            self.sequencing.add_video(video)
        if not photos:
            return []
        # photos already in the list are not added again
        entries = self.sequencing.add_photos(items, inputs.photos, photos)
        if len(entries) < len(photos):
            self.statusBar().showMessage(
                messages.already_listed(len(photos) - len(entries), len(photos)), 5000
            )
        first = entries[0] if entries else self.queue.find(photos[0])
        self.locating.dropped([e.token for e in entries], t0)
        if first is not None:
            self.queue.set_current(first.token)
        self.send_waiting()
        return [e.token for e in entries]

    def _mark_stale(self) -> None:
        """The library changed: results located against the old one are marked, not shown as
        current, and the user can locate them again (or clear the list)."""
        old = self.locating.library_changed()
        if not old:
            return
        current = self.queue.current()
        if current is not None:
            self.show_token(current.token)
        self.show_notice(
            messages.stale_results(len(old)),
            WARNING,
            action="Locate again",
            on_action=self.locate_again,
        )

    def locate_again(self) -> None:
        """Locate the photos marked as from another library against the current one."""
        self.locating.locate_again()
        self.notice.hide()
        current = self.queue.current()
        if current is not None:
            self.show_token(current.token)
        self.send_waiting()

    def send_waiting(self) -> None:
        if not self.locating.has_waiting():
            return
        if self._building:
            self.statusBar().showMessage("The photos will be located once the index is ready.")
            return
        if self.info is None or not self.info.ready:
            if not self.library or self.info is not None:  # else: the index is still opening
                self.show_notice(messages.photos_wait(bool(self.library)), WARNING)
            return
        self.stalls.begin(LOCATING)
        sent = self.locating.send(self.settings.locate_config(), self.settings.sequence_config())
        self.stop_button.setVisible(sent > 1)

    def _on_locating_notice(self, text: str, level: str, action: str, file: str, log_text: str):
        on_action = self.log_dock.show if action else None
        self.show_notice(
            text, level, action=action, on_action=on_action, file=file, log_text=log_text
        )

    def _on_locate_finished(self, count: int, cancelled: bool) -> None:
        self.locating.on_finished(count, cancelled)
        if cancelled:
            self.statusBar().showMessage("Stopped; the rest of the photos wait in the queue.", 5000)

    def _on_locating_idle(self) -> None:
        self.stalls.end(LOCATING)
        self.stop_button.hide()
        if self.statusBar().currentMessage().startswith("Locating"):
            self.statusBar().clearMessage()

    def _on_browser_failed(self, url: str) -> None:
        copy = lambda: QApplication.clipboard().setText(url)
        self.show_notice(messages.no_browser(url), WARNING, action="Copy link", on_action=copy)

    def show_token(self, token: int) -> None:
        entry = self.queue.entry(token) if token else None
        self.results.show_entry(entry, self.queue.position())
        if entry is None or entry.stale or entry.result is None or entry.result.error:
            self.map.clear()
        else:
            self.map.show_result(result_to_map(entry.result))
            self.sequencing.draw_track(entry)

    # ---- export, settings ---------------------------------------------------------------------

    def export_dialog(self) -> None:
        results = self.queue.results()
        if not results:
            self.show_notice("Nothing to export yet: locate some photos first.", INFO)
            return
        path = filedialogs.export_path(self, self.library)
        if path:
            self.export_results(path)

    def export_results(self, path: str) -> bool:
        try:
            written = write_results(self.queue.results(), path)
        except ExportError as exc:
            self.show_notice(str(exc), ERROR)
            return False
        self.show_notice(f"Exported {len(self.queue.results())} results to {written}", INFO)
        return True

    def open_settings(self, download: bool = False) -> None:
        dialog = SettingsDialog(self.settings, self)
        if download:
            dialog.get_button.setFocus()
        if dialog.exec() != SettingsDialog.DialogCode.Accepted:
            self._refresh_model_banner()  # a download may have changed what is available
            return
        self.apply_settings(dialog.settings(self.settings))

    def apply_settings(self, new: AppSettings) -> None:
        old, self.settings = self.settings, new
        new.save()
        try:  # at once: the map switches its tiles without a restart
            self.map.set_tiles(new.online_tiles, new.tile_url)
        except MapPageError as exc:
            self.show_notice(f"{exc}. Fix it in Tools → Model and settings.", WARNING)
        if (
            old.extract_config(self.options.image_size)
            != new.extract_config(self.options.image_size)
            and (self.library or self.settings.index_dir)
            and not self._building
        ):
            self._open_index()
        self._refresh_model_banner()

    def use_online_tiles(self) -> None:
        """The map's "Use online map tiles": the same as ticking it in Settings."""
        new = AppSettings(**self.settings.__dict__)
        new.online_tiles = True
        self.apply_settings(new)

    # ---- retraining (the Train panel: see ui/trainpanel.py) ---------------------------------

    def open_training(self) -> QWidget:
        """Show the Train panel in a dock (made on first use: QtCharts loads only then)."""
        if self.train_panel is None:
            self.train_dock = TrainDock(lambda: self.library, self.settings, self)
            self.train_panel = self.train_dock.panel
            self.train_panel.notice.connect(self.show_notice)
            self.train_panel.useModelRequested.connect(self.use_trained_model)
            self.train_panel.buildRequested.connect(self.build_index)
        self.train_panel.refresh_library()
        self.train_dock.show()
        self.train_dock.raise_()
        return self.train_panel

    def use_trained_model(self, model_path: str) -> None:
        """Make a trained checkpoint the app's model, with its own index folder (see trainpanel)."""
        if self._building:
            self.show_notice("Wait for the index build to finish first.", WARNING)
            return
        self.apply_settings(trained_model_settings(self.settings, self.library, model_path))
        if self.library:
            self.info = None
            self.map.clear(references=True)
            self._open_index()
        figure = self.train_panel.heldout_summary() if self.train_panel else ""
        self.show_notice(messages.trained_model_in_use(model_path, figure), INFO)
        if self.library:
            self._mark_stale()  # located with the previous model's index

    # ---- drag and drop -----------------------------------------------------------------------

    def dragEnterEvent(self, event) -> None:
        if dropped_paths(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:
        self.dragEnterEvent(event)

    def dropEvent(self, event) -> None:
        paths = dropped_paths(event.mimeData())
        if not paths:
            event.ignore()
            return
        event.acceptProposedAction()
        # On the first-start page a dropped folder is the library the page asks for.
        if self.pages.currentIndex() == 0 and len(paths) == 1 and Path(paths[0]).is_dir():
            self.set_library(paths[0])
            return
        self.open_inputs(paths)

    # ---- geometry, quitting ------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop the workers and wait for them (idempotent)."""
        if self._closing:
            return
        self._closing = True
        self.stalls.stop()
        if self.train_panel is not None:
            self.train_panel.shutdown()
        self._engine_thread.stop()
        self.thumbs.shutdown()
        self.log_dock.detach()

    def closeEvent(self, event: QCloseEvent) -> None:
        save_window_state(self, [self.splitter, self._right])
        if self._building:
            log.info("quitting: cancelling the index build (finished work is kept)")
        self.shutdown()
        event.accept()
        app = QApplication.instance()
        if app is not None and self.options.measure_stalls:
            print(self.stalls.summary(), flush=True)
