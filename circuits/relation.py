"""The relation one proof checks, for one chunk of ``K`` blocks of ``B`` weights, as an ONNX graph.

Everything is integer (ezkl input/param scale 0): the quantization layer
(:mod:`zkapex_jax.quant`) feeds exact integers, so ezkl's own rounding is the identity and the
circuit arithmetic is exact (no rescaling anywhere).

Inputs (ezkl visibility ``polycommit`` for all inputs: each input is one KZG-committed column):

===============  ===================  =====================================================
name             length               meaning
===============  ===================  =====================================================
``theta_p``      ``K*B + R``          θ̂p (scale 2^sθ) of the chunk, then ``R`` blinders
``fisher``       ``K*B*B + R``        Ĉ (per-block normalized, scale 2^sC), then ``R`` blinders
``theta_u``      ``K*B + R``          θ̂u, then ``R`` blinders (defines Com(θu))
``lam``          ``K*B + R``          λ̂ (scale 2^sθ; multiplied by 2^sC in-circuit), blinders
``public``       ``n_ctx + K*B``      statement-hash limbs, then the chunk's mask (0/1)
===============  ===================  =====================================================

Outputs (public instances):

* ``pub_out = public`` (Identity): the verifier compares it with the statement hash it recomputes
  and the published mask's blocks for this chunk;
* ``checks`` (5,): ``[Σ (θu⊙m)², Σ (λ⊙(1−m))², Σ relu(|Ĉ(θu−θp) + 2^sC·λ| − τ),
  Σ_blocks relu(2^(sC−1) − max_i Ĉ_ii), Σ_{blocks without mask} Σ δ²]``; the verifier requires
  all five to be exactly 0 (the last: a block with no masked weight keeps θu = θp exactly). The
  last one pins the committed Fisher's per-block normalization (honest: max|Ĉ_b| = max_i Ĉ_b,ii ∈
  (2^(sC−1), 2^sC] for a PSD block), so a client cannot shrink C at commitment time to make τ
  vacuous.

δ := θu − θp is computed in-circuit, so assembly (θu = θp + δ) holds by construction.
All sums are of non-negative integers far below the field modulus (every input is range-checked
to |x| < 2^24 by ezkl, see :attr:`CircuitSpec.input_bound`), so a sum is 0 iff every term is 0.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

import numpy as np

FORMAT_VERSION = 3
#: number of check outputs; the verifier requires each to be exactly 0.
N_CHECKS = 5
CHECK_NAMES = (
    "masked weights of θu are not zero",
    "λ is non-zero off the mask",
    "KKT residual |Cδ + E_M λ| exceeds τ",
    "committed Fisher block is not normalized (max diagonal < 2^(s_c−1))",
    "a block without masked weights changed (δ ≠ 0)",
)


@dataclass(frozen=True)
class CircuitSpec:
    """One circuit shape: ``chunk_blocks`` blocks of ``block_size`` weights per proof.

    ``s_c``: the Fisher's fixed-point exponent (Ĉ entries are ≤ 2^s_c in magnitude);
    ``n_blind``: blinding field elements appended to every private committed tensor;
    ``n_ctx``: 21-bit limbs of the statement hash carried as public values.
    ``s_c=None`` picks the largest exponent keeping the residual in ezkl's range (see quant).
    """

    block_size: int
    chunk_blocks: int
    s_c: int | None = None
    n_blind: int = 8
    n_ctx: int = 12
    decomp_base: int = 4096
    decomp_legs: int = 2

    def __post_init__(self):
        for name in ("block_size", "chunk_blocks", "n_blind", "n_ctx", "decomp_base", "decomp_legs"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"CircuitSpec.{name} must be a positive integer, got {v!r}")
        if self.s_c is None:
            object.__setattr__(self, "s_c", default_fisher_exponent(self.block_size, self.input_bound))
        if not 1 <= self.s_c or self.block_size * 2 ** self.s_c > self.input_bound:
            raise ValueError(
                f"CircuitSpec.s_c={self.s_c} too large for block size {self.block_size}: "
                f"B·2^s_c must stay ≤ {self.input_bound}")

    @property
    def input_bound(self) -> int:
        """ezkl range-checks every input/output and every abs/relu argument to |x| ≤ base^legs − 1."""
        return self.decomp_base ** self.decomp_legs - 1

    @property
    def tau(self) -> int:
        """Tolerance τ on |Ĉδ̂ + 2^s_c λ̂| (integer units): B·2^(s_c−1), see zkapex_jax.quant."""
        return self.block_size * 2 ** (self.s_c - 1)

    @property
    def logrows_min(self) -> int:
        return int(math.log2(self.decomp_base)) + 1

    def input_lengths(self) -> tuple[int, ...]:
        kb = self.block_size * self.chunk_blocks
        r = self.n_blind
        return (kb + r, kb * self.block_size + r, kb + r, kb + r, self.n_ctx + kb)

    def to_dict(self) -> dict:
        return {**asdict(self), "relation_version": FORMAT_VERSION}

    @classmethod
    def from_dict(cls, d) -> "CircuitSpec":
        d = dict(d)
        v = d.pop("relation_version", FORMAT_VERSION)
        if v != FORMAT_VERSION:
            raise ValueError(f"circuit relation version {v} unsupported (expected {FORMAT_VERSION})")
        return cls(**d)

    @property
    def key(self) -> str:
        """Short stable id of the shape (names cache folders, keys in the key store)."""
        h = hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
        return f"K{self.chunk_blocks}_B{self.block_size}_s{self.s_c}_{h}"


def default_fisher_exponent(block_size: int, bound: int = 2 ** 24 - 1) -> int:
    """Largest s with B·2^s ≤ bound/2 (so τ = B·2^(s−1) ≤ bound/4 and |r| − τ stays in range)."""
    s = int(math.floor(math.log2((bound + 1) / 2 / block_size)))
    if s < 1:
        raise ValueError(f"block size {block_size} too large for the range {bound}")
    return s


def build_relation(spec: CircuitSpec):
    """The ONNX ``ModelProto`` of the chunk relation (opset 17)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    K, B, R = spec.chunk_blocks, spec.block_size, spec.n_blind
    KB = K * B
    L = spec.input_lengths()
    inits, nodes = [], []

    def const(name, arr, dt=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(arr, dtype=dt), name))
        return name

    def node(op, ins, out, **kw):
        nodes.append(helper.make_node(op, ins, [out], **kw))
        return out

    i64 = np.int64
    const("zero_i", [0], i64)
    const("axis1", [1], i64)
    const("end_kb", [KB], i64)
    const("end_kbb", [KB * B], i64)
    const("ctx_end", [spec.n_ctx], i64)
    const("pub_end", [spec.n_ctx + KB], i64)
    const("shape_kb", [K, B], i64)
    const("shape_kb1", [K, B, 1], i64)
    const("shape_kbb", [K, B, B], i64)
    const("shape_1", [1], i64)
    const("axis_2", [2], i64)
    const("one", 1.0)
    const("tau", float(spec.tau))
    const("lam_scale", float(2 ** spec.s_c))
    const("half_scale", float(2 ** (spec.s_c - 1)))
    const("eye", np.eye(B)[None])

    def take(inp, end, shape):
        return node("Reshape", [node("Slice", [inp, "zero_i", end, "axis1"], inp + "_s"), shape], inp + "_v")

    tp = take("theta_p", "end_kb", "shape_kb")
    tu = take("theta_u", "end_kb", "shape_kb")
    lam = take("lam", "end_kb", "shape_kb")
    C = take("fisher", "end_kbb", "shape_kbb")
    m = node("Reshape", [node("Slice", ["public", "ctx_end", "pub_end", "axis1"], "mask_s"), "shape_kb"], "mask")
    d = node("Sub", [tu, tp], "delta")
    cd = node("Reshape", [node("MatMul", [C, node("Reshape", [d, "shape_kb1"], "delta3")], "cd3"), "shape_kb"], "cd")
    r = node("Add", [cd, node("Mul", [lam, "lam_scale"], "lam_sc")], "resid")
    excess = node("Relu", [node("Sub", [node("Abs", [r], "abs_r"), "tau"], "abs_r_tau")], "excess")
    c_res = node("ReduceSum", [excess], "c_res", keepdims=0)
    um = node("Mul", [tu, m], "tu_m")
    c_zero = node("ReduceSum", [node("Mul", [um, um], "tu_m2")], "c_zero", keepdims=0)
    lo = node("Mul", [lam, node("Sub", ["one", m], "not_m")], "lam_off")
    c_lam = node("ReduceSum", [node("Mul", [lo, lo], "lam_off2")], "c_lam", keepdims=0)
    diag = node("ReduceSum", [node("Mul", [C, "eye"], "c_diag_full"), "axis_2"], "c_diag", keepdims=0)
    dmax = node("ReduceMax", [diag], "c_diag_max", axes=[1], keepdims=0)
    c_norm = node("ReduceSum", [node("Relu", [node("Sub", ["half_scale", dmax], "c_gap")], "c_gap_pos")],
                  "c_norm", keepdims=0)
    # blocks without a masked weight: δ = 0 exactly (Σ_k (1 − max_i m_ki)·Σ_i δ_ki²)
    no_mask = node("Sub", ["one", node("ReduceMax", [m], "has_mask", axes=[1], keepdims=1)], "no_mask")
    c_keep = node("ReduceSum", [node("Mul", [node("Mul", [d, d], "delta2"), no_mask], "delta2_nomask")],
                  "c_keep", keepdims=0)
    node("Concat", [node("Reshape", [c_zero, "shape_1"], "c_zero1"),
                    node("Reshape", [c_lam, "shape_1"], "c_lam1"),
                    node("Reshape", [c_res, "shape_1"], "c_res1"),
                    node("Reshape", [c_norm, "shape_1"], "c_norm1"),
                    node("Reshape", [c_keep, "shape_1"], "c_keep1")], "checks", axis=0)
    node("Identity", ["public"], "pub_out")
    names = ("theta_p", "fisher", "theta_u", "lam", "public")
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, n_]) for n, n_ in zip(names, L)]
    outputs = [helper.make_tensor_value_info("pub_out", TensorProto.FLOAT, [1, L[4]]),
               helper.make_tensor_value_info("checks", TensorProto.FLOAT, [N_CHECKS])]
    graph = helper.make_graph(nodes, f"zkapex_kkt_{spec.key}", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="zkapex-jax")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def relation_reference(spec: CircuitSpec, theta_p, fisher, theta_u, lam, mask) -> np.ndarray:
    """Exact integer oracle of the ``checks`` output. theta_p/theta_u/lam/mask (K,B), fisher (K,B,B)."""
    tp, tu, lm = (np.asarray(a, dtype=object) for a in (theta_p, theta_u, lam))
    C = np.asarray(fisher, dtype=object)
    m = np.asarray(mask).astype(np.int64).astype(object)
    d = tu - tp
    r = np.einsum("kij,kj->ki", C, d) + lm * (2 ** spec.s_c)
    c_res = sum(max(abs(int(x)) - spec.tau, 0) for x in r.ravel())
    c_zero = sum(int(x) ** 2 for x in (tu * m).ravel())
    c_lam = sum(int(x) ** 2 for x in (lm * (1 - m)).ravel())
    half = 2 ** (spec.s_c - 1)
    c_norm = sum(max(half - max(int(C[k, i, i]) for i in range(C.shape[1])), 0) for k in range(C.shape[0]))
    c_keep = sum(int(x) ** 2 for k in range(d.shape[0]) if not m[k].any() for x in d[k])
    return np.array([c_zero, c_lam, c_res, c_norm, c_keep], dtype=object)
