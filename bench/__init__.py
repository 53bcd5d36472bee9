"""Benchmarks (scripts, not tests): ``./dev.sh bench <name> [args]`` or ``python -m bench``."""
