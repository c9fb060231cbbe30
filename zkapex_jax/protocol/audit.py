"""The provider's audit of the outcome: the deployed model's accuracy on the provider's forget set,
against a public threshold.

What the proof cannot say. VALID certifies that θu is the Group-OBS update of the committed θp
for the committed curvature and the provider's mask (docs/PROOFS.md). Nothing ties that curvature
to the client's data, so a client can commit, before any mask exists, a curvature that steers the
certified update back toward what the mask removed (measured: forget accuracy 0.17 → 0.62 under
VALID on the pretrained study; a softmax-shift curvature keeps it all, ``tests/test_audit.py``).
The provider holds its forget set and, with ``verify --deployed --opening``, the deployed model bit
for bit. :func:`audit_forgetting` evaluates that model on the forget set and refuses it when its
accuracy exceeds the provider's policy ``max_accuracy``: under VALID and the audit, whatever the
client committed, the deployed model's forget accuracy on the provider's data is at most
``max_accuracy``. It is an audit of the outcome, in the clear (the provider sees θu, as it does
with ``--deployed``), not part of the zero-knowledge statement; its precision is that of the
forget set (the report carries a 95 % Wilson interval).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

__all__ = ["ForgetAudit", "audit_forgetting", "check_policy", "wilson_interval"]


def check_policy(max_accuracy: float | None) -> float | None:
    """The audit's policy τ as a float in [0, 1] (None: report only); ValueError otherwise."""
    if max_accuracy is None:
        return None
    if not 0.0 <= float(max_accuracy) <= 1.0:
        raise ValueError(f"the forget audit's policy (max forget accuracy) must lie in [0, 1], got {max_accuracy}")
    return float(max_accuracy)


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``p`` observed on ``n`` trials (95 % at z = 1.96)."""
    if n <= 0:
        return (0.0, 1.0)
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


@dataclass(frozen=True)
class ForgetAudit:
    """The deployed model's forget accuracy ``accuracy`` on ``n`` trials (examples, or predicted
    tokens for a language model), its 95 % Wilson interval, and the policy ``max_accuracy`` (None:
    reported only)."""

    accuracy: float
    n: int
    max_accuracy: float | None
    ci95: tuple[float, float]

    @property
    def passed(self) -> bool:
        return self.max_accuracy is None or self.accuracy <= self.max_accuracy

    def reason(self) -> str:
        lo, hi = self.ci95
        got = f"the deployed model's forget accuracy is {self.accuracy:.3f} (95 % CI [{lo:.3f}, {hi:.3f}], n = {self.n})"
        if self.max_accuracy is None:
            return got
        cmp = "≤" if self.passed else ">"
        return f"{got} {cmp} the policy's {self.max_accuracy:.3f}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci95"] = list(self.ci95)
        d["passed"] = self.passed
        return d


def audit_forgetting(forget_accuracy: Callable[[object], tuple[float, int]], deployed, *,
                     max_accuracy: float | None = None) -> ForgetAudit:
    """Audit ``deployed`` (a parameter pytree): ``forget_accuracy(params) -> (accuracy, n)`` on the
    provider's forget set (e.g. ``lambda p: (family.accuracy(p, data), n)``). ``max_accuracy`` in
    [0, 1]: the policy (None: report only). Call it only on a deployed model the bundle opened
    (``verify(..., deployed=, opening=)``): the audit of any other model says nothing about the
    certified one."""
    max_accuracy = check_policy(max_accuracy)
    acc, n = forget_accuracy(deployed)
    acc, n = float(acc), int(n)
    if n <= 0 or not math.isfinite(acc) or not (0.0 <= acc <= 1.0):
        raise ValueError(f"the forget set gave accuracy {acc} on {n} trials: an audit needs a non-empty forget set")
    return ForgetAudit(acc, n, max_accuracy, wilson_interval(acc, n))
