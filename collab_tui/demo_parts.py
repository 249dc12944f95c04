"""Demo steps contributed by the recognition and training services: callables (cluster, live, say)."""

PARTS: list = []
