"""The settings dialog's ranges are core's (core/config.py), not numbers of its own (issue 20)."""

from __future__ import annotations

import pytest
from _gui import delete_later, isolated_settings  # noqa: F401 - fixtures
from PySide6.QtCore import QSettings

from netvlad_gui.core.config import (
    EVERY_S_RANGE,
    IMAGE_SIZE_RANGE,
    TOP_N_RANGE,
    VERIFY_TOP_RANGE,
    LocateConfig,
    SequenceConfig,
    VerifyConfig,
)
from netvlad_gui.ui.settingsdialog import AppSettings, SettingsDialog

pytestmark = pytest.mark.usefixtures("isolated_settings", "delete_later")


def test_the_spin_boxes_take_core_ranges(qtbot) -> None:
    dialog = SettingsDialog(AppSettings())
    qtbot.addWidget(dialog)
    for box, limits in (
        (dialog.top_n, TOP_N_RANGE),
        (dialog.image_size, IMAGE_SIZE_RANGE),
        (dialog.verify_top, VERIFY_TOP_RANGE),
        (dialog.video_every, EVERY_S_RANGE),
    ):
        assert (box.minimum(), box.maximum()) == limits
    # whatever the dialog lets a user pick, core accepts
    dialog.top_n.setValue(TOP_N_RANGE[1])
    dialog.image_size.setValue(IMAGE_SIZE_RANGE[0])
    dialog.verify_top.setValue(VERIFY_TOP_RANGE[1])
    dialog.video_every.setValue(EVERY_S_RANGE[0])
    out = dialog.settings(AppSettings())
    assert out.sequence_config().every_s == EVERY_S_RANGE[0]
    LocateConfig(top_n=out.top_n, verify=VerifyConfig(top_k=out.verify_top)).validate()
    assert out.extract_config().image_size == IMAGE_SIZE_RANGE[0]


def test_stored_values_are_clamped_to_core_ranges(qtbot) -> None:
    store = QSettings()
    store.setValue("settings/top_n", 10**6)
    store.setValue("settings/image_size", 1)
    store.setValue("settings/verify_top", 0)
    store.setValue("settings/video_every_s", 10**9)
    loaded = AppSettings.load()
    assert loaded.video_every_s == EVERY_S_RANGE[1]
    store.setValue("settings/video_every_s", "nan")
    assert AppSettings.load().video_every_s == SequenceConfig.every_s
    loaded.sequence_config()
    assert (loaded.top_n, loaded.image_size, loaded.verify_top) == (
        TOP_N_RANGE[1],
        IMAGE_SIZE_RANGE[0],
        VERIFY_TOP_RANGE[0],
    )
    loaded.extract_config()
