"""zkapex_jax.protocol: commitment → unlearn → prove → verify on a tiny statement; artifacts."""

import json
import contextlib

import numpy as np
import pytest

from zkapex_jax import ArtifactError, MaskMismatchError
from zkapex_jax import protocol as P
from zkapex_jax.protocol import artifacts

NB, B, K = 3, 4, 2  # 3 blocks of 4 weights, 2 blocks per proof → 2 chunks (the last one padded)


def tiny_problem(seed=0):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(NB, 3 * B, B))
    fisher = np.einsum("kni,knj->kij", g, g) / (3 * B) + 1e-3 * np.eye(B)
    fisher *= np.array([1.0, 1e-4, 30.0])[:, None, None]  # blocks of very different magnitude
    theta_p = rng.normal(size=(NB, B)) * 0.05
    mask = np.zeros((NB, B), dtype=bool)
    mask[0, [0, 2]] = True
    mask[2, 1] = True  # block 1 has no masked weight: still proves δ = 0
    return theta_p, fisher, mask


@contextlib.contextmanager
def cache_env(path):
    """Point ZKAPEX_CACHE at a temporary folder inside the ``with`` block."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZKAPEX_CACHE", str(path))
        yield


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("proto")
    with cache_env(root / "cache"):
        theta_p, fisher, mask = tiny_problem()
        spec = P.CircuitSpec(block_size=B, chunk_blocks=K)
        client_ks, provider_ks = P.KeyStore(root / "client"), P.KeyStore(root / "provider")
        com, sec = P.commit_personalization(theta_p, fisher, spec, client_id="alice", keystore=client_ks)
        com = P.save_commitment(root / "com.json", com, sec, root / "sec.json")
        bundle = P.prove_unlearning(theta_p, fisher, mask, P.load_commitment(root / "com.json"),
                                    P.load_secrets(root / "sec.json", com), request_id="req-1",
                                    out_dir=root / "bundle", keystore=client_ks)
        yield dict(root=root, theta_p=theta_p, fisher=fisher, mask=mask, spec=spec, com=com, sec=sec,
                   bundle=bundle, provider_ks=provider_ks, client_ks=client_ks)


def test_commitment_roundtrip(setup):
    com = P.load_commitment(setup["root"] / "com.json")
    assert com == setup["com"] and com.n_chunks == 2 and com.num_blocks == NB
    assert com.srs_insecure  # locally generated SRS is labelled
    sec = P.load_secrets(setup["root"] / "sec.json", com)
    assert len(sec.blind_theta_p) == 2 and len(sec.blind_theta_p[0]) == setup["spec"].n_blind


def test_commitments_hide(setup, tmp_path):
    """Same values, fresh blinders → different commitments (KZG alone is deterministic)."""
    with cache_env(setup["root"] / "cache"):
        com2, _ = P.commit_personalization(setup["theta_p"], setup["fisher"], setup["spec"], client_id="alice",
                                           keystore=setup["client_ks"])
    assert set(com2.com_theta_p).isdisjoint(setup["com"].com_theta_p)
    assert set(com2.com_fisher).isdisjoint(setup["com"].com_fisher)


def test_unlearned_model_is_the_certified_one(setup):
    u = P.unlearn_committed(setup["theta_p"], setup["fisher"], setup["mask"], setup["com"], setup["sec"])
    assert np.all(u.theta_u[setup["mask"]] == 0)
    assert np.all(u.delta[1] == 0)  # block without masked weights
    assert np.allclose(u.theta_u, setup["theta_p"] + u.delta, atol=2.0 ** -setup["com"].theta_exp)
    assert np.all(np.abs(u.q.residual) <= setup["spec"].tau)


def test_honest_bundle_verifies_with_provider_keys(setup):
    with cache_env(setup["root"] / "cache"):
        res = P.verify_bundle(setup["bundle"], setup["com"], setup["mask"], keystore=setup["provider_ks"],
                              client_id="alice", request_id="req-1")
    assert res.valid, res.reason
    assert res.n_chunks == 2 and res.insecure_srs and "INSECURE" in res.reason
    st = P.load_statement(setup["bundle"])
    assert st["tau"] == setup["spec"].tau and st["mask_digest"] == P.mask_digest(setup["mask"])


def test_prove_refuses_existing_dir_and_bad_mask(setup):
    with pytest.raises(FileExistsError):
        P.prove_unlearning(setup["theta_p"], setup["fisher"], setup["mask"], setup["com"], setup["sec"],
                           request_id="r", out_dir=setup["bundle"])
    with pytest.raises(MaskMismatchError):
        P.unlearn_committed(setup["theta_p"], setup["fisher"], setup["mask"][:2], setup["com"], setup["sec"])


def test_wrong_parameters_do_not_open_commitment(setup, tmp_path):
    with cache_env(setup["root"] / "cache"):
        with pytest.raises(P.ProofError, match="do not open"):
            P.prove_unlearning(setup["theta_p"] * 1.01, setup["fisher"], setup["mask"], setup["com"], setup["sec"],
                               request_id="r", out_dir=tmp_path / "b", keystore=setup["client_ks"])
    assert not (tmp_path / "b").exists() and list(tmp_path.iterdir()) == []  # nothing half-written


def test_json_artifacts_validate(tmp_path):
    p = tmp_path / "a.json"
    h = artifacts.write_json_artifact(p, "x.fmt", 1, {"a": 1})
    assert artifacts.read_json_artifact(p, "x.fmt")["sha256"] == h
    with pytest.raises(ArtifactError, match="format"):
        artifacts.read_json_artifact(p, "y.fmt")
    with pytest.raises(ArtifactError, match="version"):
        artifacts.read_json_artifact(p, "x.fmt", (2,))
    doc = json.loads(p.read_text())
    doc["a"] = 2
    p.write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="hash"):
        artifacts.read_json_artifact(p, "x.fmt")
    p.write_text('{"format": "x.f')
    with pytest.raises(ArtifactError, match="a.json: not valid JSON"):
        artifacts.read_json_artifact(p, "x.fmt")
    with pytest.raises(ArtifactError, match="not found"):
        artifacts.read_json_artifact(tmp_path / "none.json", "x.fmt")


def test_array_artifacts_validate(tmp_path):
    p = tmp_path / "a.npz"
    artifacts.save_arrays(p, "x.arr", 1, {"a": np.arange(6).reshape(2, 3)}, {"k": 1})
    arrs, meta = artifacts.load_arrays(p, "x.arr")
    assert np.array_equal(arrs["a"], np.arange(6).reshape(2, 3)) and meta == {"k": 1}
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ArtifactError, match="a.npz"):
        artifacts.load_arrays(p, "x.arr")


def test_mask_digest_and_limbs():
    m = np.zeros((3, 4), dtype=bool)
    m2 = m.copy()
    m2[1, 2] = True
    assert P.mask_digest(m) != P.mask_digest(m2) != P.mask_digest(m2.reshape(4, 3))
    core = {"a": 1}
    limbs = P.context_limbs(core, 0, 12)
    assert len(limbs) == 12 and all(0 <= x < 2 ** 21 for x in limbs)
    assert limbs != P.context_limbs(core, 1, 12) != P.context_limbs({"a": 2}, 0, 12)
