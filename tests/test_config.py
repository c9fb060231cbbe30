"""The nested stage configuration (zkapex_jax.protocol.config): one vocabulary that the image
study, the code study and the CLI each fill in once, and the stages that read it."""

from __future__ import annotations

from types import SimpleNamespace

import jax
import numpy as np
import pytest

from zkapex_jax import family
from zkapex_jax.core.blocks import BlockLayout
from zkapex_jax.protocol import Curvature, CurvatureSpec, MaskSpec, StageConfig, client, provider
from zkapex_jax.protocol.provider import Recipe
from zkapex_jax.studies.image import PipelineConfig
from zkapex_jax.studies.opt_code import OptCodeConfig

from conftest import build_model_cached


def _stages():
    r = Recipe(epochs=1, lr=1e-3, batch=4)
    return StageConfig(r, r, MaskSpec(patterns="*/intermediate/dense/kernel"), CurvatureSpec(block_size=16))


def test_nested_replace_and_validation():
    st = _stages()
    st2 = st.replace(mask__fraction=0.01, curvature__kind="layer_inputs", personal_recipe__epochs=3)
    assert st2.mask.fraction == pytest.approx(0.01) and st2.curvature.kind == "layer_inputs"
    assert st2.personal_recipe.epochs == 3 and st2.global_recipe.epochs == 1 and st.mask.fraction == pytest.approx(0.04)
    assert st.mask.patterns == ("*/intermediate/dense/kernel",)          # a single pattern becomes a tuple
    assert st2.to_dict()["curvature"]["block_size"] == 16
    for bad, msg in ((dict(mask__fraction=0.0), "fraction"), (dict(mask__method="magic"), "method"),
                     (dict(mask__scope="layer"), "scope"), (dict(mask__protect=-1), "protect"),
                     (dict(curvature__kind="hessian"), "curvature must be"), (dict(curvature__damping=-1.0), "damping"),
                     (dict(curvature__block_size=0), "block_size"), (dict(fisher__kind="x"), "no section")):
        with pytest.raises(ValueError, match=msg):
            st.replace(**bad)


def test_the_studies_map_their_words_onto_the_same_fields():
    pc = PipelineConfig(block_size=32, damping=1e-3, damping_relative=True, curvature="layer_inputs", n_fisher=48,
                        n_mask_forget=100, mask_method="taylor_forget", pers_epochs=7)
    st = pc.stages()
    assert (st.curvature.block_size, st.curvature.kind, st.curvature.relative, st.curvature.n_examples) == (
        32, "layer_inputs", True, 48)
    assert abs(st.curvature.damping - 1e-3) < 1e-15 and st.mask.n_forget == 100 and st.mask.method == "taylor_forget"
    assert st.personal_recipe.epochs == 7 and st.personal_recipe.layer_decay == pytest.approx(0.8)
    oc = OptCodeConfig(name="t", fisher_block=64, fisher_damping=1e-4, n_fisher=32, n_mask_examples=50,
                       personal_steps=40, personal_batch=8)
    so = oc.stages(n_global=1000, n_personal=80)
    assert (so.curvature.block_size, so.curvature.n_examples, so.mask.n_forget, so.mask.n_retain) == (64, 32, 50, 50)
    assert abs(so.curvature.damping - 1e-4) < 1e-15
    assert so.personal_recipe.epochs == 4 and so.personal_recipe.batch == 8                # 40 steps of 8 over 80
    assert so.mask.patterns == tuple(oc.mask_patterns)


def test_layout_falls_back_to_the_family_patterns():
    fam = family("vit-test")
    _, params = build_model_cached("vit-test", seed=0)
    st = _stages().replace(mask__patterns=None)
    lay = st.layout(fam, params)
    want = BlockLayout.from_params(params, fam.mask_patterns, 16)
    assert lay.to_dict() == want.to_dict()


def test_spec_stages_record_what_they_did():
    fam = family("vit-test")
    _, params = build_model_cached("vit-test", seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((6, 28, 28, 1)).astype(np.float32)
    y = np.array([0, 1, 2, 3, 4, 5])
    st = _stages().replace(mask__fraction=0.05, mask__protect=2, curvature__kind="layer_inputs",
                           curvature__damping=1e-2, curvature__relative=True)
    lay = st.layout(fam, params)
    scores = provider.request_scores(fam, params, (x[:3], y[:3]), (x[3:], y[3:]), st.mask)
    with pytest.raises(ValueError, match="block layout"):
        provider.publish_request(scores, st.mask)
    mask = provider.publish_request(scores, st.mask, layout=lay, meta={"forget_classes": [0, 1, 2]})
    codes = mask.request_blocks(lay)
    masked_rows, prot = (codes == 1).any(axis=1), (codes == 2).sum(axis=1)
    assert mask.num_masked > 0 and mask.num_protected == int(prot.sum()) > 0
    assert prot.max() <= 2 and not prot[~masked_rows].any()            # up to r′ = 2, only in masked blocks
    assert mask.meta["forget_classes"] == [0, 1, 2] and mask.meta["n_forget"] == 480     # the spec's, as recorded
    c = client.curvature(fam, params, (x, y), lay, st.curvature, key=jax.random.PRNGKey(0))
    assert isinstance(c, Curvature) and (c.kind, c.relative) == ("layer_inputs", True)
    assert abs(c.damping - 1e-2) < 1e-15 and c.fisher.shape == (lay.num_blocks, 16, 16)
    assert np.linalg.eigvalsh(c.fisher).min() > 0
    with pytest.raises(ValueError, match="not the spec's"):
        client.curvature(fam, params, (x, y), lay, st.curvature.replace(block_size=8))


def test_cli_language_models_take_the_code_study_defaults():
    from zkapex_jax.cli._inputs import stage_config

    args = SimpleNamespace(model="vit-test", block_size=16, cmd="personalize", epochs=None, lr=None, batch=None,
                           layer_decay=None, pattern=None, fraction=None)
    img = stage_config(args, family("vit-test"), n_train=10)
    assert img.personal_recipe.lr == pytest.approx(8e-4) and img.mask.n_forget == 480
    lm = stage_config(args, family("opt-test", vocab_size=300), n_train=64)
    oc = OptCodeConfig(name="cli")
    assert lm.personal_recipe.lr == pytest.approx(oc.personal_lr) and lm.personal_recipe.grad_clip == pytest.approx(1.0)
    assert lm.mask.n_forget == oc.n_mask_examples and lm.mask.patterns is None and lm.curvature.block_size == 16
    args.epochs, args.cmd = 2, "train"
    assert stage_config(args, family("opt-test", vocab_size=300), n_train=64).global_recipe.epochs == 2
