"""Sinks that receive each interval's results: the embedded store, and later network sinks."""
