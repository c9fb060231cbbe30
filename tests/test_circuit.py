"""circuits/: the ONNX relation against the exact oracle, ezkl's range checks at the witness level
(the attacker's route: edit the witness JSON after gen_witness, then prove), commitments, keys."""

import json

import numpy as np
import pytest

from zkapex_jax.core import quant
from zkapex_jax.protocol._circuits import relation, stages

B, KMAX, K = 4, 2, 2
P_FIELD = stages.FIELD_MODULUS
SQRT_M1 = pow(5, (P_FIELD - 1) // 4, P_FIELD)  # a square root of −1 mod p (p ≡ 1 mod 4)
assert SQRT_M1 * SQRT_M1 % P_FIELD == P_FIELD - 1


def _spec():
    return relation.CircuitSpec(relation.CommitSpec(block_size=B, logrows=11), kmax=KMAX, chunk_blocks=K)


@pytest.fixture(scope="module")
def art(zk_shared):
    return stages.ensure_circuit(_spec())


def honest_blocks(seed=0, spec=None):
    spec = spec or _spec()
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(K, 3 * B, B))
    C = np.einsum("kni,knj->kij", g, g) / (3 * B) + 1e-2 * np.eye(B)
    A = quant.inverse_fisher(C)
    Ah = quant.quantize_inverse(A, quant.inverse_block_exponents(A, 24), 24)
    th = rng.normal(size=(K, B)) * 0.05
    tq = quant.quantize_theta(th, quant.theta_exponent(th, 16))
    pos = [np.array([0, 2]), np.array([3])]
    out = []
    for j in range(K):
        w = quant.certify_block(tq[j], Ah[j], pos[j], spec)
        cols = np.zeros((B, KMAX), np.int64)
        cols[:, :len(pos[j])] = Ah[j][:, pos[j]]
        out.append(dict(theta_p=tq[j], theta_u=w.theta_u, cols=cols, mu=w.mu, ycert=w.ycert,
                        mask=np.isin(np.arange(B), pos[j]).astype(np.int64), idx=w.idx, q=w.q))
    return out


def fixed_blinders(name, j):
    return [11 + i for i in range(_spec().n_blind)]


def inputs_of(blocks, spec=None):
    spec = spec or _spec()
    return relation.assemble_inputs(spec, blocks, list(range(spec.n_ctx)), blinders=fixed_blinders)


def stack(blocks, key):
    return np.stack([np.asarray(b[key], dtype=object) for b in blocks])


def test_spec_roundtrip_and_validation():
    s = _spec()
    assert relation.CircuitSpec.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert s.key.startswith("B4_k2_K2_L11_") and s.commit.s == 60
    assert s.n_inputs == K * (2 + KMAX) + 3 == len(s.input_lengths()) == len(s.input_names())
    names = s.input_names()
    for j in range(K):
        assert names[s.input_index("theta_p", j)] == f"theta_p_{j}"
        assert names[s.input_index("theta_u", j)] == f"theta_u_{j}"
        assert [names[s.input_index("col", j, t)] for t in range(KMAX)] == [f"col_{j}_{t}" for t in range(KMAX)]
    with pytest.raises(IndexError):
        s.input_index("col", K, 0)
    for bad in (dict(block_size=0), dict(block_size=4, logrows=12, decomp_base=4096, decomp_legs=5),
                dict(block_size=4, logrows=0), dict(block_size=4, decomp_base=1000),
                dict(block_size=4, decomp_legs=7), dict(block_size=10000, logrows=13), dict(block_size=4, wrap=0),
                dict(block_size=4, wrap=relation.MAX_WRAP + 1), dict(block_size=4, wrap=True)):
        with pytest.raises(ValueError):
            relation.CommitSpec(**bad)
    with pytest.raises(ValueError):
        relation.CircuitSpec(relation.CommitSpec(block_size=4), kmax=5)
    with pytest.raises(ValueError, match="relation version"):
        relation.CommitSpec.from_dict({**s.commit.to_dict(), "relation_version": 3})
    # wrap = 1 leaves the spec's dict (and every key built from it) as it was; other values travel
    assert "wrap" not in s.commit.to_dict() and s.commit.max_rows == 2 ** 11 - 64
    w = relation.CommitSpec(block_size=4, logrows=11, wrap=3)
    assert relation.CommitSpec.from_dict(json.loads(json.dumps(w.to_dict()))) == w and w.max_rows == 3 * 2 ** 11 - 64
    assert relation.CircuitSpec(w, kmax=2, chunk_blocks=2).key != s.key


def _reference_eval(spec, inputs):
    """Evaluate the ONNX graph in float64 with onnx's reference evaluator, exposing every Abs
    argument (the values ezkl range-checks)."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    model = relation.build_relation(spec)
    g = model.graph
    names = [n.input[0] for n in g.node if n.op_type == "Abs"]
    for nm in names:
        g.output.append(onnx.helper.make_tensor_value_info(nm, onnx.TensorProto.DOUBLE, None))
    outs = ReferenceEvaluator(model).run(None, {n: np.array([v], dtype=np.float64)
                                                for n, v in zip(spec.input_names(), inputs)})
    return dict(zip([o.name for o in g.output], outs)), names


@pytest.mark.parametrize("seed", [0, 1])
def test_onnx_graph_matches_oracle(seed):
    spec = _spec()
    blocks = honest_blocks(seed)
    rng = np.random.default_rng(seed)
    if seed == 1:  # a dishonest witness: the graph and the oracle must agree on what fails
        blocks[0]["theta_u"] = blocks[0]["theta_u"] + rng.integers(-3, 4, size=B)
        blocks[1]["mu"] = [int(x) + 12345 for x in blocks[1]["mu"]]
    outs, names = _reference_eval(spec, inputs_of(blocks))
    ref = relation.relation_reference(spec, *[stack(blocks, k) for k in
                                              ("theta_p", "theta_u", "cols", "mu", "ycert", "mask", "idx", "q")])
    S = 2.0 ** spec.bounds.s
    got = [float(np.max(np.abs(outs[n]))) / S for n in names]  # graph order of the Abs nodes
    want = [float(ref[g]) for g in ("residual", "theta_p", "move", "delta", "columns", "mu", "ycert", "ycert_error")]
    np.testing.assert_allclose(got, want, rtol=1e-9)
    # integer counts evaluated in float64: equal to the exact oracle within half a unit
    np.testing.assert_allclose(outs["zeros"], np.asarray(ref["zeros"], dtype=np.float64), rtol=0, atol=0.5)
    assert ref["ok"] == (seed == 0)
    exact = [ref[g] for g in ("residual", "theta_p", "move", "delta", "columns", "mu", "ycert", "ycert_error")]
    assert (max(exact) < 1 and not np.any(outs["zeros"])) == (seed == 0)  # Fractions: the delta check sits near 1
    assert not np.any(outs["asym"]) and not any(int(x) for x in ref["asym"].ravel())   # symmetric Â: both seeds


def test_asymmetric_committed_sub_block_is_a_nonzero_public_output():
    """v7: the graph publishes Â[P,P] − Â[P,P]ᵀ; one entry of block 0's masked sub-block moved by
    3 units (row 2 of slot 0: Â[2,0] vs Â[0,2]) shows there, in the graph and in the oracle alike,
    and nowhere else (unused slots and padding stay 0)."""
    spec = _spec()
    blocks = honest_blocks(0)
    blocks[0]["cols"] = blocks[0]["cols"].copy()
    blocks[0]["cols"][2, 0] += 3
    outs, _ = _reference_eval(spec, inputs_of(blocks))
    ref = relation.relation_reference(spec, *[stack(blocks, k) for k in
                                              ("theta_p", "theta_u", "cols", "mu", "ycert", "mask", "idx", "q")])
    want = np.zeros((K, KMAX, KMAX))
    want[0, 1, 0], want[0, 0, 1] = 3, -3          # slot 1 holds weight 2: D0[1,0] = Â[2,0], D0[0,1] = Â[0,2]
    np.testing.assert_allclose(outs["asym"], want, rtol=0, atol=0.5)
    np.testing.assert_allclose(np.asarray(ref["asym"], dtype=np.float64), want, rtol=0, atol=0.5)  # exact integers
    assert not ref["ok"]


def _witness(art, inputs, tmp_path):
    import ezkl

    (tmp_path / "in.json").write_text(json.dumps({"input_data": [[float(x) for x in v] for v in inputs]}))
    ezkl.gen_witness(str(tmp_path / "in.json"), str(art.compiled), str(tmp_path / "w.json"),
                     vk_path=str(art.vk), srs_path=str(art.srs))
    return json.loads((tmp_path / "w.json").read_text())


def _prove_edited(art, w, tmp_path, edit):
    """Edit the witness JSON as an attacker would, then prove and verify. True iff accepted."""
    import ezkl

    w = json.loads(json.dumps(w))
    edit(w)
    p = tmp_path / "w_edit.json"
    p.write_text(json.dumps(w))
    try:
        ezkl.prove(str(p), str(art.compiled), str(art.pk), str(tmp_path / "pf.json"), srs_path=str(art.srs))
    except Exception:  # noqa: BLE001 — synthesis refuses
        return False
    return stages.verify_chunk(tmp_path / "pf.json", art.settings, art.vk, art.srs)


def test_honest_witness_outputs_zero_and_proves(art, tmp_path):
    inputs = inputs_of(honest_blocks())
    w = _witness(art, inputs, tmp_path)
    outs = [stages.felt_to_int(x) for col in w["outputs"] for x in col]
    spec = art.spec
    assert outs[:spec.public_length()] == inputs[-1]
    assert not any(outs[spec.public_length():])  # zeros and sink
    assert _prove_edited(art, w, tmp_path, lambda w: None)


def _input_slot(spec, name):
    return spec.input_names().index(name)


EDITS = {
    # name: (input, element, value) — each breaks exactly one range check of the relation
    "theta_p out of range": ("theta_p_0", 1, 2 ** 60),
    "theta_p a field element": ("theta_p_0", 1, SQRT_M1),
    "column entry ≥ 2^a": ("col_0_0", 1, 2 ** 24),
    "column entry a field element": ("col_1_0", 0, SQRT_M1),
    "mu a field element": ("mu", 0, SQRT_M1),
    "Y entry ≥ 2^y": ("ycert", 0, 2 ** 40),
    "free weight of theta_u moved by one unit": ("theta_u_0", 1, None),
    # v8 range-checks θ̂u only through δ̂ = θ̂u − θ̂p: a θ̂u that is not a small integer breaks that check
    "theta_u a field element": ("theta_u_0", 1, SQRT_M1),
    "theta_u out of range": ("theta_u_0", 1, 2 ** 60),
}


@pytest.mark.parametrize("case", list(EDITS))
def test_witness_edits_are_refused(art, tmp_path, case):
    """The attacker's route: edit a committed (polycommit, never range-checked by ezkl) input in
    the witness after gen_witness. Every check the soundness argument uses lives in the graph."""
    spec = art.spec
    blocks = honest_blocks()
    w = _witness(art, inputs_of(blocks), tmp_path)
    name, i, v = EDITS[case]
    slot = _input_slot(spec, name)
    if v is None:
        v = int(blocks[0]["theta_u"][i]) + 1

    def edit(w):
        w["inputs"][slot][i] = stages.int_to_felt(v)

    assert not _prove_edited(art, w, tmp_path, edit)


def test_witness_edit_of_a_blinder_still_proves(art, tmp_path):
    """Control: editing a value the relation does not read (a blinder) proves and verifies, so the
    refusals above come from the range checks, not from editing as such."""
    spec = art.spec
    w = _witness(art, inputs_of(honest_blocks()), tmp_path)
    slot = _input_slot(spec, "mu")

    def edit(w):
        w["inputs"][slot][-1] = stages.int_to_felt(SQRT_M1)  # last blinder of μ: any field element

    assert _prove_edited(art, w, tmp_path, edit)


def test_wrapped_circuit_proves_binds_its_commitments_and_refuses_edits(zk_shared, tmp_path):
    """Column wrapping (``CommitSpec.wrap``): the module's relation at logrows 9, where its rows
    span three sets of 2^9 (ezkl lays the excess out over more advice columns). The honest witness
    proves and verifies; the commitments embedded in the proof are the commit circuit's (a wrapped
    circuit reads the same short committed columns); the attacker's witness edits are refused;
    without ``wrap`` the same circuit does not fit and is refused before any key is built."""
    cs = relation.CommitSpec(block_size=B, logrows=9, wrap=4)
    spec = relation.CircuitSpec(cs, kmax=KMAX, chunk_blocks=K)
    assert 2 ** 9 < stages.circuit_rows(spec) <= cs.max_rows and stages.fits(spec)
    art = stages.ensure_circuit(spec)
    blocks = honest_blocks(spec=spec)
    inputs = inputs_of(blocks, spec)
    w = _witness(art, inputs, tmp_path)
    assert _prove_edited(art, w, tmp_path, lambda w: None)
    _, coms = stages.proof_public(json.loads((tmp_path / "pf.json").read_text()), spec.n_inputs)
    committed = list(range(K * (2 + KMAX)))
    from zkapex_jax.protocol.commitments import commit_circuit

    com_art = stages.ensure_circuit(commit_circuit(cs))
    assert stages.commit_vectors(com_art, [inputs[i] for i in committed]) == [coms[i] for i in committed]
    for case in ("free weight of theta_u moved by one unit", "column entry ≥ 2^a", "mu a field element"):
        name, i, v = EDITS[case]
        slot = _input_slot(spec, name)
        v = int(blocks[0]["theta_u"][i]) + 1 if v is None else v

        def edit(w, slot=slot, i=i, v=v):
            w["inputs"][slot][i] = stages.int_to_felt(v)

        assert not _prove_edited(art, w, tmp_path, edit), case
    flat = relation.CircuitSpec(relation.CommitSpec(block_size=B, logrows=9), kmax=KMAX, chunk_blocks=K)
    assert not stages.fits(flat)
    with pytest.raises(stages.EzklError, match="rows"):
        stages.ensure_circuit(flat, root=tmp_path / "keys")


@pytest.mark.parametrize("wrap", [1, 4])
def test_default_logrows_is_the_smallest_that_fits_the_slot_cap(zk_shared, wrap):
    """The commitment's default logrows: the k_cap-slot block fits ``wrap`` sets of its rows, one
    logrows less does not (each candidate with its own range decomposition); with wrapping the cap
    is every weight of a small block."""
    from zkapex_jax.protocol.statement import default_logrows

    lr = default_logrows(B, wrap=wrap)
    k_cap = B  # min(B, 32) with wrapping; max(4, B/2) ∧ B without (B = 4: 4 either way)
    fits = lambda L: stages.fits(relation.CircuitSpec(relation.CommitSpec(block_size=B, logrows=L, wrap=wrap),  # noqa: E731
                                                      kmax=k_cap, chunk_blocks=1))
    assert fits(lr) and not fits(lr - 1)
    if wrap > 1:
        assert lr < default_logrows(B)


def test_a_circuit_ezkl_cannot_lay_out_does_not_fit(tmp_path, monkeypatch):
    """gen_settings failing for a spec (e.g. "too many values to flush for this column size" at a
    small logrows) makes ``fits`` False — the plan then takes a smaller chunk — and ``circuit_rows``
    an EzklError naming the circuit; the failure is cached like a row count."""
    spec = relation.CircuitSpec(relation.CommitSpec(block_size=B, logrows=11, wrap=2), kmax=1, chunk_blocks=3)
    calls = []

    def refuse(*a, **kw):
        calls.append(a)
        raise RuntimeError("There are too many values to flush for this column size")

    monkeypatch.setattr(stages._ezkl(), "gen_settings", refuse)
    assert not stages.fits(spec, root=tmp_path)
    with pytest.raises(stages.EzklError, match=spec.key):
        stages.circuit_rows(spec, root=tmp_path)
    assert len(calls) == 1  # the second answer came from the cache


def test_range_decomposition_fits_the_circuit_and_keeps_s():
    for lr, base, legs in ((26, 4096, 5), (13, 4096, 5), (12, 1024, 6), (11, 1024, 6), (10, 64, 10), (7, 64, 10)):
        assert relation.range_decomposition(lr) == (base, legs)
        cs = relation.CommitSpec(block_size=4, logrows=lr)
        assert (cs.decomp_base, cs.decomp_legs, cs.s) == (base, legs, 60) and lr >= cs.logrows_min
        assert relation.CommitSpec.from_dict(cs.to_dict()) == cs
    explicit = relation.CommitSpec(block_size=4, logrows=13, decomp_base=1024, decomp_legs=6)
    assert explicit.decomp_base == 1024 and explicit != relation.CommitSpec(block_size=4, logrows=13)


@pytest.mark.parametrize("logrows", [pytest.param(13, marks=pytest.mark.slow), 11])
def test_range_bound_is_exactly_2_pow_s(tmp_path, logrows):
    """ezkl's Abs decomposition in the project's settings (base 4096 × 5 legs at logrows 13, 1024 ×
    6 at 11): 2^60 − 1 proves, 2^60 does not (values edited into the witness: f64 inputs cannot
    carry them). The default run checks the edge at logrows 11 (the adversarial suite's circuits);
    logrows 13's keys alone take ~14 s, so its case runs with the slow set (CI)."""
    import ezkl
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array([1], dtype=np.int64), "ax")]
    nodes = [helper.make_node("Abs", ["x"], ["a"]), helper.make_node("ReduceSum", ["a", "ax"], ["s"], keepdims=1),
             helper.make_node("Mul", ["s", "z"], ["out"])]
    g = helper.make_graph(nodes, "r", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, 2]),
                                       helper.make_tensor_value_info("z", TensorProto.DOUBLE, [1, 1])],
                          [helper.make_tensor_value_info("out", TensorProto.DOUBLE, [1, 1])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "r.onnx")
    spec = relation.CircuitSpec(relation.CommitSpec(block_size=B, logrows=logrows), kmax=1, chunk_blocks=1)
    ra = stages._run_args(spec, logrows)
    ezkl.gen_settings(str(tmp_path / "r.onnx"), str(tmp_path / "s.json"), py_run_args=ra)
    ezkl.compile_circuit(str(tmp_path / "r.onnx"), str(tmp_path / "c"), str(tmp_path / "s.json"))
    srs, _ = stages.ensure_srs(logrows)
    ezkl.setup(str(tmp_path / "c"), str(tmp_path / "vk"), str(tmp_path / "pk"), srs_path=str(srs))
    (tmp_path / "in.json").write_text(json.dumps({"input_data": [[1.0, 2.0], [0.0]]}))
    ezkl.gen_witness(str(tmp_path / "in.json"), str(tmp_path / "c"), str(tmp_path / "w.json"))
    w = json.loads((tmp_path / "w.json").read_text())

    class A:
        pass

    a = A()
    a.compiled, a.pk, a.srs, a.settings, a.vk = tmp_path / "c", tmp_path / "pk", srs, tmp_path / "s.json", tmp_path / "vk"
    for v, ok in ((2 ** 60 - 1, True), (-(2 ** 60 - 1), True), (2 ** 60, False), (-(2 ** 60), False)):
        def edit(w, v=v):
            w["inputs"][0][0] = stages.int_to_felt(v)
        assert _prove_edited(a, w, tmp_path, edit) is ok, v


def test_commitments_batch_single_and_proof_agree(art, tmp_path):
    spec = art.spec
    inputs = inputs_of(honest_blocks())
    proof = tmp_path / "p.json"
    stages.prove_chunk(art, inputs, proof)
    _, coms = stages.proof_public(json.loads(proof.read_text()), spec.n_inputs)
    committed = list(range(K * (2 + KMAX)))
    batch = stages.commit_vectors(art, [inputs[i] for i in committed], batch=3, backend="ezkl")
    assert batch == [coms[i] for i in committed]
    single = stages.commit_vectors(art, [inputs[0]], batch=1, backend="ezkl")
    assert single[0] == coms[0]
    # the native sparse MSM over the SRS's Lagrange points: the same commitments
    assert stages.commit_vectors(art, [inputs[i] for i in committed], backend="native") == batch
    # hiding: another blinder, another commitment; binding: one value changed, another commitment
    other = stages.commit_vectors(art, [inputs[0][:-1] + [inputs[0][-1] + 1], [inputs[0][0] + 1] + inputs[0][1:]])
    assert other[0] != coms[0] and other[1] != coms[0]


@pytest.mark.parametrize("seed", range(3))
def test_native_commitments_equal_ezkl_kzg_commit(art, seed):
    """Z + Σ v_i·L_i (circuits/native) against ezkl.kzg_commit: random signed values of every size
    the protocol commits (θ̂ < 2^15, Â < 2^24, 52-bit blinders), single non-zeros (each basis point),
    all zeros (Z itself), the extremes of int64, and vectors of different lengths in one call."""
    from circuits import native

    assert native.available()
    rng = np.random.default_rng(seed)
    vecs = [[int(x) for x in rng.integers(-2 ** 23, 2 ** 23, 16)] + [int(x) for x in rng.integers(-2 ** 51, 2 ** 51, 8)],
            [int(x) for x in rng.integers(-2 ** 14, 2 ** 14, 5)], [0] * 7, [0] * seed + [1], [0, -1],
            [2 ** 63 - 1, -(2 ** 63)], [int(rng.integers(-9, 9))] * 30,
            # long columns take Pippenger's buckets (windows of 4, 5 and 6 bits by their length),
            # with the 52-bit blinders on Straus' chain beside them; sparse and one-sign ones too
            [int(x) for x in rng.integers(-2 ** 23, 2 ** 23, 100)] + [int(x) for x in rng.integers(-2 ** 51, 2 ** 51, 8)],
            [int(x) for x in rng.integers(-2 ** 23, 2 ** 23, 300)], [int(x) for x in rng.integers(0, 2 ** 31, 600)],
            [int(x) * int(rng.random() < 0.1) for x in rng.integers(-2 ** 20, 2 ** 20, 700)],
            [int(x) for x in rng.integers(-2 ** 23, 2 ** 23, 1900)] + [-(2 ** 63), 2 ** 62, 1, 0, -5, 2 ** 32, -(2 ** 32), 7]]
    nat = stages.commit_vectors(art, vecs, backend="native")
    assert nat == stages.commit_vectors(art, vecs, backend="ezkl")
    assert stages.commit_vectors(art, vecs, backend="native", native_method="straus") == nat


def test_commitments_agree_across_circuits_of_one_logrows(art, tmp_path):
    """Column commitments depend on logrows only: the commit circuit's equal any bucket's."""
    other = stages.ensure_circuit(relation.CircuitSpec(art.spec.commit, kmax=1, chunk_blocks=1))
    v = [[3, -5, 7, 1] + fixed_blinders("x", 0), [0, 0, 0, 2 ** 40] + fixed_blinders("x", 0)]
    assert stages.commit_vectors(art, v) == stages.commit_vectors(other, v)


def test_keys_are_derived_deterministically(art, tmp_path):
    a2 = stages.ensure_circuit(art.spec, root=tmp_path / "other")
    assert a2.meta["vk_sha256"] == art.meta["vk_sha256"]
    assert a2.meta["settings_sha256"] == art.meta["settings_sha256"]


def _protected_blocks(seed):
    """Two blocks of the protected circuit: block 0 masks {0} and protects {2}; block 1 masks {3},
    protects {1}. Codes 1 / 2 in the mask row."""
    spec = relation.CircuitSpec(relation.CommitSpec(block_size=B, logrows=11), kmax=KMAX, chunk_blocks=K,
                                protected=True)
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(K, 3 * B, B))
    A = quant.inverse_fisher(np.einsum("kni,knj->kij", g, g) / (3 * B) + 1e-2 * np.eye(B))
    Ah = quant.quantize_inverse(A, quant.inverse_block_exponents(A, 24), 24)
    th = rng.normal(size=(K, B)) * 0.05
    tq = quant.quantize_theta(th, quant.theta_exponent(th, 16))
    out = []
    for j, (S, T) in enumerate([([0], [2]), ([3], [1])]):
        w = quant.certify_block(tq[j], Ah[j], np.array(S), spec, protected=np.array(T))
        cols = np.zeros((B, KMAX), np.int64)
        cols[:, :len(w.positions)] = Ah[j][:, w.positions]
        codes = np.zeros(B, np.int64)
        codes[S], codes[T] = 1, 2
        out.append(dict(theta_p=tq[j], theta_u=w.theta_u, cols=cols, mu=w.mu, ycert=w.ycert, mask=codes,
                        idx=w.idx, q=w.q))
    return spec, out


@pytest.mark.parametrize("edit", [None, "move_protected", "masked_nonzero"])
def test_protected_onnx_graph_matches_oracle(edit):
    """The protected variant of the graph (codes 0/1/2, [S] = m(2 − m), 2[T] = m² − m) against the
    exact oracle: honest witness accepted; one unit on a protected weight shows in the public zeros
    (2·|δ|) and breaks the tight protected-row residual; a masked weight left at 1 shows as |θ̂u|."""
    spec, blocks = _protected_blocks(5)
    if edit == "move_protected":
        blocks[0]["theta_u"] = blocks[0]["theta_u"].copy()
        blocks[0]["theta_u"][2] += 1
    elif edit == "masked_nonzero":
        blocks[1]["theta_u"] = blocks[1]["theta_u"].copy()
        blocks[1]["theta_u"][3] = 1
    outs, names = _reference_eval(spec, inputs_of(blocks, spec))
    ref = relation.relation_reference(spec, *[stack(blocks, k) for k in
                                              ("theta_p", "theta_u", "cols", "mu", "ycert", "mask", "idx", "q")])
    # integer counts evaluated in float64: equal to the exact oracle within half a unit
    np.testing.assert_allclose(outs["zeros"], np.asarray(ref["zeros"], dtype=np.float64), rtol=0, atol=0.5)
    S = 2.0 ** spec.bounds.s
    got = {n: float(np.max(np.abs(outs[n]))) / S for n in names}
    assert max(got.values()) < 1 or not ref["ok"]
    if edit == "move_protected":
        assert not ref["ok"] and outs["zeros"][0, 2] == 2 and ref["residual"] >= 1
    elif edit == "masked_nonzero":
        assert not ref["ok"] and outs["zeros"][1, 3] == 1 and outs["zeros"].sum() == 1
    else:
        assert ref["ok"] and not np.any(outs["zeros"]) and max(got.values()) < 1


def test_native_commitments_fall_back_on_an_unknown_srs_layout(art, tmp_path):
    """A parameter file in a layout the kernel does not read (here: truncated) is never read as
    points: ``srs_supported`` says no (so ``commit_vectors``' default backend uses ezkl) and the
    kernel itself refuses it."""
    from circuits import native

    bad = tmp_path / "k13.srs"
    bad.write_bytes(art.srs.read_bytes()[: 4 + 64 * 100])
    assert native.srs_supported(art.srs) and not native.srs_supported(bad)
    with pytest.raises(ValueError, match="not a raw halo2"):
        native.commit(bad, [[1, 2]], (1, 2))

