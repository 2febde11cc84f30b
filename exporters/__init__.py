"""Sinks that receive each interval's results; ``exporters.sinks`` registers the configured ones."""
