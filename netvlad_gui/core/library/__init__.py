"""A reference library on disk: the scan of its folder, the catalogue, the descriptor store, the
faiss search index, and the build that keeps them in step (resumable, one at a time)."""
