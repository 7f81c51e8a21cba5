"""Embeddings: the wire shapes clients use, the job the cache and the terminal share, the upstream call."""
