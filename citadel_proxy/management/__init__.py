"""Ollama model management for the `/management/models/*` and ollama-status endpoints."""
