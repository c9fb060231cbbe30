"""circuits/: the ONNX relation against an exact integer oracle, ezkl witness outputs, commitments."""

import json
import os

import numpy as np
import pytest

from zkapex_jax import quant
from zkapex_jax.protocol._circuits import relation, stages

K, B = 2, 4


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    old = os.environ.get("ZKAPEX_CACHE")
    os.environ["ZKAPEX_CACHE"] = str(tmp_path_factory.mktemp("zkcache"))
    try:
        yield stages.ensure_circuit(relation.CircuitSpec(block_size=B, chunk_blocks=K))
    finally:
        if old is None:
            os.environ.pop("ZKAPEX_CACHE", None)
        else:
            os.environ["ZKAPEX_CACHE"] = old


def _honest(rng, spec):
    g = rng.normal(size=(K, 3 * B, B))
    c = np.einsum("kni,knj->kij", g, g) / (3 * B) + 1e-3 * np.eye(B)
    theta = rng.normal(size=(K, B)) * 0.05
    mask = np.array([[1, 0, 1, 0], [0, 1, 0, 0]], dtype=bool)
    s_t = quant.theta_exponent(theta)
    tq = quant.quantize_theta(theta, s_t)
    cq = quant.quantize_fisher(c, quant.fisher_block_exponents(c), spec.s_c)
    w = quant.quantize_unlearning(tq, cq, mask, spec.s_c)
    return tq, cq, w.theta_u, w.lam, mask


def _inputs(spec, tq, cq, tu, lam, mask, ctx=None, blind=None):
    R = spec.n_blind
    bl = blind if blind is not None else list(range(1, R + 1))
    ctx = ctx if ctx is not None else list(range(spec.n_ctx))
    return [tq.ravel().tolist() + bl, cq.ravel().tolist() + bl, tu.ravel().tolist() + bl,
            lam.ravel().tolist() + bl, ctx + mask.astype(np.int64).ravel().tolist()]


def _witness_outputs(art, inputs, tmp_path):
    import ezkl

    (tmp_path / "in.json").write_text(json.dumps({"input_data": [[float(x) for x in v] for v in inputs]}))
    w = ezkl.gen_witness(str(tmp_path / "in.json"), str(art.compiled), str(tmp_path / "w.json"),
                         vk_path=str(art.vk), srs_path=str(art.srs))
    return [stages.felt_to_int(x) for col in w["outputs"] for x in col], w


def test_spec_roundtrip_and_validation():
    s = relation.CircuitSpec(block_size=16, chunk_blocks=8)
    assert s.s_c == quant.default_fisher_exponent(16) and s.tau == quant.tau(16, s.s_c)
    assert relation.CircuitSpec.from_dict(s.to_dict()) == s and s.key.startswith("K8_B16_")
    assert relation.CircuitSpec(block_size=16, chunk_blocks=4).key != s.key
    with pytest.raises(ValueError, match="s_c"):
        relation.CircuitSpec(block_size=16, chunk_blocks=1, s_c=30)
    with pytest.raises(ValueError, match="block_size"):
        relation.CircuitSpec(block_size=0, chunk_blocks=1)


def test_onnx_graph_matches_oracle():
    from onnx.reference import ReferenceEvaluator

    spec = relation.CircuitSpec(block_size=B, chunk_blocks=K, s_c=3)  # small scale: exact in float32
    sess = ReferenceEvaluator(relation.build_relation(spec))
    rng = np.random.default_rng(0)
    for _ in range(5):
        tp, tu, lam = (rng.integers(-20, 20, size=(K, B)) for _ in range(3))
        c = rng.integers(-8, 8, size=(K, B, B))
        m = rng.random((K, B)) < 0.5
        ins = _inputs(spec, tp, c, tu, lam, m)
        feeds = dict(zip(stages.COMMITTED_INPUTS, (np.asarray(v, dtype=np.float32)[None] for v in ins)))
        pub, checks = sess.run(None, feeds)
        assert np.array_equal(pub[0], np.asarray(ins[4], dtype=np.float32))
        assert [int(x) for x in checks] == [int(x) for x in relation.relation_reference(spec, tp, c, tu, lam, m)]


def test_ezkl_witness_matches_oracle(art, tmp_path):
    spec = art.spec
    rng = np.random.default_rng(1)
    tq, cq, tu, lam, mask = _honest(rng, spec)
    outs, _ = _witness_outputs(art, _inputs(spec, tq, cq, tu, lam, mask), tmp_path)
    n_pub = spec.n_ctx + K * B
    assert outs[:n_pub] == list(range(spec.n_ctx)) + mask.astype(int).ravel().tolist()
    assert outs[n_pub:] == [0] * relation.N_CHECKS
    # dishonest variants: each check fires, with the oracle's exact value
    bad_tu = tu.copy()
    bad_tu[mask] = tq[mask]
    bad_lam = lam.copy()
    bad_lam[~mask] = 3
    bad_res = tu.copy()
    i = int(np.flatnonzero(~mask[1])[0])
    bad_res[1, i] += int(np.ceil(3 * spec.tau / max(1, abs(int(cq[1, i, i])))))
    small_c = cq // 4  # a Fisher shrunk at commitment time (to make τ vacuous)
    for tu_, lam_, c_, which in ((bad_tu, lam, cq, 0), (tu, bad_lam, cq, 1), (bad_res, lam, cq, 2),
                                 (tu, lam, small_c, 3)):
        ref = relation.relation_reference(spec, tq, c_, tu_, lam_, mask)
        try:
            outs, _ = _witness_outputs(art, _inputs(spec, tq, c_, tu_, lam_, mask), tmp_path)
        except RuntimeError:  # a value outside ezkl's range: no witness at all (also a rejection)
            assert max(abs(int(x)) for x in ref) > spec.input_bound
            continue
        assert outs[n_pub:] == [int(x) for x in ref] and outs[n_pub + which] != 0


def test_block_without_mask_must_stay(art, tmp_path):
    """A block with no masked weight: a 1-unit change of θu passes τ but not the δ = 0 check."""
    spec = art.spec
    rng = np.random.default_rng(5)
    tq, cq, _, _, mask = _honest(rng, spec)
    mask[1] = False
    w = quant.quantize_unlearning(tq, cq, mask, spec.s_c)
    assert np.all(w.delta[1] == 0)
    tu = w.theta_u.copy()
    tu[1, 2] += 1
    ref = relation.relation_reference(spec, tq, cq, tu, w.lam, mask)
    outs, _ = _witness_outputs(art, _inputs(spec, tq, cq, tu, w.lam, mask), tmp_path)
    n_pub = spec.n_ctx + K * B
    assert outs[n_pub:] == [int(x) for x in ref] == [0, 0, 0, 0, 1]


def test_residual_out_of_range_cannot_be_witnessed(art, tmp_path):
    spec = art.spec
    rng = np.random.default_rng(2)
    tq, cq, tu, lam, mask = _honest(rng, spec)
    tu = tu.copy()
    tu[~mask] += 2 ** 20  # residual ≫ 2^24
    with pytest.raises(stages.EzklError, match="gen_witness"):
        stages.prove_chunk(art, _inputs(spec, tq, cq, tu, lam, mask), tmp_path / "p.json")
    assert not (tmp_path / "p.json").exists()
    with pytest.raises(ValueError, match="outside"):
        stages.prove_chunk(art, _inputs(spec, tq + 2 ** 24, cq, tu, lam, mask), tmp_path / "p.json")


def test_commitments_bind_and_hide(art, tmp_path):
    spec = art.spec
    rng = np.random.default_rng(3)
    tq, cq, tu, lam, mask = _honest(rng, spec)
    ins = _inputs(spec, tq, cq, tu, lam, mask)
    _, w = _witness_outputs(art, ins, tmp_path)
    coms = [stages.commit_columns(art, v) for v in ins]
    # the witness' (and so the proof's) commitments are exactly kzg_commit of each full column
    for c, wc in zip(coms, w["processed_inputs"]["polycommit"]):
        assert len(wc) == 1 and c == stages.point_hex(wc[0])
    # unused blinders are committed: changing one changes the commitment (hiding), values too (binding)
    blind2 = ins[0][:-1] + [ins[0][-1] + 1]
    assert stages.commit_columns(art, blind2) != coms[0]
    vals2 = [ins[0][0] + 1] + ins[0][1:]
    assert stages.commit_columns(art, vals2) != coms[0]


def test_prove_verify_and_tampered_instances(art, tmp_path):
    spec = art.spec
    rng = np.random.default_rng(4)
    tq, cq, tu, lam, mask = _honest(rng, spec)
    ins = _inputs(spec, tq, cq, tu, lam, mask)
    stages.prove_chunk(art, ins, tmp_path / "p.json")
    assert stages.verify_chunk(tmp_path / "p.json", art.settings, art.vk, art.srs)
    proof = json.loads((tmp_path / "p.json").read_text())
    inst, coms = stages.proof_public(proof)
    assert inst == ins[4] + [0] * relation.N_CHECKS
    assert coms == [stages.commit_columns(art, v) for v in ins]
    proof["instances"][0][spec.n_ctx] = stages.int_to_felt(1 - ins[4][spec.n_ctx])  # flip a mask bit
    (tmp_path / "q.json").write_text(json.dumps(proof))
    assert not stages.verify_chunk(tmp_path / "q.json", art.settings, art.vk, art.srs)


def test_keys_are_derived_deterministically(art, tmp_path):
    """Two parties compiling the public spec independently get the same vk (the provider never
    needs the client's keys)."""
    other = stages.ensure_circuit(art.spec, root=tmp_path / "other")
    assert other.meta["vk_sha256"] == art.meta["vk_sha256"]
    assert other.meta["settings_sha256"] == art.meta["settings_sha256"]
