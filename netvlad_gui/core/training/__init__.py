"""Retraining and evaluation: place sets, GPS-mined tuples, the triplet loss, the training
loop and its run folders, and Recall@N."""
