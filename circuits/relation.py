"""The relation one proof checks: Group-OBS in inverse-Fisher column form, as an ONNX graph.

Per block of ``B`` weights with masked positions ``S`` (``k = |S| ≤ kmax`` slots), integers only
(ezkl input/param scale 0, so ezkl's own rounding is the identity):

* ``Â`` — the committed inverse Fisher ``A = C⁻¹`` of the block, fixed point; the proof reads only
  the ``k`` masked columns ``Â[:, S]`` (one committed input per slot);
* ``θ̂p`` (committed before the mask), ``θ̂u`` (defines Com(θu)), ``μ̂`` (k, private), and a private
  ``k×k`` matrix ``Y`` that certifies that ``Â[S,S]`` is invertible with a bounded inverse.

Since v6 a request may also name *protected* positions ``T`` (the certified forget-aware update:
the compensation may not move them); the slots then hold ``P = S ∪ T`` and the public mask row
carries codes 0 (free), 1 (masked, S), 2 (protected, T). With ``h = 2^(s−g)`` the statement is

  r := h·(θ̂u − θ̂p) + Â[:,P]·μ̂,   |r_i| < h on free rows,  |r_i| < h·2^−t on rows in P,
  θ̂u[S] = 0,  θ̂u[T] = θ̂p[T],   Y·D − 2^ty·I = E with |E| < 2^e, |Y| < 2^y,  D = Â[P,P] (padded),
  ‖θ̂u − θ̂p‖₂ ≤ ρ·Σ_{j∈S}|θ̂p_j| (the compensation bound, ρ = ``delta_ratio``; hence every |θ̂u_i − θ̂p_i| too),

where every bound is an **in-graph range check**: ``Abs(x·2^c)`` makes ezkl decompose ``x·2^c``
into ``decomp_legs`` digits of ``decomp_base``, so a witness exists only if ``|x·2^c| < 2^s``,
``2^s = base^legs`` (ezkl does *not* range-check ``polycommit`` inputs; ../shared/EZKL.md). The
checks are zero-or-range by construction: no sum of squares, no tolerance output.

The protected rows make it Group-OBS under the extra constraints δ[T] = 0: Â[P,P]·μ* = h·[θ̂p[S]; 0] (the same argument,
with the same ε, as for T = ∅). The codes enter the graph through integer polynomials:
[S] = m(2 − m), 2·[T] = m² − m, [P] = (3m − m²)/2 (folded into the row weights, 2^g even).

**What it pins** (docs/PROOFS.md): the exact fixed-point Group-OBS result for the committed ``Â``
is ``θ̂u* = θ̂p − Â[:,S]·μ*/h`` with ``Â[S,S]μ* = h·θ̂p[S]``. Any accepted ``θ̂u`` satisfies
``θ̂u[S] = 0`` and ``|θ̂u − θ̂u*|∞ < 1 + ε`` (θ units) with ``ε`` = :meth:`CircuitSpec.epsilon`, a
function of public parameters only (≤ 1/4 by construction) — whatever ``Â`` the client committed:
a curvature whose masked sub-matrix is (nearly) singular admits no ``Y`` and cannot be proven.

Inputs (all ``polycommit``; each one KZG-committed column, values then ``n_blind`` blinders):

=====================  ===========================  ===========================================
name                   length                       meaning
=====================  ===========================  ===========================================
``theta_p_{j}``        ``B + R``                    θ̂p of the proof's j-th block
``theta_u_{j}``        ``B + R``                    θ̂u of block j (its commitment is Com(θu_b))
``col_{j}_{t}``        ``B + R``                    Â[:, S_t] of block j, slot t (zeros if unused)
``mu``                 ``2·K·kmax + R``             μ̂ per block and slot: K·kmax high halves, then
                                                    K·kmax low halves (μ̂ = hi·2^30 + lo)
``ycert``              ``K·kmax² + R``              Y per block
``public``             ``n_ctx + K·(B+2·kmax) + 1`` statement limbs, then per block the codes (B),
                                                    slot positions (kmax), slot used (kmax); a 0
=====================  ===========================  ===========================================

Outputs (public): ``pub_out = public``; ``zeros = θ̂u⊙[S] + |θ̂u − θ̂p|⊙2[T]`` (K·B, must be 0);
``asym = D₀ − D₀ᵀ`` with ``D₀ = Â[P,P] ⊙ qqᵀ`` the committed sub-matrix the certificate reads (K·kmax²,
must be 0: since v7 the masked — and protected — principal sub-block of Â must be exactly symmetric,
as the inverse of any symmetric curvature quantizes to; integer equality in the field, no range
check needed: |Â| < 2^a ≪ p); ``sink`` (8, must be 0: the range-checked values times the public 0,
which keeps every check in the circuit).

Range checks per block: θ̂p (B), δ̂ = θ̂u − θ̂p (B), the residual r (B), Â[:,P] (B·kmax), μ̂ (kmax),
Y and E (kmax² each), and one for the compensation bound. θ̂u has none of its own since v8: it is the
sum of two range-checked integers (|θ̂u| < 2^(s+1)); v7 checked it a second time (B more ``Abs`` per
block). The compensation bound is one check per block since v9: 0 ≤ X² − Σ_i δ̂_i² < 2^s with
X = ρ·Σ_S|θ̂p| — exact over ℤ because δ̂ and θ̂p are range-checked integers (Σδ̂² < B·2^120, X² < 2^160,
both ≪ p) — where v5–v8 checked 0 < X − |δ̂_i| + 1 < 2^s for every weight (B checks).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields, field
from fractions import Fraction

import numpy as np

FORMAT_VERSION = 9
#: names of the range-check groups whose sums feed ``sink`` (order of the sink outputs).
CHECK_GROUPS = ("theta_p", "columns", "mu", "residual", "ycert", "ycert_error", "delta", "move")
#: the default public compensation bound ρ: a block's whole move ‖θ̂u − θ̂p‖₂ (masked weights
#: included; since v9, before: every weight's move) may not exceed ρ·Σ_{j∈S}|θ̂p_j| (the removed
#: weights' total magnitude), so no weight moves by more either. Honest updates measured by
#: experiments/delta_bound.py stay far below it (docs/PROOFS.md "What VALID promises", item 4).
DEFAULT_DELTA_RATIO = 16
#: the ε target: parameters are chosen so that ε ≤ 1/4 (|θ̂u − θ̂u*| < 1.25 units).
EPSILON_TARGET = Fraction(1, 4)
#: ezkl parses input values as f64 (exact below 2^53), so μ̂ travels as two 30-bit halves,
#: μ̂ = hi·2^30 + lo, recombined in the graph; the bound on |μ̂| is then the range 2^s itself.
MU_SPLIT_BITS = 30


def _posint(name, v, lo=1):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
        raise ValueError(f"{name} must be an integer ≥ {lo}, got {v!r}")


RANGE_BITS = 60  # s of the default decompositions: every in-graph range check is |x| < 2^60


def range_decomposition(logrows: int) -> tuple[int, int]:
    """(base, legs) of ezkl's range decomposition for circuits of 2^logrows rows: the largest
    base 2^b with b dividing :data:`RANGE_BITS` whose lookup table (2^b rows) fits, b ≤ 12 —
    base 4096 × 5 legs from logrows 13, 1024 × 6 at logrows 11–12, 64 × 10 at 7–10. The range
    2^s is the same for all, so are the bounds derived from it; a smaller circuit pays more legs
    (columns) for a shorter table."""
    if isinstance(logrows, bool) or not isinstance(logrows, int) or logrows < 2:
        raise ValueError(f"CommitSpec.logrows must be an integer ≥ 2, got {logrows!r}")
    b = max(b for b in (12, 10, 6, 5, 4, 3, 2, 1) if b < logrows)
    return 2 ** b, RANGE_BITS // b


#: CommitSpec.column_range: the request circuits range-check the columns they read, or a separate
#: column range proof (RangeSpec) does, once per committed column
COLUMN_RANGE_MODES = ("inline", "amortized")

#: the most sets of 2^logrows rows one proof circuit may span (CommitSpec.wrap)
MAX_WRAP = 64


@dataclass(frozen=True)
class CommitSpec:
    """What the client fixes at personalization time (before any mask).

    ``block_size`` B; ``logrows`` of every proof circuit (KZG column commitments depend on it,
    so it is part of the commitment); ``theta_bits`` w: θ̂ is chosen with |θ̂p| ≤ 2^(w−2);
    ``a_bits``: |Â| < 2^a; ``n_blind`` blinders per committed column; ``n_ctx`` 21-bit statement
    limbs; ``decomp_base``/``decomp_legs``: ezkl's range 2^s = base^legs (default: the largest base
    whose lookup table fits the circuit, :func:`range_decomposition`, always s = 60);
    ``delta_ratio`` ρ: a block's move ‖θ̂u − θ̂p‖₂ ≤ ρ·Σ_{j∈S}|θ̂p_j| (so every weight's too; the
    verifier requires ρ to be at most the provider's policy); ``wrap``: how many sets of 2^logrows
    rows a proof circuit may span (ezkl's column wrapping: a circuit of more rows than 2^logrows is
    laid out over more advice columns; 1 = no wrapping, every circuit fits 2^logrows rows). The
    committed columns are one per vector whatever ``wrap`` is, so a small ``logrows`` with wrapping
    keeps every committed column short (see docs/PROOFS.md, "logrows and column wrapping");
    ``column_range``: where |Â| < 2^a is proven for the columns a request reads — ``"inline"``
    (every request circuit range-checks them, B·kmax checks per block) or ``"amortized"`` (a
    separate column range proof per committed column, made once and reused by every request that
    reads the column; the request circuits then skip those checks and the verifier accepts a slot
    only under a verified range proof of its published commitment: :class:`RangeSpec`)."""

    block_size: int
    logrows: int = 15
    theta_bits: int = 16
    a_bits: int = 24
    n_blind: int = 8
    n_ctx: int = 12
    decomp_base: int | None = None
    decomp_legs: int | None = None
    delta_ratio: int = DEFAULT_DELTA_RATIO
    wrap: int = 1
    column_range: str = "inline"

    def __post_init__(self):
        if self.decomp_base is None and self.decomp_legs is None and isinstance(self.logrows, int):
            base, legs = range_decomposition(self.logrows)
            object.__setattr__(self, "decomp_base", base)
            object.__setattr__(self, "decomp_legs", legs)
        for name in ("block_size", "logrows", "theta_bits", "a_bits", "n_blind", "n_ctx", "decomp_base",
                     "decomp_legs", "delta_ratio", "wrap"):
            _posint(f"CommitSpec.{name}", getattr(self, name))
        if self.column_range not in COLUMN_RANGE_MODES:
            raise ValueError(f"CommitSpec.column_range must be one of {COLUMN_RANGE_MODES}, got {self.column_range!r}")
        if self.wrap > MAX_WRAP:
            raise ValueError(f"CommitSpec.wrap must be at most {MAX_WRAP}, got {self.wrap}")
        if self.decomp_base & (self.decomp_base - 1):
            raise ValueError(f"CommitSpec.decomp_base must be a power of two, got {self.decomp_base}")
        if self.logrows < self.logrows_min or self.logrows > 26:
            raise ValueError(f"CommitSpec.logrows must be in [{self.logrows_min}, 26], got {self.logrows}")
        if self.s > 72:
            raise ValueError(f"range 2^{self.s} too large: base^legs must stay ≤ 2^72 (no field wrap)")
        if self.a_bits >= self.s or self.theta_bits >= self.s:
            raise ValueError("a_bits and theta_bits must be below the range bits s")
        # an honest block's X = ρ·Σ_S|θ̂p| ≤ ρ·B·2^(w−2) must keep X² below 2^s (the bound's window)
        if (self.delta_ratio * self.block_size * 2 ** (self.theta_bits - 2)) ** 2 >= 2 ** self.s:
            raise ValueError(f"delta_ratio {self.delta_ratio} too large for blocks of {self.block_size} in the "
                             f"range 2^{self.s}: (ρ·B·2^(w−2))² must stay below 2^s")
        if self.block_size + self.n_blind > self.column_height:
            raise ValueError(f"block of {self.block_size} + {self.n_blind} blinders does not fit one column "
                             f"of 2^{self.logrows} rows")

    @property
    def s(self) -> int:
        """Range bits: an ``Abs`` argument must satisfy |x| < 2^s."""
        return int(math.log2(self.decomp_base)) * self.decomp_legs

    @property
    def logrows_min(self) -> int:
        return int(math.log2(self.decomp_base)) + 1

    @property
    def column_height(self) -> int:
        """Values per committed column (ezkl keeps 6 rows of each column for blinding)."""
        return 2 ** self.logrows - 6

    @property
    def max_rows(self) -> int:
        """The most rows a proof circuit of this commitment may have (ezkl's blinding rows kept)."""
        return self.wrap * 2 ** self.logrows - 64

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["wrap"] == 1:  # specs without wrapping keep the dict (and the keys) they had
            d.pop("wrap")
        if d["column_range"] == "inline":  # so do specs whose requests range-check Â themselves
            d.pop("column_range")
        return {**d, "relation_version": FORMAT_VERSION}

    @classmethod
    def from_dict(cls, d) -> "CommitSpec":
        if not isinstance(d, dict):
            raise ValueError(f"spec must be a JSON object, got {type(d).__name__}")
        d = dict(d)
        v = d.pop("relation_version", None)
        if isinstance(v, bool) or v != FORMAT_VERSION:
            raise ValueError(f"relation version {v!r} unsupported (expected {FORMAT_VERSION})")
        names = {f.name for f in fields(cls)}
        if set(d) - names:
            raise ValueError(f"unknown spec field(s) {sorted(set(d) - names)}")
        return cls(**d)


@dataclass(frozen=True)
class Bounds:
    """The exponents of one bucket, all derived from public values (see module docstring)."""

    s: int
    g: int       # h = 2^(s−g) multiplies δ̂ in r
    t: int       # masked rows are checked 2^t tighter
    e: int       # |E| < 2^e
    ty: int      # Y·D ≈ 2^ty·I
    y: int       # |Y| < 2^y
    gamma: int   # honest budget: max|D⁻¹|·2^a < 2^γ
    epsilon: Fraction

    @property
    def h(self) -> int:
        return 2 ** (self.s - self.g)


def derive_bounds(cs: CommitSpec, kmax: int) -> Bounds:
    """The largest conditioning budget γ for which ε ≤ 1/4 (ValueError if none ≥ 2)."""
    _posint("kmax", kmax)
    s, a, w = cs.s, cs.a_bits, cs.theta_bits
    M = min(s, 2 * MU_SPLIT_BITS)   # |μ̂| < 2^M: the range check, and two 30-bit halves
    lk = max(0, math.ceil(math.log2(kmax)))
    e = a + lk                     # honest |E_ij| ≤ ½·kmax·2^a < 2^e
    ty = e + lk + 2                # kmax·2^e ≤ 2^ty / 4
    best = None
    for gamma in range(2, s):
        y = ty - a + gamma
        g = max(1, s - M + 1 + lk + gamma - a + w)   # |μ*| ≤ 2^(s−g)·kmax·2^(γ−a)·2^w ≤ 2^(M−1); g ≥ 1
        #                                             keeps the row weights' polynomial integral
        t = s - g - a - lk                    # honest masked residual ≤ ½·kmax·2^a < 2^(s−g−t)
        if y >= s or t < 0 or g >= s:
            break
        eps = Fraction(kmax * 2 ** a, 2 ** (s - g)) * Fraction(kmax * 2 ** y * 2 ** (s - g - t), 2 ** ty - kmax * 2 ** e)
        if eps > EPSILON_TARGET:
            break
        best = Bounds(s=s, g=g, t=t, e=e, ty=ty, y=y, gamma=gamma, epsilon=eps)
    if best is None:
        raise ValueError(f"no sound parameters for kmax={kmax} with 2^{s} range and a={a}, w={w}: "
                         "raise decomp_legs or lower theta_bits/a_bits")
    return best


def conditioning_bound(cs: CommitSpec, kmax: int) -> Fraction:
    """κ*: every masked sub-matrix D that *any* accepted witness certifies has max|D⁻¹|·2^a < κ*.

    From Y·D = 2^ty·I + E with integer |E_ij| ≤ 2^e − 1 and |Y_ij| ≤ 2^y − 1:
    D⁻¹ = (2^ty·I + E)⁻¹·Y, ‖(2^ty·I + E)⁻¹‖_∞ ≤ 1/(2^ty − kmax·(2^e − 1)), so
    max|D⁻¹| ≤ (2^y − 1)/(2^ty − kmax·(2^e − 1)). The client's own code certifies D only when
    round(2^ty·D⁻¹) fits |Y| < 2^y, i.e. up to max|D⁻¹|·2^a ≈ 2^γ; κ* ≈ (4/3)·2^γ is the edge a
    hand-made Y can reach (kmax = 1, a = 24: the client needs d ≥ 17, a hand-made Y proves d ≥ 13,
    nothing proves d ≤ 12 — tests/test_quant.py). The compensation bound (``delta_ratio``), not
    this budget, is what keeps an ill-conditioned D from acting as a lever."""
    bd = derive_bounds(cs, kmax)
    return Fraction((2 ** bd.y - 1) * 2 ** cs.a_bits, 2 ** bd.ty - kmax * (2 ** bd.e - 1))


@dataclass(frozen=True)
class CircuitSpec:
    """One proof circuit: ``chunk_blocks`` blocks of ``commit.block_size`` weights, each with up to
    ``kmax`` masked weights. Every circuit of one commitment shares its ``logrows``."""

    commit: CommitSpec
    kmax: int
    chunk_blocks: int = 1
    protected: bool = False   # the circuit of blocks with protected weights (codes 2 in the mask row)
    bounds: Bounds = field(init=False, compare=False, repr=False)

    def __post_init__(self):
        if not isinstance(self.commit, CommitSpec):
            raise ValueError("CircuitSpec.commit must be a CommitSpec")
        if not isinstance(self.protected, bool):
            raise ValueError(f"CircuitSpec.protected must be a bool, got {self.protected!r}")
        _posint("CircuitSpec.kmax", self.kmax)
        _posint("CircuitSpec.chunk_blocks", self.chunk_blocks)
        if self.kmax > self.commit.block_size:
            raise ValueError(f"kmax={self.kmax} exceeds the block size {self.commit.block_size}")
        object.__setattr__(self, "bounds", derive_bounds(self.commit, self.kmax))

    # convenient views
    @property
    def block_size(self) -> int:
        return self.commit.block_size

    @property
    def n_blind(self) -> int:
        return self.commit.n_blind

    @property
    def n_ctx(self) -> int:
        return self.commit.n_ctx

    @property
    def epsilon(self) -> Fraction:
        return self.bounds.epsilon

    @property
    def n_inputs(self) -> int:
        return self.chunk_blocks * (2 + self.kmax) + 3

    @property
    def check_groups(self) -> tuple[str, ...]:
        """The range-check groups whose sums feed ``sink``, in order: :data:`CHECK_GROUPS`, less
        ``columns`` when the commitment proves the columns' range separately (``amortized``)."""
        if self.commit.column_range == "amortized":
            return tuple(g for g in CHECK_GROUPS if g != "columns")
        return CHECK_GROUPS

    @property
    def decomposition(self) -> tuple[int, int]:
        """(base, legs) of ezkl's range decomposition in this circuit (the commitment's)."""
        return self.commit.decomp_base, self.commit.decomp_legs

    def public_length(self) -> int:
        return self.n_ctx + self.chunk_blocks * (self.block_size + 2 * self.kmax) + 1

    def input_lengths(self) -> tuple[int, ...]:
        K, B, R, k = self.chunk_blocks, self.block_size, self.n_blind, self.kmax
        return (B + R,) * (K * (2 + k)) + (2 * K * k + R, K * k * k + R, self.public_length())

    def input_index(self, kind: str, j: int, t: int = 0) -> int:
        """Position (in :meth:`input_names` order, which is also the order of the commitments a
        proof embeds) of block j's ``theta_p``, ``theta_u`` or slot-t ``col`` input."""
        K, k = self.chunk_blocks, self.kmax
        if not (0 <= j < K and 0 <= t < k):
            raise IndexError(f"block {j} / slot {t} outside a circuit of {K} blocks × {k} slots")
        return {"theta_p": j, "theta_u": K + j, "col": 2 * K + j * k + t}[kind]

    def input_names(self) -> list[str]:
        K, k = self.chunk_blocks, self.kmax
        return ([f"theta_p_{j}" for j in range(K)] + [f"theta_u_{j}" for j in range(K)]
                + [f"col_{j}_{t}" for j in range(K) for t in range(k)] + ["mu", "ycert", "public"])

    def output_sections(self) -> dict[str, slice]:
        """Where each public output of the graph sits among a proof's instances, in the graph's
        output order: ``public`` (the statement), ``zeros`` (K·B), ``asym`` (K·kmax², v7), ``sink``."""
        K, B, k = self.chunk_blocks, self.block_size, self.kmax
        out, at = {}, 0
        for name, n in (("public", self.public_length()), ("zeros", K * B), ("asym", K * k * k),
                        ("sink", len(self.check_groups))):
            out[name] = slice(at, at + n)
            at += n
        return out

    def n_instances(self) -> int:
        return self.output_sections()["sink"].stop

    def to_dict(self) -> dict:
        return {"commit": self.commit.to_dict(), "kmax": self.kmax, "chunk_blocks": self.chunk_blocks,
                "protected": self.protected}

    @classmethod
    def from_dict(cls, d) -> "CircuitSpec":
        return cls(commit=CommitSpec.from_dict(d["commit"]), kmax=d["kmax"], chunk_blocks=d["chunk_blocks"],
                   protected=d.get("protected", False))

    @property
    def key(self) -> str:
        h = hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
        t = "_T" if self.protected else ""
        return f"B{self.block_size}_k{self.kmax}_K{self.chunk_blocks}{t}_L{self.commit.logrows}_{h}"


class GraphBuilder:
    """An ONNX graph under construction (opset 17, DOUBLE tensors): ``const`` adds an initializer,
    ``node`` a node (named ``{op}_{n}`` unless given an output name), ``model`` checks and returns
    the ``ModelProto``. The relation, the column range relation and the benchmarks' probes use it."""

    def __init__(self):
        self.inits, self.nodes, self.count = [], [], 0

    def const(self, name, arr, dt=np.float64):
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(arr, dtype=dt), name))
        return name

    def node(self, op, ins, out=None, **kw):
        from onnx import helper

        if out is None:
            self.count += 1
            out = f"{op.lower()}_{self.count}"
        self.nodes.append(helper.make_node(op, ins, [out], **kw))
        return out

    def model(self, name, inputs, outputs):
        """``inputs`` / ``outputs``: [(name, shape)], all DOUBLE."""
        import onnx
        from onnx import TensorProto, helper

        vi = lambda items: [helper.make_tensor_value_info(n, TensorProto.DOUBLE, list(sh)) for n, sh in items]  # noqa: E731
        graph = helper.make_graph(self.nodes, name, vi(inputs), vi(outputs), initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="zkapex-jax")
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def build_relation(spec: "CircuitSpec | RangeSpec"):
    """The ONNX ``ModelProto`` of the relation (opset 17); a :class:`RangeSpec`'s is
    :func:`build_range_relation`."""
    if isinstance(spec, RangeSpec):
        return build_range_relation(spec)
    from onnx import TensorProto

    K, B, k = spec.chunk_blocks, spec.block_size, spec.kmax
    cs, bd = spec.commit, spec.bounds
    n_ctx = spec.n_ctx
    g = GraphBuilder()
    const, node = g.const, g.node

    i64 = np.int64
    const("zero_i", [0], i64)
    const("axis1", [1], i64)
    const("end_B", [B], i64)
    const("shape_1", [1], i64)

    def head(inp, n, shape):
        end = const(f"end_{inp}", [n], i64)
        return node("Reshape", [node("Slice", [inp, "zero_i", end, "axis1"]), const(f"shape_{inp}", shape, i64)])

    def pw2(x, c, name):
        return node("Mul", [x, const(name, [float(2 ** c)])]) if c else x

    def abs_sum(x):
        return node("Reshape", [node("ReduceSum", [node("Abs", [x])], keepdims=0), "shape_1"])

    tp = node("Concat", [head(f"theta_p_{j}", B, [1, B]) for j in range(K)], axis=0)          # (K,B)
    tu = node("Concat", [head(f"theta_u_{j}", B, [1, B]) for j in range(K)], axis=0)          # (K,B)
    cols = node("Concat", [head(f"col_{j}_{t}", B, [1, B, 1]) for j in range(K) for t in range(k)], axis=0)
    cols = node("Reshape", [node("Transpose", [node("Reshape", [cols, const("shape_kkb", [K, k, B], i64)])],
                                 perm=[0, 2, 1]), const("shape_kbk", [K, B, k], i64)])    # (K,B,k): Â[:,S]
    mu_hl = head("mu", 2 * K * k, [2, K, k])
    mu = node("Add", [node("Mul", [node("Gather", [mu_hl, const("i0", 0, i64)], axis=0),
                                   const("split", [float(2 ** MU_SPLIT_BITS)])]),
                      node("Gather", [mu_hl, const("i1", 1, i64)], axis=0)])                  # (K,k)
    ycert = head("ycert", K * k * k, [K, k, k])
    # public vector: ctx ‖ per block (m (B), idx (k), q (k)) ‖ zero
    per = B + 2 * k
    pub_blocks = node("Reshape", [node("Slice", ["public", const("ctx_end", [n_ctx], i64),
                                                 const("blk_end", [n_ctx + K * per], i64), "axis1"]),
                                  const("shape_per", [K, per], i64)])
    m = node("Slice", [pub_blocks, "zero_i", "end_B", "axis1"])                                  # (K,B)
    idx = node("Slice", [pub_blocks, const("idx_beg", [B], i64), const("idx_end", [B + k], i64), "axis1"])
    q = node("Slice", [pub_blocks, const("q_beg", [B + k], i64), const("q_end", [B + 2 * k], i64), "axis1"])
    zero = node("Slice", ["public", const("z_beg", [n_ctx + K * per], i64), const("z_end", [n_ctx + K * per + 1], i64),
                          "axis1"])

    # μ_eff = μ ⊙ q ; r = h·(θu − θp) + Â[:,S] μ_eff
    mu_eff = node("Mul", [mu, q])
    amu = node("Reshape", [node("MatMul", [cols, node("Reshape", [mu_eff, const("shape_kk1", [K, k, 1], i64)])]),
                           const("shape_KB", [K, B], i64)])
    dlt = node("Sub", [tu, tp])
    r = node("Add", [pw2(dlt, bd.s - bd.g, "h"), amu])
    if spec.protected:
        # m holds codes 0 (free), 1 (masked, S), 2 (protected, T); integer polynomials pick them out:
        # [m = 1] = m·(2 − m), 2·[m = 2] = m² − m, [m > 0] = (3m − m²)/2
        m_s = node("Mul", [m, node("Sub", [const("two_m", [2.0]), m])])                          # (K,B) S
        m_sq = node("Mul", [m, m])
        m_t2 = node("Sub", [m_sq, m])                                                             # 2·[T]
        # free rows: |r·2^g| < 2^s ; masked and protected rows: |r·2^(g+t)| < 2^s
        half_c = (2 ** (bd.g + bd.t) - 2 ** bd.g) // 2
        rw = node("Add", [node("Mul", [node("Sub", [node("Mul", [m, const("three_m", [3.0])]), m_sq]),
                                       const("w_m", [float(half_c)])]), const("w_f", [float(2 ** bd.g)])])
    else:  # the plain request: m is the 0/1 mask (the plan never sends a code 2 here)
        m_s, m_t2 = m, None
        rw = node("Add", [node("Mul", [m, const("w_m", [float(2 ** (bd.g + bd.t) - 2 ** bd.g)])]),
                          const("w_f", [float(2 ** bd.g)])])
    c_res = abs_sum(node("Mul", [r, rw]))
    # D = Â[S,S] ⊙ (q qᵀ) + 2^(a−1)·diag(1 − q);  E = Y·D − 2^ty·I
    offs = const("row_offs", (np.arange(K) * B)[:, None].astype(np.float64))
    gidx = node("Cast", [node("Reshape", [node("Add", [idx, offs]), const("shape_Kk", [K * k], i64)])], to=TensorProto.INT64)
    ass = node("Reshape", [node("Gather", [node("Reshape", [cols, const("shape_KBk", [K * B, k], i64)]), gidx], axis=0),
                           const("shape_kkk", [K, k, k], i64)])                                 # (K,k,k) rows S
    qq = node("Mul", [node("Reshape", [q, const("shape_k_col", [K, k, 1], i64)]),
                      node("Reshape", [q, const("shape_k_row", [K, 1, k], i64)])])
    eye = const("eye", np.eye(k, dtype=np.float64)[None])
    pad = node("Mul", [node("Mul", [node("Sub", [const("one", [1.0]), node("Reshape", [q, "shape_k_col"])]), eye]),
                       const("pad_c", [float(2 ** (cs.a_bits - 1))])])
    d0 = node("Mul", [ass, qq])                                                                  # Â[P,P] ⊙ qqᵀ
    node("Sub", [d0, node("Transpose", [d0], perm=[0, 2, 1])], "asym")                          # must be 0
    D = node("Add", [d0, pad])
    E = node("Sub", [node("MatMul", [ycert, D]), node("Mul", [eye, const("two_ty", [float(2 ** bd.ty)])])])
    # compensation bound (v9, one check per block): 0 ≤ X² − Σ_i δ̂_i² < 2^s with X = ρ·Σ_S|θ̂p|, as
    # |2·(X² − Σδ̂²) + 1 − 2^s| < 2^s; δ̂ is range-checked (integer, |δ̂| < 2^s), so the sum is exact
    abs_tp = node("Abs", [tp])
    removed = node("ReduceSum", [node("Mul", [abs_tp, m_s]), "axis1"], keepdims=1)             # (K,1)
    abs_dlt = node("Abs", [dlt])
    x_lim = node("Mul", [removed, const("rho", [float(cs.delta_ratio)])])                         # (K,1)
    sq = node("ReduceSum", [node("Mul", [dlt, dlt]), "axis1"], keepdims=1)                       # (K,1)
    slack = node("Sub", [node("Mul", [x_lim, x_lim]), sq])
    c_delta = abs_sum(node("Sub", [node("Add", [node("Mul", [slack, const("two_d", [2.0])]), const("one_d", [1.0])]),
                                   const("two_s", [float(2 ** bd.s)])]))
    sums = [node("Reshape", [node("ReduceSum", [abs_tp], keepdims=0), "shape_1"]),  # θ̂p integer, |θ̂p| < 2^s
            abs_sum(pw2(cols, bd.s - cs.a_bits, "sa")),   # |Â| < 2^a (amortized: a RangeSpec proof's)
            abs_sum(mu),                                   # |μ̂| < 2^s
            c_res,
            abs_sum(pw2(ycert, bd.s - bd.y, "sy")),        # |Y| < 2^y
            abs_sum(pw2(E, bd.s - bd.e, "se")),            # |E| < 2^e
            c_delta,                                       # ‖θ̂u − θ̂p‖₂ ≤ ρ·Σ_S|θ̂p| per block
            node("Reshape", [node("ReduceSum", [abs_dlt], keepdims=0), "shape_1"])]  # δ̂ integer, |δ̂| < 2^s
    if "columns" not in spec.check_groups:
        del sums[CHECK_GROUPS.index("columns")]
    node("Mul", [node("Concat", sums, axis=0), node("Reshape", [zero, "shape_1"])], "sink")
    # θ̂u[S] = 0 and θ̂u[T] = θ̂p[T] (public zeros). θ̂u needs no range check of its own (v8): θ̂u =
    # θ̂p + δ̂ with θ̂p and δ̂ = θ̂u − θ̂p both range-checked integers (Abs(θ̂p), Abs(δ̂) above), so θ̂u is an
    # integer with |θ̂u| < 2^(s+1); a code is S or T, never both, so the two terms cannot cancel
    if m_t2 is None:
        node("Mul", [tu, m_s], "zeros")
    else:
        node("Add", [node("Mul", [tu, m_s]), node("Mul", [abs_dlt, m_t2])], "zeros")
    node("Identity", ["public"], "pub_out")
    L = spec.input_lengths()
    return g.model(f"zkapex_cols_{spec.key}", [(n, [1, n_]) for n, n_ in zip(spec.input_names(), L)],
                   [("pub_out", [1, L[-1]]), ("zeros", [K, B]), ("asym", [K, k, k]),
                    ("sink", [len(spec.check_groups)])])


# ----------------------------------------------------------------------------- column range proofs

def column_range_decomposition(cs: CommitSpec) -> tuple[int, int]:
    """(base, legs) of a column range circuit: the base of :func:`range_decomposition` (the largest
    digit table that fits 2^logrows rows) and the fewest legs whose range covers a — for a = 24 at
    logrows ≥ 13, 4096 × 2: 2 digits per entry where a request circuit's 60-bit range needs 5 (and
    shifts Â by 2^(s−a))."""
    base = range_decomposition(cs.logrows)[0]
    return base, -(-cs.a_bits // int(math.log2(base)))


@dataclass(frozen=True)
class RangeSpec:
    """A column range proof (``CommitSpec.column_range = "amortized"``): ``n_columns`` committed
    columns of ``commit`` — each an input laid out exactly as a request circuit's slot (B values,
    then R blinders, one column of 2^logrows rows from row 0), so the commitment the proof embeds
    for it is the published Com(Â_b[:, j]) — and the statement |Â_b[i, j]| < 2^a for their B values.

    The graph: ``sink = Σ|Â·2^(s_r − a)| · 0`` with the circuit's own decomposition
    (:func:`column_range_decomposition`, range 2^s_r, s_r ≥ a), ``pub_out`` = the public 0.
    Instances: ``[0, 0]``. KZG binding carries the bound to every request proof that embeds the
    same commitment for a slot: the two proofs open one polynomial, so the same B values."""

    commit: CommitSpec
    n_columns: int

    def __post_init__(self):
        if not isinstance(self.commit, CommitSpec):
            raise ValueError("RangeSpec.commit must be a CommitSpec")
        _posint("RangeSpec.n_columns", self.n_columns)

    @property
    def block_size(self) -> int:
        return self.commit.block_size

    @property
    def decomposition(self) -> tuple[int, int]:
        return column_range_decomposition(self.commit)

    @property
    def range_bits(self) -> int:
        base, legs = self.decomposition
        return int(math.log2(base)) * legs

    @property
    def n_inputs(self) -> int:
        return self.n_columns + 1

    def input_names(self) -> list[str]:
        return [f"col_{i}" for i in range(self.n_columns)] + ["public"]

    def input_lengths(self) -> tuple[int, ...]:
        return (self.block_size + self.commit.n_blind,) * self.n_columns + (1,)

    def n_instances(self) -> int:
        return 2   # pub_out (the public 0) and sink

    def to_dict(self) -> dict:
        return {"commit": self.commit.to_dict(), "n_columns": self.n_columns, "kind": "column_range"}

    @classmethod
    def from_dict(cls, d) -> "RangeSpec":
        if not isinstance(d, dict) or d.get("kind") != "column_range":
            raise ValueError("not a column range spec")
        return cls(commit=CommitSpec.from_dict(d["commit"]), n_columns=d["n_columns"])

    @property
    def key(self) -> str:
        h = hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
        return f"R{self.block_size}_m{self.n_columns}_L{self.commit.logrows}_{h}"


def spec_from_dict(d) -> "CircuitSpec | RangeSpec":
    """A request circuit's or a column range circuit's spec from its ``to_dict``."""
    if isinstance(d, dict) and d.get("kind") == "column_range":
        return RangeSpec.from_dict(d)
    return CircuitSpec.from_dict(d)


def build_range_relation(spec: RangeSpec):
    """The ONNX ``ModelProto`` of a column range proof (opset 17)."""
    B, n, a = spec.block_size, spec.n_columns, spec.commit.a_bits
    g = GraphBuilder()
    const, node = g.const, g.node
    const("zero_i", [0], np.int64)
    const("axis1", [1], np.int64)
    const("end_B", [B], np.int64)
    heads = [node("Slice", [f"col_{i}", "zero_i", "end_B", "axis1"], f"head_{i}") for i in range(n)]
    x = node("Concat", heads, "cols", axis=0)                                                    # (n,B)
    if spec.range_bits > a:
        x = node("Mul", [x, const("sa", [float(2 ** (spec.range_bits - a))])], "scaled")
    node("Abs", [x], "abs")                                                                       # |Â·2^(s_r−a)| < 2^s_r
    node("ReduceSum", ["abs"], "total", keepdims=0)
    node("Reshape", ["total", const("shape_1", [1], np.int64)], "total1")
    node("Mul", ["total1", "public"], "sink_2d")
    node("Reshape", ["sink_2d", "shape_1"], "sink")
    node("Identity", ["public"], "pub_out")
    return g.model(f"zkapex_range_{spec.key}", [(nm, [1, ln]) for nm, ln in zip(spec.input_names(), spec.input_lengths())],
                   [("pub_out", [1, 1]), ("sink", [1])])


def range_inputs(spec: RangeSpec, columns, blinders) -> list[list[int]]:
    """The integer inputs of a column range proof: ``columns`` (≤ n, each B integers) with their
    ``blinders`` (each R), padded with zero columns under fresh blinders ``blinders[len(columns):]``
    (a padding column's commitment is no published one; the verifier reads only the listed ones)."""
    if len(columns) > spec.n_columns or len(blinders) != spec.n_columns:
        raise ValueError(f"{len(columns)} columns / {len(blinders)} blinder rows for a range proof of {spec.n_columns}")
    B = spec.block_size
    cols = [[int(x) for x in c] for c in columns] + [[0] * B] * (spec.n_columns - len(columns))
    out = [c + [int(x) for x in r] for c, r in zip(cols, blinders)] + [[0]]
    if [len(v) for v in out] != list(spec.input_lengths()):
        raise ValueError("assembled range inputs do not match the circuit's input lengths")
    return out


# ----------------------------------------------------------------------------- exact oracle

def relation_reference(spec: CircuitSpec, theta_p, theta_u, cols, mu, ycert, mask, idx, q) -> dict:
    """Exact integer oracle of the relation for one proof (Python integers, no rounding).

    Shapes: theta_p/theta_u/mask (K,B); cols (K,B,kmax) = Â[:, S]; mu/idx/q (K,kmax);
    ycert (K,kmax,kmax). Returns ``{group: max |argument| / 2^s}`` (as Fractions; the check holds
    iff < 1), ``zeros`` (K,B), ``asym`` (K,kmax,kmax) and ``ok`` (every check holds, zeros and asym are 0)."""
    cs, bd = spec.commit, spec.bounds
    K, B, k = spec.chunk_blocks, spec.block_size, spec.kmax
    S = 2 ** bd.s
    I = lambda a: np.asarray(a, dtype=object)  # noqa: E731
    tp, tu, A, mu, Y = I(theta_p), I(theta_u), I(cols), I(mu), I(ycert)
    m = np.asarray(mask).astype(np.int64).astype(object)   # codes 0 / 1 (S) / 2 (T)
    if spec.protected:
        m_s, m_t2 = m * (2 - m), m * m - m
    else:   # the plain circuit reads m as the 0/1 mask
        m_s, m_t2 = m, m * 0
    q = np.asarray(q).astype(np.int64).astype(object)
    idx = np.asarray(idx).astype(np.int64)
    mu_eff = mu * q
    r = (tu - tp) * bd.h + np.einsum("kbt,kt->kb", A, mu_eff)
    rw = (2 ** bd.g + (3 * m - m * m) * ((2 ** (bd.g + bd.t) - 2 ** bd.g) // 2) if spec.protected
          else 2 ** bd.g + m * (2 ** (bd.g + bd.t) - 2 ** bd.g))
    D = np.empty((K, k, k), dtype=object)
    D0 = np.empty((K, k, k), dtype=object)
    for j in range(K):
        for a in range(k):
            for b in range(k):
                D0[j, a, b] = A[j, idx[j, a], b] * q[j, a] * q[j, b]
                D[j, a, b] = D0[j, a, b] + (0 if q[j, a] else (2 ** (cs.a_bits - 1) if a == b else 0))
    E = np.einsum("kab,kbc->kac", Y, D) - np.eye(k, dtype=np.int64).astype(object)[None] * 2 ** bd.ty
    mx = lambda a: max([abs(int(x)) for x in np.asarray(a, dtype=object).ravel()] + [0])  # noqa: E731
    out = {"theta_p": Fraction(mx(tp), S), "columns": Fraction(mx(A) * 2 ** (bd.s - cs.a_bits), S),
           "mu": Fraction(mx(mu), S), "residual": Fraction(mx(r * rw), S),
           "ycert": Fraction(mx(Y) * 2 ** (bd.s - bd.y), S), "ycert_error": Fraction(mx(E) * 2 ** (bd.s - bd.e), S)}
    removed = (np.abs(tp) * m_s).sum(axis=1)
    x_lim = removed * cs.delta_ratio
    sq = ((tu - tp) * (tu - tp)).sum(axis=1)
    out["move"] = Fraction(mx(tu - tp), S)
    out["delta"] = Fraction(mx((x_lim * x_lim - sq) * 2 + 1 - S), S)
    zeros = tu * m_s + np.abs(tu - tp) * m_t2
    out["zeros"] = zeros
    out["asym"] = D0 - D0.transpose(0, 2, 1)
    out["ok"] = (all(v < 1 for key, v in out.items() if key not in ("zeros", "asym"))
                 and not any(int(z) for z in zeros.ravel()) and not any(int(z) for z in out["asym"].ravel()))
    return out


def assemble_inputs(spec: CircuitSpec, blocks, ctx, *, blinders) -> list[list[int]]:
    """The integer input vectors of one proof, in ``spec.input_names()`` order.

    ``blocks``: up to K dicts with ``theta_p``, ``theta_u`` (B,), ``cols`` (B,kmax), ``mu`` (kmax),
    ``ycert`` (kmax,kmax), ``mask`` (B,), ``idx``, ``q`` (kmax); missing blocks are padding
    (θ = 0, no mask). ``blinders(name, j)`` returns the R blinders of an input (per block j,
    for ``theta_p``/``theta_u``/``col_t``; j=None for ``mu``/``ycert``). ``ctx``: n_ctx limbs."""
    K, B, k = spec.chunk_blocks, spec.block_size, spec.kmax
    if len(blocks) > K:
        raise ValueError(f"{len(blocks)} blocks for a circuit of {K}")
    pad = {"theta_p": np.zeros(B, np.int64), "theta_u": np.zeros(B, np.int64), "cols": np.zeros((B, k), np.int64),
           "mu": [0] * k, "ycert": np.eye(k, dtype=np.int64) * 2 ** (spec.bounds.ty - spec.commit.a_bits + 1),
           "mask": np.zeros(B, np.int64), "idx": np.zeros(k, np.int64), "q": np.zeros(k, np.int64)}
    blocks = list(blocks) + [pad] * (K - len(blocks))
    ints = lambda a: [int(x) for x in np.asarray(a, dtype=object).ravel()]  # noqa: E731
    tp = [ints(b["theta_p"]) + list(blinders("theta_p", j)) for j, b in enumerate(blocks)]
    tu = [ints(b["theta_u"]) + list(blinders("theta_u", j)) for j, b in enumerate(blocks)]
    cols = [ints(np.asarray(b["cols"])[:, t]) + list(blinders(f"col_{t}", j)) for j, b in enumerate(blocks) for t in range(k)]
    mus = [int(x) for b in blocks for x in b["mu"]]
    hi = [x >> MU_SPLIT_BITS for x in mus]
    mu = hi + [x - (h << MU_SPLIT_BITS) for x, h in zip(mus, hi)] + list(blinders("mu", None))
    yc = [x for b in blocks for x in ints(b["ycert"])] + list(blinders("ycert", None))
    pub = [int(x) for x in ctx]
    for b in blocks:
        pub += ints(b["mask"]) + ints(b["idx"]) + ints(b["q"])
    pub.append(0)
    out = tp + tu + cols + [mu, yc, pub]
    if [len(v) for v in out] != list(spec.input_lengths()):
        raise ValueError("assembled inputs do not match the circuit's input lengths")
    return out
