"""The certified forget-aware request (relation v6): protected weights T that the compensation
may not move, against exact oracles — the mask artifact, the provider's choice of T, the honest
witness (exact rational Group-OBS with δ[T] = 0) and the relation's integer oracle. The proofs
(and forgeries of them) are in tests/test_adversarial.py."""

import numpy as np
import pytest

from zkapex_jax import ArtifactError, ShapeError
from zkapex_jax.core import quant
from zkapex_jax.core.blocks import BlockLayout
from zkapex_jax.core.mask import MASKED, PROTECTED, Mask, protect_top
from zkapex_jax.protocol._circuits import relation
from zkapex_jax.protocol.statement import mask_digest, plan_proofs, request_codes

from conftest import empirical_fisher


def _mask():
    dense = {"a/kernel": np.zeros((4, 8), bool), "b/kernel": np.zeros((8, 2), bool)}
    dense["a/kernel"][0, [1, 5]] = True
    dense["b/kernel"][3, 1] = True
    return Mask.from_dense(dense, fraction=0.1, method="second_order_neg", meta={"forget_classes": [5]})


def test_protected_mask_roundtrip_and_hash(tmp_path):
    m = _mask()
    prot = {"a/kernel": np.zeros((4, 8), bool)}
    prot["a/kernel"][0, 2] = True
    mp = m.with_protection(prot)
    assert mp.num_protected == 1 and mp.num_masked == m.num_masked
    assert mp.content_hash() != m.content_hash()
    assert "protect" not in m.content()                     # plain masks hash as before
    mp.save(tmp_path / "m.json")
    back = Mask.load(tmp_path / "m.json")
    assert back == mp and back.protect["a/kernel"].tolist() == [2]


def test_protected_weights_may_not_overlap_the_mask(tmp_path):
    m = _mask()
    prot = {"a/kernel": np.zeros((4, 8), bool)}
    prot["a/kernel"][0, 1] = True                           # a masked weight
    with pytest.raises(ShapeError, match="overlap"):
        m.with_protection(prot)
    with pytest.raises(ShapeError, match="outside"):
        m.with_protection({"c/kernel": np.ones((1,), bool)})
    # the same, written by hand into a file (re-hashed): refused on load
    import hashlib
    import json
    m.save(tmp_path / "m.json")
    doc = json.loads((tmp_path / "m.json").read_text())
    doc["protect"] = {"a/kernel": [1]}
    body = {k: v for k, v in doc.items() if k != "sha256"}
    doc["sha256"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    (tmp_path / "m.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="overlap"):
        Mask.load(tmp_path / "m.json")


@pytest.mark.parametrize("per_block", [0, 1, 3])
def test_protect_top_picks_the_highest_unmasked_scores_of_masked_blocks(per_block):
    rng = np.random.default_rng(per_block)
    m = _mask()
    layout = BlockLayout.from_params({p: np.zeros(s) for p, s in zip(m.paths, m.shapes)}, m.paths, 8, "out_in")
    scores = {p: rng.normal(size=s) for p, s in zip(m.paths, m.shapes)}
    mp = protect_top(m, scores, layout, per_block)
    codes = mp.request_blocks(layout)
    mb = np.asarray(m.to_blocks(layout))
    sb = np.asarray(layout.to_blocks(scores), np.float64)
    for b in range(layout.num_blocks):
        got = set(np.flatnonzero(codes[b] == PROTECTED))
        if not mb[b].any():
            assert not got
            continue
        free = [i for i in np.argsort(-sb[b]) if not mb[b, i]]
        assert got == set(free[:per_block])
        assert set(np.flatnonzero(codes[b] == MASKED)) == set(np.flatnonzero(mb[b]))


def test_request_codes_and_digest():
    m = np.zeros((3, 4), bool)
    m[0, 1] = True
    codes = m.astype(np.int8)
    assert mask_digest(m) == mask_digest(codes)             # a bool mask is the code-1 request
    codes2 = codes.copy()
    codes2[0, 2] = PROTECTED
    assert mask_digest(codes2) != mask_digest(codes)
    with pytest.raises(ValueError, match="codes"):
        request_codes(np.full((3, 4), 3))
    cs = relation.CommitSpec(block_size=4, logrows=13)
    (spec, blocks), = plan_proofs(codes2, cs)
    assert blocks == [0] and spec.kmax >= 2 and spec.protected   # two slots: the masked and the protected weight
    codes2[1, 0] = PROTECTED                                # a block with protection but no mask: not proven
    assert [b for _, bl in plan_proofs(codes2, cs) for b in bl] == [0]
    codes2[2, 3] = MASKED                                   # a plain block: the plain circuit, planned first
    plan = plan_proofs(codes2, cs)
    assert [(s.protected, bl) for s, bl in plan] == [(False, [2]), (True, [0])]
    assert relation.CircuitSpec.from_dict(plan[1][0].to_dict()) == plan[1][0] and plan[1][0].key.count("_T") == 1


@pytest.mark.parametrize("seed", range(4))
def test_protected_witness_is_exact_constrained_group_obs(seed):
    """certify_block with T: θ̂u[S] = 0, θ̂u[T] = θ̂p[T] exactly, every other weight within half a
    unit (plus the float solve's slack) of the exact rational optimum with δ[T] = 0, and the
    relation's integer oracle accepts it."""
    rng = np.random.default_rng(seed)
    B = 8
    fisher = empirical_fisher(rng, 1, B, 12, 1e-3)
    A = quant.inverse_fisher(fisher)
    cs = relation.CommitSpec(block_size=B, logrows=13)
    tp = rng.integers(-2000, 2000, size=B)
    aq = quant.quantize_inverse(A, quant.inverse_block_exponents(A, cs.a_bits), cs.a_bits)[0]
    S, T = np.array([1, 4]), np.array([2, 6])
    spec = relation.CircuitSpec(cs, kmax=4, protected=True)
    w = quant.certify_block(tp, aq, S, spec, protected=T)
    assert list(w.positions) == [1, 2, 4, 6] and list(w.removed) == [1, 4]
    assert np.all(w.theta_u[S] == 0) and np.all(w.theta_u[T] == tp[T])
    exact = quant.exact_update(tp, aq, S, spec.bounds.h, protected=T)
    assert max(abs(float(e) - int(u)) for e, u in zip(exact, w.theta_u)) <= 0.5 + 1e-9
    plain = quant.exact_update(tp, aq, S, spec.bounds.h)
    assert max(abs(float(x) - float(y)) for x, y in zip(exact, plain)) > 0.5   # the constraint bites
    mask_row = np.zeros(B, np.int64)
    mask_row[S], mask_row[T] = MASKED, PROTECTED
    ref = relation.relation_reference(spec, tp[None], w.theta_u[None], aq[:, w.idx][None] * w.q, [w.mu],
                                      w.ycert[None], mask_row[None], w.idx[None], w.q[None])
    assert ref["ok"], ref


def test_relation_oracle_refuses_a_moved_protected_weight_and_a_plain_witness():
    """One unit on a protected weight makes the public zeros non-zero; the plain Group-OBS witness
    (μ on S only) presented as the protected one breaks the tight residual on T."""
    rng = np.random.default_rng(11)
    B = 8
    A = quant.inverse_fisher(empirical_fisher(rng, 1, B, 12, 1e-3))
    cs = relation.CommitSpec(block_size=B, logrows=13)
    aq = quant.quantize_inverse(A, quant.inverse_block_exponents(A, cs.a_bits), cs.a_bits)[0]
    tp = rng.integers(-2000, 2000, size=B)
    S, T = np.array([3]), np.array([0, 5])
    spec = relation.CircuitSpec(cs, kmax=4, protected=True)
    w = quant.certify_block(tp, aq, S, spec, protected=T)
    row = np.zeros(B, np.int64)
    row[S], row[T] = MASKED, PROTECTED

    def ref(tu, mu):
        return relation.relation_reference(spec, tp[None], tu[None], aq[:, w.idx][None] * w.q, [mu], w.ycert[None],
                                           row[None], w.idx[None], w.q[None])
    assert ref(w.theta_u, w.mu)["ok"]
    tu = w.theta_u.copy()
    tu[5] += 1
    bad = ref(tu, w.mu)
    assert not bad["ok"] and int(bad["zeros"][0, 5]) == 2   # 2·[T]·|δ|
    # the plain update, with θu[T] reset to θp[T]: the protected rows' residual is far off
    wp = quant.certify_block(tp, aq, S, relation.CircuitSpec(cs, kmax=1))
    tu = wp.theta_u.copy()
    tu[T] = tp[T]
    mu = [0] * 4
    mu[list(w.positions).index(3)] = wp.mu[0]
    bad = ref(tu, mu)
    assert not bad["ok"] and bad["residual"] >= 1


def test_float_protected_update_matches_the_certified_one():
    """client.unlearn with a protected mask (forget_aware_obs over the coordinate basis) is the
    update certify_block proves: equal to the exact rational optimum with δ[T] = 0 to float
    precision (in θ units), θu[T] = θp[T] and θu[S] = 0."""
    from zkapex_jax.protocol import client

    rng = np.random.default_rng(3)
    B, nb = 8, 3
    fisher = empirical_fisher(rng, nb, B, 12, 1e-3)
    params = {"k": {"kernel": rng.normal(size=(nb, B)) * 0.1}}
    layout = BlockLayout.from_params(params, ("k/kernel",), B, "out_in")
    dense = np.zeros((nb, B), bool)
    dense[0, [1, 4]] = True
    dense[2, 6] = True
    mask = Mask.from_dense({"k/kernel": dense}, fraction=0.1, method="x")
    prot = np.zeros((nb, B), bool)
    prot[0, [2, 7]] = True
    prot[2, 0] = True
    mp = mask.with_protection({"k/kernel": prot})
    theta_u, _ = client.unlearn(params, fisher, mp, layout)
    tb, ub = (np.asarray(layout.to_blocks({"k/kernel": x["k"]["kernel"]}), np.float64) for x in (params, theta_u))
    mb, pb = np.asarray(mp.to_blocks(layout)), np.asarray(mp.protected_blocks(layout))
    assert np.all(ub[mb] == 0) and np.allclose(ub[pb], tb[pb], atol=1e-6)
    A = np.linalg.inv(fisher)
    for b in (0, 2):
        scale = 2 ** 20
        exact = quant.exact_update(np.rint(tb[b] * scale).astype(np.int64), np.rint(A[b] * 2 ** 20).astype(np.int64),
                                   np.flatnonzero(mb[b]), 1, protected=np.flatnonzero(pb[b]))
        assert np.allclose(ub[b], np.array([float(x) for x in exact]) / scale, atol=1e-4 * np.abs(tb).max())
