"""The adversarial suite: every forged or tampered bundle is REJECTED with a reason; none crashes
the verifier; malformed input gives a clear ArtifactError; nothing is half-written."""

import dataclasses
import json
import shutil

import numpy as np
import pytest

from zkapex_jax import ArtifactError
from zkapex_jax import protocol as P
from zkapex_jax.protocol import artifacts
from zkapex_jax.protocol._circuits import relation, stages
from zkapex_jax.protocol.prover import STATEMENT_FORMAT, prove_witness

NB, B, K = 3, 4, 2  # 2 chunks, the last one padded


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """One commitment, one honest bundle, the provider's own key store (shape K=2, B=4)."""
    root = tmp_path_factory.mktemp("adv")
    with pytest.MonkeyPatch.context() as mp:  # keys and SRS in a temporary cache
        mp.setenv("ZKAPEX_CACHE", str(root / "cache"))
        rng = np.random.default_rng(7)
        g = rng.normal(size=(NB, 3 * B, B))
        fisher = np.einsum("kni,knj->kij", g, g) / (3 * B) + 1e-3 * np.eye(B)
        theta_p = rng.normal(size=(NB, B)) * 0.05
        mask = np.zeros((NB, B), dtype=bool)
        mask[0, [0, 2]] = True
        mask[2, 1] = True
        spec = P.CircuitSpec(block_size=B, chunk_blocks=K)
        client = P.KeyStore(root / "client")
        com, sec = P.commit_personalization(theta_p, fisher, spec, client_id="alice", keystore=client)
        com = P.save_commitment(root / "com.json", com, sec, root / "sec.json")
        bundle = P.prove_unlearning(theta_p, fisher, mask, com, sec, request_id="req-1", out_dir=root / "honest",
                                    keystore=client)
        u = P.unlearn_committed(theta_p, fisher, mask, com, sec)
        yield dict(root=root, theta_p=theta_p, fisher=fisher, mask=mask, spec=spec, com=com, sec=sec, u=u,
                   honest=bundle, client=client, provider=P.KeyStore(root / "provider"))


def verify(w, bundle, **kw):
    kw.setdefault("keystore", w["provider"])
    mask = kw.pop("mask", w["mask"])
    com = kw.pop("com", w["com"])
    return P.verify_bundle(bundle, com, mask, **kw)


def copy_bundle(w, tmp_path, name="b"):
    dst = tmp_path / name
    shutil.copytree(w["honest"], dst)
    return dst


def rewrite_statement(bundle, edit):
    """Edit the statement and re-hash it, as an attacker would."""
    doc = json.loads((bundle / "statement.json").read_text())
    body = {k: v for k, v in doc.items() if k not in ("format", "version", "sha256")}
    edit(body)
    artifacts.write_json_artifact(bundle / "statement.json", STATEMENT_FORMAT, 1, body)


def rehash_proof(bundle, chunk):
    def edit(st):
        p = bundle / st["chunks"][chunk]["proof"]
        st["chunks"][chunk]["proof_sha256"] = artifacts.sha256_hex(p.read_bytes())
    rewrite_statement(bundle, edit)


def forge(w, tmp_path, *, theta_u=None, lam=None, secrets=None, check_openings=True, request_id="req-1"):
    u = w["u"]
    return prove_witness(u.theta_p_q, u.fisher_q, u.q.theta_u if theta_u is None else theta_u,
                         u.q.lam if lam is None else lam, w["mask"], w["com"], secrets or w["sec"],
                         request_id=request_id, out_dir=tmp_path / "forged", keystore=w["client"],
                         check_openings=check_openings)


def rejected(res, *words):
    assert not res.valid, "forged bundle was accepted"
    assert res.reason and all(x in res.reason for x in words), res.reason
    return res


def test_honest_bundle_is_valid(world):
    res = verify(world, world["honest"], client_id="alice", request_id="req-1")
    assert res.valid, res.reason


# ------------------------------------------------------------------ false statements

def test_masked_weights_not_zeroed(world, tmp_path):
    tu = world["u"].q.theta_u.copy()
    tu[world["mask"]] = 1  # one unit off zero: the residual stays provable, the zero check fires
    rejected(verify(world, forge(world, tmp_path, theta_u=tu)), "masked weights")


def test_masked_weights_left_unchanged_cannot_be_proven(world, tmp_path):
    tu = world["u"].q.theta_u.copy()
    tu[world["mask"]] = world["u"].theta_p_q[world["mask"]]
    with pytest.raises(stages.EzklError, match="gen_witness"):
        forge(world, tmp_path, theta_u=tu)


def test_compensation_not_group_obs_is_rejected(world, tmp_path):
    """A perturbed δ (residual in (τ, 2^24)) is proven honestly and rejected on its check value."""
    u, spec = world["u"], world["spec"]
    tu = u.q.theta_u.copy()
    i = 3  # block 0, weight 3: off the mask
    assert not world["mask"][0, i]
    tu[0, i] += int(np.ceil(3 * spec.tau / abs(int(u.fisher_q[0, i, i]))))
    rejected(verify(world, forge(world, tmp_path, theta_u=tu)), "KKT residual")


def test_mask_only_update_cannot_even_be_proven(world, tmp_path):
    """δ = −θp on the mask only: its residual leaves ezkl's range, so no witness exists."""
    u = world["u"]
    tu = np.where(world["mask"], 0, u.theta_p_q)
    with pytest.raises(stages.EzklError, match="gen_witness"):
        forge(world, tmp_path, theta_u=tu)
    assert not (tmp_path / "forged").exists() and list(tmp_path.iterdir()) == []


def test_block_without_mask_changed(world, tmp_path):
    """Block 1 has no masked weight: θu must equal θp there exactly, even if the residual allows."""
    tu = world["u"].q.theta_u.copy()
    assert not world["mask"][1].any()
    tu[1, 0] += 1
    rejected(verify(world, forge(world, tmp_path, theta_u=tu)), "without masked weights")


@pytest.mark.slow
def test_lambda_off_mask(world, tmp_path):
    lam = world["u"].q.lam.copy()
    lam[1, 0] = 5
    rejected(verify(world, forge(world, tmp_path, lam=lam)), "λ is non-zero")


def test_other_theta_p_commitment(world, tmp_path):
    """Same values, other blinders: the proof opens a Com(θp) other than the published one."""
    sec2 = dataclasses.replace(world["sec"], blind_theta_p=tuple(tuple(x + 1 for x in b) for b in world["sec"].blind_theta_p))
    rejected(verify(world, forge(world, tmp_path, secrets=sec2, check_openings=False)), "Com(θp)")


@pytest.mark.slow
def test_other_fisher_commitment(world, tmp_path):
    sec2 = dataclasses.replace(world["sec"], blind_fisher=tuple(tuple(x - 1 for x in b) for b in world["sec"].blind_fisher))
    rejected(verify(world, forge(world, tmp_path, secrets=sec2, check_openings=False)), "Com(C)")


# ------------------------------------------------------------------ tampering with an honest bundle

def test_theta_u_commitment_swapped(world, tmp_path):
    b = copy_bundle(world, tmp_path)

    def edit(st):
        st["chunks"][0]["com_theta_u"], st["chunks"][1]["com_theta_u"] = st["chunks"][1]["com_theta_u"], st["chunks"][0]["com_theta_u"]
    rewrite_statement(b, edit)
    rejected(verify(world, b), "Com(θu)")


def test_theta_u_other_values(world, tmp_path):
    """θu ≠ θp + δ: a Com(θu) of other values (here: θp's published commitment)."""
    b = copy_bundle(world, tmp_path)
    rewrite_statement(b, lambda st: st["chunks"][0].update(com_theta_u=world["com"].com_theta_p[0]))
    rejected(verify(world, b), "Com(θu)")


@pytest.mark.slow
def test_edited_check_instances_of_false_proof(world, tmp_path):
    """A false statement whose check value is edited to 0 in the proof file: ezkl.verify fails."""
    u = world["u"]
    lam = u.q.lam.copy()
    lam[1, 0] = 5
    b = forge(world, tmp_path, lam=lam)
    p = b / "proofs" / "chunk_00000.json"
    proof = json.loads(p.read_text())
    inst = proof["instances"][0]
    n = len(inst)
    nc = relation.N_CHECKS
    assert any(stages.felt_to_int(x) != 0 for x in inst[n - nc:])
    inst[n - nc:] = [stages.int_to_felt(0)] * nc
    p.write_text(json.dumps(proof))
    rehash_proof(b, 0)
    rejected(verify(world, b), "does not verify")


def test_edited_instances_to_replay_for_other_request(world, tmp_path):
    """The attacker recomputes the public statement limbs for request "req-2" (they are public),
    writes them into the proof's instances and the statement: only ezkl.verify can catch it."""
    from zkapex_jax.protocol.statement import context_limbs, statement_core

    b = copy_bundle(world, tmp_path)
    com, spec = world["com"], world["spec"]
    core = statement_core(client_id="alice", request_id="req-2", mask_digest=P.mask_digest(world["mask"]),
                          commitment_sha256=com.sha256, spec=spec.to_dict(), theta_exp=com.theta_exp,
                          n_chunks=com.n_chunks)
    for c in range(com.n_chunks):
        p = b / "proofs" / f"chunk_{c:05d}.json"
        proof = json.loads(p.read_text())
        proof["instances"][0][: spec.n_ctx] = [stages.int_to_felt(x) for x in context_limbs(core, c, spec.n_ctx)]
        p.write_text(json.dumps(proof))
        rehash_proof(b, c)
    rewrite_statement(b, lambda st: st.update(request_id="req-2"))
    rejected(verify(world, b, request_id="req-2"), "does not verify")


def test_edited_mask_instance(world, tmp_path):
    b = copy_bundle(world, tmp_path)
    p = b / "proofs" / "chunk_00001.json"
    proof = json.loads(p.read_text())
    spec = world["spec"]
    proof["instances"][0][spec.n_ctx] = stages.int_to_felt(1)
    p.write_text(json.dumps(proof))
    rehash_proof(b, 1)
    rejected(verify(world, b), "mask")


@pytest.mark.parametrize("field,value,words", [
    ("request_id", "req-2", "another statement"),
    ("client_id", "bob", "client"),
])
def test_replay_for_other_request_or_client(world, tmp_path, field, value, words):
    b = copy_bundle(world, tmp_path)
    rewrite_statement(b, lambda st: st.update({field: value}))
    rejected(verify(world, b), words)


def test_replay_against_expected_ids(world):
    rejected(verify(world, world["honest"], request_id="req-2"), "request")
    rejected(verify(world, world["honest"], client_id="bob"), "client")


def test_replay_for_other_mask(world, tmp_path):
    m2 = world["mask"].copy()
    m2[1, 3] = True
    rejected(verify(world, world["honest"], mask=m2), "mask digest")
    b = copy_bundle(world, tmp_path)
    rewrite_statement(b, lambda st: st.update(mask_digest=P.mask_digest(m2)))
    rejected(verify(world, b, mask=m2), "another statement")


def test_replay_for_other_client_commitment(world, tmp_path):
    """Bob publishes a commitment to the very same θp, C: Alice's proof does not transfer."""
    com_b, sec_b = P.commit_personalization(world["theta_p"], world["fisher"], world["spec"], client_id="bob",
                                            keystore=world["client"])
    com_b = P.save_commitment(tmp_path / "bob.json", com_b, sec_b, tmp_path / "bob-sec.json")
    b = copy_bundle(world, tmp_path)
    rewrite_statement(b, lambda st: st.update(client_id="bob", commitment_sha256=com_b.sha256))
    rejected(verify(world, b, com=com_b), "Com(θp)")


def test_chunk_left_out(world, tmp_path):
    b = copy_bundle(world, tmp_path)
    rewrite_statement(b, lambda st: st.update(chunks=st["chunks"][:1]))
    rejected(verify(world, b), "missing")
    b2 = copy_bundle(world, tmp_path, "b2")
    rewrite_statement(b2, lambda st: st.update(chunks=[st["chunks"][0], st["chunks"][0]]))
    rejected(verify(world, b2), "missing or repeated")


def test_chunks_reordered(world, tmp_path):
    b = copy_bundle(world, tmp_path)

    def edit(st):
        a, c = st["chunks"]
        a["index"], c["index"] = 1, 0
    rewrite_statement(b, edit)
    assert not verify(world, b).valid


@pytest.mark.parametrize("offset", [5, 70, 300, -7])
def test_flipped_bytes_in_proof(world, tmp_path, offset):
    b = copy_bundle(world, tmp_path)
    p = b / "proofs" / "chunk_00000.json"
    proof = json.loads(p.read_text())
    proof["proof"][offset] ^= 0x01
    proof["hex_proof"] = "0x" + bytes(proof["proof"]).hex()
    p.write_text(json.dumps(proof))
    rejected(verify(world, b), "chunk 0")  # proof hash in the statement no longer matches
    rehash_proof(b, 0)
    rejected(verify(world, b), "chunk 0")


def test_statement_tau_or_scale_edited(world, tmp_path):
    b = copy_bundle(world, tmp_path)
    rewrite_statement(b, lambda st: st.update(tau=st["tau"] * 4))
    rejected(verify(world, b), "τ")


# ------------------------------------------------------------------ malformed input

def test_truncated_statement_is_clear_error(world, tmp_path):
    b = copy_bundle(world, tmp_path)
    raw = (b / "statement.json").read_bytes()
    (b / "statement.json").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ArtifactError, match="statement.json: not valid JSON"):
        verify(world, b)


def test_statement_edited_without_rehash(world, tmp_path):
    b = copy_bundle(world, tmp_path)
    doc = json.loads((b / "statement.json").read_text())
    doc["request_id"] = "req-2"
    (b / "statement.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="hash"):
        verify(world, b)


def test_statement_wrong_types(world, tmp_path):
    b = copy_bundle(world, tmp_path)
    rewrite_statement(b, lambda st: st.update(chunks="nope"))
    with pytest.raises(ArtifactError, match="chunks"):
        verify(world, b)
    with pytest.raises(ArtifactError, match="not found"):
        verify(world, tmp_path / "missing-bundle")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing", "empty-proof"])
def test_malformed_proof_file(world, tmp_path, damage):
    b = copy_bundle(world, tmp_path)
    p = b / "proofs" / "chunk_00001.json"
    if damage == "truncate":
        p.write_bytes(p.read_bytes()[:100])
    elif damage == "garbage":
        p.write_bytes(b"\x00\xff" * 50)
    elif damage == "missing":
        p.unlink()
    else:
        proof = json.loads(p.read_text())
        proof["proof"] = []
        proof["hex_proof"] = "0x"
        p.write_text(json.dumps(proof))
    if damage != "missing":
        rehash_proof(b, 1)
    rejected(verify(world, b), "chunk 1")


def test_proof_path_escaping_bundle(world, tmp_path):
    b = copy_bundle(world, tmp_path)
    rewrite_statement(b, lambda st: st["chunks"][0].update(proof="../../etc/passwd"))
    rejected(verify(world, b), "escapes")


def test_malformed_commitment_file(world, tmp_path):
    p = tmp_path / "com.json"
    raw = (world["root"] / "com.json").read_bytes()
    p.write_bytes(raw[:-20])
    with pytest.raises(ArtifactError, match="com.json"):
        P.load_commitment(p)
    doc = json.loads(raw)
    body = {k: v for k, v in doc.items() if k not in ("format", "version", "sha256")}
    body["chunks"][0]["com_theta_p"] = "zz"
    artifacts.write_json_artifact(p, "zkapex.commitment", 1, body)
    with pytest.raises(ArtifactError, match="malformed commitments"):
        P.load_commitment(p)
    with pytest.raises(ArtifactError, match="format"):
        P.load_commitment(world["honest"] / "statement.json")


def test_corrupted_provider_keys_reject_not_crash(world, tmp_path):
    """A damaged vk in the provider's own store: every proof fails to verify (no crash)."""
    shutil.copytree(world["provider"].root, tmp_path / "ks")
    ks = P.KeyStore(tmp_path / "ks")
    art = ks.ensure(world["spec"])
    raw = art.vk.read_bytes()
    art.vk.write_bytes(raw[: len(raw) // 3])
    rejected(verify(world, world["honest"], keystore=ks), "does not verify")


def test_corrupted_proving_key_leaves_nothing(world, tmp_path):
    shutil.copytree(world["client"].root, tmp_path / "ks")
    ks = P.KeyStore(tmp_path / "ks")
    art = ks.ensure(world["spec"])
    art.pk.write_bytes(art.pk.read_bytes()[:1000])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(stages.EzklError):
        P.prove_unlearning(world["theta_p"], world["fisher"], world["mask"], world["com"], world["sec"],
                           request_id="r", out_dir=out / "bundle", keystore=ks)
    assert list(out.iterdir()) == []
