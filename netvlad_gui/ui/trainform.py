"""The Retrain panel's "Training" box: the run's options, their defaults read from core's
TrainConfig (the CLI's), and the ``netvlad train`` options they stand for."""

from __future__ import annotations

from PySide6.QtWidgets import QFormLayout, QGroupBox, QLineEdit, QWidget

from netvlad_gui.core.config import DEFAULT_MODEL
from netvlad_gui.core.trainconfig import LOSSES, MiningConfig, TrainConfig

from .settingsdialog import cuda_available
from .widgets import combo_box, double_spin_box, spin_box

#: The defaults the form starts from, and the two loss margins.
_DEFAULTS = TrainConfig()
_MARGINS = {loss: round(MiningConfig.default_margin(loss), 4) for loss in LOSSES}
_spin, _dspin, _combo = spin_box, double_spin_box, combo_box


class TrainParams(QGroupBox):
    """Epochs, batch size, learning rate, margin, image size, loss, layers, device, the model
    to start from and free-form options."""

    def __init__(self, model: str = DEFAULT_MODEL, parent: QWidget | None = None) -> None:
        super().__init__("Training", parent)
        d = _DEFAULTS
        form = QFormLayout(self)
        self.epochs = _spin(1, 1000, d.epochs, "Passes over the training queries (--epochs)")
        self.batch = _spin(
            1,
            256,
            d.batch_size,
            "Training tuples per SGD step (--batch-size); lower it on out-of-memory",
        )
        self.lr = _dspin(
            1e-6,
            1.0,
            d.lr,
            6,
            1e-5,
            f"SGD learning rate, multiplied by {d.lr_gamma:g} every {d.lr_step_epochs} epochs",
        )
        self.margin = _dspin(
            0,
            2,
            _MARGINS[d.mining.loss],
            4,
            0.01,
            f"Triplet loss margin m (the paper: {_MARGINS['squared']:g} on squared distances; "
            f"√0.1 ≈ {_MARGINS['unsquared']:.3f} is the usual value for the unsquared loss)",
        )
        self.image_size = _spin(
            64,
            2048,
            d.extract.image_size,
            "Longer image side in pixels; smaller is faster and needs less memory",
        )
        self.loss = _combo(
            [("squared", "squared distances (paper)"), ("unsquared", "plain distances")],
            "squared: the paper's loss on d²; unsquared: the PyTorch ports' TripletMarginLoss",
        )
        self.loss.currentIndexChanged.connect(self._on_loss_changed)
        self.layers = _combo(
            [
                ("last_block", "last conv block + NetVLAD"),
                ("pooling", "NetVLAD only"),
                ("all", "the whole network"),
            ],
            "What is trained (--train-layers); the paper found the last block enough",
        )
        cuda = cuda_available()
        self.device = _combo(
            [("cuda", "CUDA GPU"), ("cpu", "CPU")], "Where training runs (--device)"
        )
        if not cuda:
            self.device.model().item(0).setEnabled(False)
            self.device.setCurrentIndex(1)
        self.model_edit = QLineEdit(model or DEFAULT_MODEL)
        self.model_edit.setToolTip(
            "Model to start from: BACKBONE-POOLING (e.g. mobilenet_v2-netvlad) or a checkpoint"
        )
        self.extra_edit = QLineEdit()
        self.extra_edit.setPlaceholderText("e.g. --num-clusters 16 --workers 2")
        self.extra_edit.setToolTip("More `netvlad train` options (see `netvlad train --help`)")
        form.addRow("Epochs", self.epochs)
        form.addRow("Batch size", self.batch)
        form.addRow("Learning rate", self.lr)
        form.addRow("Margin", self.margin)
        form.addRow("Image size", self.image_size)
        form.addRow("Loss", self.loss)
        form.addRow("Layers to train", self.layers)
        form.addRow("Device", self.device)
        form.addRow("Start from", self.model_edit)
        form.addRow("More options", self.extra_edit)

    def _on_loss_changed(self) -> None:
        # A margin left at the other loss's default follows the loss.
        loss = self.loss.currentData()
        other = "unsquared" if loss == "squared" else "squared"
        if abs(self.margin.value() - _MARGINS[other]) < 1e-3:
            self.margin.setValue(_MARGINS[loss])

    def args(self) -> list[str]:
        """The hyper-parameters as ``netvlad train`` options (not the model, not the epochs)."""
        return [
            "--batch-size",
            str(self.batch.value()),
            "--lr",
            f"{self.lr.value():g}",
            "--margin",
            f"{self.margin.value():g}",
            "--image-size",
            str(self.image_size.value()),
            "--loss",
            self.loss.currentData(),
            "--train-layers",
            self.layers.currentData(),
        ]
