"""The first-start page: what to do when there is no library yet, instead of empty panels."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from .widgets import plain_label

_STEPS = (
    (
        "Choose a folder of geotagged photos",
        (
            "Your reference library: photos with GPS in their EXIF (phones and most cameras "
            "record it), or a gps.csv beside them. You can also drop the folder on this window."
        ),
    ),
    (
        "Build the index",
        (
            "One click. It runs in the background, shows its progress and can be cancelled; "
            "the next update only adds what is new."
        ),
    ),
    (
        "Drop photos to locate them",
        (
            "Drop one photo, twenty, or a folder anywhere on the window. Each one is shown on "
            "the map with its predicted place, a confidence circle, and the best matching photos."
        ),
    ),
)


class WelcomePage(QWidget):
    """Three numbered steps and one button; ``chooseRequested`` opens the folder dialog."""

    chooseRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("welcomePage")
        title = QLabel("Where was this photo taken?")
        title.setObjectName("welcomeTitle")
        font = title.font()
        font.setPointSizeF(font.pointSizeF() * 2.0)
        font.setBold(True)
        title.setFont(font)
        subtitle = plain_label(
            "netvlad-gui compares a photo with your own geotagged photos (NetVLAD place "
            "recognition, Arandjelović et al., CVPR 2016) and shows where it was most likely "
            "taken. Everything runs on this computer; no photo leaves it."
        )
        subtitle.setStyleSheet("color: #555;")

        steps = QVBoxLayout()
        steps.setSpacing(18)
        for row, (head, body) in enumerate(_STEPS):
            number = QLabel(str(row + 1))
            number.setAlignment(Qt.AlignmentFlag.AlignCenter)
            number.setFixedSize(36, 36)
            number.setStyleSheet(
                "background: #2c7fb8; color: white; border-radius: 18px; font-weight: bold;"
                "font-size: 15pt;"
            )
            heading = plain_label(head)
            hfont = heading.font()
            hfont.setBold(True)
            hfont.setPointSizeF(hfont.pointSizeF() * 1.2)
            heading.setFont(hfont)
            text = plain_label(body)
            text.setStyleSheet("color: #333;")
            cell = QVBoxLayout()
            cell.setSpacing(4)
            cell.addWidget(heading)
            cell.addWidget(text)
            if row == 0:
                self.choose_button = QPushButton("Choose a folder of geotagged photos…")
                self.choose_button.setObjectName("welcomeChoose")
                self.choose_button.setDefault(True)
                self.choose_button.setMinimumHeight(34)
                cell.addSpacing(4)
                cell.addWidget(self.choose_button, 0, Qt.AlignmentFlag.AlignLeft)
            line = QHBoxLayout()
            line.setSpacing(16)
            line.addWidget(number, 0, Qt.AlignmentFlag.AlignTop)
            line.addLayout(cell, 1)
            steps.addLayout(line)

        self.model_note = plain_label()
        self.model_note.setObjectName("welcomeModel")
        self.model_note.setStyleSheet("color: #555;")

        box = QWidget()
        box.setFixedWidth(720)
        inner = QVBoxLayout(box)
        inner.setSpacing(16)
        inner.addWidget(title)
        inner.addWidget(subtitle)
        inner.addSpacing(8)
        inner.addLayout(steps)
        inner.addSpacing(8)
        inner.addWidget(self.model_note)
        # Centred with stretches, not an alignment flag: an aligned widget gets its size hint,
        # which ignores height-for-width and crops the wrapped text.
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(box)
        row.addStretch(1)
        outer = QVBoxLayout(self)
        outer.addStretch(1)
        outer.addLayout(row)
        outer.addStretch(2)
        self.choose_button.clicked.connect(self.chooseRequested)

    def set_model_note(self, text: str) -> None:
        """A line on the model the first index will use (empty hides it)."""
        self.model_note.setText(text)
        self.model_note.setVisible(bool(text))
