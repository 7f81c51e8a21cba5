"""Citadel proxy: a production LLM gateway in front of Ollama."""
