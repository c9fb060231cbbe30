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
    assert agg["a"]["x"] == {"mean": 2.0, "std": 1.0}
    assert agg["a"]["y"] == {"mean": None, "std": None}
    assert common.fmt_pm(agg["a"]["x"]) == "2.000 ± 1.000"
