"""Experiment entry points (thin) and their configs as code. See docs/RESULTS.md."""
