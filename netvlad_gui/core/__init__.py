"""The headless engine. Never imports Qt; the GUI and the CLI call it and show what it returns.

Its areas, one subpackage each: ``photos`` (geotags, decoding), ``model`` (the network and its
files), ``library`` (a reference library's index on disk and its build), ``query`` (locate,
verify, verdict, map page, export) and ``training`` (retraining and Recall@N). Settings
(``config``), the error family (``errors``), cancellation and paths sit at the top, shared by all.
"""
