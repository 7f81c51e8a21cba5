"""Caches for embeddings and whole answers: backends (Redis or in-process), breaker, single flight, codecs."""
