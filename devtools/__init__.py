"""Development helpers shared by tests/ and bench/: real servers on loopback and the
recorded-NVML double. Not part of the distribution (pyproject's package discovery
includes only agent, sci, exporters and dashboard)."""
