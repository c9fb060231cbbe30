"""Evaluation metrics for the unlearning experiments: accuracy helpers, recovery, and an
entropy-based membership-inference attack.

All functions take arrays (numpy or JAX) and return Python floats / numpy arrays; nothing
here prints or touches files.

Membership inference (``mia_entropy``)
--------------------------------------
We implement the *entropy* attack of SSD (Foster et al., 2024) / SalUn (Fan et al., 2024) in
the form the experiment issue asks for: an attack classifier sees ONE feature per example, the
entropy of the model's predictive distribution, and must tell **members** (forget-set examples
the global model was trained on) from **non-members** (held-out forget-class examples the model
never saw). The attack is a logistic regression (scikit-learn), evaluated by stratified k-fold
cross-validation on a class-balanced sample; we report its mean held-out accuracy and ROC AUC.
0.5 means the model's entropies carry no membership signal for the forget classes (the goal of
unlearning, and what a retrained model should show); higher means the forget data left a trace.

``mia_ssd`` is the SSD paper's variant for reference: the attacker is trained on retain-train
(members) vs. test (non-members) entropies and then applied to the forget-train examples; the
score is the fraction of forget examples predicted "member" (lower = more forgotten).
"""

from __future__ import annotations

import numpy as np

from .._errors import ShapeError

__all__ = [
    "accuracy_from_logits",
    "class_accuracy",
    "entropy",
    "max_confidence",
    "recovery",
    "unlearning_outcome",
    "add_outcomes",
    "audit_policy",
    "gap_to",
    "mia_entropy",
    "mia_ssd",
    "selectivity",
]


def _np(x) -> np.ndarray:
    return np.asarray(x)


def accuracy_from_logits(logits, labels) -> float:
    """Top-1 accuracy. ``logits`` (N, K), ``labels`` (N,) int. An empty set gives ``nan``."""
    logits, labels = _np(logits), _np(labels)
    if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
        raise ShapeError(f"accuracy_from_logits: logits (N, K) and labels (N,) expected, got "
                         f"{logits.shape} and {labels.shape}")
    if labels.shape[0] == 0:
        return float("nan")
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def class_accuracy(logits, labels, classes) -> float:
    """Top-1 accuracy restricted to the examples whose label is in ``classes`` (``nan`` if none)."""
    labels = _np(labels)
    sel = np.isin(labels, np.asarray(list(classes)))
    return accuracy_from_logits(_np(logits)[sel], labels[sel])


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def entropy(logits) -> np.ndarray:
    """Per-example entropy (nats) of softmax(logits). (N, K) -> (N,) float64."""
    logits = _np(logits)
    if logits.ndim != 2:
        raise ShapeError(f"entropy: logits (N, K) expected, got {logits.shape}")
    lp = _log_softmax(logits)
    return -(np.exp(lp) * lp).sum(axis=-1)


def max_confidence(logits) -> np.ndarray:
    """Per-example max softmax probability. (N, K) -> (N,) float64."""
    return np.exp(_log_softmax(_np(logits)).max(axis=-1))


def recovery(compensated: float, mask_only: float, personalized: float, *, eps: float = 1e-3) -> float:
    """The paper's recovery (compensated − mask_only) / (personalized − mask_only).

    Guard: the ratio is only meaningful when masking actually hurt. If the drop
    ``personalized − mask_only`` is below ``eps`` (accuracy units; this includes a mask that
    *raised* accuracy) return ``nan`` — callers aggregate the finite values and report how many
    seeds were undefined. Pick ``eps`` at about the standard error of the accuracy estimate."""
    den = float(personalized) - float(mask_only)
    if not np.isfinite(den) or den < eps:
        return float("nan")
    return (float(compensated) - float(mask_only)) / den


#: a model "collapsed" when its other-class or whole-test accuracy falls below this share of the
#: personalized model's: its forget progress then measures destruction, not unlearning.
COLLAPSE_SHARE = 0.5
#: below this gap (accuracy units) between personalized and retrain forget accuracy, forget
#: progress is undefined (nan)
FORGET_GAP_EPS = 1e-3


def unlearning_outcome(model: dict, personalized: dict, mask_only: dict, retrain: dict | None = None, *,
                       eps: float = 1e-3) -> dict:
    """How an unlearned model did, from accuracy dicts (``personal_acc``, ``forget_acc``, and where
    measured ``other_acc`` / ``global_acc``) — the one definition every study uses:

    * ``recovery``: :func:`recovery` of the personal accuracy the mask cost (nan below ``eps``);
    * ``forget_progress``: (personalized − model)/(personalized − retrain) on forget accuracy (nan
      without a retrain model or below :data:`FORGET_GAP_EPS`);
    * ``gap_to_retrain`` (forget accuracy) and ``gap_to_retrain_personal``: |model − retrain|;
    * ``collapsed``: 1.0 when the other-class or global accuracy falls below :data:`COLLAPSE_SHARE`
      of the personalized model's (forgetting by collapse is not unlearning), else 0.0."""
    p = personalized
    out = {"recovery": recovery(model["personal_acc"], mask_only["personal_acc"], p["personal_acc"], eps=eps),
           "forget_progress": float("nan"),
           "collapsed": float(any(k in model and k in p and p[k] > 0 and model[k] < COLLAPSE_SHARE * p[k]
                                  for k in ("other_acc", "global_acc")))}
    if retrain is not None:
        out["gap_to_retrain"] = gap_to(model["forget_acc"], retrain["forget_acc"])
        out["gap_to_retrain_personal"] = gap_to(model["personal_acc"], retrain["personal_acc"])
        den = p["forget_acc"] - retrain["forget_acc"]
        if abs(den) > FORGET_GAP_EPS:
            out["forget_progress"] = (p["forget_acc"] - model["forget_acc"]) / den
    return out


def add_outcomes(results: dict, *, eps: float = 1e-3) -> dict:
    """:func:`unlearning_outcome` of every model in ``results`` ({name: accuracy dict} holding
    ``personalized``, ``mask_only`` and optionally ``retrain``), added to its dict (in place)."""
    pers, mo, rt = results["personalized"], results["mask_only"], results.get("retrain")
    for r in results.values():
        r.update(unlearning_outcome(r, pers, mo, rt, eps=eps))
    return results


def gap_to(value: float, reference: float) -> float:
    """Absolute gap |value − reference| (e.g. a method's forget accuracy vs. retrain's)."""
    return abs(float(value) - float(reference))


def _balanced(a: np.ndarray, b: np.ndarray, rng: np.random.Generator):
    n = min(len(a), len(b))
    return rng.permutation(a)[:n], rng.permutation(b)[:n]


def mia_entropy(member_logits, nonmember_logits, *, folds: int = 5, seed: int = 0) -> dict:
    """Entropy membership-inference attack (see module docstring).

    member_logits (Nm, K): the model's logits on forget-set examples it was trained on;
    nonmember_logits (Nn, K): on held-out forget-class examples. Classes are balanced by
    subsampling to min(Nm, Nn) each. Returns ``{"acc": mean CV accuracy, "auc": mean CV ROC AUC,
    "n": examples per side}``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    em, en = _balanced(entropy(member_logits), entropy(nonmember_logits), rng)
    n = len(em)
    if n < folds:
        raise ShapeError(f"mia_entropy: need at least {folds} examples per side, got {n}")
    x = np.concatenate([em, en])[:, None]
    y = np.concatenate([np.ones(n), np.zeros(n)]).astype(int)
    accs, aucs = [], []
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for tr, te in skf.split(x, y):
        # Standardize with train-fold statistics (entropies can be ~1e-6 after training).
        mu, sd = x[tr].mean(), x[tr].std() + 1e-12
        clf = LogisticRegression().fit((x[tr] - mu) / sd, y[tr])
        xt = (x[te] - mu) / sd
        accs.append(clf.score(xt, y[te]))
        aucs.append(roc_auc_score(y[te], clf.decision_function(xt)))
    return {"acc": float(np.mean(accs)), "auc": float(np.mean(aucs)), "n": int(n)}


def mia_ssd(retain_logits, test_logits, forget_logits, *, seed: int = 0) -> float:
    """SSD's variant: fit the entropy attack on retain-train (member) vs. test (non-member),
    return the fraction of forget examples it predicts "member"."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    er, et = _balanced(entropy(retain_logits), entropy(test_logits), rng)
    x = np.concatenate([er, et])[:, None]
    y = np.concatenate([np.ones(len(er)), np.zeros(len(et))]).astype(int)
    mu, sd = x.mean(), x.std() + 1e-12
    clf = LogisticRegression().fit((x - mu) / sd, y)
    ef = entropy(forget_logits)[:, None]
    return float(np.mean(clf.predict((ef - mu) / sd)))



def audit_policy(forget_accs, honest: str, attacks, thresholds) -> list[dict]:
    """What a provider's forget audit (:mod:`zkapex_jax.protocol.audit`) would do on a study's
    certified models. ``forget_accs``: one ``{model: forget accuracy}`` per seed; ``honest``: the
    honest certified model's name; ``attacks``: the attackers' certified models. Per threshold τ:
    how many seeds' honest models pass (forget accuracy ≤ τ), how many of each attack's pass, and
    the highest forget accuracy among attacks that pass (nan if none). Under VALID and the audit no
    deployed model exceeds τ, whatever the attacker committed; this table says what τ costs the
    honest client (false rejections) and which measured attacks it refuses."""
    attacks = list(attacks)
    seeds = list(forget_accs)
    if not seeds:
        raise ValueError("audit_policy: no seeds")
    for i, row in enumerate(seeds):
        missing = [m for m in (honest, *attacks) if m not in row]
        if missing:
            raise KeyError(f"audit_policy: seed {i} lacks {missing}")
    out = []
    for tau in thresholds:
        tau = float(tau)
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"audit_policy: threshold {tau} is not in [0, 1]")
        passed = [float(r[a]) for r in seeds for a in attacks if float(r[a]) <= tau]
        out.append({
            "max_forget_accuracy": tau,
            "n_seeds": len(seeds),
            "honest_passed": int(sum(float(r[honest]) <= tau for r in seeds)),
            "attacks_passed": {a: int(sum(float(r[a]) <= tau for r in seeds)) for a in attacks},
            "best_attack_passed": max(passed) if passed else float("nan"),
        })
    return out


def selectivity(client_fisher, forget_fisher, mask, *, damping: float, energy: float = 0.999,
                chunk: int | None = None) -> dict:
    """Why Group-OBS does or does not keep the forgetting, from the block Fishers (cheap, any
    family): the paper's premise is that the forget set uses directions the client's data does
    not excite.

    Args:
      client_fisher: ``(nb, B, B)`` the client's block Fisher at θp (with ``damping`` on the
        diagonal, as committed).
      forget_fisher: ``(nb, B, B)`` the forget set's undamped block Fisher (at θp or θ_global).
      mask: ``(nb, B)`` bool.
      damping: the damping in ``client_fisher`` (subtracted before the spectra are read): a
        float, or ``(nb,)`` per block.
      energy: the share of the client's curvature that defines its subspace.
      chunk: masked blocks read at a time (default: ~2^24 entries; large blocks do not fit whole
        in float64).

    Returns (floats, over the blocks with a masked weight):
      ``subspace_overlap``: ``tr(P F_f) / tr(F_f)``, the share of the forget curvature inside the
        client's top eigen-subspace ``P`` holding ``energy`` of the client's curvature (1 = the
        forget set lives where the client's data does: compensation will rebuild it);
      ``client_rank``: mean size of that subspace; ``client_rank_10x``: mean number of client
        eigenvalues above 10× the damping;
      ``fisher_ratio_at_mask``: mean over masked weights of ``C_ii / F_f,ii`` (client vs forget
        curvature of the weights removed; small = the mask is selective for the forget set);
      ``masked_forget_share``: share of the forget curvature (trace) on the masked weights.
    """
    m = np.asarray(mask, bool)
    c_shape, f_shape = tuple(np.shape(client_fisher)), tuple(np.shape(forget_fisher))
    if len(c_shape) != 3 or c_shape != f_shape or m.shape != c_shape[:2]:
        raise ShapeError(f"client_fisher, forget_fisher (nb, B, B) and mask (nb, B) must agree, got "
                         f"{c_shape}, {f_shape}, {m.shape}")
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return {k: float("nan") for k in ("subspace_overlap", "client_rank", "client_rank_10x",
                                          "fisher_ratio_at_mask", "masked_forget_share")}
    b = c_shape[1]
    damp_all = np.broadcast_to(np.asarray(damping, np.float64), (c_shape[0],))
    # the masked blocks in chunks of ~2^24 entries: float64 copies of a whole (nb, B, B) curvature
    # would not fit for large blocks (B = 768: 7 GB each)
    step = max(1, int(chunk) if chunk is not None else 2**24 // (b * b))
    inside = tr_ok = df_masked = df_total = 0.0
    ks, rank10, ratios = [], [], []
    for lo in range(0, rows.size, step):
        r = rows[lo:lo + step]
        damp = damp_all[r]
        cc = np.asarray(client_fisher[r], np.float64) - damp[:, None, None] * np.eye(b)
        ff = np.asarray(forget_fisher[r], np.float64)
        w, v = np.linalg.eigh(0.5 * (cc + np.swapaxes(cc, 1, 2)))  # ascending
        w = np.clip(w, 0.0, None)[:, ::-1]
        v = v[:, :, ::-1]
        cum = np.cumsum(w, axis=1) / np.maximum(w.sum(axis=1, keepdims=True), 1e-300)
        k = np.minimum((cum < energy).sum(axis=1) + 1, b)  # eigenvectors needed for `energy`
        keep = np.arange(b)[None, :] < k[:, None]
        proj = np.einsum("nik,njk,nk->nij", v, v, keep.astype(np.float64))
        tr_f = np.trace(ff, axis1=1, axis2=2)
        ins = np.einsum("nij,nji->n", proj, ff)
        ok = tr_f > 0
        inside += float(ins[ok].sum())
        tr_ok += float(tr_f[ok].sum())
        dc, df = np.diagonal(cc, axis1=1, axis2=2), np.diagonal(ff, axis1=1, axis2=2)
        mm = m[r]
        ratios.append(dc[mm] / np.maximum(df[mm], 1e-300))
        ks.append(k)
        rank10.append((w > 10.0 * damp[:, None]).sum(axis=1))
        df_masked += float(np.where(mm, df, 0.0).sum())
        df_total += float(df.sum())
    return {
        "subspace_overlap": inside / tr_ok if tr_ok > 0 else float("nan"),
        "client_rank": float(np.concatenate(ks).mean()),
        "client_rank_10x": float(np.concatenate(rank10).mean()),
        "fisher_ratio_at_mask": float(np.median(np.concatenate(ratios))),
        "masked_forget_share": df_masked / max(df_total, 1e-300),
    }


def max_move_ratio(theta_p_blocks, theta_u_blocks, mask_blocks) -> float:
    """The largest move of a kept weight relative to its block's removed weights,
    ``max_b max_{i∉S} |θu_i − θp_i| / Σ_{j∈S} |θp_j|`` over the blocks with a masked weight (the
    compensation bound ρ of docs/PROOFS.md). Inputs ``(nb, B)``; mask bool."""
    tp, tu = np.asarray(theta_p_blocks, np.float64), np.asarray(theta_u_blocks, np.float64)
    mb = np.asarray(mask_blocks, bool)
    rows = np.flatnonzero(mb.any(axis=1))
    removed = np.sum(np.abs(tp) * mb, axis=1)[rows]
    return float(np.max(np.max(np.abs(tu - tp)[rows] * ~mb[rows], axis=1) / removed))
