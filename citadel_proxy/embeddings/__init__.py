"""Embeddings: the wire shapes clients and Ollama use, and the upstream call."""
