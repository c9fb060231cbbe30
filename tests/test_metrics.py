"""Metrics against hand-computed values (float64 numpy)."""

import math

import numpy as np
import pytest

from zkapex_jax import ShapeError
from zkapex_jax.studies import metrics as M


def test_accuracy_and_class_accuracy():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 0.0, 0.0]])
    y = np.array([0, 1, 1, 2])
    assert M.accuracy_from_logits(logits, y) == pytest.approx(0.5)
    assert M.class_accuracy(logits, y, [1]) == pytest.approx(0.5)
    assert M.class_accuracy(logits, y, [0]) == pytest.approx(1.0)
    assert math.isnan(M.class_accuracy(logits, y, [7]))
    with pytest.raises(ShapeError):
        M.accuracy_from_logits(logits, y[:2])


@pytest.mark.parametrize("k", [2, 5, 10])
def test_entropy_uniform_and_onehot(k):
    assert M.entropy(np.zeros((3, k))) == pytest.approx(np.full(3, math.log(k)))
    big = np.zeros((1, k)); big[0, 0] = 1e4
    assert M.entropy(big)[0] == pytest.approx(0.0, abs=1e-12)


def test_entropy_matches_formula():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(7, 4))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    np.testing.assert_allclose(M.entropy(z), -(p * np.log(p)).sum(1), rtol=1e-12)
    np.testing.assert_allclose(M.max_confidence(z), p.max(1), rtol=1e-12)


@pytest.mark.parametrize("comp,mask,pers,expected", [
    (0.8, 0.4, 0.9, 0.8), (0.9, 0.4, 0.9, 1.0), (0.4, 0.4, 0.9, 0.0), (0.95, 0.5, 0.9, 1.125)])
def test_recovery(comp, mask, pers, expected):
    assert M.recovery(comp, mask, pers) == pytest.approx(expected)


def test_recovery_guard_when_mask_did_not_hurt():
    assert math.isnan(M.recovery(0.9, 0.9, 0.9))
    assert math.isnan(M.recovery(0.9, 0.8999, 0.9, eps=1e-3))
    assert math.isnan(M.recovery(0.9, 0.95, 0.9))          # the mask raised accuracy: undefined
    assert math.isnan(M.recovery(0.9, 0.89, 0.9, eps=0.02))  # drop below the noise level
    assert M.recovery(0.9, 0.85, 0.9, eps=0.02) == pytest.approx(1.0)
    assert M.gap_to(0.3, 0.1) == pytest.approx(0.2)


def _logits_with_entropy_level(n, k, sharp, rng):
    z = rng.normal(size=(n, k))
    z[:, 0] += sharp
    return z


def test_mia_separable_and_indistinguishable():
    rng = np.random.default_rng(1)
    members = _logits_with_entropy_level(200, 5, 12.0, rng)      # confident: low entropy
    nonmembers = _logits_with_entropy_level(200, 5, 0.0, rng)    # diffuse: high entropy
    r = M.mia_entropy(members, nonmembers, seed=0)
    assert r["acc"] > 0.95 and r["auc"] > 0.98 and r["n"] == 200
    same_a = _logits_with_entropy_level(300, 5, 1.0, rng)
    same_b = _logits_with_entropy_level(300, 5, 1.0, rng)
    r2 = M.mia_entropy(same_a, same_b, seed=0)
    assert 0.4 < r2["acc"] < 0.6 and 0.4 < r2["auc"] < 0.6


def test_mia_balances_and_checks_size():
    rng = np.random.default_rng(2)
    r = M.mia_entropy(rng.normal(size=(50, 3)), rng.normal(size=(20, 3)))
    assert r["n"] == 20
    with pytest.raises(ShapeError):
        M.mia_entropy(rng.normal(size=(3, 3)), rng.normal(size=(3, 3)), folds=5)


def test_mia_ssd_fraction():
    rng = np.random.default_rng(3)
    retain = _logits_with_entropy_level(200, 5, 12.0, rng)
    test = _logits_with_entropy_level(200, 5, 0.0, rng)
    assert M.mia_ssd(retain, test, _logits_with_entropy_level(50, 5, 12.0, rng)) > 0.9
    assert M.mia_ssd(retain, test, _logits_with_entropy_level(50, 5, 0.0, rng)) < 0.1


def test_selectivity_on_designed_fishers():
    from zkapex_jax.studies.metrics import selectivity

    b, damping = 6, 1e-6
    e = np.eye(b)
    client = np.stack([np.diag([4.0, 2.0, 1.0, 0, 0, 0]) + damping * e] * 2)
    apart = np.stack([np.diag([0, 0, 0, 1.0, 3.0, 0])] * 2)     # forget curvature off the client's subspace
    same = np.stack([np.diag([2.0, 0, 1.0, 0, 0, 0])] * 2)      # ... inside it
    mask = np.zeros((2, b), bool)
    mask[0, 4] = True
    mask[1, [0, 2]] = True
    s_apart = selectivity(client, apart, mask, damping=damping)
    s_same = selectivity(client, same, mask, damping=damping)
    assert s_apart["subspace_overlap"] == pytest.approx(0.0, abs=1e-12)
    assert s_same["subspace_overlap"] == pytest.approx(1.0)
    assert s_apart["client_rank"] == 3 and s_apart["client_rank_10x"] == 3
    # masked weights: block 0 weight 4 (client 0, forget 3), block 1 weights 0, 2 (client 4, 1; forget 0)
    assert s_apart["masked_forget_share"] == pytest.approx(3.0 / 8.0)
    assert s_same["masked_forget_share"] == pytest.approx(3.0 / 6.0)
    assert s_same["fisher_ratio_at_mask"] == pytest.approx(1.0)  # median of 0/0 -> 0, 4/2, 1/1
    none = selectivity(client, same, np.zeros((2, b), bool), damping=damping)
    assert np.isnan(none["subspace_overlap"])


def test_selectivity_read_in_chunks_equals_one_pass():
    from zkapex_jax.studies.metrics import selectivity

    rng = np.random.default_rng(5)
    g = rng.normal(size=(7, 12, 4))
    client = np.einsum("nki,nkj->nij", g[:, :6], g[:, :6]) / 6 + 0.1 * np.eye(4)
    forget = np.einsum("nki,nkj->nij", g[:, 6:], g[:, 6:]) / 6
    mask = rng.random((7, 4)) < 0.4
    mask[2] = False  # a block without masked weights is skipped in every chunking
    whole = selectivity(client, forget, mask, damping=0.1)
    for chunk in (1, 2, 5):
        got = selectivity(client, forget, mask, damping=0.1, chunk=chunk)
        assert set(got) == set(whole)
        for k in whole:
            assert got[k] == pytest.approx(whole[k], rel=1e-12)


def test_selectivity_points_and_figure(tmp_path):
    """The per-seed selectivity figure reads what the image study stores per seed, skips seeds
    without the measures, and refuses a results object that has none."""
    from zkapex_jax.studies.report import plot_selectivity, selectivity_points

    def run(seed, overlap, progress, rec):
        t = {"selectivity_subspace_overlap": overlap, "selectivity_fisher_ratio_at_mask": 0.1} if overlap else {}
        return {"seed": seed, "timings": t,
                "metrics": {"zkapex": {"recovery": rec, "forget_progress": progress}}}

    res = {"per_seed": [run(0, 0.9, 0.05, 0.95), run(1, None, 0.5, 0.5), run(2, 0.4, 0.7, None)]}
    pts = selectivity_points(res)
    assert [p["seed"] for p in pts] == [0, 2]
    assert pts[0] == {"seed": 0, "subspace_overlap": 0.9, "fisher_ratio_at_mask": 0.1, "recovery": 0.95,
                      "forget_progress": 0.05}
    out = tmp_path / "sel.png"
    plot_selectivity(out, {"a": res})
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no per-seed selectivity"):
        plot_selectivity(tmp_path / "x.png", {"b": {"per_seed": [run(0, None, 0.1, 0.1)]}})


def test_study_record_envelope_roundtrip_and_tamper(tmp_path):
    """The side studies' records use the one artifact envelope: hashed with the masks' and
    statements' canonical JSON, written atomically, refused when edited or of another study."""
    import json

    from zkapex_jax import ArtifactError
    from zkapex_jax._io import canonical_json, content_digest, write_json_artifact
    from zkapex_jax.studies import report

    rec = {"seeds": [0, 1], "summary": {"forget_acc": np.float32(0.25), "bad": float("nan")}, "environment": {"x": 1}}
    out = report.write_study_record(tmp_path / "r.json", "steering", rec)
    got = report.load_study_record(tmp_path / "r.json", "steering")
    assert got == out and got["summary"]["forget_acc"] == pytest.approx(0.25) and got["summary"]["bad"] is None
    body = {k: v for k, v in got.items() if k != "sha256"}
    import hashlib

    assert got["sha256"] == hashlib.sha256(canonical_json(body)).hexdigest() == content_digest(got)
    with pytest.raises(ArtifactError, match="'steering' record, expected 'curvature'"):
        report.load_study_record(tmp_path / "r.json", "curvature")
    doc = json.loads((tmp_path / "r.json").read_text())
    doc["summary"]["forget_acc"] = 0.01  # a better-looking number, hash left as it was
    (tmp_path / "t.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="hash mismatch"):
        report.load_study_record(tmp_path / "t.json")
    (tmp_path / "n.json").write_text("[1, 2]")
    with pytest.raises(ArtifactError, match="expected a JSON object"):
        report.load_study_record(tmp_path / "n.json")
    write_json_artifact(tmp_path / "res.json", report.RESULTS_FORMAT, 1, {"study": "steering"})  # another format
    with pytest.raises(ArtifactError, match="format is 'zkapex.results', expected 'zkapex.study-record'"):
        report.load_study_record(tmp_path / "res.json")
    with pytest.raises(ArtifactError, match="file not found"):
        report.load_study_record(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="NaN|not JSON compliant|Out of range"):
        canonical_json({"x": float("nan")})


def test_unlearning_outcome_is_one_definition_for_every_study():
    from zkapex_jax.studies.metrics import COLLAPSE_SHARE, add_outcomes, unlearning_outcome

    pers = {"personal_acc": 0.80, "forget_acc": 0.90, "other_acc": 0.60, "global_acc": 0.70}
    mo = {"personal_acc": 0.40, "forget_acc": 0.30, "other_acc": 0.55, "global_acc": 0.60}
    rt = {"personal_acc": 0.78, "forget_acc": 0.10, "other_acc": 0.58, "global_acc": 0.65}
    model = {"personal_acc": 0.70, "forget_acc": 0.50, "other_acc": 0.50, "global_acc": 0.60}
    o = unlearning_outcome(model, pers, mo, rt)
    assert o["recovery"] == pytest.approx(0.75) and o["forget_progress"] == pytest.approx(0.5)
    assert o["gap_to_retrain"] == pytest.approx(0.4) and o["gap_to_retrain_personal"] == pytest.approx(0.08)
    assert o["collapsed"] < 0.5   # a 0.0 / 1.0 flag
    broken = dict(model, other_acc=COLLAPSE_SHARE * pers["other_acc"] - 0.01)      # forgetting by collapse
    assert unlearning_outcome(broken, pers, mo, rt)["collapsed"] > 0.5
    no_rt = unlearning_outcome(model, pers, mo)
    assert np.isnan(no_rt["forget_progress"]) and "gap_to_retrain" not in no_rt
    assert np.isnan(unlearning_outcome(model, pers, mo, dict(rt, forget_acc=0.9))["forget_progress"])   # no gap
    assert np.isnan(unlearning_outcome(model, pers, dict(mo, personal_acc=0.8), rt)["recovery"])       # no cost
    lm = {"personal_acc": 0.5, "forget_acc": 0.4}                       # a study without other/global accuracy
    assert unlearning_outcome(lm, lm, {"personal_acc": 0.3, "forget_acc": 0.2})["collapsed"] < 0.5
    res = add_outcomes({"personalized": dict(pers), "mask_only": dict(mo), "retrain": dict(rt), "m": dict(model)})
    assert res["m"]["forget_progress"] == pytest.approx(0.5) and res["personalized"]["recovery"] == pytest.approx(1.0)


def _proof_slice(B, cpu_per_block, n_blocks=2):
    proofs = [{"blocks": 1, "chunk_blocks": 1, "cpu_s": cpu_per_block, "peak_rss_mb": 100.0 * B, "proof_bytes": 9000, "verified": True}
              for _ in range(n_blocks)]
    return {"block_size": B, "logrows": 15, "stages": {"data": {"masked_per_block": [2] * n_blocks},
                                                       "commit": {"columns": 10, "cpu_s": 0.05}},
            "variants": {"protect_0": {"proofs": proofs}}}


def test_frontier_points_table_and_figure(tmp_path):
    """Cost per certified parameter is CPU-s per block ÷ B; the study's outcome is read at the same
    B only; the entry point writes the figure and a study record, and refuses a mismatch (exit 2)."""
    import json

    from experiments import block_size_frontier
    from zkapex_jax.studies.report import frontier_point, load_study_record, write_study_record

    row = {m: {"mean": v} for m, v in (("recovery", 0.7), ("forget_progress", 0.6), ("personal_acc", 0.8))}
    study = {"pipeline": {"block_size": 64}, "seeds": [0], "table": {"layer_inputs": {**row, "collapsed_seeds": 0}}}
    p = frontier_point(_proof_slice(64, 3.2), study)
    assert p["prove_cpu_s_per_block"] == pytest.approx(3.2) and p["prove_cpu_ms_per_param"] == pytest.approx(50.0)
    assert p["recovery"] == pytest.approx(0.7) and p["all_verified"] and p["commit_cpu_ms_per_column"] == pytest.approx(5.0)
    with pytest.raises(ValueError, match="B = 64, the proof slice's B = 144"):
        frontier_point(_proof_slice(144, 9.0), study)
    with pytest.raises(ValueError, match="no 'exact' row"):
        frontier_point(_proof_slice(64, 3.2), study, kind="exact")
    padded = _proof_slice(64, 8.0, n_blocks=1)
    padded["variants"]["protect_0"]["proofs"][0]["chunk_blocks"] = 4  # a 4-block circuit holding 1 block
    assert frontier_point(padded)["prove_cpu_s_per_block"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="holds no proofs"):
        frontier_point({**_proof_slice(64, 1.0), "variants": {"protect_0": {"proofs": []}}})
    files = {}
    for B, cpu in ((64, 3.2), (576, 460.0)):
        files[B] = tmp_path / f"b{B}.json"
        files[B].write_text(json.dumps(_proof_slice(B, cpu)))
    rec = tmp_path / "study64.json"
    write_study_record(rec, "curvature", study)
    png, table = tmp_path / "f.png", tmp_path / "f.json"
    assert block_size_frontier.main([f"64={files[64]}:{rec}", f"576={files[576]}", "--out", str(png),
                                     "--table", str(table)]) == 0
    got = load_study_record(table, "block_size_frontier")
    assert png.stat().st_size > 0 and [q["block_size"] for q in got["points"]] == [64, 576]
    assert got["points"][1].get("recovery") is None  # cost only: no study given
    with pytest.raises(SystemExit) as e:
        block_size_frontier.main([f"144={files[64]}", "--out", str(png), "--table", str(table)])
    assert e.value.code == 2


def test_max_move_ratio_by_hand():
    """Block 0: removed |θp| = 0.5 + 0.5, largest kept move 0.3 → 0.3; block 1: nothing masked, ignored."""
    tp = np.array([[0.5, -0.5, 1.0, 2.0], [1.0, 1.0, 1.0, 1.0]])
    tu = np.array([[0.0, 0.0, 1.3, 1.9], [9.0, 9.0, 9.0, 9.0]])
    mb = np.array([[True, True, False, False], [False, False, False, False]])
    assert M.max_move_ratio(tp, tu, mb) == pytest.approx(0.3)


def test_audit_policy_counts_passes_and_the_best_attack_that_passes():
    from zkapex_jax.studies.metrics import audit_policy

    accs = [{"honest": 0.1, "steer": 0.6, "other": 0.25}, {"honest": 0.3, "steer": 0.2, "other": 0.5}]
    t = audit_policy(accs, "honest", ["steer", "other"], [0.0, 0.2, 0.3, 1.0])
    assert [r["honest_passed"] for r in t] == [0, 1, 2, 2]
    assert [r["attacks_passed"]["steer"] for r in t] == [0, 1, 1, 2]
    assert [r["attacks_passed"]["other"] for r in t] == [0, 0, 1, 2]
    assert np.isnan(t[0]["best_attack_passed"]) and t[1]["best_attack_passed"] == pytest.approx(0.2)
    assert t[2]["best_attack_passed"] == pytest.approx(0.25) and t[3]["best_attack_passed"] == pytest.approx(0.6)
    with pytest.raises(KeyError, match="lacks"):
        audit_policy(accs, "honest", ["nope"], [0.5])
    with pytest.raises(ValueError, match="not in"):
        audit_policy(accs, "honest", ["steer"], [1.5])


def test_run_environment_records_the_cpu_and_its_vector_extensions(tmp_path, monkeypatch):
    """Results files name the CPU and the vector extensions XLA compiles for (another ISA trains
    another model from the same seed), read from /proc/cpuinfo; without it, nothing is invented."""
    from zkapex_jax.studies import report

    env = report.run_environment()
    assert set(env["cpu"]) == {"model", "isa"} and set(env["cpu"]["isa"]) <= set(report._ISA_FLAGS)
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse4_2 avx avx2 fma\n\n"
                    "processor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse4_2\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: real_open(fake if p == "/proc/cpuinfo" else p, *a, **k))
    assert report.cpu_info() == {"model": "Test CPU 9000", "isa": ["sse4_2", "avx", "avx2", "fma"]}
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: (_ for _ in ()).throw(OSError("no cpuinfo")))
    assert report.cpu_info()["isa"] == []
