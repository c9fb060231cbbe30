"""The threat-model and curvature entry points on their tiny configs: they run, write results of
the required shape, and the certified forget-aware rows really protect weights."""

import pytest

from experiments import curvature_study, protected_study
from zkapex_jax.studies.report import load_study_record


@pytest.mark.slow
def test_protected_study_tiny(tmp_path):
    out = tmp_path / "prot.json"
    assert protected_study.main(["--config", "tiny", "--seeds", "0", "--ranks", "2", "--dense-ranks", "1",
                                 "--no-retrain", "--out", str(out)]) == 0
    res = load_study_record(out, "protected")  # the artifact envelope: format, hash, study name
    seed = res["per_seed"][0]
    assert seed["protected"]["plain"] == 0 and seed["protected"]["protected_r2"] > 0
    want = {"plain", "protected_r2", "dense_r1"} | {f"{a}/{r}" for a in protected_study.ATTACKS
                                                    for r in ("plain", "protected_r2", "dense_r1")}
    assert want <= set(res["table"]) and res["environment"]
    for row in seed["rows"].values():
        assert 0.0 <= row["personal_acc"] <= 1.0 and 0.0 <= row["forget_acc"] <= 1.0


@pytest.mark.slow
def test_curvature_study_tiny(tmp_path):
    out = tmp_path / "curv.json"
    assert curvature_study.main(["--config", "tiny", "--seeds", "0", "--kinds", "empirical", "logits",
                                 "layer_covariance", "--bias-correction", "--no-retrain", "--augment", "2",
                                 "--out", str(out)]) == 0
    res = load_study_record(out, "curvature")
    assert set(res["table"]) == {"empirical", "logits", "layer_covariance", "layer_covariance+bias",  # bias: layer kinds
                                 "empirical@aug2", "logits@aug2", "layer_covariance@aug2", "layer_covariance@aug2+bias"}
    assert res["augment"] == 2
    kinds = res["per_seed"][0]["kinds"]
    for k in res["table"]:
        assert kinds[k]["trace_masked"] > 0
        assert 0.0 <= kinds[k]["eval"]["personal_acc"] <= 1.0 and kinds[k]["alpha"] in curvature_study.ALPHAS


def _seed_record(path, seed, recovery, rho=16):
    from zkapex_jax.studies.report import write_study_record

    row = {"personal_acc": 0.7, "forget_acc": 0.2, "other_acc": 0.3}
    summary = {"plain": {**row, "recovery": recovery, "forget_progress": 0.8, "max_move_ratio": 0.9}}
    write_study_record(path, "protected", {
        "config": "effnet", "curvature": "layer_inputs", "ranks": [2], "rho": rho, "pipeline": {"model": "m"},
        "alphas": [0.1], "attack_alphas": [0.1], "seeds": [seed], "seconds": 10.0,
        "per_seed": [{"seed": seed, "rows": {"personalized": row, "mask_only": row}, "summary": summary}]})


def test_protected_study_merges_per_seed_records(tmp_path):
    """Seeds run as separate processes become one table (Student-t ci95 over them); records of other
    settings or a seed given twice are refused, naming the file."""
    from zkapex_jax import ArtifactError

    for s, r in ((0, 0.8), (1, 0.6), (2, 0.7)):
        _seed_record(tmp_path / f"s{s}.json", s, r)
    out = protected_study.merge([tmp_path / "s2.json", tmp_path / "s0.json", tmp_path / "s1.json"], tmp_path / "m.json")
    rec = load_study_record(tmp_path / "m.json", "protected")
    assert rec["seeds"] == [0, 1, 2] == out["seeds"] and len(rec["merged_from"]) == 3
    t = rec["table"]["plain"]["recovery"]
    assert t["n"] == 3 and abs(t["mean"] - 0.7) < 1e-12
    lo, hi = t["ci95"]
    assert abs((hi - lo) / 2 - 4.302652729911275 * 0.1 / 3 ** 0.5) < 1e-9          # t_{0.975, 2} · s / √n
    _seed_record(tmp_path / "other.json", 3, 0.5, rho=8)
    with pytest.raises(ArtifactError, match="'rho' differs"):
        protected_study.merge([tmp_path / "s0.json", tmp_path / "other.json"], tmp_path / "x.json")
    with pytest.raises(ArtifactError, match="seed given twice"):
        protected_study.merge([tmp_path / "s0.json", tmp_path / "s0.json"], tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_demo_settings_tiny(tmp_path):
    from experiments import demo_settings

    out = tmp_path / "ds.json"
    assert demo_settings.main(["--tiny", "--seeds", "0", "--out", str(out)]) == 0
    res = load_study_record(out, "demo_settings")
    combos = res["per_seed"][0]["combos"]
    assert set(combos) == {"fc1/second_order_neg/0.04/empirical", "fc1/second_order_neg/0.04/layer_inputs"}
    assert all(c["alpha"] in demo_settings.ALPHAS for c in combos.values())
    assert res["chosen"] in (None, *combos)


def test_demo_settings_selection_rule():
    """The rule: targets met on the selection seed, no collapse, fewest masked weights (the
    statement's cost; a larger fraction of a smaller kernel can be cheaper), then recovery."""
    from experiments import demo_settings

    def c(masked, rec, prog, col=0.0):
        return {"masked": masked, "recovery": rec, "forget_progress": prog, "collapsed": col}

    res = {"combos": {"a": c(800, 0.95, 0.9), "b": c(400, 0.85, 0.6), "c": c(400, 0.9, 0.55), "d": c(160, 0.99, 0.4),
                      "e": c(160, 0.9, 0.9, col=1.0), "f": c(160, float("nan"), 0.9), "g": c(160, 0.8, None),
                      "h": c(64, 0.8, 0.5)}}
    assert demo_settings.select(res) == ["h", "c", "b", "a"]


@pytest.mark.slow
def test_demo_robustness_tiny(tmp_path):
    """Each variant runs in its own interpreter under its XLA vector-extension cap (recorded)."""
    from experiments import demo_robustness

    out = tmp_path / "dr.json"
    assert demo_robustness.main(["--tiny", "--select-seeds", "0", "--report-seeds", "0", "--isas", "AVX2",
                                 "--out", str(out)]) == 0
    res = load_study_record(out, "demo_robustness")
    assert [v["isa"] for v in res["variants"]] == ["AVX2", "AVX2"]
    assert all(v["environment"]["env"]["XLA_FLAGS"] == "--xla_cpu_max_isa=AVX2" for v in res["variants"])
    assert res["chosen"] in (None, *res["table"])


def test_demo_robustness_rule_over_seeds_and_vector_extensions():
    """The demo's robust rule: forget progress ≥ 0.5 in every variant; the mask must cost ≥ 0.02
    personal accuracy in at least half the variants, and every such cost be ≥ 0.8 recovered; a
    request that never costs anything (no compensation to show) is not chosen; fewest masked first."""
    from experiments import demo_robustness as R

    def variant(seed, isa, combos):
        return {"seed": seed, "isa": isa, "rows": {"personalized": {"personal_acc": 0.5, "forget_acc": 0.4}},
                "combos": {n: {"masked": m, "forget_progress": fp, "mask_only": {"personal_acc": mo},
                               "eval": {"personal_acc": cert, "forget_acc": 0.0}}
                           for n, (m, fp, mo, cert) in combos.items()}}

    v = [variant(1, "AVX", {"cheap_never_costs": (20, 0.9, 0.5, 0.5), "mid": (100, 0.9, 0.45, 0.50),
                            "big": (400, 0.9, 0.40, 0.49), "weak_forget": (50, 0.4, 0.45, 0.5)}),
         variant(2, "AVX", {"cheap_never_costs": (20, 0.9, 0.5, 0.5), "mid": (100, 0.6, 0.49, 0.49),
                            "big": (400, 0.9, 0.40, 0.485), "weak_forget": (50, 0.9, 0.45, 0.5)})]
    # mid: costs 0.05 (recovered 1.0) in one variant, 0.01 (noise) in the other; big: 0.9 and 0.85
    assert R.select(v) == ["mid", "big"]
    o = R.outcome(v[1], "mid")
    assert o["recovery"] is None and abs(o["cost"] - 0.01) < 1e-12 and o["isa"] == "AVX"
    v[1]["combos"]["big"]["eval"]["personal_acc"] = 0.47   # recovers 0.7 of 0.1 there: big fails
    assert R.select(v) == ["mid"]


def test_curvature_study_merges_the_rows_every_record_has(tmp_path):
    """Seeds run apart (seed 0 with every family, later seeds with two) merge into one table over the
    common rows; other settings and a seed given twice are refused (exit 2 from the command line)."""
    from zkapex_jax import ArtifactError
    from zkapex_jax.studies.report import write_study_record

    def rec(path, seeds, kinds, cfg="effnet"):
        row = lambda r: {"personal_acc": 0.7, "forget_acc": 0.2, "other_acc": 0.3, "recovery": r,  # noqa: E731
                         "forget_progress": 0.8, "trace_masked": 1.0, "eff_rank_masked": 3.0, "max_move_ratio": 0.9,
                         "collapsed": 0.0, "alpha": 0.1}
        write_study_record(path, "curvature", {"config": cfg, "pipeline": {"block_size": 64}, "alphas_tried": [0.1],
                                               "seeds": seeds, "seconds": 1.0, "per_seed": [
            {"seed": s, "summary": {k: row(0.5 + 0.1 * s) for k in kinds}} for s in seeds]})

    rec(tmp_path / "a.json", [0], ["empirical", "true", "layer_inputs"])
    rec(tmp_path / "b.json", [1, 2], ["empirical", "layer_inputs"])
    out = curvature_study.merge([tmp_path / "a.json", tmp_path / "b.json"], tmp_path / "m.json")
    assert out["seeds"] == [0, 1, 2] and set(out["table"]) == {"empirical", "layer_inputs"}
    assert abs(out["table"]["layer_inputs"]["recovery"]["mean"] - 0.6) < 1e-12
    rec(tmp_path / "c.json", [3], ["empirical"], cfg="vit")
    with pytest.raises(ArtifactError, match="'config' differs"):
        curvature_study.merge([tmp_path / "a.json", tmp_path / "c.json"], tmp_path / "x.json")
    with pytest.raises(SystemExit) as e:
        curvature_study.main(["--merge", str(tmp_path / "a.json"), str(tmp_path / "a.json"), "--out", str(tmp_path / "x.json")])
    assert e.value.code == 2 and not (tmp_path / "x.json").exists()
