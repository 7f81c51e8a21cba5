"""Route handlers: thin functions that decode, build a context, run a pipeline and answer."""
