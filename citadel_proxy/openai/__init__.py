"""OpenAI's API: wire types, translation to and from Ollama, and the stream encoders."""
