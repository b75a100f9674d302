"""The files a training run writes in its folder, named where model code can see them.

A run folder stands for its final model wherever a model is named (``resolve_model``), so the
names live below both the model and the training code. Torch-free.
"""

from __future__ import annotations

LAST = "last.pt"  # every finished epoch, with the state a resume needs
BEST = "best.pt"  # the best validation Recall@5 so far
FINAL = "model.pt"  # the end result, with PCA-whitening
INIT = "init.pt"  # the k-means initialised model, written before the first epoch
