"""The provider's forget audit applied to a steering study: for each policy τ (the largest forget
accuracy a deployed certified model may show on the provider's forget set), how many seeds'
honest certified models pass and how many steered ones (curvatures from forget-class or global
data, committed before the mask) are refused. Reads the per-seed test accuracies a protected /
steering study measured (no new training); the audit itself is ``zkapex verify --deployed …
--forget DATA --max-forget-accuracy τ`` (:mod:`zkapex_jax.protocol.audit`).

Command line::

    python -m experiments.audit_policy experiments/results/protected_effnet.json \\
        --out experiments/results/audit_policy_effnet.json

Rows: ``--honest`` (default ``plain``: the honest certified update) and ``--attacks`` (default the
forget-class and global-data curvatures under the plain and the 4-protected-weight request).
"""

from __future__ import annotations

import argparse
import math

from zkapex_jax._errors import ArtifactError
from zkapex_jax.studies.metrics import audit_policy
from zkapex_jax.studies.report import load_study_record, write_study_record

ATTACKS = ("forget_data/plain", "forget_data/protected_r4", "global_data/plain", "global_data/protected_r4")
THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.audit_policy", description=__doc__.split("\n\n")[0])
    ap.add_argument("study", help="a protected-study record (experiments/results/protected_*.json)")
    ap.add_argument("--honest", default="plain", help="the honest certified model's row (default plain)")
    ap.add_argument("--attacks", nargs="+", default=list(ATTACKS), help="the attacks' rows")
    ap.add_argument("--thresholds", nargs="+", type=float, default=list(THRESHOLDS), help="policies τ in [0, 1]")
    ap.add_argument("--out", required=True, help="the JSON record to write")
    args = ap.parse_args(argv)
    try:
        rec = load_study_record(args.study, "protected")
        per_seed = rec["per_seed"]
        accs = [{m: r["forget_acc"] for m, r in s["rows"].items()} for s in per_seed]
        table = audit_policy(accs, args.honest, args.attacks, args.thresholds)
    except (OSError, KeyError, ValueError, ArtifactError) as e:
        ap.error(f"{args.study}: {e}")
    seeds = [s["seed"] for s in per_seed]
    write_study_record(args.out, "audit_policy", {
        "source": args.study, "source_sha256": rec.get("sha256"), "seeds": seeds, "honest": args.honest,
        "attacks": args.attacks, "forget_accuracy": {str(s): a for s, a in zip(seeds, accs)}, "table": table})
    print(f"seeds {seeds}; forget accuracy per seed (honest {args.honest!r}): "
          + ", ".join(f"{a[args.honest]:.3f}" for a in accs))
    for a in args.attacks:
        print(f"  {a}: " + ", ".join(f"{x[a]:.3f}" for x in accs))
    print(f"{'tau':>6}{'honest pass':>13}" + "".join(f"{a:>26}" for a in args.attacks) + f"{'best attack passed':>20}")
    for row in table:
        best = row["best_attack_passed"]
        print(f"{row['max_forget_accuracy']:>6.2f}{row['honest_passed']:>8}/{row['n_seeds']}"
              + "".join(f"{row['attacks_passed'][a]:>24}/{row['n_seeds']}" for a in args.attacks)
              + (f"{best:>20.3f}" if not math.isnan(best) else f"{'—':>20}"))
    print(f"→ {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
