"""``python -m netvlad_gui.cli``, also what ``torchrun -m netvlad_gui.cli train …`` runs."""

from . import run

run()
