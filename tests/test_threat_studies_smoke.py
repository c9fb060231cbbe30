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
    assert curvature_study.main(["--config", "tiny", "--seeds", "0", "--kinds", "empirical", "layer_inputs",
                                 "--no-retrain", "--out", str(out)]) == 0
    res = load_study_record(out, "curvature")
    assert set(res["table"]) == {"empirical", "layer_inputs"}
    for k in ("empirical", "layer_inputs"):
        assert res["per_seed"][0]["kinds"][k]["trace_masked"] > 0
