"""The operator console: its security frame over HTTP, its data routes, and its pages in a browser."""
