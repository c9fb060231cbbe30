"""The tuned-baselines study: its selection rule, the held-out forget validation split (never
the provider's own examples), and the entry point on its tiny config."""

import numpy as np
import pytest

from experiments import baseline_tuning as bt
from zkapex_jax.data.images import Split
from zkapex_jax.studies import image as pl
from zkapex_jax.studies.report import load_study_record


def test_the_setting_closest_to_retrain_on_validation_is_chosen():
    ref = {"personal_val": 0.8, "forget_val": 0.0}
    cands = [{"settings": {"lr": 1e-5}, "personal_val": 0.80, "forget_val": 0.60},   # keeps everything: gap 0.30
             {"settings": {"lr": 1e-3}, "personal_val": 0.70, "forget_val": 0.10},   # gap 0.10
             {"settings": {"lr": 5e-3}, "personal_val": 0.25, "forget_val": 0.00}]   # chance: gap 0.275
    for c in cands:
        c["val_gap"] = bt.val_gap(c, ref)
    assert [round(c["val_gap"], 3) for c in cands] == pytest.approx([0.3, 0.1, 0.275])
    assert bt.choose(cands)["settings"] == {"lr": 1e-3}
    with pytest.raises(ValueError, match="no candidate"):
        bt.choose([])
    grid = [(lr, st, aug) for lr in (1e-5, 1e-4, 1e-3) for st in (10, 30, 100) for aug in (0, 4)]
    assert bt._at_edge({"lr": 1e-5, "steps": 100, "aug": 4}, grid) == ["lr", "steps"]  # a 2-point axis has no edge
    assert bt._at_edge({"lr": 1e-4, "steps": 30, "aug": 0}, grid) == []


@pytest.mark.parametrize("n", [0, 5, 1000])
def test_forget_validation_never_holds_the_providers_examples(n):
    cfg = pl.PipelineConfig.tiny()
    x = np.arange(60, dtype=np.float32).reshape(60, 1, 1, 1)
    forget = Split(x, np.zeros(60, np.int32))
    used, _ = pl.mask_examples(cfg, forget, forget, seed=3)
    val = pl.forget_validation(cfg, forget, n, seed=3)
    assert val.n == min(n, 60 - used[0].shape[0])
    assert not set(val.x.ravel()) & set(np.asarray(used[0]).ravel())
    assert len(set(val.x.ravel())) == val.n
    with pytest.raises(ValueError, match="non-negative"):
        pl.forget_validation(cfg, forget, -1)


@pytest.mark.slow
def test_baseline_tuning_tiny(tmp_path):
    out = tmp_path / "bt.json"
    assert bt.main(["--config", "tiny", "--seeds", "0", "--out", str(out)]) == 0
    rec = load_study_record(out, "baseline_tuning")
    seed = rec["per_seed"][0]
    assert set(bt.ROWS) <= set(rec["table"]) and rec["environment"]
    for name in ("gradient_ascent", "ssd"):
        cands = seed["candidates"][name]
        assert len(cands) == len(rec["grids"][name])
        assert seed["chosen"][name] == min(cands, key=lambda c: c["val_gap"])["settings"]
    assert seed["chosen"]["zkapex"] == max(seed["candidates"]["zkapex"], key=lambda c: c["personal_val"])["settings"]
    assert seed["n_forget_val"] > 0
    for row in seed["rows"].values():
        assert 0.0 <= row["personal_acc"] <= 1.0 and 0.0 <= row["forget_val"] <= 1.0
    assert bt.merge([out], tmp_path / "m.json")["seeds"] == [0]


def test_merge_of_a_missing_or_foreign_record_exits_2_and_writes_nothing(tmp_path):
    from zkapex_jax.studies.report import write_study_record

    out = tmp_path / "m.json"
    with pytest.raises(SystemExit) as e:
        bt.main(["--merge", str(tmp_path / "absent.json"), "--out", str(out)])
    assert e.value.code == 2 and not out.exists()
    write_study_record(tmp_path / "curv.json", "curvature", {"per_seed": [], "seeds": [], "seconds": 0.0})
    with pytest.raises(SystemExit) as e:
        bt.main(["--merge", str(tmp_path / "curv.json"), "--out", str(out)])
    assert e.value.code == 2 and not out.exists()
