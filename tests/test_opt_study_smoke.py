"""Smoke test of Study 2 (experiments/opt_code.py → zkapex_jax.studies.opt_code): the tiny config end to end to a results JSON
of the required shape, plus exact checks of the study's own helpers (LoRA merge, sub-block
Fisher)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import opt_code as entry
from zkapex_jax.models import init_lora, merge_lora
from zkapex_jax.studies import opt_code
from zkapex_jax.studies.report import load_results
from experiments.configs.opt_code import CONFIGS, get_config
from zkapex_jax.core.mask import top_k_count
from zkapex_jax.core.params import flatten_params

from conftest import build_model_cached


def test_sub_block_fisher_matches_numpy():
    rng = np.random.default_rng(0)
    f = rng.standard_normal((3, 8, 8)).astype(np.float32)
    for b in (1, 2, 4, 8):
        got = np.asarray(opt_code.sub_block_fisher(jnp.asarray(f), b))
        want = np.stack([f[i, j * b:(j + 1) * b, j * b:(j + 1) * b] for i in range(3) for j in range(8 // b)])
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError):
        opt_code.sub_block_fisher(jnp.asarray(f), 3)


def test_lora_merge_is_identity_at_init_and_exact_after():
    _, params = build_model_cached("opt-test", seed=0)
    targets = ("*/fc1/kernel", "*/self_attn/q_proj/kernel")
    lora = init_lora(params, targets, 2, jax.random.PRNGKey(1))
    assert len(lora) == 4  # 2 layers x 2 targets
    merged = merge_lora(params, lora, 8.0)
    for p, v in flatten_params(params).items():
        np.testing.assert_array_equal(np.asarray(flatten_params(merged)[p]), np.asarray(v))
    k = next(iter(lora))
    lora[k]["b"] = jnp.ones_like(lora[k]["b"])
    merged = flatten_params(merge_lora(params, lora, 0.5))
    p = k.replace("|", "/")
    want = np.asarray(flatten_params(params)[p]) + 0.5 * np.asarray(lora[k]["a"]) @ np.ones((2, lora[k]["b"].shape[1]))
    np.testing.assert_allclose(np.asarray(merged[p]), want, rtol=1e-6, atol=1e-6)


def test_configs_are_consistent():
    for name, cfg in CONFIGS.items():
        assert cfg.forget_language in cfg.global_languages
        assert cfg.personal_language not in cfg.global_languages
        assert 0 < cfg.mask_fraction < 1
        assert cfg.mask_h == 0.5 and cfg.mask_r == 1.5  # the paper's LM values
        assert cfg.fisher_damping == 1e-6
    assert get_config("opt125m").model == "opt-125m" and get_config("opt125m").fisher_block == 256
    with pytest.raises(KeyError):
        get_config("huge")


@pytest.mark.slow  # ~65 s of CPU (mostly XLA compiles of ~15 jitted stages); run with -m slow
def test_tiny_study_end_to_end(tmp_path):
    cfg = get_config("tiny")
    out = tmp_path / "opt_code.json"
    entry.main(["--config", "tiny", "--seeds", "0", "--out", str(out), "--figures", str(tmp_path / "fig")])
    res = load_results(out)  # validates shape, format and hash
    assert res["study"] == "opt_code" and res["seeds"] == [0]
    for m in ("personalized", "mask_only", "zkapex", "retrain", *cfg.baselines):
        for metric in ("personal_acc", "forget_acc"):
            st = res["methods"][m][metric]
            assert isinstance(st["mean"], float) and isinstance(st["std"], float)
            assert 0.0 <= st["mean"] <= 1.0 and st["std"] >= 0.0
    assert set(res["recovery"]) >= {"mean", "std"}
    assert res["recovery"]["mean"] is None or math.isfinite(res["recovery"]["mean"])
    # Group-OBS zeroes exactly the published mask and satisfies its KKT system
    for s in res["per_seed"]:
        assert s["mask"]["num_masked"] == top_k_count(cfg.mask_fraction, s["mask"]["size"])
        assert s["obs"]["kkt_residual_max"] < 1e-3
    assert res["sweeps"]["fraction"] and res["sweeps"]["block"]
    assert (tmp_path / "fig" / "opt_methods.png").exists()


@pytest.mark.slow  # ~90 s: two seeds of the tiny study sharing one provider, then again from the cache
def test_shared_provider_models_are_trained_once_and_cached(tmp_path, caplog):
    """``provider_seed``: one global model (and one retrain model) serves every study seed; with
    ``--cache-dir`` a second run loads them instead of training, and gives the same results."""
    import logging

    cache = tmp_path / "cache"
    args = ["--config", "tiny", "--seeds", "0", "1", "--no-sweeps", "--set", "provider_seed=0",
            "--cache-dir", str(cache)]
    with caplog.at_level(logging.INFO, logger="zkapex_jax.studies"):
        entry.main(args + ["--out", str(tmp_path / "a.json")])
    trained = [r.message for r in caplog.records if "model trained" in r.message]
    assert len(trained) == 2, trained  # global + retrain, once for both seeds
    a = load_results(tmp_path / "a.json")
    def accs(m):  # the accuracies (the derived columns compare with each seed's own retrain)
        return {k: v for k, v in m.items() if k.endswith("_acc") or k.startswith("acc_")}

    g0, g1 = (accs(m["global"]) for m in a["per_seed_metrics"])
    assert g0 == g1  # the same provider model evaluated on the same test data
    r0, r1 = (accs(m["global_retrain"]) for m in a["per_seed_metrics"])
    assert r0 == r1 and r0["forget_acc"] != g0["forget_acc"]  # the retrain model is another model
    assert a["per_seed_metrics"][0]["personalized"] != a["per_seed_metrics"][1]["personalized"]  # seeds vary the client
    assert sorted(p.name.split("-")[1] for p in cache.iterdir()) == ["global", "retrain"]

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="zkapex_jax.studies"):
        entry.main(args + ["--out", str(tmp_path / "b.json")])
    assert not [r for r in caplog.records if "model trained" in r.message]
    assert sum("loaded from" in r.message for r in caplog.records) == 2
    b = load_results(tmp_path / "b.json")
    assert b["per_seed_metrics"] == a["per_seed_metrics"]

    # retrain=False (and no baselines): only the global model is loaded, no retrain row, and every
    # other row is the same as with it (the retrain baseline draws no randomness the others use)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="zkapex_jax.studies"):
        entry.main(args + ["--set", "provider_seed=0", "retrain=false", "baselines=[]", "--out", str(tmp_path / "c.json")])
    assert sum("loaded from" in r.message for r in caplog.records) == 1
    assert not [r for r in caplog.records if "model trained" in r.message]
    c = load_results(tmp_path / "c.json")
    for mc, ma in zip(c["per_seed_metrics"], a["per_seed_metrics"]):
        assert set(mc) == {"personalized", "mask_only", "zkapex", "global"}
        for m in mc:
            assert accs(mc[m]) == accs(ma[m]), m
        fp = mc["zkapex"]["forget_progress"]
        assert fp is None or math.isnan(fp)  # no retrain model: forget progress undefined


def test_damping_is_chosen_on_validation_by_the_certified_updates_accuracy():
    """choose_damping: every α's certified update scored on the validation sequences, the best kept
    (ties: the larger α); the test split is never read; no validation sequences is an error."""
    from zkapex_jax import BlockLayout, family
    from zkapex_jax.core.curvature import damp
    from zkapex_jax.protocol import client, provider

    cfg = get_config("tiny").replace(fisher_alphas=(1e-3, 1.0), fisher_relative=True, n_val=6, eval_batch=4)
    fam = family("opt-test")
    params = fam.init(0)
    rng = np.random.default_rng(0)
    seqs = rng.integers(0, 64, size=(16, 8)).astype(np.int32)
    val = rng.integers(0, 64, size=(9, 8)).astype(np.int32)
    layout = BlockLayout.from_params(params, fam.mask_patterns, 8)
    raw = client.client_curvature(fam, params, seqs[:8], layout, kind="layer_inputs", damping=0.0)
    mask = provider.publish_mask(provider.score_weights(fam, params, seqs[8:12], seqs[12:]), 0.1)
    got = opt_code.choose_damping(cfg, fam, params, raw, mask, layout, val)
    want = {}
    for a in cfg.fisher_alphas:  # the oracle: each α's update on the first n_val validation sequences
        th_u, _ = client.unlearn(params, damp(raw, a, relative=True), mask, layout)
        want[a] = fam.accuracy(th_u, val[:6], batch_size=4)
    assert set(got["val_personal_acc"]) == set(want)
    for a in want:
        assert got["val_personal_acc"][a] == pytest.approx(want[a], abs=1e-9)
    best = max(want.values())
    assert got["damping"] == max(a for a in want if want[a] >= best - 1e-12)
    with pytest.raises(ValueError, match="no validation sequences"):
        opt_code.choose_damping(cfg, fam, params, raw, mask, layout, val[:0])
