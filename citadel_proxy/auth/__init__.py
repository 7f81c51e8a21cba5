"""API keys: their format and digests, where they are kept, and how a request proves it holds one."""
