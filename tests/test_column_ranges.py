"""Column range proofs (``CommitSpec.column_range = "amortized"``, zkapex_jax/protocol/ranges.py):
|Â| < 2^a proven once per committed column, apart from the requests, and reused by later requests.

The circuit at the witness level (the attacker's route: edit the witness JSON, then prove), the
embedded commitments against the published ones, the bundle's range proofs edited, relabelled,
dropped or padded, and a client that committed an out-of-range column and lies in its own store."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from zkapex_jax import protocol as P
from zkapex_jax.core import quant
from zkapex_jax.protocol import artifacts, prover, ranges
from zkapex_jax.protocol._circuits import relation, stages
from zkapex_jax.protocol.commitments import commit_circuit

from conftest import rewrite_statement

NB, B, LOGROWS = 4, 4, 11
P_FIELD = stages.FIELD_MODULUS
SQRT_M1 = pow(5, (P_FIELD - 1) // 4, P_FIELD)


def _cs(**kw):
    return relation.CommitSpec(block_size=B, logrows=LOGROWS, column_range="amortized", **kw)


# ----------------------------------------------------------------------------- the circuit

def test_specs_roundtrip_and_the_inline_spec_is_unchanged():
    inline = relation.CommitSpec(block_size=B, logrows=LOGROWS)
    assert "column_range" not in inline.to_dict()          # v9 specs (and their keys) as they were
    assert _cs().to_dict()["column_range"] == "amortized"
    assert relation.CommitSpec.from_dict(_cs().to_dict()) == _cs()
    with pytest.raises(ValueError, match="column_range"):
        relation.CommitSpec(block_size=B, logrows=LOGROWS, column_range="later")
    rs = relation.RangeSpec(_cs(), 3)
    assert relation.spec_from_dict(json.loads(json.dumps(rs.to_dict()))) == rs
    assert relation.spec_from_dict(relation.CircuitSpec(_cs(), kmax=2).to_dict()) == relation.CircuitSpec(_cs(), kmax=2)
    assert rs.key.startswith("R4_m3_L11_") and rs.input_lengths() == (B + 8,) * 3 + (1,)
    # the range circuit's own decomposition: the fewest digits for a = 24 (request circuits: s = 60)
    assert rs.decomposition == (1024, 3) and rs.range_bits == 30
    assert relation.RangeSpec(relation.CommitSpec(block_size=B, logrows=13, column_range="amortized"), 1).decomposition == (4096, 2)
    # the amortized request circuit drops exactly the column checks
    a, i = relation.CircuitSpec(_cs(), kmax=2), relation.CircuitSpec(inline, kmax=2)
    assert a.check_groups == tuple(g for g in i.check_groups if g != "columns")
    assert a.n_instances() == i.n_instances() - 1
    assert stages.circuit_rows(a) < stages.circuit_rows(i)


@pytest.fixture(scope="module")
def rart(zk_shared):
    return stages.ensure_circuit(relation.RangeSpec(_cs(), 3))


def _range_inputs(spec, cols):
    return relation.range_inputs(spec, cols, [[101 + 7 * c + i for i in range(spec.commit.n_blind)]
                                              for c in range(spec.n_columns)])


def _witness(art, inputs, tmp_path):
    import ezkl

    (tmp_path / "in.json").write_text(json.dumps({"input_data": [[float(x) for x in v] for v in inputs]}))
    ezkl.gen_witness(str(tmp_path / "in.json"), str(art.compiled), str(tmp_path / "w.json"),
                     vk_path=str(art.vk), srs_path=str(art.srs))
    return json.loads((tmp_path / "w.json").read_text())


def test_honest_range_proof_embeds_the_published_commitments(rart, tmp_path):
    """Inputs laid out as request slots: the commitments the range proof embeds are the commit
    circuit's for the same values and blinders (what the client publishes), the padding column's too."""
    spec = rart.spec
    cols = [[3, -(2 ** 23), 2 ** 24 - 1, 0], [-(2 ** 24 - 1), 5, 7, -9]]
    inputs = _range_inputs(spec, cols)
    stages.prove_chunk(rart, inputs, tmp_path / "p.json")
    raw = (tmp_path / "p.json").read_bytes()
    inst, coms = stages.proof_public(json.loads(raw), spec.n_inputs)
    assert inst == [0, 0]
    published = stages.commit_vectors(stages.ensure_circuit(commit_circuit(spec.commit)), inputs[:spec.n_columns])
    assert coms[:spec.n_columns] == published
    assert stages.verify_chunk_bytes(raw, rart.settings, rart.vk, rart.srs)


@pytest.mark.parametrize("value, accepted", [(2 ** 24 - 1, True), (-(2 ** 24 - 1), True), (2 ** 24, False),
                                             (-(2 ** 24), False), (SQRT_M1, False), (P_FIELD - 2 ** 40, False)])
def test_witness_edit_of_a_column_entry(rart, tmp_path, value, accepted):
    """The attacker edits one entry of a committed column in the witness (ezkl never range-checks
    polycommit inputs itself): it proves iff |entry| < 2^a = 2^24 — the bound is exact at both ends,
    and a field element (√−1, or −2^40 as p − 2^40) is refused."""
    import ezkl

    spec = rart.spec
    w = _witness(rart, _range_inputs(spec, [[1, 2, 3, 4], [5, 6, 7, 8]]), tmp_path)
    w["inputs"][1][2] = stages.int_to_felt(value % P_FIELD)
    (tmp_path / "w2.json").write_text(json.dumps(w))
    try:
        ezkl.prove(str(tmp_path / "w2.json"), str(rart.compiled), str(rart.pk), str(tmp_path / "pf.json"),
                   srs_path=str(rart.srs))
        ok = stages.verify_chunk(tmp_path / "pf.json", rart.settings, rart.vk, rart.srs)
    except Exception:  # noqa: BLE001 — synthesis refuses
        ok = False
    assert ok == accepted


# ----------------------------------------------------------------------------- the protocol

def tiny_problem(seed=0):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(NB, 3 * B, B))
    fisher = np.einsum("kni,knj->kij", g, g) / (3 * B) + 1e-2 * np.eye(B)
    theta_p = rng.normal(size=(NB, B)) * 0.05
    mask = np.zeros((NB, B), dtype=bool)   # two masked weights in blocks 0 and 3: one bucket, one proof
    mask[0, [0, 2]] = True
    mask[3, [1, 3]] = True
    return theta_p, fisher, mask


@pytest.fixture(scope="module")
def amort(tmp_path_factory, zk_shared):
    root = tmp_path_factory.mktemp("ranges")
    theta_p, fisher, mask = tiny_problem()
    client, provider = P.KeyStore(), P.KeyStore(zk_shared["provider"])
    com, sec = P.commit_personalization(theta_p, fisher, _cs(), client_id="alice", keystore=client)
    store = ranges.RangeStore(root / "store", com)
    bundle = P.prove_unlearning(theta_p, fisher, mask, com, sec, request_id="r1", out_dir=root / "b1",
                                keystore=client, range_store=store)
    return dict(root=root, theta_p=theta_p, fisher=fisher, mask=mask, com=com, sec=sec, client=client,
                provider=provider, store=store, bundle=bundle)


def verify(w, bundle, mask=None, com=None):
    return P.verify_bundle(bundle, com or w["com"], w["mask"] if mask is None else mask, keystore=w["provider"])


def rejected(res, *words):
    assert not res.valid, "accepted a forged bundle"
    assert all(x in res.reason for x in words), res.reason
    return True


def copy_bundle(w, tmp_path, name="b"):
    return Path(shutil.copytree(w["bundle"], tmp_path / name))


def test_amortized_bundle_is_valid_and_covers_exactly_the_read_columns(amort):
    res = verify(amort, amort["bundle"])
    assert res.valid, res.reason
    assert res.details["column_range"] == "amortized" and res.details["column_range_proofs"] == 1
    st = P.load_statement(amort["bundle"])
    covered = sorted(tuple(c) for e in st["column_ranges"] for c in e["columns"])
    plan = P.plan_proofs(amort["mask"], amort["com"].spec, root=amort["client"].root)
    assert covered == ranges.read_columns(plan, amort["mask"]) == [(0, 0), (0, 2), (3, 1), (3, 3)]
    assert st["prover"]["range_proofs_new"] == len(st["column_ranges"]) == 1


def test_a_later_request_reuses_the_range_proofs(amort, tmp_path):
    """The second request reads two new columns and two old ones: one new range proof for the new
    ones, the first one reused from the client's store (its file copied into the bundle); VALID."""
    mask2 = amort["mask"].copy()
    mask2[0, 2] = False
    mask2[2, [1, 2]] = True
    b2 = P.prove_unlearning(amort["theta_p"], amort["fisher"], mask2, amort["com"], amort["sec"], request_id="r2",
                            out_dir=tmp_path / "b2", keystore=amort["client"], range_store=amort["root"] / "store")
    st = P.load_statement(b2)
    assert st["prover"]["range_proofs_new"] == 1 and len(st["column_ranges"]) == 2
    assert st["column_ranges"][0]["proof_sha256"] == P.load_statement(amort["bundle"])["column_ranges"][0]["proof_sha256"]
    assert sorted(tuple(c) for c in st["column_ranges"][1]["columns"]) == [(2, 1), (2, 2)]
    assert verify(amort, b2, mask=mask2).valid
    assert len(ranges.RangeStore(amort["root"] / "store", amort["com"]).entries) == 2


def test_range_proof_dropped(amort, tmp_path):
    b = copy_bundle(amort, tmp_path)
    rewrite_statement(b, lambda st: st.update(column_ranges=[]))
    assert rejected(verify(amort, b), "no verified column range proof covers")


@pytest.mark.parametrize("columns", [[[[0], [0]]], [[0, True]], [[0, 0], [0, 0]], [[9, 0]], [[0, 4]], [], "0,0", [[0, 0.0]]])
def test_range_proof_columns_malformed(amort, tmp_path, columns):
    """Ill-typed, repeated or out-of-commitment column lists are rejected with a reason, never a crash."""
    b = copy_bundle(amort, tmp_path)
    rewrite_statement(b, lambda st: st["column_ranges"][0].update(columns=columns))
    assert rejected(verify(amort, b), "column range proof 0")


def test_range_proof_relabelled_to_other_columns(amort, tmp_path):
    b = copy_bundle(amort, tmp_path)

    def edit(st):
        st["column_ranges"][0]["columns"][0] = [0, 1]   # claims column 1 of block 0 (not the one it embeds)
    rewrite_statement(b, edit)
    assert rejected(verify(amort, b), "not the published inverse-Fisher column 1 of block 0")


@pytest.mark.parametrize("where", ["commitment", "middle", "end"])
def test_range_proof_bytes_flipped(amort, tmp_path, where):
    b = copy_bundle(amort, tmp_path)
    p = b / P.load_statement(b)["column_ranges"][0]["proof"]
    doc = json.loads(p.read_text())
    raw = bytearray(doc["proof"])
    raw[{"commitment": 5, "middle": len(raw) // 2, "end": len(raw) - 3}[where]] ^= 1
    doc["proof"] = list(raw)
    doc.pop("hex_proof", None)
    p.write_text(json.dumps(doc))
    rewrite_statement(b, lambda st: st["column_ranges"][0].update(proof_sha256=artifacts.sha256_hex(p.read_bytes())))
    res = verify(amort, b)
    assert rejected(res, "column range proof 0")
    assert any(x in res.reason for x in ("does not verify", "not the published", "malformed")), res.reason


def test_a_request_proof_presented_as_a_range_proof(amort, tmp_path):
    """The request proof of block 0 embeds the published columns (0, 0) and (0, 2) in its slots, but
    it is no range proof: its instances and its first embedded commitments are not a range proof's."""
    b = copy_bundle(amort, tmp_path)
    st0 = P.load_statement(b)
    e = next(e for e in st0["proofs"] if 0 in e["blocks"])

    def edit(st):
        st["column_ranges"].append({"proof": e["proof"], "proof_sha256": e["proof_sha256"], "columns": [[0, 0]]})
    rewrite_statement(b, edit)
    assert rejected(verify(amort, b), "column range proof 1")


def test_unrelated_or_too_many_range_proofs(amort, tmp_path):
    """No padding the verifier's work: more range proofs than columns read, or one that covers no
    column the request reads, is rejected before any of them is verified."""
    b = copy_bundle(amort, tmp_path)
    rewrite_statement(b, lambda st: st.update(column_ranges=st["column_ranges"] * 5))
    assert rejected(verify(amort, b), "5 column range proofs for the 4 columns")

    def edit(st):
        e = dict(st["column_ranges"][0])
        e["columns"] = [[1, 0]]   # block 1 is not in the request
        st["column_ranges"].append(e)
    rewrite_statement(b, lambda st: st.update(column_ranges=st["column_ranges"][:1]))
    rewrite_statement(b, edit)
    assert rejected(verify(amort, b), "column range proof 1 covers no column the request reads")


def test_a_store_with_proofs_of_other_values_is_not_relied_on(amort, tmp_path):
    """A client's store holding range proofs that do not open its published columns (written for
    another commitment of the same data, or edited): the prover ignores them and proves again, so
    the bundle is VALID. Two unsaved commitments of the same data get different default stores."""
    com2, sec2 = P.commit_personalization(amort["theta_p"], amort["fisher"], _cs(), client_id="alice",
                                          keystore=amort["client"])
    assert com2.sha256 == amort["com"].sha256 == ""          # neither saved: the file hash does not tell them apart
    assert ranges.column_commitments_digest(com2) != ranges.column_commitments_digest(amort["com"])
    stale = ranges.RangeStore(tmp_path / "stale", com2)
    e = P.load_statement(amort["bundle"])["column_ranges"][0]
    stale.add((amort["bundle"] / e["proof"]).read_bytes(), [tuple(c) for c in e["columns"]])   # other blinders
    b = P.prove_unlearning(amort["theta_p"], amort["fisher"], amort["mask"], com2, sec2, request_id="r1",
                           out_dir=tmp_path / "b", keystore=amort["client"], range_store=tmp_path / "stale")
    assert P.load_statement(b)["prover"]["range_proofs_new"] == 1
    assert verify(amort, b, com=com2).valid


def test_out_of_range_column_with_a_lying_store_is_rejected(amort, tmp_path, monkeypatch):
    """A client commits a column with a free-row entry of 2^24 + 5 (outside |Â| < 2^a; the client's own
    code refuses it, so the attacker writes the commitment by hand). The amortized request circuit
    does not check columns, so the request proofs can be made; the column's range proof cannot; and
    a store entry that claims another range proof covers it gives a bundle the verifier rejects."""
    com, sec = amort["com"], amort["sec"]
    aq = np.asarray(sec.inverse_q, dtype=np.int64).copy()
    aq[0, 1, 0] = 2 ** 24 + 5              # block 0, column 0 (masked), row 1 (free)
    art = stages.ensure_circuit(commit_circuit(com.spec))
    (point,) = stages.commit_vectors(art, [[int(x) for x in aq[0][:, 0]] + [int(x) for x in sec.blind_columns[0, 0]]])
    cols = com.com_columns.copy()
    cols[0, 0] = np.frombuffer(bytes.fromhex(point), dtype=np.uint8)
    com_t = dataclasses.replace(com, com_columns=cols, sha256="f" * 64)
    sec_t = dataclasses.replace(sec, inverse_q=aq, commitment_sha256="")
    with pytest.raises(Exception, match="range"):   # the client's code refuses the out-of-range inverse
        P.unlearn_committed(amort["theta_p"], None, amort["mask"], com_t, sec_t, keystore=amort["client"])
    # the attacker's witness: the honest one, block 0 re-certified for the designed column
    u = P.unlearn_committed(amort["theta_p"], amort["fisher"], amort["mask"], com, sec, keystore=amort["client"])
    u.inverse_q = aq
    spec = next(s for s, bl in u.plan if 0 in bl)
    w0 = quant.certify_block(u.theta_p_q[0], aq[0], np.flatnonzero(amort["mask"][0]), spec)
    u.witnesses = {**u.witnesses, 0: w0}
    u.theta_u_q = u.theta_u_q.copy()
    u.theta_u_q[0] = w0.theta_u
    # its range proof cannot be made (the circuit refuses the entry)
    (task,), _ = ranges.range_tasks([(0, 0)], aq, sec.blind_columns, ranges.range_spec(com_t.spec),
                                    prover._store_args(amort["client"]))
    with pytest.raises(Exception):
        prover._prove_task(task)
    # the lie: the store says the range proof of the honest bundle (other values) covers (0, 0), and the
    # attacker's prover trusts its store's index instead of checking it (RangeStore.covering)
    def trusting(self, wanted, spec):
        out = {}
        for e in self.entries:
            raw, group = (self.root / e["proof"]).read_bytes(), [tuple(c) for c in e["columns"]]
            for c in group:
                out.setdefault(c, (raw, group))
        return out
    monkeypatch.setattr(ranges.RangeStore, "covering", trusting)
    lying = ranges.RangeStore(tmp_path / "lying", com_t)
    honest_range = (amort["bundle"] / P.load_statement(amort["bundle"])["column_ranges"][0]["proof"]).read_bytes()
    lying.add(honest_range, [(0, 0)])
    b = prover.prove_witness(u, com_t, sec_t, request_id="r1", out_dir=tmp_path / "forged", keystore=amort["client"],
                             check_openings=False, range_store=lying)
    assert rejected(verify(amort, b, com=com_t), "not the published inverse-Fisher column 0 of block 0")
    rewrite_statement(b, lambda st: st.update(column_ranges=[e for e in st["column_ranges"] if [0, 0] not in e["columns"]]))
    assert rejected(verify(amort, b, com=com_t), "column 0 of block 0 is read by the request but no verified")


def test_range_proof_under_a_circuit_of_the_clients_choosing(amort, tmp_path):
    """A range proof made with another range circuit (here 3 columns per proof; a looser bound
    would be the same attack) embeds the published commitments of the columns it lists, but the
    verifier checks it under the keys of the canonical range circuit it derives itself."""
    com, sec = amort["com"], amort["sec"]
    other = relation.RangeSpec(com.spec, 3)
    assert other != ranges.range_spec(com.spec)
    group = [(3, 1), (3, 3), (0, 0)]
    (task,), _ = ranges.range_tasks(group, np.asarray(sec.inverse_q, dtype=np.int64), sec.blind_columns, other,
                                    prover._store_args(amort["client"]))
    _, raw, _ = prover._prove_task(task)
    assert ranges.check_range_proof(raw, [list(c) for c in group], com, other) is None   # its own view: fine
    b = copy_bundle(amort, tmp_path)
    (b / "ranges" / "mine.json").write_bytes(raw)

    def edit(st):
        st["column_ranges"] = [{"proof": "ranges/mine.json", "proof_sha256": artifacts.sha256_hex(raw),
                                "columns": [list(c) for c in group]}] + st["column_ranges"]
    rewrite_statement(b, edit)
    assert rejected(verify(amort, b), "column range proof 0", "does not verify")
