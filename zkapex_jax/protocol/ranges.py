"""Column range proofs: |Â| < 2^a proven once per committed column, reused by every request.

With ``CommitSpec.column_range = "amortized"`` the request circuits no longer range-check the
columns of Â they read (v9 spends ≈ 11.5 of a block's ≈ 17 rows per B·k on it). Instead a
**column range proof** (:class:`~circuits.relation.RangeSpec`, ``n`` columns per proof) shows
|Â_b[i, j]| < 2^a for the B values of each of its inputs, and embeds, for each, the commitment
of its column — laid out as a request slot is (B values, then the R blinders, one column of
2^logrows rows from row 0), so it is the published Com(Â_b[:, j]) itself. The verifier accepts a
request's slot only if a verified range proof embeds the slot's published commitment; since a
KZG commitment binds one polynomial, the request's slot holds the very values the range proof
bounded, and the request's soundness argument (docs/PROOFS.md, "θu is pinned") goes through
unchanged. A range proof is a fact about a published commitment, not about a request: a client
keeps its range proofs in a :class:`RangeStore` and every later request that reads a column
already covered costs only its own (≈ 3× smaller) proof.

Bundle entries (``statement.json`` → ``column_ranges``): ``{"proof": "ranges/range_00000.json",
"proof_sha256", "columns": [[b, j], ...]}``; the proof's first ``len(columns)`` embedded
commitments must be the published ones of those columns (padding inputs are ignored).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .._errors import ArtifactError
from ._circuits import relation, stages
from .artifacts import read_json_artifact, sha256_hex, write_json_artifact

RANGE_FORMAT = "zkapex.column-ranges"
VERSION = 1
#: the most columns one range proof holds (more would fit 8 × 2^15 rows at B = 576, but each
#: committed input is its own column of 2^logrows rows, and the prover's memory grows with them)
MAX_RANGE_COLUMNS = 32


def range_spec(cspec: "relation.CommitSpec", *, root=None) -> "relation.RangeSpec":
    """The canonical column range circuit of ``cspec``: the most columns per proof (a power of two
    ≤ :data:`MAX_RANGE_COLUMNS`) that fit the commitment's rows — both parties derive the same."""
    if cspec.column_range != "amortized":
        raise ValueError("the commitment's requests range-check their columns inline: no column range proofs")
    n = MAX_RANGE_COLUMNS
    while n >= 1:
        spec = relation.RangeSpec(cspec, n)
        if stages.fits(spec, root=root):
            return spec
        n //= 2
    raise ValueError(f"no column range circuit fits {cspec.wrap} × 2^{cspec.logrows} rows for blocks of "
                     f"{cspec.block_size}: commit with a larger logrows or wrap")


def read_columns(plan, mask_codes) -> list[tuple[int, int]]:
    """The committed columns the proofs of ``plan`` read, (block, column) sorted: every masked or
    protected weight's of the blocks they prove (their slots)."""
    m = np.asarray(mask_codes)
    return sorted({(int(b), int(j)) for _, blocks in plan for b in blocks for j in np.flatnonzero(m[b])})


def range_tasks(columns, inverse_q, blind_columns, spec: "relation.RangeSpec", store_args: tuple,
                *, first_index: int = 0) -> tuple[list, list]:
    """Proof tasks ``(index, spec dict, inputs, key-store root, SRS)`` (the prover's task form) for
    ``columns`` [(b, j)], ``spec.n_columns`` per proof, and the column groups, in task order.
    ``inverse_q`` (nb,B,B) the committed Â; ``blind_columns`` (nb,B,R) their blinders."""
    from .commitments import random_blinders

    n = spec.n_columns
    groups = [list(columns[i:i + n]) for i in range(0, len(columns), n)]
    tasks = []
    for g, group in enumerate(groups):
        vals = [inverse_q[b][:, j] for b, j in group]
        blind = [blind_columns[b, j] for b, j in group] + [random_blinders(spec.commit.n_blind)
                                                           for _ in range(n - len(group))]
        tasks.append((first_index + g, spec.to_dict(), relation.range_inputs(spec, vals, blind), *store_args))
    return tasks, groups


def column_list_problem(columns, commitment, spec: "relation.RangeSpec") -> str | None:
    """Why ``columns`` (a statement's JSON) is not a list of 1 to ``spec.n_columns`` distinct
    [block, column] integer pairs of ``commitment``, or None."""
    if not isinstance(columns, list) or not columns or len(columns) > spec.n_columns:
        return f"lists {len(columns) if isinstance(columns, list) else '?'} columns (1 to {spec.n_columns})"
    seen = set()
    for c in columns:
        if (not isinstance(c, list) or len(c) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in c)
                or not (0 <= c[0] < commitment.num_blocks and 0 <= c[1] < spec.block_size) or tuple(c) in seen):
            return f"column {str(c)[:40]} is malformed, outside the commitment or repeated"
        seen.add(tuple(c))
    return None


def check_range_proof(raw: bytes, columns, commitment, spec: "relation.RangeSpec", art=None) -> str | None:
    """Why the range proof ``raw`` does not cover ``columns`` [(b, j)] of ``commitment`` under the
    circuit ``spec`` (keys ``art``: then ``ezkl.verify`` too), or None. Checks, cheapest first:
    the column list (well-typed, in the commitment, no repeats, at most ``spec.n_columns``), the
    public instances (the 0 and the sink), the embedded commitments against the published ones."""
    bad = column_list_problem(columns, commitment, spec)
    if bad:
        return bad
    try:
        inst, coms = stages.proof_public(json.loads(raw), spec.n_inputs)
    except Exception as ex:  # noqa: BLE001 — any malformed proof is a rejection
        return f"malformed ({ex.__class__.__name__}: {str(ex)[:80]})"
    if inst != [0] * spec.n_instances():
        return "public values are not the range circuit's (0, 0)"
    for i, (b, j) in enumerate(columns):
        if coms[i] != commitment.column_hex(b, j):
            return f"input {i} is not the published inverse-Fisher column {j} of block {b}"
    if art is not None and not stages.verify_chunk_bytes(raw, art.settings, art.vk, art.srs):
        return "does not verify under the provider's verification key"
    return None


def column_commitments_digest(commitment) -> str:
    """sha256 of the published column commitments (and θp's), the commitment's spec and client: what
    a range store is for. Unlike ``Commitment.sha256`` (the file's hash) it exists before the
    commitment is saved."""
    import hashlib

    h = hashlib.sha256()
    h.update(json.dumps({"client": commitment.client_id, "spec": commitment.spec.to_dict()}, sort_keys=True).encode())
    h.update(np.ascontiguousarray(commitment.com_theta_p, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(commitment.com_columns, dtype=np.uint8).tobytes())
    return h.hexdigest()


class RangeStore:
    """A client's column range proofs for one commitment: ``root/ranges.json`` (format
    ``zkapex.column-ranges``: the digest of the published column commitments
    (:func:`column_commitments_digest`) and entries ``{"proof", "proof_sha256", "columns"}``) and
    the proof files beside it. Opening a store reads only its index; a request relies on an entry
    only through :meth:`covering`, which reads and checks just the entries it needs."""

    def __init__(self, root, commitment):
        self.root = Path(root)
        self.commitment = commitment
        self.digest = column_commitments_digest(commitment)
        self.entries = []
        idx = self.root / "ranges.json"
        if idx.is_file():
            doc = read_json_artifact(idx, RANGE_FORMAT, (VERSION,))
            if doc.get("commitment") != self.digest:
                raise ArtifactError(f"{idx}: the range store belongs to another commitment")
            self.entries = [e for e in doc.get("entries", []) if isinstance(e, dict)]

    @classmethod
    def default(cls, keystore, commitment) -> "RangeStore":
        """The store under the client's key store (``column_ranges/<digest of the commitments>``)."""
        return cls(Path(keystore.root) / "column_ranges" / column_commitments_digest(commitment)[:32], commitment)

    def covering(self, wanted, spec: "relation.RangeSpec") -> dict:
        """``{(b, j): (proof bytes, its columns)}`` for the columns of ``wanted`` that a stored proof
        covers. Only entries listing a wanted column are read, each once, and relied on only if the
        file is intact (the index's hash), stays inside the store, and opens the published columns it
        lists under ``spec`` (:func:`check_range_proof` without ``ezkl.verify``, the verifier's): a
        store edited by hand or written for other values is proven again, not carried."""
        wanted, out = set(wanted), {}
        for e in self.entries:
            cols = e.get("columns")
            if column_list_problem(cols, self.commitment, spec) or not {tuple(c) for c in cols} & wanted:
                continue
            p = self.root / str(e.get("proof", ""))
            if not p.is_file() or p.resolve().parent != self.root.resolve():
                continue
            raw = p.read_bytes()
            if sha256_hex(raw) != e.get("proof_sha256") or check_range_proof(raw, cols, self.commitment, spec):
                continue
            group = [tuple(c) for c in cols]
            for c in group:
                out.setdefault(c, (raw, group))
        return out

    def add(self, raw: bytes, columns) -> dict:
        """Store one range proof of ``columns`` (the caller checked it); the index is rewritten atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="range_", suffix=".json", dir=self.root)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        e = {"proof": Path(name).name, "proof_sha256": sha256_hex(raw), "columns": [[int(b), int(j)] for b, j in columns]}
        self.entries.append(e)
        write_json_artifact(self.root / "ranges.json", RANGE_FORMAT, VERSION,
                            {"commitment": self.digest, "entries": self.entries})
        return e


def bundle_entries(read, made, have: dict, store: RangeStore, commitment, spec: "relation.RangeSpec", *,
                   strict: bool = True) -> list[tuple[bytes, list]]:
    """The range proofs a request's bundle carries, ``[(proof bytes, its columns)]``: for each column
    of ``read`` (in order) the proof that covers it, each proof once. ``have``: the store's proofs of
    the columns read (:meth:`RangeStore.covering`); ``made`` ``[(bytes, columns)]``: this run's, for
    the rest — each is checked against the published columns and added to ``store`` (with
    ``strict``, one that does not open them raises ValueError naming the problem — a wrong inverse
    Fisher or secrets file; without, it is carried unstored and the verifier decides)."""
    held = dict(have)   # (b, j) → (bytes, columns)
    for raw, group in made:
        bad = check_range_proof(raw, [list(c) for c in group], commitment, spec)
        if bad and strict:
            raise ValueError(bad)
        if not bad:
            store.add(raw, group)
        for c in group:
            held.setdefault(tuple(c), (raw, [tuple(x) for x in group]))
    out, seen = [], set()
    for c in read:
        raw, group = held[c]
        h = sha256_hex(raw)
        if h not in seen:
            seen.add(h)
            out.append((raw, group))
    return out
