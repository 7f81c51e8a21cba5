"""Ollama's own API, spoken to clients (Ollama's Python and JS libraries, Open WebUI, IDE plugins)."""
