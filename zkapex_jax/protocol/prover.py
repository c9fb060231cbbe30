"""Client side: the certified unlearning update on the committed integers, and the proof bundle.

Bundle directory::

    statement.json   format zkapex.statement (v3): client/request ids, mask digest and mask-file hash,
                     commitment hash, digest of the parameters outside the statement,
                     commitment spec, sθ, the proof plan (per proof: circuit bucket, blocks, file,
                     sha256), Com(θu) of every block, the weight-unit bound, SRS label, prover stats
    proofs/proof_00000.json ...   one ezkl proof per planned proof

Only blocks with a masked weight are proven; every other block keeps θu_b = θp_b and its
Com(θu_b) *is* Com(θp_b) (same values, same blinders). Proofs are independent tasks: a local
process pool (``executor="process"``) or Ray (``executor="ray"``: a local instance by default, an
existing cluster by ``ray_address``), with failed tasks retried; the bundle is written to a
temporary sibling and renamed, so nothing half-written is ever left.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core import quant
from ..core.mask import MASKED, PROTECTED
from .._errors import ArtifactError, MaskMismatchError, ShapeError, ZkapexError
from ._circuits import relation, stages
from .artifacts import sha256_hex, write_json_artifact
from .commitments import (Commitment, CommitmentSecrets, opening_mismatch, quantize_personalization,
                          random_blinders)
from .keystore import KeyStore
from .statement import context_limbs, mask_digest, masked_of, plan_proofs, request_codes, statement_core

STATEMENT_FORMAT = "zkapex.statement"
VERSION = 3


class ProofError(ZkapexError):
    """Proving failed, or the proofs / the given model do not match what was committed."""


@dataclass
class Unlearned:
    """The certified update. theta_u (nb,B) float = θ̂u·2^−sθ (exactly the model the proofs
    cover); theta_u_q (nb,B) int64; witnesses: masked block → quant.BlockWitness; plan: the proof
    plan ``[(CircuitSpec, [blocks])]``."""

    theta_u: np.ndarray
    theta_u_q: np.ndarray
    theta_p_q: np.ndarray
    inverse_q: np.ndarray
    witnesses: dict
    plan: list
    bound_units: float
    mask: np.ndarray = field(repr=False, default=None)


def _check_mask(m, commitment):
    """The request as (nb,B) int8 codes (a bool mask, or 0 / 1 masked / 2 protected)."""
    want = (commitment.num_blocks, commitment.spec.block_size)
    if np.shape(m) != want:
        raise MaskMismatchError(f"mask blocks have shape {np.shape(m)}, the commitment has {want}")
    try:
        return request_codes(m)
    except ValueError as e:
        raise MaskMismatchError(str(e)) from None


def unlearn_committed(theta_p, fisher, mask_blocks, commitment: Commitment, secrets: CommitmentSecrets, *,
                      keystore: KeyStore | None = None, inverse=None) -> Unlearned:
    """Group-OBS for the committed (quantized) θp and Â = quantized C⁻¹ and the request
    ``mask_blocks`` (nb,B): a bool mask, or codes with protected weights
    (:meth:`~zkapex_jax.core.mask.Mask.request_blocks`; the update then leaves them unmoved).
    Â is the committed one the secrets carry (:attr:`CommitmentSecrets.inverse_q`); ``fisher``
    (or ``inverse``) is read only for secrets without it, and may be None otherwise.

    Raises quant.QuantizationError naming the block if a masked block cannot be certified."""
    cs = commitment.spec
    m = _check_mask(mask_blocks, commitment)
    keystore = keystore or KeyStore()
    carried = secrets.inverse_q if inverse is None else None  # the committed Â, computed once at commit
    tq, aq, sth, _ = quantize_personalization(theta_p, fisher, cs, theta_exp=secrets.theta_exp,
                                              inverse_exps=secrets.inverse_exps, inverse=inverse, inverse_q=carried)
    plan = plan_proofs(m, cs, root=keystore.root)
    tu = tq.copy()
    wit = {}
    for spec, blocks in plan:
        for b in blocks:
            p_ = np.flatnonzero(m[b] != 0)            # the request's weights P = S ∪ T
            sub = aq[b][np.ix_(p_, p_)]
            if not np.array_equal(sub, sub.T):        # the circuit proves Â[P,P] symmetric (relation v7)
                raise ProofError(f"block {b}: the committed inverse Fisher is not symmetric on the request's weights "
                                 "(Â[P,P] ≠ Â[P,P]ᵀ): no proof exists for it; commit the inverse of a symmetric "
                                 "curvature")
            w = quant.certify_block(tq[b], aq[b], np.flatnonzero(m[b] == MASKED), spec, block=b,
                                    protected=np.flatnonzero(m[b] == PROTECTED))
            wit[b] = w
            tu[b] = w.theta_u
    bound = max([quant.weight_unit_bound(s) for s, _ in plan], default=0.0)
    return Unlearned(theta_u=np.ldexp(tu.astype(np.float64), -sth), theta_u_q=tu, theta_p_q=tq, inverse_q=aq,
                     witnesses=wit, plan=plan, bound_units=bound, mask=m)


def adopt_unlearned(u: Unlearned, theta_u_given, commitment: Commitment) -> Unlearned:
    """Make the bundle certify ``theta_u_given`` (nb,B) float — the model the client deploys — or
    raise ProofError naming the first offending weight: masked weights must be exactly 0 and every
    weight must be within the circuit's tolerance (< 1 θ unit of the committed Group-OBS centre;
    unmasked blocks: exactly θp)."""
    g = np.asarray(theta_u_given, dtype=np.float64)
    if g.shape != u.theta_u_q.shape:
        raise ShapeError(f"unlearned model has block shape {g.shape}, expected {u.theta_u_q.shape}")
    if not np.all(np.isfinite(g)):
        raise ProofError("the unlearned model holds NaN or infinite weights")
    gq = np.rint(np.ldexp(g, commitment.theta_exp))
    off_grid = np.abs(gq - np.ldexp(g, commitment.theta_exp)) > 1e-6
    if off_grid.any():
        b, i = (int(x) for x in np.argwhere(off_grid)[0])
        raise ProofError(f"weight {i} of block {b} is not on the committed fixed-point grid (2^-{commitment.theta_exp})")
    gq = gq.astype(np.int64)
    m = masked_of(u.mask)
    if np.any(gq[m] != 0):
        b, i = (int(x) for x in np.argwhere(m & (gq != 0))[0])
        raise ProofError(f"masked weight {i} of block {b} is not zero in the unlearned model")
    moved_t = (u.mask == PROTECTED) & (gq != u.theta_p_q)
    if moved_t.any():
        b, i = (int(x) for x in np.argwhere(moved_t)[0])
        raise ProofError(f"protected weight {i} of block {b} moved in the unlearned model")
    unmasked = ~m.any(axis=1)
    bad = unmasked[:, None] & (gq != u.theta_p_q)
    if bad.any():
        b, i = (int(x) for x in np.argwhere(bad)[0])
        raise ProofError(f"block {b} has no masked weight but weight {i} changed")
    h_of = {b: s.bounds.h for s, blocks in u.plan for b in blocks}
    rho = commitment.spec.delta_ratio
    for b, w in u.witnesses.items():
        sq, limit, moved = quant.compensation_move(u.theta_p_q[b], gq[b], w.removed, rho)
        if sq > limit * limit:   # ‖θ̂u − θ̂p‖₂ ≤ ρ·Σ_S|θ̂p| (relation v9)
            raise ProofError(f"block {b} moves by more than the public compensation bound {rho}·Σ|θ̂p[S]| = {limit} "
                             f"(ℓ2 over the block; its largest move {max(moved)} units)")
        h = h_of[b]
        cols = u.inverse_q[b][:, w.positions].astype(object)
        mu = np.array(w.mu[:len(w.positions)], dtype=object)
        r = (gq[b].astype(object) - u.theta_p_q[b].astype(object)) * h + cols.dot(mu)
        over = [i for i in range(len(r)) if not m[b, i] and abs(int(r[i])) >= h]
        if over:
            raise ProofError(f"weight {over[0]} of block {b} is off the certified update by ≥ 1 θ unit "
                             f"(bound {u.bound_units:.3f} units of 2^-{commitment.theta_exp})")
    out = Unlearned(**{**u.__dict__})
    out.theta_u_q = gq
    out.theta_u = np.ldexp(gq.astype(np.float64), -commitment.theta_exp)
    return out


def _prove_task(task):
    """One proof in a fresh temporary folder; returns (index, proof bytes, timings). Runs in a pool
    process or a Ray worker (which derives the same keys from the spec in its own key store)."""
    idx, spec_dict, inputs, root, srs = task
    spec = relation.spec_from_dict(spec_dict)   # a request circuit or a column range circuit
    art = KeyStore(root, srs_path=srs).ensure(spec)
    with tempfile.TemporaryDirectory() as td:
        t = stages.prove_chunk(art, inputs, Path(td) / "proof.json")
        return idx, (Path(td) / "proof.json").read_bytes(), t


def _key_task(task):
    """Compile and key one circuit shape in a pool process (cached in the key store; concurrent
    callers of one shape wait on its lock)."""
    spec_dict, root, srs = task
    KeyStore(root, srs_path=srs).ensure(relation.spec_from_dict(spec_dict))


def _store_args(keystore: KeyStore) -> tuple:
    """(root, SRS path) as strings: how a worker process rebuilds ``keystore``."""
    return str(keystore.root), None if keystore.srs_path is None else str(keystore.srs_path)


def _key_tasks(specs, keystore: KeyStore) -> list:
    """The :func:`_key_task` of every shape in ``specs`` (in that order) not keyed in ``keystore`` yet."""
    return [(s.to_dict(), *_store_args(keystore)) for s in specs if not keystore.is_keyed(s)]


def worker_threads(jobs: int) -> str:
    """Threads each of ``jobs`` parallel provers gets (ezkl's Rayon pool): the machine's CPUs
    shared out, at least one, instead of Rayon's default of one thread per CPU in every prover
    (oversubscribed; measured in docs/BENCHMARKS.md, "The prove stage"). ``RAYON_NUM_THREADS``
    set by the user wins."""
    return os.environ.get("RAYON_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // max(1, jobs)))


def _init_worker(threads: str):
    os.environ["RAYON_NUM_THREADS"] = threads  # before the worker first imports ezkl


def _pool(jobs: int) -> ProcessPoolExecutor:
    """``jobs`` spawned worker processes, each with its share of the CPUs (:func:`worker_threads`)."""
    return ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(worker_threads(jobs),))


def _run_local(tasks, jobs, progress, key_tasks=()):
    """Run the proof ``tasks``; ``key_tasks`` (spec dict, store root, SRS) key their shapes first.
    With ``jobs > 1`` keys and proofs share one process pool: keys (single-threaded in ezkl) are
    made side by side, and proving starts as soon as a worker is free — a proof whose shape is
    still being keyed by another worker waits on that shape's lock in the key store."""
    if jobs > 1 and len(tasks) + len(key_tasks) > 1:
        with _pool(jobs) as ex:
            keyed = [ex.submit(_key_task, k) for k in key_tasks]
            it = ex.map(_prove_task, tasks)
            if progress:
                from tqdm import tqdm
                it = tqdm(it, total=len(tasks), desc="prove", unit="proof")
            out = list(it)
            for f in keyed:
                f.result()
            return out
    for k in key_tasks:
        _key_task(k)
    it = tasks
    if progress:
        from tqdm import tqdm
        it = tqdm(tasks, desc="prove", unit="proof")
    return [_prove_task(t) for t in it]


def prepare_keys(cspec: "relation.CommitSpec", keystore: KeyStore | None = None, *, jobs: int = 1,
                 kmaxes=None, protected: bool = False) -> list:
    """Compile and key the circuit of every proof bucket of the commitment spec ``cspec`` (or of
    the buckets ``kmaxes``; ``protected``: the forget-aware variants too) in ``keystore``, ``jobs``
    at a time. Keys depend only on the public spec and the SRS, never on a mask: a client keys its
    circuits once, right after committing, so that a deletion request costs proving only; a
    provider keys its verifier's once the commitment is published. Returns the
    :class:`~circuits.stages.CircuitArtifacts` of every bucket that fits (a bucket too large for
    the commitment's rows is skipped, as :func:`~zkapex_jax.protocol.statement.plan_proofs` does),
    and, for an ``amortized`` commitment, of its column range circuit (last)."""
    from .statement import bucket_sizes, bucket_spec

    keystore = keystore or KeyStore()
    specs = [spec for kmax in (kmaxes or bucket_sizes(cspec.block_size))
             for prot in ((False, True) if protected else (False,))
             if (spec := bucket_spec(cspec, int(kmax), root=keystore.root, protected=prot)) is not None]
    if cspec.column_range == "amortized":   # the column range circuit too (amortized commitments)
        from .ranges import range_spec
        specs.append(range_spec(cspec, root=keystore.root))
    todo = _key_tasks(sorted(specs, key=keystore.rows, reverse=True), keystore)   # largest first
    if jobs > 1 and len(todo) > 1:
        with _pool(jobs) as ex:
            list(ex.map(_key_task, todo))
    return [keystore.ensure(s) for s in specs]   # cached now (one by one if jobs == 1)


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """ValueError unless a Ray head answers at ``address`` (``auto`` is left to Ray, which fails
    at once without a local cluster): ``ray.init`` of an address where nothing listens retries
    for ever. ``host:port`` and ``ray://host:port`` get a TCP connection attempt first."""
    import socket

    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"--ray-address {address!r}: expected auto, host:port or ray://host:port")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ValueError(f"--ray-address {address!r}: no Ray cluster answers there ({e.strerror or e})") from None


def _run_ray(tasks, jobs, progress, address, retries=3, task_fn=None, key_tasks=()):
    """Each proof a Ray task: ``max_retries`` re-runs the proof of a worker that died, and
    ``retry_exceptions`` one that raised. A local instance with ``jobs`` CPUs unless ``address``
    names a cluster (every node then needs the same ``--srs`` ceremony file: keys are derived
    from the public spec in each node's own key store)."""
    import ray

    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:  # a local instance: its workers share this machine's CPUs like the process pool's
            ray.init(num_cpus=max(1, jobs), include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"RAYON_NUM_THREADS": worker_threads(jobs)}})
        started = True
    try:
        keyer = ray.remote(num_cpus=1, max_retries=retries, retry_exceptions=True)(_key_task)
        keyed = [keyer.remote(k) for k in key_tasks]  # first: the workers key the shapes side by side
        remote = ray.remote(num_cpus=1, max_retries=retries, retry_exceptions=True)(task_fn or _prove_task)
        pending = [remote.remote(t) for t in tasks]
        out = []
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(tasks), desc="prove (ray)", unit="proof")
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            out += ray.get(done)
            if bar:
                bar.update(len(done))
        if bar:
            bar.close()
        ray.get(keyed)
        return sorted(out, key=lambda x: x[0])
    finally:
        if started:
            ray.shutdown()


def _opening_problem(u: Unlearned, commitment: Commitment, secrets: CommitmentSecrets, keystore: KeyStore):
    """The commitments each proof of ``u.plan`` will embed for θp and the Â columns it reads,
    recomputed from the values and the secrets' blinders, checked with the verifier's own
    :func:`~zkapex_jax.protocol.commitments.opening_mismatch`: the first mismatch as a sentence,
    or None. Runs before any proving."""
    from .commitments import commit_circuit

    where, vecs = [], []
    for c, (spec, blocks) in enumerate(u.plan):
        for j, b in enumerate(blocks):
            where.append((c, spec.input_index("theta_p", j)))
            vecs.append([int(x) for x in u.theta_p_q[b]] + [int(x) for x in secrets.blind_theta_p[b]])
            for t, pos in enumerate(u.witnesses[b].positions):
                where.append((c, spec.input_index("col", j, t)))
                vecs.append([int(x) for x in u.inverse_q[b][:, pos]] + [int(x) for x in secrets.blind_columns[b, pos]])
    if not vecs:
        return None
    coms = [[None] * spec.n_inputs for spec, _ in u.plan]
    art = keystore.ensure(commit_circuit(commitment.spec))
    for (c, i), h in zip(where, stages.commit_vectors(art, vecs)):
        coms[c][i] = h
    for (spec, blocks), cc in zip(u.plan, coms):
        bad = opening_mismatch(commitment, spec, blocks, u.mask, cc)
        if bad:
            return bad
    return None


def theta_u_blinders(u: Unlearned, secrets: CommitmentSecrets) -> np.ndarray:
    """(nb, R) blinders of Com(θu_b): θp's for blocks without a masked weight (the commitment is
    then Com(θp_b) itself), fresh ones for the blocks the proofs certify."""
    out = np.array(secrets.blind_theta_p, dtype=np.int64, copy=True)
    for b in u.witnesses:
        out[b] = random_blinders(out.shape[1])
    return out


def build_tasks(u: Unlearned, commitment: Commitment, secrets: CommitmentSecrets, core: dict,
                keystore: KeyStore, u_blind=None) -> list:
    """The proof tasks of the plan: (index, spec dict, integer inputs, key-store root, SRS).
    ``u_blind`` (nb, R): the blinders of Com(θu_b) (default: fresh per proof)."""
    cs = commitment.spec
    R = cs.n_blind
    tasks = []
    for c, (spec, blocks) in enumerate(u.plan):
        rows = []
        for b in blocks:
            w = u.witnesses[b]
            cols = np.zeros((cs.block_size, spec.kmax), dtype=np.int64)
            cols[:, :len(w.positions)] = u.inverse_q[b][:, w.positions]
            rows.append(dict(theta_p=u.theta_p_q[b], theta_u=u.theta_u_q[b], cols=cols, mu=w.mu, ycert=w.ycert,
                             mask=u.mask[b].astype(np.int64), idx=w.idx, q=w.q))
        fresh = {}

        def blinders(name, j, blocks=blocks, w_of=u.witnesses, fresh=fresh):
            if j is not None and j < len(blocks):
                b = blocks[j]
                if name == "theta_p":
                    return secrets.blind_theta_p[b]
                if name == "theta_u" and u_blind is not None:
                    return u_blind[b]
                if name.startswith("col_"):
                    t = int(name[4:])
                    pos = w_of[b].positions
                    return secrets.blind_columns[b, pos[t]] if t < len(pos) else random_blinders(R)
            return fresh.setdefault((name, j), random_blinders(R))

        inputs = relation.assemble_inputs(spec, rows, context_limbs(core, c, cs.n_ctx), blinders=blinders)
        tasks.append((c, spec.to_dict(), inputs, *_store_args(keystore)))
    return tasks


def check_rest(commitment: Commitment, secrets: CommitmentSecrets, rest_u) -> None:
    """ProofError unless ``rest_u`` ({path: array}, the deployed model's parameters outside the
    statement) opens the commitment's rest digest: the update may change only the statement."""
    from . import binding

    if binding.rest_digest(rest_u, secrets.rest_salt) != commitment.rest_digest:
        names = {e[0] for e in commitment.rest_manifest}
        extra = sorted(set(rest_u) ^ names)
        what = (f"parameter {extra[0]!r} is not the committed model's" if extra else
                "a parameter outside the statement differs from the committed personalized model")
        raise ProofError(f"the unlearned model is not certifiable: {what} (the certified update may change only "
                         "the statement's kernels; everything else must be θp bit for bit)")


def prove_unlearning(theta_p, fisher, mask_blocks, commitment: Commitment, secrets: CommitmentSecrets, *,
                     request_id: str, out_dir, keystore: KeyStore | None = None, jobs: int = 1,
                     progress: bool = False, executor: str = "process", ray_address: str | None = None,
                     theta_u=None, inverse=None, rest_u=None, mask_sha256: str = "", opening_out=None,
                     range_store=None) -> Path:
    """Prove the unlearning of ``mask_blocks`` (nb,B) bool for the committed θp (nb,B), C (nb,B,B).

    ``theta_u`` (nb,B) and ``rest_u`` ({path: array}), if given, are the unlearned model to certify:
    its statement kernels and every other parameter (ProofError, and nothing written, if it is not
    the certified transformation or any other parameter differs from θp's). ``mask_sha256``: the
    published mask file's hash (binds forget set, method, fraction). Writes the bundle directory
    ``out_dir`` (and the deployment :class:`~zkapex_jax.protocol.binding.Opening` to ``opening_out``).
    ``range_store``: for an ``amortized`` commitment, the client's column range proofs
    (:class:`~zkapex_jax.protocol.ranges.RangeStore` or its directory; default: under the key store)."""
    if secrets.commitment_sha256 and secrets.commitment_sha256 != commitment.sha256:
        raise ArtifactError("the secrets file belongs to another commitment")
    if rest_u is not None:
        check_rest(commitment, secrets, rest_u)
    keystore = keystore or KeyStore()
    u = unlearn_committed(theta_p, fisher, mask_blocks, commitment, secrets, keystore=keystore, inverse=inverse)
    if theta_u is not None:
        u = adopt_unlearned(u, theta_u, commitment)
    return prove_witness(u, commitment, secrets, request_id=request_id, out_dir=out_dir, keystore=keystore,
                         jobs=jobs, progress=progress, executor=executor, ray_address=ray_address,
                         mask_sha256=mask_sha256, opening_out=opening_out, range_store=range_store)


def prove_witness(u: Unlearned, commitment: Commitment, secrets: CommitmentSecrets, *, request_id: str, out_dir,
                  keystore: KeyStore | None = None, jobs: int = 1, progress: bool = False, executor: str = "process",
                  ray_address: str | None = None, check_openings: bool = True, mask_sha256: str = "",
                  opening_out=None, range_store=None) -> Path:
    """Prove the witnesses in ``u`` as they are (no honesty check: the verifier decides; the
    adversarial tests use this). ``check_openings`` raises ProofError when a proof's Com(θp) or
    column commitments are not the published ones (wrong parameters, Fisher or secrets).
    ``opening_out``: where to write the deployment opening (blinders of Com(θu), rest salt).
    For an ``amortized`` commitment (``CommitSpec.column_range``) the columns the request reads
    that ``range_store`` does not cover yet are range-proven in the same pool and added to it, and
    the bundle carries (``ranges/``) the range proofs of every column it reads."""
    from .binding import Opening

    if not isinstance(request_id, str) or not request_id:
        raise ValueError("request_id must be a non-empty string")
    if executor not in ("process", "ray"):
        raise ValueError(f"executor must be 'process' or 'ray', got {executor!r}")
    if executor == "ray" and ray_address:
        check_ray_address(ray_address)
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists")
    if opening_out is not None and os.path.lexists(opening_out):
        raise FileExistsError(f"{opening_out} already exists")
    keystore = keystore or KeyStore()
    cs = commitment.spec
    m = u.mask
    md = mask_digest(m)
    core = statement_core(client_id=commitment.client_id, request_id=request_id, mask_digest=md,
                          commitment_sha256=commitment.sha256, spec=cs.to_dict(), theta_exp=commitment.theta_exp,
                          n_chunks=len(u.plan), mask_sha256=mask_sha256, rest_digest=commitment.rest_digest)
    if keystore.srs_sha256(cs.logrows) != commitment.srs_sha256:  # before any key or proof is made
        raise ProofError("the SRS in use differs from the one the commitment was made with")
    if check_openings:  # before any proving: a wrong parameters / Fisher / secrets file fails in seconds
        bad = _opening_problem(u, commitment, secrets, keystore)
        if bad:
            raise ProofError(f"θp or the inverse Fisher do not open the published commitment ({bad}): "
                             "wrong parameters, Fisher or secrets file")
    u_blind = theta_u_blinders(u, secrets)
    tasks = build_tasks(u, commitment, secrets, core, keystore, u_blind)
    amortized = cs.column_range == "amortized"
    if amortized:
        from . import ranges

        rspec = ranges.range_spec(cs, root=keystore.root)
        store = (range_store if isinstance(range_store, ranges.RangeStore) else
                 ranges.RangeStore(range_store, commitment) if range_store is not None else
                 ranges.RangeStore.default(keystore, commitment))
        read = ranges.read_columns(u.plan, m)
        have = store.covering(read, rspec)   # only intact entries that open the published columns
        r_tasks, groups = ranges.range_tasks([c for c in read if c not in have], u.inverse_q, secrets.blind_columns,
                                             rspec, _store_args(keystore), first_index=len(tasks))
    else:
        rspec, r_tasks, groups, have = None, [], [], {}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (tmp / "proofs").mkdir()
        t0 = time.perf_counter()
        # longest proofs first; the missing keys made first, in parallel, in the order the proofs
        # need them (on a Ray cluster every node keys the shapes in its own store as its proofs come)
        spec_of = [spec for spec, _ in u.plan] + [rspec] * len(r_tasks)
        shapes = {spec.key: spec for spec in spec_of}
        rows = {key: keystore.rows(spec) for key, spec in shapes.items()}
        order = sorted(range(len(spec_of)), key=lambda c: (-rows[spec_of[c].key], c))
        key_tasks = [] if ray_address else _key_tasks(
            [shapes[key] for key in dict.fromkeys(spec_of[c].key for c in order)], keystore)
        all_tasks = tasks + r_tasks
        ordered = [all_tasks[c] for c in order]
        results = (_run_ray(ordered, jobs, progress, ray_address, key_tasks=key_tasks) if executor == "ray"
                   else _run_local(ordered, jobs, progress, key_tasks))
        wall = time.perf_counter() - t0
        results = sorted(results, key=lambda x: x[0])
        results, r_results = results[:len(tasks)], results[len(tasks):]
        column_ranges = []
        if amortized:
            try:
                carried = ranges.bundle_entries(read, [(raw, g) for (_, raw, _), g in zip(r_results, groups)], have,
                                                store, commitment, rspec, strict=check_openings)
            except ValueError as e:
                raise ProofError(f"a column range proof does not open the published columns ({e}): wrong inverse "
                                 "Fisher or secrets file") from None
            (tmp / "ranges").mkdir()
            for i, (raw, group) in enumerate(carried):
                (tmp / "ranges" / f"range_{i:05d}.json").write_bytes(raw)
                column_ranges.append({"proof": f"ranges/range_{i:05d}.json", "proof_sha256": sha256_hex(raw),
                                      "columns": [[int(b), int(j)] for b, j in group]})
        com_tu = [commitment.theta_p_hex(b) for b in range(commitment.num_blocks)]
        proofs = []
        for (c, raw, timing), (spec, blocks) in zip(results, u.plan):
            p = tmp / "proofs" / f"proof_{c:05d}.json"
            p.write_bytes(raw)
            _, coms = stages.proof_public(json.loads(raw), spec.n_inputs)
            bad = opening_mismatch(commitment, spec, blocks, m, coms) if check_openings else None
            if bad:
                raise ProofError(f"θp or the inverse Fisher do not open the published commitment ({bad}): "
                                 "wrong parameters, Fisher or secrets file")
            for j, b in enumerate(blocks):
                com_tu[b] = coms[spec.input_index("theta_u", j)]
            proofs.append({"index": c, "kmax": spec.kmax, "chunk_blocks": spec.chunk_blocks, "blocks": blocks,
                           "proof": f"proofs/{p.name}", "proof_sha256": sha256_hex(raw),
                           "prove_s": round(timing["prove_s"], 3), "witness_s": round(timing["witness_s"], 3)})
        st_sha = write_json_artifact(tmp / "statement.json", STATEMENT_FORMAT, VERSION, {
            **core, "proofs": proofs, "com_theta_u": com_tu, "bound_units": u.bound_units,
            **({"column_ranges": column_ranges} if amortized else {}),
            "srs": {"sha256": commitment.srs_sha256, "insecure": bool(commitment.srs_insecure)},
            "prover": {"wall_s": round(wall, 3), "jobs": jobs, "executor": executor,
                       "witness_s": round(sum(r[2]["witness_s"] for r in results), 3),
                       "prove_s": round(sum(r[2]["prove_s"] for r in results), 3),
                       "logrows": cs.logrows, "n_proofs": len(results),
                       "masked_blocks": len(u.witnesses),
                       "range_proofs_new": len(r_results),
                       "range_prove_s": round(sum(r[2]["prove_s"] for r in r_results), 3)}})
        if opening_out is not None:
            Opening(blind_theta_u=u_blind, rest_salt=secrets.rest_salt, statement_sha256=st_sha).save(opening_out)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
