"""Benchmark tools: a cheap fake Ollama (bench/fake_ollama.py) and load scripts."""
