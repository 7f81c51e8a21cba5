"""Fake upstream servers the tests run against (see tests/fakes/ollama/)."""
