"""Model and settings: what the app indexes with, on which device, how many matches.

``AppSettings`` is the one place that reads and writes QSettings; ``model_problem`` asks the core
whether the chosen model can be built on this machine, so the window can say so plainly.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from netvlad_gui.core import config
from netvlad_gui.core.config import (
    DEFAULT_MODEL,
    EVERY_S_RANGE,
    IMAGE_SIZE_RANGE,
    TOP_N_RANGE,
    VERIFY_TOP_RANGE,
    ExtractConfig,
    LocateConfig,
    SequenceConfig,
    VerifyConfig,
)
from netvlad_gui.core.model import zoo
from netvlad_gui.core.model.resolve import (
    MISSING_FILE,
    MISSING_WEIGHTS_FILE,
    NO_BACKBONE_WEIGHTS,
    NOT_DOWNLOADED,
    check_model,
)
from netvlad_gui.core.query.mappage import DEFAULT_TILE_URL

from .widgets import FILE, PathRow, double_spin_box, plain_label, spin_box
from .workers import DownloadWorker, WorkerThread

log = logging.getLogger(__name__)

# The words for core's choices (config.DEVICES, config.RUNTIMES, in their order).
DEVICES = tuple(zip(config.DEVICES, ("Automatic", "CPU", "CUDA GPU"), strict=True))
RUNTIMES = tuple(
    zip(
        config.RUNTIMES,
        ("Automatic (the fastest for each job)", "torch (reference)", "ONNX Runtime"),
        strict=True,
    )
)
#: Marks settings saved since the runtime "auto" (issue 24): an older file's "torch" was only
#: the default of its day, not a choice, and reads as today's default.
RUNTIME_CHOSEN = "settings/runtime_chosen"
CHECKPOINT_FILTER = "Models (*.pt *.pth *.tar *.mat *.ckpt);;All files (*)"


def _clamp(value: float, limits: tuple[float, float]) -> float:
    """``value`` within core's range for the setting (core/config.py is the one source)."""
    lo, hi = limits
    return min(max(value, lo), hi)


@dataclass
class AppSettings:
    """Everything the app remembers between runs (QSettings keys are the field names)."""

    library: str = ""
    index_dir: str = ""  # "" = the library's default index folder
    model: str = DEFAULT_MODEL
    backbone_weights: str = ""
    device: str = "auto"
    top_n: int = LocateConfig.top_n
    image_size: int = ExtractConfig.image_size
    online_tiles: bool = (
        False  # street tiles from the network; the offline base map is always there
    )
    tile_url: str = DEFAULT_TILE_URL
    # Geometric verification of the best matches (core/query/verify.py): the evidence for a verdict.
    verify: bool = VerifyConfig.enabled
    verify_top: int = VerifyConfig.top_k
    runtime: str = ExtractConfig.runtime  # what runs the backbone (core/model/onnxbackbone.py)
    # Photos of one walk located together (issue 22): dropped folders and several photos.
    sequence: bool = False
    video_every_s: float = SequenceConfig.every_s  # a video's frames: one every this many s

    @classmethod
    def load(cls, store: QSettings | None = None) -> AppSettings:
        store = store or QSettings()
        out = cls()
        for name, default in cls().__dict__.items():
            value = store.value(f"settings/{name}", default)
            if isinstance(default, bool) and isinstance(value, str):
                value = value.strip().lower() in ("1", "true", "yes")  # INI files store text
            try:
                setattr(out, name, type(default)(value) if value is not None else default)
            except (TypeError, ValueError):
                log.warning("ignoring the stored setting %s=%r", name, value)
        out.top_n = _clamp(out.top_n, TOP_N_RANGE)
        out.image_size = _clamp(out.image_size, IMAGE_SIZE_RANGE)
        out.verify_top = _clamp(out.verify_top, VERIFY_TOP_RANGE)
        if not math.isfinite(out.video_every_s):  # "nan" or "inf" in a hand-edited file
            out.video_every_s = SequenceConfig.every_s
        out.video_every_s = _clamp(out.video_every_s, EVERY_S_RANGE)
        if out.device not in dict(DEVICES):
            out.device = "auto"
        if out.runtime not in config.RUNTIMES:
            out.runtime = ExtractConfig.runtime
        if out.runtime == "torch" and store.value(RUNTIME_CHOSEN) is None:
            # saved before "auto" existed, when every save wrote torch, the default then
            out.runtime = ExtractConfig.runtime
        return out

    def extract_config(self, image_size: int | None = None) -> ExtractConfig:
        """The engine's extraction settings for these settings (``image_size``: a launch option)."""
        return ExtractConfig.from_options(
            device=self.device, image_size=image_size or self.image_size, runtime=self.runtime
        )

    def locate_config(self) -> LocateConfig:
        """How the engine locates with these settings: matches shown, verification and its K."""
        verify = VerifyConfig(enabled=self.verify, top_k=self.verify_top)
        return LocateConfig(top_n=self.top_n, verify=verify).validate()

    def sequence_config(self) -> SequenceConfig:
        """How photos located together (and a video's frames) are sampled and decided."""
        return SequenceConfig(every_s=self.video_every_s).validate()

    def save(self, store: QSettings | None = None) -> None:
        store = store or QSettings()
        for name, value in self.__dict__.items():
            store.setValue(f"settings/{name}", value)
        store.setValue(RUNTIME_CHOSEN, True)  # the runtime saved now is a choice (see load)
        store.sync()


def cuda_available() -> bool:
    """Whether a CUDA GPU is usable; torch is imported to ask only where a driver shows one."""
    from netvlad_gui.core.model.runtime import gpu_present

    if not gpu_present():
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover - torch is a dependency
        return False


def model_problem(model: str, backbone_weights: str = "") -> str:
    """Why ``model`` cannot be used on this machine, with how to fix it; "" when it can.

    Core decides (`resolve.check_model`); this only words its answer for the window.
    """
    problem = check_model(model, backbone_weights)
    if problem is None:
        return ""
    spec = problem.spec
    if problem.kind == MISSING_FILE:
        return f"The model file {spec} does not exist. Choose another one in Settings."
    if problem.kind == NOT_DOWNLOADED:
        return (
            f"The model {spec} is not downloaded yet. Fix: Settings → “Get the paper's "
            "trained model”, or choose another model."
        )
    if problem.kind == MISSING_WEIGHTS_FILE:
        return (
            f"The backbone weights file {problem.path} does not exist. "
            "Fix: choose another file in Settings, or clear the field."
        )
    if problem.kind == NO_BACKBONE_WEIGHTS:
        backbone = problem.backbone
        return (
            f"No usable weights for {spec}: the ImageNet weights of {backbone} are not on this "
            "machine and the app does not download them. Fix it in Settings: choose a backbone "
            f"weights file (a torchvision {backbone} state dict), pick {DEFAULT_MODEL} (its "
            "weights ship with the app), or get the paper's trained model."
        )
    return problem.message[:1].upper() + problem.message[1:] + "."


class SettingsDialog(QDialog):
    """Edits an AppSettings; ``downloaded(name, path)`` after a successful model download."""

    downloaded = Signal(str, str)
    _downloadRequested = Signal(str)

    def __init__(self, settings: AppSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Model and settings")
        self.setMinimumWidth(560)
        self._download: WorkerThread | None = None

        self.model = QComboBox()
        self.model.setEditable(True)
        self.model.setObjectName("modelCombo")
        for info in zoo.list_models():
            self.model.addItem(info.name)
            self.model.setItemData(
                self.model.count() - 1, info.description, Qt.ItemDataRole.ToolTipRole
            )
        self.model.setCurrentText(settings.model)
        checkpoint = {"mode": FILE, "file_filter": CHECKPOINT_FILTER}
        self.model_row = PathRow(
            "Choose a model checkpoint",
            button_text="Checkpoint file…",
            editor=self.model,
            **checkpoint,
        )
        self.weights_row = PathRow(
            "Choose backbone weights (torchvision state dict)", button_text="Browse…", **checkpoint
        )
        self.weights_row.setText(settings.backbone_weights)
        self.weights = self.weights_row.editor
        self.weights.setPlaceholderText("default ImageNet weights")
        self.weights.setClearButtonEnabled(True)
        self.device = QComboBox()
        has_cuda = cuda_available()
        for key, label in DEVICES:
            if key == "cuda" and not has_cuda:
                continue
            self.device.addItem(label, key)
        self.device.setCurrentIndex(max(self.device.findData(settings.device), 0))
        self.runtime = QComboBox()
        self.runtime.setObjectName("runtimeCombo")
        from netvlad_gui.core.model import ortmodel  # torch-free

        ort, install = ortmodel.installed_version(), ortmodel.INSTALL
        for key, label in RUNTIMES:
            self.runtime.addItem(label, key)
        if ort is None:  # offered, but greyed out with the reason
            item = self.runtime.model().item(self.runtime.findData("onnxruntime"))
            item.setEnabled(False)
            item.setToolTip(f"Not installed: {install}")
        self.runtime.setCurrentIndex(max(self.runtime.findData(settings.runtime), 0))
        self.runtime.setToolTip(
            "What runs the network. Automatic picks for each job: ONNX Runtime on the CPU (about "
            "1.3-1.8x torch, the same descriptors, no 3-4 s torch start-up); torch on a GPU, and "
            "on CPUs with native bf16 for long jobs on heavy backbones (VGG16)."
            + ("" if ort else f" ONNX Runtime is not installed: {install}")
        )
        self.top_n = spin_box(*TOP_N_RANGE, settings.top_n)
        self.image_size = spin_box(
            *IMAGE_SIZE_RANGE,
            settings.image_size,
            "Longer side photos are resized to before the network sees them (the paper uses 640)",
            step=32,
            suffix=" px",
        )
        self.verify = QCheckBox("Check the best matches geometrically")
        self.verify.setObjectName("verifyCheck")
        self.verify.setChecked(settings.verify)
        self.verify.setToolTip(
            "Matches local features between the photo and each of its best matches and counts "
            "the points that fit one geometry: the evidence behind “Located” and “Not found in "
            "this library”. The result shows at once and is refined when the check is done."
        )
        self.verify_top = spin_box(
            *VERIFY_TOP_RANGE,
            settings.verify_top,
            "How many of the global search's best matches are checked (more: slower, "
            f"default {VerifyConfig.top_k})",
        )
        self.verify_top.setObjectName("verifyTop")
        self.verify_top.setEnabled(settings.verify)
        self.verify.toggled.connect(self.verify_top.setEnabled)
        self.online_tiles = QCheckBox("Load street map tiles from the network")
        self.online_tiles.setChecked(settings.online_tiles)
        self.online_tiles.setToolTip(
            "Off: the map draws only the bundled country borders and coastlines, with no network "
            "use. On: tiles from the URL below, with its attribution (applies at once)."
        )
        self.video_every = double_spin_box(
            *EVERY_S_RANGE,
            settings.video_every_s,
            step=0.5,
            tip="A dropped video is located as a sequence of its frames, one every this many "
            f"seconds (default {SequenceConfig.every_s:g} s; fewer frames: faster)",
        )
        self.video_every.setObjectName("videoEvery")
        self.video_every.setSuffix(" s")
        self.tile_url = QLineEdit(settings.tile_url)
        self.tile_url.setToolTip("Tile URL template, e.g. " + DEFAULT_TILE_URL)
        self.problem = plain_label()
        self.problem.setObjectName("modelProblem")
        self.problem.setStyleSheet("color: darkred;")

        form = QFormLayout()
        form.addRow("Backbone or checkpoint", self.model_row)
        form.addRow("Backbone weights file", self.weights_row)
        form.addRow("", self.problem)
        form.addRow("Device", self.device)
        form.addRow("Backbone runtime", self.runtime)
        form.addRow("Matches shown (top-N)", self.top_n)
        form.addRow("Image size", self.image_size)
        form.addRow("Verification", self.verify)
        form.addRow("Matches verified (top-K)", self.verify_top)
        form.addRow("Video frames, one every", self.video_every)
        form.addRow("Map", self.online_tiles)
        form.addRow("Tile URL", self.tile_url)
        note = plain_label(
            "A new model applies to libraries indexed from now on; an existing "
            "index keeps the model its photos were indexed with."
        )
        note.setStyleSheet("color: palette(mid);")
        form.addRow("", note)

        # The paper's trained models.
        self.zoo_model = QComboBox()
        self.zoo_model.setObjectName("zooCombo")
        for info in zoo.list_models():
            if info.kind == "download":
                size = f"~{info.approx_size_mb} MB" if info.approx_size_mb else ""
                state = "downloaded" if info.available else size
                self.zoo_model.addItem(f"{info.name} ({state})", info.name)
        self.get_button = QPushButton("Get the paper's trained model")
        self.get_button.setObjectName("getModel")
        self.cancel_download = QPushButton("Cancel")
        self.cancel_download.setEnabled(False)
        self.download_bar = QProgressBar()
        self.download_bar.hide()
        self.download_status = plain_label()
        self.download_status.setObjectName("downloadStatus")
        zoo_box = QGroupBox("The paper's trained model (VGG16 NetVLAD, needs the network once)")
        zl = QVBoxLayout(zoo_box)
        zrow = QHBoxLayout()
        zrow.addWidget(self.zoo_model, 1)
        zrow.addWidget(self.get_button)
        zrow.addWidget(self.cancel_download)
        zl.addLayout(zrow)
        zl.addWidget(self.download_bar)
        zl.addWidget(self.download_status)

        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(zoo_box)
        layout.addWidget(buttons)

        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.model.currentTextChanged.connect(self._check)
        self.weights.textChanged.connect(self._check)
        self.get_button.clicked.connect(self.start_download)
        self.cancel_download.clicked.connect(self._cancel_download)
        self._check()

    def settings(self, base: AppSettings) -> AppSettings:
        """``base`` with this dialog's values."""
        return AppSettings(
            library=base.library,
            index_dir=base.index_dir,
            model=self.model.currentText().strip() or DEFAULT_MODEL,
            backbone_weights=self.weights.text().strip(),
            device=self.device.currentData() or "auto",
            top_n=self.top_n.value(),
            image_size=self.image_size.value(),
            online_tiles=self.online_tiles.isChecked(),
            tile_url=self.tile_url.text().strip() or DEFAULT_TILE_URL,
            verify=self.verify.isChecked(),
            verify_top=self.verify_top.value(),
            runtime=self.runtime.currentData() or ExtractConfig.runtime,
            sequence=base.sequence,
            video_every_s=self.video_every.value(),
        )

    # ---- download ----------------------------------------------------------------------------

    @property
    def downloading(self) -> bool:
        return self._download is not None

    def start_download(self) -> None:
        name = self.zoo_model.currentData()
        if not name or self._download is not None:
            return
        worker = DownloadWorker()
        self._download = WorkerThread(worker, "netvlad-download", self)
        worker.progress.connect(self._on_download_progress)
        worker.finished.connect(self._on_downloaded)
        worker.failed.connect(self._on_download_failed)
        self._downloadRequested.connect(worker.download)
        self.get_button.setEnabled(False)
        self.cancel_download.setEnabled(True)
        self.download_bar.setRange(0, 0)
        self.download_bar.show()
        self.download_status.setText(f"Downloading {name}…")
        self._downloadRequested.emit(name)  # runs in the worker's thread

    def _cancel_download(self) -> None:
        if self._download is not None:
            self._download.worker.cancel()
            self.download_status.setText("Cancelling…")

    def _on_download_progress(self, done, total) -> None:
        if total:
            self.download_bar.setRange(0, 1000)
            self.download_bar.setValue(int(1000 * done / total))
            self.download_bar.setFormat(f"{done / 1e6:.1f} of {total / 1e6:.1f} MB")
        else:
            self.download_bar.setRange(0, 0)
            self.download_status.setText(f"Downloading… {done / 1e6:.1f} MB")

    def _on_downloaded(self, name: str, path: str) -> None:
        self._finish_download()
        self.download_status.setText(f"{name} is ready ({path}). It is now the chosen model.")
        self.model.setCurrentText(name)
        self.downloaded.emit(name, path)

    def _on_download_failed(self, name: str, message: str) -> None:
        self._finish_download()
        self.download_status.setText(message)

    def _finish_download(self) -> None:
        if self._download is not None:
            self._downloadRequested.disconnect()
            self._download.stop()
            self._download.deleteLater()
            self._download = None
        self.download_bar.hide()
        self.get_button.setEnabled(True)
        self.cancel_download.setEnabled(False)

    def done(self, result: int) -> None:
        """Closing the dialog stops a running download (its .part file is kept)."""
        self._finish_download()
        super().done(result)

    # ---- internals -------------------------------------------------------------------------

    def _check(self) -> None:
        text = model_problem(self.model.currentText(), self.weights.text().strip())
        self.problem.setText(text)
        self.problem.setVisible(bool(text))
