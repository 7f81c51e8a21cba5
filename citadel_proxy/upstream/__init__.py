"""Talking to Ollama: the HTTP client, its wire types, and the NDJSON token stream."""
