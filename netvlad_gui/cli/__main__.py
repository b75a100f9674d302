"""``python -m netvlad_gui.cli``, also what ``torchrun -m netvlad_gui.cli train …`` runs."""

import sys

from . import main

sys.exit(main())
