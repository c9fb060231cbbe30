"""The provider's forget audit (zkapex_jax.protocol.audit): what VALID cannot refuse — a steering
curvature committed before the mask — and what the audit of the deployed model does refuse.

The world: a linear softmax classifier over 4 features and 4 classes; the statement is its
kernel W (4 × 4), one block of 4 per input feature (the feature's weights to the 4 classes). The
provider asks to forget class 0 and masks W[:, 0]. Group-OBS moves each block's free weights by
δ_F = −A[F, S]·A[S, S]⁻¹·θ_S. A client that commits, before any mask, the curvature whose inverse
is A = εI + 11ᵀ (symmetric, positive definite, well conditioned) gets δ_F = −θ_S/(1 + ε): every
class logit drops by nearly what class 0's lost, the softmax is unchanged, and the forget class is
predicted as before — under a certificate that verifies, every move within the compensation bound.
"""

from __future__ import annotations

import numpy as np
import pytest

from zkapex_jax.core.blocks import BlockLayout
from zkapex_jax.core.mask import Mask
from zkapex_jax.protocol import KeyStore, api, audit_forgetting, load_commitment, save_commitment
from zkapex_jax.protocol.audit import wilson_interval
from zkapex_jax.protocol.binding import Opening

PATH = "dense/kernel"
B = 4
LOGROWS = 11
EPS = 0.05


def _model():
    rng = np.random.default_rng(3)
    w = 2.0 * np.eye(4) + 0.05 * rng.normal(size=(4, 4))  # feature i votes for class i
    return {"dense": {"kernel": w.astype(np.float32), "bias": np.zeros(4, np.float32)}}


def _forget_set(n=64, seed=4):
    """Class 0 examples: feature 0 on, feature 1 half on, noise."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 4))
    x[:, 0] = 1.0
    x[:, 1] = 0.6
    return x + 0.1 * rng.normal(size=x.shape), np.zeros(n, dtype=int)


def _accuracy(params, data):
    x, y = data
    logits = x @ np.asarray(params["dense"]["kernel"], np.float64) + np.asarray(params["dense"]["bias"])
    return float(np.mean(np.argmax(logits, -1) == y)), len(y)


def _mask():
    m = np.zeros((4, 4), dtype=bool)
    m[:, 0] = True                                         # class 0's weights, one per block
    return Mask.from_dense({PATH: m}, fraction=0.25, method="test", meta={"forget_classes": [0]})


def _curvature(layout, steer: bool):
    """The committed curvature C (commit inverts it): steering, C = (εI + 11ᵀ)⁻¹; honest, C ≈ I
    (a client whose curvature couples no classes)."""
    if steer:
        a = EPS * np.eye(B) + np.ones((B, B))
        c = np.linalg.inv(a)
    else:
        rng = np.random.default_rng(5)
        g = rng.normal(size=(B, 8)) * 0.05
        c = np.eye(B) + g @ g.T / 8
    return api.Curvature(np.repeat(c[None], layout.num_blocks, 0), layout, kind="designed" if steer else "honest",
                         damping=0.0)


@pytest.fixture(scope="module")
def steered(tmp_path_factory, zk_shared):
    root = tmp_path_factory.mktemp("audit")
    params = _model()
    layout = BlockLayout.from_params(params, PATH, B, order="in_out")     # block i = W[i, :]
    assert np.allclose(api.statement_blocks(params, layout), params["dense"]["kernel"])
    ks, provider = KeyStore(), KeyStore(zk_shared["provider"])
    cs = api.commit_spec(B, LOGROWS, keystore=ks)
    com, sec = api.commit(params, _curvature(layout, steer=True), cs, client_id="mallory", keystore=ks)  # before the mask
    com = save_commitment(root / "com.npz", com, sec, root / "sec.npz")
    mask = _mask()
    theta_u, u = api.unlearn(params, mask, com, sec, keystore=ks)
    bundle = api.prove(params, mask, com, sec, request_id="forget-0", out_dir=root / "bundle", unlearned=u,
                       keystore=ks, opening_out=root / "opening.npz")
    honest_com, honest_sec = api.commit(params, _curvature(layout, steer=False), cs, client_id="alice", keystore=ks)
    theta_h, _ = api.unlearn(params, mask, honest_com, honest_sec, keystore=ks)
    return dict(params=params, layout=layout, com=load_commitment(root / "com.npz"), mask=mask, theta_u=theta_u,
                theta_h=theta_h, bundle=bundle, opening=Opening.load(root / "opening.npz"), provider=provider)


def test_a_steering_curvature_is_valid_and_keeps_the_forget_class(steered):
    """The attack the protocol cannot refuse, measured: the certified update of the steering
    curvature predicts the forget class as the personalized model did, the honest update and
    mask-only do not — and the steered bundle verifies, its moves within the public bound."""
    w = steered
    data = _forget_set()
    masked = {"dense": {**w["params"]["dense"], "kernel": np.where(np.arange(4) == 0, 0.0, w["params"]["dense"]["kernel"]).astype(np.float32)}}
    acc = {name: _accuracy(p, data)[0] for name, p in
           (("personalized", w["params"]), ("mask_only", masked), ("honest", w["theta_h"]), ("steered", w["theta_u"]))}
    assert acc["personalized"] > 0.95 and acc["mask_only"] < 0.05 and acc["honest"] < 0.05, acc
    assert acc["steered"] > 0.95, acc                               # everything the mask removed, kept
    assert np.all(np.asarray(w["theta_u"]["dense"]["kernel"])[:, 0] == 0)  # θu[S] = 0 all the same
    res = api.verify(w["bundle"], w["com"], w["mask"], keystore=w["provider"], request_id="forget-0",
                     deployed=w["theta_u"], opening=w["opening"])
    assert res.valid, res.reason                                    # VALID: the certificate cannot see it
    assert res.details["certificate_valid"] and "forget_audit" not in res.details


def test_the_forget_audit_refuses_the_steered_model(steered):
    """With the provider's forget set and a policy (here 0.5: honest 0.0, steered 1.0), the same
    bundle and deployed model are REJECTED as not forgotten; the report keeps that the certificate
    itself verified. A policy above the steered accuracy passes it (the audit bounds, it does not
    detect intent)."""
    w = steered
    data = _forget_set()
    common = dict(keystore=w["provider"], request_id="forget-0", deployed=w["theta_u"], opening=w["opening"],
                  forget_accuracy=lambda p: _accuracy(p, data))
    res = api.verify(w["bundle"], w["com"], w["mask"], max_forget_accuracy=0.5, **common)
    assert not res.valid and res.reason.startswith("not forgotten") and "0.500" in res.reason
    audit = res.details["forget_audit"]
    assert res.details["certificate_valid"] and not audit["passed"] and audit["accuracy"] > 0.95 and audit["n"] == 64
    assert audit["ci95"][0] > 0.9
    ok = api.verify(w["bundle"], w["com"], w["mask"], max_forget_accuracy=1.0, **common)
    assert ok.valid and ok.details["forget_audit"]["passed"] and "forget audit" in ok.reason
    # report only: no policy, no verdict change
    rep = api.verify(w["bundle"], w["com"], w["mask"], **common)
    assert rep.valid and rep.details["forget_audit"]["max_accuracy"] is None
    # the honest update passes the same policy (evaluated directly: it is the model an honest client deploys)
    assert audit_forgetting(lambda p: _accuracy(p, data), w["theta_h"], max_accuracy=0.5).passed


def test_the_audit_runs_only_on_an_opened_deployed_model(steered):
    """No audit without the deployed model the bundle opens; a bundle that does not verify is not
    audited (its reason is the certificate's); bad policies and empty forget sets are clear errors."""
    w = steered
    data = _forget_set()
    fa = lambda p: _accuracy(p, data)  # noqa: E731
    with pytest.raises(ValueError, match="evaluates the deployed model"):
        api.verify(w["bundle"], w["com"], w["mask"], keystore=w["provider"], forget_accuracy=fa)
    with pytest.raises(ValueError, match="needs forget_accuracy"):
        api.verify(w["bundle"], w["com"], w["mask"], keystore=w["provider"], max_forget_accuracy=0.5)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        api.verify(w["bundle"], w["com"], w["mask"], keystore=w["provider"], deployed=w["theta_u"],
                   opening=w["opening"], forget_accuracy=fa, max_forget_accuracy=1.5)
    # the deployed model differs outside the statement: rejected by the certificate, never audited
    other = {"dense": {**w["theta_u"]["dense"], "bias": w["theta_u"]["dense"]["bias"] + np.float32(0.5)}}
    res = api.verify(w["bundle"], w["com"], w["mask"], keystore=w["provider"], deployed=other, opening=w["opening"],
                     forget_accuracy=fa, max_forget_accuracy=1.0)
    assert not res.valid and "outside the statement" in res.reason and "forget_audit" not in res.details
    assert not res.details.get("certificate_valid", False)
    with pytest.raises(ValueError, match="non-empty forget set"):
        audit_forgetting(lambda p: (float("nan"), 0), w["theta_u"])


@pytest.mark.parametrize("p,n", [(0.0, 10), (0.5, 64), (1.0, 200), (0.17, 300)])
def test_wilson_interval_against_its_formula(p, n):
    """The closed form, checked against a float64 root-finding of |p̂ − q| = z·sqrt(q(1 − q)/n)."""
    lo, hi = wilson_interval(p, n)
    z = 1.96
    qs = np.linspace(0, 1, 2_000_001)
    inside = qs[np.abs(p - qs) <= z * np.sqrt(qs * (1 - qs) / n)]
    assert abs(lo - inside.min()) < 1e-5 and abs(hi - inside.max()) < 1e-5
    assert lo <= p <= hi
