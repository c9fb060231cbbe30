"""The repository's top-level ``circuits`` package (the ONNX relation and the ezkl stages), a
package of this distribution next to ``zkapex_jax`` (``[tool.setuptools.packages.find]``), so a
plain import: the protocol modules import it from here under one name."""

from __future__ import annotations

import circuits
from circuits import relation, stages

__all__ = ["circuits", "relation", "stages"]
