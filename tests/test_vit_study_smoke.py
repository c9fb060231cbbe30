"""The image study's tiny config end-to-end to a results JSON of the required shape."""

import json

import pytest

from zkapex_jax.studies import report as common
from experiments import vit_fmnist as study_mod
from experiments.configs import vit_fmnist as configs

REQUIRED_METHODS = ("personalized", "mask_only", "zkapex", "retrain", "finetune_after_mask",
                    "gradient_ascent", "ssd", "salun")
REQUIRED_METRICS = ("personal_acc", "personal_acc_orig", "personal_acc_shift", "forget_acc", "other_acc",
                    "mia_acc", "mia_auc", "recovery", "gap_to_retrain")


@pytest.mark.slow
def test_tiny_study_writes_results_of_the_required_shape(tmp_path):
    out = tmp_path / "vit_tiny.json"
    figs = tmp_path / "figs"
    rc = study_mod.main(["--config", "tiny", "--seeds", "0", "--sweep-seeds", "0", "--sweeps", "fraction,damping",
                         "--out", str(out), "--figures", str(figs)])
    assert rc == 0
    res = common.load_results(out)  # validates format, version, hash and shape
    raw = json.loads(out.read_text())
    assert raw["study"] == "vit_fmnist" and raw["seeds"] == [0]
    for m in REQUIRED_METHODS:
        for k in REQUIRED_METRICS:
            st = res["methods"][m][k]
            assert set(st) >= {"mean", "std"}
    assert set(res["recovery"]) >= {"mean", "std"}
    # recovery is undefined (null) when the tiny mask did not cost personal accuracy
    rp, rm = (res["methods"][m]["recovery"]["mean"] for m in ("personalized", "mask_only"))
    assert (rp is None and rm is None) or (rp == pytest.approx(1.0) and rm == pytest.approx(0.0))
    assert set(res["sweeps"]) == {"fraction", "damping"}
    assert len(res["sweeps"]["fraction"]["x"]) == len(configs.TINY.sweep_fractions)
    assert sorted(p.name for p in figs.iterdir()) == ["vit_fmnist_damping.png", "vit_fmnist_fraction.png",
                                                      "vit_fmnist_tradeoff.png"]


def test_results_writer_rejects_bad_shape_and_tampering(tmp_path):
    good = {"study": "x", "seeds": [0], "methods": {"a": {"m": {"mean": 1.0, "std": 0.0}}},
            "recovery": {"mean": 1.0, "std": 0.0}}
    p = tmp_path / "r.json"
    common.write_results(p, good)
    assert common.load_results(p)["methods"]["a"]["m"]["mean"] == 1.0
    obj = json.loads(p.read_text())
    obj["methods"]["a"]["m"]["mean"] = 0.5
    p.write_text(json.dumps(obj))
    with pytest.raises(common.ArtifactError, match="hash"):
        common.load_results(p)
    with pytest.raises(common.ArtifactError, match="recovery"):
        common.write_results(tmp_path / "bad.json", {k: v for k, v in good.items() if k != "recovery"})


def test_aggregate_mean_std_and_nan():
    agg = common.aggregate([{"a": {"x": 1.0, "y": float("nan")}}, {"a": {"x": 3.0, "y": float("nan")}}])
    assert {k: agg["a"]["x"][k] for k in ("mean", "std", "n")} == {"mean": 2.0, "std": 1.0, "n": 2}
    assert agg["a"]["x"]["ci95_bootstrap"] == [1.0, 3.0]  # two seeds: the bootstrap means lie in {1, 2, 3}
    lo, hi = agg["a"]["x"]["ci95"]  # t(0.975, 1) = 12.706, s = √2, n = 2: 2 ± 12.706
    assert abs(lo - (2 - 12.7062)) < 1e-3 and abs(hi - (2 + 12.7062)) < 1e-3
    assert agg["a"]["y"] == {"mean": None, "std": None, "ci95": None, "ci95_bootstrap": None, "n": 0}
    assert common.fmt_pm(agg["a"]["x"]) == "2.000 ± 1.000"


def test_bootstrap_ci95_against_a_direct_resampling():
    import numpy as np

    vals = [0.1, 0.5, 0.2, 0.9, 0.4]
    lo, hi = common.bootstrap_ci95(vals, n_boot=20_000, seed=3)
    rng = np.random.default_rng(3)
    means = np.asarray(vals)[rng.integers(0, 5, size=(20_000, 5))].mean(axis=1)
    assert (lo, hi) == tuple(np.percentile(means, [2.5, 97.5]))
    assert lo < np.mean(vals) < hi and hi - lo < 0.8
    assert common.bootstrap_ci95([0.3]) is None


def test_t_interval_against_a_hand_computation():
    """The issue's example: the bootstrap under-covers with 5 seeds; the t interval is wider."""
    import numpy as np

    vals = [0.1, 0.5, 0.2, 0.9, 0.4]
    lo, hi = common.t_ci95(vals)
    half = 2.7764451 * np.std(vals, ddof=1) / np.sqrt(5)  # t(0.975, 4)
    assert abs(lo - (0.42 - half)) < 1e-6 and abs(hi - (0.42 + half)) < 1e-6
    blo, bhi = common.bootstrap_ci95(vals)
    assert lo < blo and hi > bhi
    assert common.t_ci95([0.3]) is None
