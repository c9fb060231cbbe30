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
                                 "--sequential", "--out", str(out)]) == 0
    res = load_study_record(out, "curvature")
    assert set(res["table"]) == {"empirical", "logits", "layer_covariance", "layer_covariance+bias",  # bias: layer kinds
                                 "empirical@aug2", "logits@aug2", "layer_covariance@aug2", "layer_covariance@aug2+bias",
                                 "layer_inputs@seq"}
    assert res["per_seed"][0]["kinds"]["layer_inputs@seq"]["certifiable"] is False
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


def test_network_order_reads_numbers_as_numbers():
    paths = ["blocks/10/expand/kernel", "blocks/5/expand/kernel", "blocks/9/expand/kernel", "head/kernel"]
    assert sorted(paths, key=curvature_study._depth_key) == [paths[1], paths[2], paths[0], paths[3]]


@pytest.mark.slow
def test_sequential_layer_inputs_unlearns_each_layer_at_its_updated_inputs():
    """The first kernel in network order gets exactly the simultaneous update (its inputs do not
    depend on the mask); the second gets the dense float64 Group-OBS of its blocks with XXᵀ taken
    at the model whose first kernel is already unlearned — not the simultaneous one; every masked
    weight is 0."""
    import dataclasses

    import numpy as np

    from zkapex_jax.core.curvature import damp
    from zkapex_jax.core.params import flatten_params, unflatten_params
    from zkapex_jax.studies import image as pl

    cfg = pl.PipelineConfig.tiny()
    data = pl.load_data(cfg, 0)
    theta = pl.init_params(cfg, seed=0)
    layout = pl.block_layout(cfg, theta)
    first, second = sorted(layout.paths, key=curvature_study._depth_key)
    # a mask that changes the second kernel's inputs visibly (40 % of the first kernel) and leaves
    # free weights in the second kernel's masked blocks (30 weights, 1–3 per masked block)
    rng = np.random.default_rng(0)
    size = {p: int(np.prod(sh)) for p, sh in zip(layout.paths, layout.shapes)}
    blocks2 = rng.choice(size[second] // layout.block_size, size=10, replace=False)
    idx2 = np.concatenate([b * layout.block_size + rng.choice(layout.block_size, 3, replace=False) for b in blocks2])
    idx = {first: np.sort(rng.choice(size[first], size=int(0.4 * size[first]), replace=False)), second: np.sort(idx2)}
    mask = dataclasses.replace(pl.provider_mask(cfg, theta, data, seed=0), indices=idx)
    alpha = 1e-2
    kcfg = cfg.replace(curvature="layer_inputs", damping=0.0, damping_relative=False)

    def curv(params):
        return np.asarray(damp(pl.client_fisher(kcfg, params, data, layout, seed=0), alpha, relative=True),
                          dtype=np.float64)

    seq = flatten_params(curvature_study.sequential_layer_inputs(cfg, theta, data, layout, mask, alpha, seed=0))
    sim = flatten_params(pl.unlearn(theta, curv(theta), mask, layout)[0])
    np.testing.assert_allclose(seq[first], sim[first], rtol=1e-4, atol=1e-5)
    # the oracle for the second kernel: its blocks' Group-OBS with the curvature at (first unlearned, rest θ)
    mid = dict(flatten_params(theta))
    mid[first] = seq[first]
    c_mid = curv(unflatten_params(mid))
    theta_b = np.asarray(layout.to_blocks({p: np.asarray(mid[p]) for p in layout.paths}), dtype=np.float64)
    mask_b = np.asarray(mask.to_blocks(layout), dtype=bool)
    counts = [int(np.prod(sh)) // layout.block_size for sh in layout.shapes]
    j = layout.paths.index(second)
    blocks = range(sum(counts[:j]), sum(counts[:j + 1]))

    def obs(c):  # dense float64 Group-OBS of the second kernel's blocks
        out = theta_b.copy()
        for b in blocks:
            s = np.flatnonzero(mask_b[b])
            if s.size:
                a = np.linalg.inv(c[b])
                out[b] -= a[:, s] @ np.linalg.solve(a[np.ix_(s, s)], theta_b[b, s])
        return out[list(blocks)]

    got = np.asarray(layout.to_blocks({p: np.asarray(seq[p]) for p in layout.paths}), dtype=np.float64)[list(blocks)]
    want, simultaneous = obs(c_mid), obs(curv(theta))
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6)
    # the test tells the two apart: the simultaneous update is ~10⁴× further from it than float32 noise
    assert np.max(np.abs(got - simultaneous)) > 10 * np.max(np.abs(got - want))
    for p in layout.paths:
        np.testing.assert_allclose(np.asarray(seq[p]).reshape(-1)[mask.indices[p]], 0.0, rtol=0, atol=1e-12)


def test_residual_share_is_the_schur_complement_over_the_masks_loss():
    """Against the explicit minimisation over the free weights (float64), per block and summed;
    a diagonal curvature leaves the whole loss (share 1: free weights cannot help); unmasked
    blocks do not count."""
    import numpy as np

    rng = np.random.default_rng(0)
    nb, b = 4, 6
    g = rng.normal(size=(nb, b, 9))
    c = g @ g.transpose(0, 2, 1) + 0.1 * np.eye(b)
    theta = rng.normal(size=(nb, b))
    mask = np.zeros((nb, b), bool)
    mask[0, [1, 4]] = mask[1, 0] = mask[3, [0, 2, 5]] = True
    left = total = 0.0
    for k in range(nb):
        s, f = np.flatnonzero(mask[k]), np.flatnonzero(~mask[k])
        if s.size == 0:
            continue
        d_s = -theta[k, s]
        d_f = np.linalg.solve(c[k][np.ix_(f, f)], -c[k][np.ix_(f, s)] @ d_s)  # argmin over the free weights
        d = np.zeros(b)
        d[s], d[f] = d_s, d_f
        left += d @ c[k] @ d
        total += d_s @ c[k][np.ix_(s, s)] @ d_s
    assert curvature_study.residual_share(c, theta, mask) == pytest.approx(left / total, rel=1e-9)
    assert 0.0 < left / total < 1.0
    diag = np.einsum("bi,ij->bij", rng.uniform(1, 2, size=(nb, b)), np.eye(b))
    assert curvature_study.residual_share(diag, theta, mask) == pytest.approx(1.0, rel=1e-12)
