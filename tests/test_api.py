"""The protocol's stages on parameters (zkapex_jax.protocol.api): params ↔ blocks exactly, the
curvature artifact, and one commit → unlearn → prove → verify flow on a two-leaf model, with
the refusals a client or a provider meets when the parameters are not the committed ones."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from zkapex_jax import ArtifactError, ShapeError
from zkapex_jax.core.blocks import BlockLayout
from zkapex_jax.core.mask import Mask
from zkapex_jax.protocol import CommitSpec, KeyStore, ProofError, api, load_commitment, save_commitment
from zkapex_jax.protocol.artifacts import save_arrays
from zkapex_jax.protocol.binding import Opening

PATH = "dense/kernel"
B = 4
LOGROWS = 11


def tiny_model(seed=0):
    """A kernel (4, 4) float32 (the statement: 4 blocks of 4) and a bias outside it."""
    rng = np.random.default_rng(seed)
    return {"dense": {"kernel": (rng.normal(size=(4, 4)) * 0.1).astype(np.float32),
                      "bias": (rng.normal(size=4) * 0.1).astype(np.float32)}}


def tiny_curvature(layout, seed=1):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(layout.num_blocks, 12, B))
    return api.Curvature(np.einsum("kni,knj->kij", g, g) / 12 + 1e-3 * np.eye(B), layout, kind="empirical",
                         damping=1e-3)


def tiny_mask(bits=(1, 6, 7, 12), method="test", meta=None):
    m = np.zeros((4, 4), dtype=bool)
    m.reshape(-1)[list(bits)] = True
    return Mask.from_dense({PATH: m}, fraction=len(bits) / 16, method=method, meta=meta)


def test_statement_blocks_round_trip_keeps_dtypes_and_the_rest():
    params = tiny_model()
    layout = BlockLayout.from_params(params, PATH, B)
    tb = api.statement_blocks(params, layout)
    assert tb.shape == (4, B) and tb.dtype == np.float64
    new = api.with_statement(params, layout, tb + 0.5)
    assert new["dense"]["kernel"].dtype == np.float32
    np.testing.assert_allclose(api.statement_blocks(new, layout), tb + 0.5, rtol=0, atol=1e-6)
    assert new["dense"]["bias"] is params["dense"]["bias"]                     # outside the statement: untouched
    assert set(api.rest_of(params, layout)) == {"dense/bias"}
    with pytest.raises(ShapeError, match="blocks have shape"):
        api.with_statement(params, layout, tb[:2])


def test_curvature_artifact_round_trip_and_older_files(tmp_path):
    layout = BlockLayout.from_params(tiny_model(), PATH, B)
    c = dataclasses.replace(tiny_curvature(layout), kind="layer_inputs", damping=0.01, relative=True)
    digest = c.save(tmp_path / "c.npz")
    back = api.Curvature.load(tmp_path / "c.npz")
    assert len(digest) == 64 and (back.kind, back.relative) == ("layer_inputs", True)
    assert abs(back.damping - 0.01) < 1e-15 and back.layout.to_dict() == layout.to_dict()
    np.testing.assert_allclose(back.fisher, c.fisher, rtol=1e-15, atol=0)  # float64 stored as is
    # a version-1 file (fisher + layout only, zkapex ≤ 0.2) still reads, its kind unknown
    save_arrays(tmp_path / "v1.npz", "zkapex.fisher", 1, {"fisher": c.fisher}, {"layout": layout.to_dict()})
    v1 = api.Curvature.load(tmp_path / "v1.npz")
    assert v1.kind == "unknown" and v1.damping is None and v1.fisher.shape == (4, B, B)
    # refused, naming the file: a shape the layout does not fit, malformed fields, no array
    save_arrays(tmp_path / "bad.npz", "zkapex.fisher", 2, {"fisher": c.fisher[:2]}, {"layout": layout.to_dict()})
    save_arrays(tmp_path / "kind.npz", "zkapex.fisher", 2, {"fisher": c.fisher}, {"layout": layout.to_dict(), "kind": 3})
    save_arrays(tmp_path / "none.npz", "zkapex.fisher", 2, {"f": c.fisher}, {"layout": layout.to_dict()})
    for name, msg in (("bad", "curvature has shape"), ("kind", "malformed kind"), ("none", "no 'fisher' array")):
        with pytest.raises(ArtifactError, match=msg):
            api.Curvature.load(tmp_path / f"{name}.npz")
    with pytest.raises(ShapeError):
        api.Curvature(c.fisher[:, :2, :2], layout)


@pytest.fixture(scope="module")
def flow(tmp_path_factory, zk_shared):
    root = tmp_path_factory.mktemp("api")
    params = tiny_model()
    layout = BlockLayout.from_params(params, PATH, B)
    curvature = tiny_curvature(layout)
    client_ks, provider_ks = KeyStore(), KeyStore(zk_shared["provider"])
    cs = api.commit_spec(B, LOGROWS, keystore=client_ks)
    com, sec = api.commit(params, curvature, cs, client_id="alice", keystore=client_ks)
    com = save_commitment(root / "com.npz", com, sec, root / "sec.npz")
    mask = tiny_mask()
    theta_u, u = api.unlearn(params, mask, com, sec, keystore=client_ks)
    bundle = api.prove(params, mask, com, sec, request_id="r1", out_dir=root / "bundle", unlearned=u,
                       keystore=client_ks, opening_out=root / "opening.npz")
    return dict(root=root, params=params, layout=layout, curvature=curvature, com=com, sec=sec, mask=mask,
                theta_u=theta_u, u=u, bundle=bundle, client_ks=client_ks, provider_ks=provider_ks)


def test_unlearn_returns_params_with_only_the_statement_changed(flow):
    theta_u, u, layout = flow["theta_u"], flow["u"], flow["layout"]
    k = theta_u["dense"]["kernel"]
    assert k.dtype == np.float32 and np.all(k.reshape(-1)[[1, 6, 7, 12]] == 0)   # masked weights exactly 0
    np.testing.assert_allclose(api.statement_blocks(theta_u, layout), u.theta_u, rtol=0, atol=1e-6)
    assert theta_u["dense"]["bias"] is flow["params"]["dense"]["bias"]
    # the same update from the Fisher (secrets without the carried Â) and from the carried Â
    legacy = dataclasses.replace(flow["sec"], inverse_q=None)
    again, _ = api.unlearn(flow["params"], flow["mask"], flow["com"], legacy, keystore=flow["client_ks"],
                           curvature=flow["curvature"])
    np.testing.assert_allclose(again["dense"]["kernel"], k, rtol=0, atol=1e-7)
    with pytest.raises(ArtifactError, match="give the curvature"):
        api.unlearn(flow["params"], flow["mask"], flow["com"], legacy, keystore=flow["client_ks"])


def test_the_whole_model_verifies_and_nothing_else_does(flow):
    com, mask, ks = load_commitment(flow["root"] / "com.npz"), flow["mask"], flow["provider_ks"]
    opening = Opening.load(flow["root"] / "opening.npz")
    res = api.verify(flow["bundle"], com, mask, keystore=ks, request_id="r1", deployed=flow["theta_u"], opening=opening)
    assert res.valid, res.reason
    # a deployed model whose bias (outside the statement) differs is refused
    other = {"dense": {**flow["theta_u"]["dense"], "bias": flow["theta_u"]["dense"]["bias"] + np.float32(0.01)}}
    res = api.verify(flow["bundle"], com, mask, keystore=ks, deployed=other, opening=opening)
    assert not res.valid and "outside the statement" in res.reason
    # the same mask bits under other metadata (another forget set) are another request
    relabelled = tiny_mask(meta={"forget_classes": [1]})
    assert not api.verify(flow["bundle"], com, relabelled, keystore=ks).valid
    with pytest.raises(ValueError, match="go together"):
        api.verify(flow["bundle"], com, mask, keystore=ks, deployed=flow["theta_u"])


def test_prove_refuses_models_that_are_not_the_certified_update(flow, tmp_path):
    params, com, sec, mask, ks = flow["params"], flow["com"], flow["sec"], flow["mask"], flow["client_ks"]
    tampered = {"dense": {**flow["theta_u"]["dense"], "bias": np.zeros(4, np.float32)}}
    with pytest.raises(ProofError, match="dense/bias"):
        api.prove(params, mask, com, sec, request_id="r2", out_dir=tmp_path / "b1", unlearned=tampered, keystore=ks)
    # an Unlearned made for another request, or θp that is not the committed model
    _, u_other = api.unlearn(params, tiny_mask(bits=(0, 5)), com, sec, keystore=ks)
    with pytest.raises(ProofError, match="another request"):
        api.prove(params, mask, com, sec, request_id="r2", out_dir=tmp_path / "b2", unlearned=u_other, keystore=ks)
    moved = {"dense": {**params["dense"], "bias": params["dense"]["bias"] + np.float32(1e-3)}}
    with pytest.raises(ProofError, match="not the committed personalized model"):
        api.unlearn(moved, mask, com, sec, keystore=ks)
    assert not any((tmp_path / n).exists() for n in ("b1", "b2"))


def test_commitment_layout_is_checked(flow):
    com = flow["com"]
    assert api.commitment_layout(com).to_dict() == flow["layout"].to_dict()
    with pytest.raises(ArtifactError, match="no block layout"):
        api.commitment_layout(dataclasses.replace(com, layout=None))
    wrong = BlockLayout.from_params(tiny_model(), PATH, 2).to_dict()
    with pytest.raises(ArtifactError, match="differs from the commitment"):
        api.commitment_layout(dataclasses.replace(com, layout=wrong))
    with pytest.raises(ShapeError, match="block size"):
        api.commit(flow["params"], flow["curvature"], CommitSpec(block_size=8, logrows=LOGROWS), client_id="a")
