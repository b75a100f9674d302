"""The PySide6 desktop front end. Calls netvlad_gui.core; holds no model or index logic."""
