"""Experiment configurations as code. Each study module exposes ``CONFIGS`` (name -> config)
and ``get(name)``; every study has a ``tiny`` variant that the smoke tests run."""
