"""The main window's menu bar: what each menu holds, its shortcuts, and the About text."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMainWindow, QMenu

from .notices import INFO


def about_text() -> str:
    from netvlad_gui import __version__

    return (
        f"netvlad-gui {__version__}: where was this photo taken? NetVLAD place recognition "
        "(Arandjelović et al., CVPR 2016) against your geotagged photos, on an offline map. "
        "Map data: Natural Earth via world-atlas; OpenStreetMap links open in your browser."
    )


def add_action(
    owner: QMainWindow, menu: QMenu, text: str, slot: Callable, shortcut=None
) -> QAction:
    """An action owned by the window, so it lives (and is found) with it."""
    action = QAction(text, owner)
    if shortcut is not None:
        action.setShortcut(shortcut)
    action.triggered.connect(slot)
    menu.addAction(action)
    return action


def build_menus(win: QMainWindow) -> dict[str, QAction]:
    """File, Edit, View, Tools and Help for the main window; returns the actions it keeps."""
    bar = win.menuBar()

    def act(menu: QMenu, text: str, slot: Callable, shortcut=None) -> QAction:
        return add_action(win, menu, text, slot, shortcut)

    file_menu = bar.addMenu("&File")
    actions = {
        "open": act(
            file_menu, "&Open photos…", win.open_photos_dialog, QKeySequence.StandardKey.Open
        )
    }
    act(file_menu, "Open a &folder of photos…", win.open_folder_dialog)
    file_menu.addSeparator()
    act(file_menu, "Choose &library folder…", win.choose_library)
    actions["export"] = act(
        file_menu, "&Export results…", win.export_dialog, QKeySequence("Ctrl+E")
    )
    file_menu.addSeparator()
    act(file_menu, "&Quit", win.close, QKeySequence.StandardKey.Quit)

    edit_menu = bar.addMenu("&Edit")
    copy = act(
        edit_menu,
        "&Copy predicted coordinates",
        win.results.copy_coordinates,
        QKeySequence("Ctrl+Shift+C"),
    )
    osm = act(edit_menu, "Open in &OpenStreetMap", win.results.open_in_osm)

    def follow_results(enabled: bool, guess: bool) -> None:
        """As the result panel's buttons: only for a final place, and a guess says so."""
        copy.setEnabled(enabled)
        osm.setEnabled(enabled)
        copy.setText("&Copy guessed coordinates" if guess else "&Copy predicted coordinates")
        osm.setText("Open guess in &OpenStreetMap" if guess else "Open in &OpenStreetMap")

    win.results.actionsChanged.connect(follow_results)
    follow_results(win.results.copy_button.isEnabled(), False)
    actions.update(copy=copy, osm=osm)

    view_menu = bar.addMenu("&View")
    view_menu.addAction(win.log_dock.toggleViewAction())
    act(view_menu, "&Previous photo", lambda: win.queue.step(-1), QKeySequence("Ctrl+Left"))
    act(view_menu, "&Next photo", lambda: win.queue.step(1), QKeySequence("Ctrl+Right"))
    act(view_menu, "&Zoom to everything", win.map.fit_all)

    tools = bar.addMenu("&Tools")
    act(tools, "Model and &settings…", win.open_settings, QKeySequence.StandardKey.Preferences)
    act(tools, "Get the paper's trained &model…", lambda: win.open_settings(download=True))
    act(tools, "&Retrain…", win.open_training)

    help_menu = bar.addMenu("&Help")
    act(help_menu, "&About netvlad-gui", lambda: win.show_notice(about_text(), INFO))
    return actions
