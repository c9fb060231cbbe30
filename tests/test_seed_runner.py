"""The shared stages of one study seed (``zkapex_jax.studies.seed``) on the tiny ``vit-test``
family: every stage's output checked against the stage functions called directly and the
exact relations the method promises (θu[M] = 0, the damping the chooser picked, the curvature
of the configured examples)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zkapex_jax.core.curvature import damp
from zkapex_jax.core.params import flatten_params
from zkapex_jax.models import family
from zkapex_jax.protocol import client
from zkapex_jax.protocol.config import CurvatureSpec, MaskSpec, StageConfig
from zkapex_jax.protocol.provider import Recipe
from zkapex_jax.studies import seed as S

FAM = family("vit-test")
RECIPE = Recipe(epochs=1, lr=1e-3, batch=8, warmup=1)


def _data(n, seed):
    rng = np.random.default_rng(seed)
    return rng.random((n, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, n).astype(np.int32)


@pytest.fixture(scope="module")
def run():
    theta_g = FAM.init(0)
    theta_rg = FAM.init(1)
    personal, forget, retain = _data(16, 0), _data(8, 1), _data(8, 2)
    st = StageConfig(global_recipe=RECIPE, personal_recipe=RECIPE,
                     mask=MaskSpec(fraction=0.05, n_forget=None, n_retain=None),
                     curvature=CurvatureSpec(block_size=16, damping=0.0, relative=True, n_examples=8, chunk=8))
    calls = {}

    def choose(theta_p, raw, mask, layout):
        calls["choose"] = (theta_p, raw)
        return {"damping": 0.25, "val_personal_acc": {0.25: 0.5}}

    def baseline(theta_p, dense):
        calls["baseline"] = (theta_p, dense)
        return jax.tree_util.tree_map(lambda a: a * 2.0, theta_p), {"n": 7}

    def evaluate(params):
        calls["evaluated"] = calls.get("evaluated", 0) + 1
        lg = FAM.logits(params, personal[0], batch_size=8)
        return {"personal_acc": float(np.mean(lg.argmax(-1) == personal[1])),
                "forget_acc": float(np.mean(FAM.logits(params, forget[0], batch_size=8).argmax(-1) == forget[1]))}

    world = S.SeedWorld(family=FAM, stages=st, theta_global=theta_g, theta_global_retrain=theta_rg,
                        personal=personal, mask_forget=forget, mask_retain=retain, evaluate=evaluate,
                        choose_damping=choose, baselines={"doubled": baseline}, mask_meta={"forget": "x"})
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    return world, S.run_seed(world, keys[0], keys[1]), calls, keys


def test_every_model_and_metric_row_is_there(run):
    world, r, calls, _ = run
    assert list(r.models) == ["personalized", "mask_only", "zkapex", "retrain", "doubled"]
    assert set(r.metrics) == set(r.models) | {"global", "global_retrain"}
    assert calls["evaluated"] == len(r.metrics)
    for m in r.metrics.values():  # metrics.add_outcomes ran on every row
        assert {"recovery", "forget_progress"} <= set(m)
    assert r.baseline_info == {"doubled": {"n": 7}}
    assert r.mask.meta["forget"] == "x"
    for k in ("personalize_s", "retrain_personalize_s", "mask_s", "curvature_s", "damping_choice_s",
              "group_obs_s", "selectivity_s", "doubled_s", "evaluate_s"):
        assert r.times[k] >= 0.0


def test_personalization_matches_the_stage_called_directly(run):
    world, r, _, keys = run
    want, _ = client.personalize(FAM, world.theta_global, world.personal, RECIPE, key=keys[0])
    for a, b in zip(jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(r.theta_p)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_curvature_damping_and_group_obs(run):
    world, r, calls, _ = run
    # the undamped curvature of the first n_examples client examples
    first = jax.tree_util.tree_map(lambda a: a[:8], world.personal)
    want = client.client_curvature(FAM, r.theta_p, first, r.layout, damping=0.0, chunk_size=8)
    np.testing.assert_allclose(np.asarray(r.raw), np.asarray(want), rtol=1e-5, atol=1e-10)
    # the chooser saw θp and the raw curvature; its damping (relative) is the one Group-OBS used
    assert calls["choose"][0] is r.theta_p and calls["choose"][1] is r.raw
    assert r.damping == {"value": 0.25, "relative": True, "kind": "empirical", "val_personal_acc": {0.25: 0.5}}
    np.testing.assert_allclose(np.asarray(r.fisher), np.asarray(damp(r.raw, 0.25, relative=True)), rtol=1e-6)
    # θu is the Group-OBS update of that curvature, the masked weights exactly 0
    theta_u, _ = client.unlearn(r.theta_p, jnp.asarray(r.fisher), r.mask, r.layout)
    fu, fz = flatten_params(theta_u), flatten_params(r.models["zkapex"])
    dense = r.mask.dense()
    assert r.mask.num_masked > 0
    for p, m in dense.items():
        np.testing.assert_allclose(np.asarray(fz[p]), np.asarray(fu[p]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(fz[p])[np.asarray(m)], 0.0, atol=1e-12)
        np.testing.assert_allclose(np.asarray(flatten_params(r.models["mask_only"])[p])[np.asarray(m)], 0.0,
                                   atol=1e-12)
    # the baseline got θp and the published mask
    assert calls["baseline"][0] is r.theta_p
    assert {p: int(np.sum(m)) for p, m in calls["baseline"][1].items()} == {p: int(np.sum(m)) for p, m in dense.items()}
    assert set(r.selectivity) >= {"subspace_overlap", "client_rank", "fisher_ratio_at_mask"}


def test_without_a_retrain_model_or_a_chooser():
    """``theta_global_retrain=None``: no retrain rows; no chooser: the configured damping."""
    personal, forget = _data(16, 0), _data(8, 1)  # the shapes above: nothing compiles again
    st = StageConfig(global_recipe=RECIPE, personal_recipe=RECIPE, mask=MaskSpec(fraction=0.05),
                     curvature=CurvatureSpec(block_size=16, damping=1e-2, n_examples=8, chunk=8))
    world = S.SeedWorld(family=FAM, stages=st, theta_global=FAM.init(0), theta_global_retrain=None,
                        personal=personal, mask_forget=forget, mask_retain=_data(8, 2),
                        evaluate=lambda p: {"personal_acc": 0.5, "forget_acc": 0.5})
    r = S.run_seed(world, jax.random.PRNGKey(0), jax.random.PRNGKey(1))
    assert list(r.models) == ["personalized", "mask_only", "zkapex"]
    assert set(r.metrics) == {"personalized", "mask_only", "zkapex", "global"}
    assert r.damping == {"value": 1e-2, "relative": False, "kind": "empirical"}
    d = np.diagonal(np.asarray(r.fisher, np.float64) - np.asarray(r.raw, np.float64), axis1=1, axis2=2)
    np.testing.assert_allclose(d, 1e-2, rtol=1e-4)
