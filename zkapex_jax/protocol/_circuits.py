"""Import the repository's top-level ``circuits`` package (the ONNX relation and ezkl stages).
It sits next to ``zkapex_jax/``; if it is not installed as a package, add the repository root."""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import circuits  # noqa: F401
except ImportError:  # editable checkout without "circuits*" in the package list
    root = Path(__file__).resolve().parents[2]
    if (root / "circuits" / "__init__.py").is_file():
        sys.path.insert(0, str(root))
    import circuits  # noqa: F401

from circuits import relation, stages  # noqa: E402

__all__ = ["circuits", "relation", "stages"]
