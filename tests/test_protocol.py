"""zkapex_jax.protocol: commitment → unlearn → prove → verify on a tiny statement; artifacts, plan."""

import json

import numpy as np
import pytest

from zkapex_jax import ArtifactError, MaskMismatchError
from zkapex_jax import protocol as P
from zkapex_jax.protocol import artifacts
from zkapex_jax.protocol.statement import bucket_sizes, plan_proofs

NB, B = 4, 4
LOGROWS = 11  # the smallest circuits the range decomposition allows (base 1024 × 6)


def tiny_problem(seed=0):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(NB, 3 * B, B))
    fisher = np.einsum("kni,knj->kij", g, g) / (3 * B) + 1e-2 * np.eye(B)
    fisher *= np.array([1.0, 1e-4, 30.0, 1.0])[:, None, None]  # blocks of very different magnitude
    theta_p = rng.normal(size=(NB, B)) * 0.05
    mask = np.zeros((NB, B), dtype=bool)
    mask[0, [0, 2]] = True
    mask[2, 1] = True
    mask[3, [0, 1, 3]] = True  # block 1 has no masked weight: not proven, Com(θu) = Com(θp)
    return theta_p, fisher, mask


@pytest.fixture(scope="module")
def setup(tmp_path_factory, zk_shared):
    root = tmp_path_factory.mktemp("proto")
    theta_p, fisher, mask = tiny_problem()
    cs = P.CommitSpec(block_size=B, logrows=LOGROWS)
    client_ks, provider_ks = P.KeyStore(), P.KeyStore(zk_shared["provider"])
    com, sec = P.commit_personalization(theta_p, fisher, cs, client_id="alice", keystore=client_ks)
    com = P.save_commitment(root / "com.npz", com, sec, root / "sec.npz")
    bundle = P.prove_unlearning(theta_p, fisher, mask, P.load_commitment(root / "com.npz"),
                                P.load_secrets(root / "sec.npz", com), request_id="req-1",
                                out_dir=root / "bundle", keystore=client_ks)
    yield dict(root=root, theta_p=theta_p, fisher=fisher, mask=mask, cs=cs, com=com, sec=sec,
               bundle=bundle, provider_ks=provider_ks, client_ks=client_ks)


def test_commitment_roundtrip(setup):
    com = P.load_commitment(setup["root"] / "com.npz")
    assert com.sha256 == setup["com"].sha256 and com.num_blocks == NB and com.client_id == "alice"
    assert com.com_columns.shape == (NB, B, 64) and com.srs_insecure
    sec = P.load_secrets(setup["root"] / "sec.npz", com)
    assert sec.blind_columns.shape == (NB, B, setup["cs"].n_blind)


def test_commitments_hide(setup, tmp_path):
    """Two commitments of the same θp and C differ (fresh blinders)."""
    com2, _ = P.commit_personalization(setup["theta_p"], setup["fisher"], setup["cs"], client_id="alice",
                                       keystore=setup["client_ks"])
    assert not np.array_equal(com2.com_theta_p, setup["com"].com_theta_p)
    assert not np.array_equal(com2.com_columns, setup["com"].com_columns)


def test_unlearned_model_is_the_certified_one(setup):
    u = P.unlearn_committed(setup["theta_p"], setup["fisher"], setup["mask"], setup["com"], setup["sec"],
                            keystore=setup["client_ks"])
    m = setup["mask"]
    assert np.all(u.theta_u[m] == 0) and np.array_equal(u.theta_u_q[1], u.theta_p_q[1])
    np.testing.assert_array_equal(u.theta_u, np.ldexp(u.theta_u_q.astype(float), -setup["com"].theta_exp))
    assert sorted(u.witnesses) == [0, 2, 3]
    # the certified model is the float Group-OBS update up to fixed-point rounding
    from zkapex_jax.core import quant
    A = quant.inverse_fisher(setup["fisher"])
    for b in (0, 2, 3):
        S = np.flatnonzero(m[b])
        tp = u.theta_p_q[b].astype(float)
        d = -A[b][:, S] @ np.linalg.solve(A[b][np.ix_(S, S)], tp[S])
        assert np.max(np.abs(u.theta_u_q[b] - (tp + d))) <= 1.0


def test_honest_bundle_verifies_with_provider_keys(setup):
    res = P.verify_bundle(setup["bundle"], setup["com"], setup["mask"], keystore=setup["provider_ks"],
                          client_id="alice", request_id="req-1")
    assert res.valid, res.reason
    assert res.insecure_srs and res.n_proofs == 3 and 1.0 < res.bound_units <= 1.25
    st = P.load_statement(setup["bundle"])
    assert st["com_theta_u"][1] == setup["com"].theta_p_hex(1)  # unmasked block: same commitment


def test_plan_is_canonical_and_buckets(setup):
    plan = plan_proofs(setup["mask"], setup["cs"], root=setup["client_ks"].root)
    assert [(s.kmax, b) for s, b in plan] == [(1, [2]), (2, [0]), (4, [3])]
    assert bucket_sizes(16) == [1, 2, 4, 8, 12, 16] and bucket_sizes(6) == [1, 2, 4, 6]
    assert bucket_sizes(576)[:9] == [1, 2, 4, 8, 12, 16, 24, 32, 48] and bucket_sizes(576)[-1] == 576
    assert plan_proofs(np.zeros((NB, B), bool), setup["cs"], root=setup["client_ks"].root) == []


def test_prepare_keys_keys_every_bucket_once_before_any_mask(setup, tmp_path, monkeypatch):
    """Keys depend on the spec and the SRS only: ``prepare_keys`` keys every bucket the plan can
    use (here kmax 1, 2, 4 for B = 4) in an empty store; the prover then finds them keyed and
    makes none (the bucket circuits' files untouched), and the bundle verifies."""
    from zkapex_jax.protocol import prover

    ks = P.KeyStore(tmp_path / "ks")
    specs = [s for s, _ in plan_proofs(setup["mask"], setup["cs"], root=ks.root)]
    assert not any(ks.is_keyed(s) for s in specs)
    arts = P.prepare_keys(setup["cs"], ks)
    assert sorted(a.spec.kmax for a in arts) == [1, 2, 4] and all(ks.is_keyed(s) for s in specs)
    stamp = {a.spec.key: a.vk.stat().st_mtime_ns for a in arts}
    assert [a.vk for a in P.prepare_keys(setup["cs"], ks)] == [a.vk for a in arts]   # cached: nothing rebuilt
    u = P.unlearn_committed(setup["theta_p"], setup["fisher"], setup["mask"], setup["com"], setup["sec"], keystore=ks)
    bundle = P.prove_witness(u, setup["com"], setup["sec"], request_id="req-k", out_dir=tmp_path / "b", keystore=ks)
    assert {a.spec.key: a.vk.stat().st_mtime_ns for a in arts} == stamp
    res = P.verify_bundle(bundle, setup["com"], setup["mask"], keystore=setup["provider_ks"], request_id="req-k")
    assert res.valid, res.reason
    monkeypatch.delenv("RAYON_NUM_THREADS", raising=False)   # each of N provers: the CPUs shared out
    monkeypatch.setattr(prover.os, "cpu_count", lambda: 16)
    assert (prover.worker_threads(2), prover.worker_threads(4), prover.worker_threads(32)) == ("8", "4", "1")
    monkeypatch.setenv("RAYON_NUM_THREADS", "3")   # the user's setting wins
    assert prover.worker_threads(2) == "3"


def test_a_block_no_bucket_holds_is_a_clear_error(setup):
    """A block with more masked weights than any circuit of the commitment holds stops the plan with
    the remedy, at the first bucket that does not fit (no larger one can); a bucket with no sound
    bounds at all (kmax = 576 at s = 60) is no circuit, not a crash (found by a B = 576 slice whose
    blocks held 25–32 masked weights at logrows 15 × 8)."""
    from zkapex_jax.protocol.statement import bucket_spec

    assert bucket_spec(P.CommitSpec(block_size=576, logrows=15, wrap=8), 576) is None
    cs = P.CommitSpec(block_size=B, logrows=LOGROWS)
    full = np.zeros((NB, B), bool)
    full[1] = True  # B = 4 masked of 4 fits; ask for a circuit that cannot exist at this logrows:
    tight = P.CommitSpec(block_size=576, logrows=11, wrap=1)
    wide = np.zeros((1, 576), bool)
    wide[0, :40] = True
    with pytest.raises(ValueError, match="40 masked .* no circuit with that many slots fits 1 × 2\\^11 rows; commit with a larger"):
        plan_proofs(wide, tight, root=setup["client_ks"].root)
    assert [s.kmax for s, _ in plan_proofs(full, cs, root=setup["client_ks"].root)] == [4]


def test_secrets_carry_the_committed_inverse(setup, tmp_path):
    """Â is computed once, at commit, and carried in the secrets: it is the quantized C⁻¹ of the
    committed columns, unlearning without the Fisher gives the identical certified model, and a
    secrets file whose Â was edited (re-hashed, as a careless tool or an attacker would) is refused
    before any proof (the opening check against the published column commitments)."""
    import dataclasses

    from zkapex_jax.protocol.commitments import quantize_personalization
    from zkapex_jax.protocol.prover import ProofError

    com, sec = setup["com"], setup["sec"]
    _, aq, _, _ = quantize_personalization(setup["theta_p"], setup["fisher"], setup["cs"], theta_exp=sec.theta_exp,
                                           inverse_exps=sec.inverse_exps)
    assert sec.inverse_q.dtype == np.int32
    np.testing.assert_array_equal(sec.inverse_q, aq)
    u0 = P.unlearn_committed(setup["theta_p"], setup["fisher"], setup["mask"], com, sec, keystore=setup["client_ks"])
    u1 = P.unlearn_committed(setup["theta_p"], None, setup["mask"], com, sec, keystore=setup["client_ks"])
    assert u0.theta_u_q.dtype.kind == u1.theta_u_q.dtype.kind == "i"  # fixed-point integers: exact by design
    np.testing.assert_array_equal(u0.theta_u_q, u1.theta_u_q)
    edited = sec.inverse_q.copy()
    edited[0, 1, 0] += 1                                     # block 0's masked column 0
    bad = dataclasses.replace(sec, inverse_q=edited)
    with pytest.raises(ProofError, match="do not open the published commitment"):
        P.prove_unlearning(setup["theta_p"], None, setup["mask"], com, bad, request_id="r", out_dir=tmp_path / "b",
                           keystore=setup["client_ks"])
    assert not (tmp_path / "b").exists()
    old = dataclasses.replace(sec, inverse_q=None)
    with pytest.raises(ValueError, match="no curvature"):
        P.unlearn_committed(setup["theta_p"], None, setup["mask"], com, old, keystore=setup["client_ks"])


def test_prove_refuses_existing_dir_and_bad_mask(setup):
    with pytest.raises(FileExistsError):
        P.prove_unlearning(setup["theta_p"], setup["fisher"], setup["mask"], setup["com"], setup["sec"],
                           request_id="r", out_dir=setup["bundle"], keystore=setup["client_ks"])
    with pytest.raises(MaskMismatchError):
        P.unlearn_committed(setup["theta_p"], setup["fisher"], setup["mask"][:, :2], setup["com"], setup["sec"])


def test_wrong_parameters_do_not_open_commitment(setup, tmp_path):
    with pytest.raises(P.ProofError, match="do not open"):
        P.prove_unlearning(setup["theta_p"] * 1.01, setup["fisher"], setup["mask"], setup["com"], setup["sec"],
                           request_id="r", out_dir=tmp_path / "b", keystore=setup["client_ks"])
    assert not (tmp_path / "b").exists() and not list(tmp_path.iterdir())


def test_prove_given_unlearned_model(setup, tmp_path):
    """`prove --unlearned`: the certified model proves; a model off by more than the bound, or with
    a masked weight left, fails with a clear message and writes nothing."""
    u = P.unlearn_committed(setup["theta_p"], setup["fisher"], setup["mask"], setup["com"], setup["sec"],
                            keystore=setup["client_ks"])
    unit = 2.0 ** -setup["com"].theta_exp
    bad = u.theta_u.copy()
    bad[0, 1] += 2 * unit
    with pytest.raises(P.ProofError, match="weight 1 of block 0 is off"):
        P.adopt_unlearned(u, bad, setup["com"])
    left = u.theta_u.copy()
    left[3, 0] = unit
    with pytest.raises(P.ProofError, match="masked weight 0 of block 3"):
        P.adopt_unlearned(u, left, setup["com"])
    moved = u.theta_u.copy()
    moved[1, 2] += unit
    with pytest.raises(P.ProofError, match="block 1 has no masked weight"):
        P.prove_unlearning(setup["theta_p"], setup["fisher"], setup["mask"], setup["com"], setup["sec"],
                           request_id="r", out_dir=tmp_path / "b", keystore=setup["client_ks"], theta_u=moved)
    assert not (tmp_path / "b").exists()
    ok = P.adopt_unlearned(u, u.theta_u, setup["com"])
    assert np.array_equal(ok.theta_u_q, u.theta_u_q)


def test_json_artifacts_validate(tmp_path):
    p = tmp_path / "a.json"
    d = artifacts.write_json_artifact(p, "zkapex.test", 1, {"x": 1})
    assert artifacts.read_json_artifact(p, "zkapex.test")["sha256"] == d
    doc = json.loads(p.read_text())
    doc["x"] = 2
    p.write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="hash"):
        artifacts.read_json_artifact(p, "zkapex.test")
    with pytest.raises(ArtifactError, match="format"):
        artifacts.write_json_artifact(p, "zkapex.other", 1, {"x": 1})
        artifacts.read_json_artifact(p, "zkapex.test")
    with pytest.raises(ArtifactError, match="not found"):
        artifacts.read_json_artifact(tmp_path / "missing.json", "zkapex.test")


def test_array_artifacts_validate(tmp_path):
    p = tmp_path / "a.npz"
    artifacts.save_arrays(p, "zkapex.test", 1, {"a": np.arange(3)}, {"m": 1})
    arrs, meta = artifacts.load_arrays(p, "zkapex.test")
    assert arrs["a"].tolist() == [0, 1, 2] and meta == {"m": 1}
    with np.load(p) as z:  # an array edited, header kept: the content hash no longer matches
        d = {k: z[k] for k in z.files}
    d["a"] = d["a"] + 1
    np.savez(p, **d)
    with pytest.raises(ArtifactError, match="hash"):
        artifacts.load_arrays(p, "zkapex.test")


def test_mask_digest_and_limbs():
    m = np.zeros((2, 4), bool)
    m2 = m.copy()
    m2[1, 3] = True
    assert P.mask_digest(m) != P.mask_digest(m2)
    core = {"a": 1}
    limbs = P.context_limbs(core, 0, 12)
    assert len(limbs) == 12 and all(0 <= x < 2 ** 21 for x in limbs)
    assert limbs != P.context_limbs(core, 1, 12)


def test_secrets_with_an_absurd_theta_scale_are_refused(setup, tmp_path):
    """Issue 18: a secrets file whose θ exponent is 10^40 (valid hash) is a clear ArtifactError."""
    from zkapex_jax.protocol.commitments import SECRETS_FORMAT, VERSION

    arrs, meta = artifacts.load_arrays(setup["root"] / "sec.npz", SECRETS_FORMAT, (VERSION,))
    artifacts.save_arrays(tmp_path / "bad.npz", SECRETS_FORMAT, VERSION, arrs, {**meta, "theta_exp": 10 ** 40})
    with pytest.raises(ArtifactError, match="out of range"):
        P.load_secrets(tmp_path / "bad.npz")
