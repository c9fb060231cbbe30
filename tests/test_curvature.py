"""Curvature families (zkapex_jax.core.curvature) against dense float64 oracles on tiny models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zkapex_jax.core import curvature as cv
from zkapex_jax.core.blocks import BlockLayout
from zkapex_jax.core.fisher import accumulate_fisher
from zkapex_jax.core.params import flatten_params

from conftest import build_model_cached

K_CLASSES = 3


def _mlp():
    """A 2-layer classifier: params {"l1": {"kernel" (4,6)}, "l2": {"kernel" (6,3)}}, one-example loss."""
    rng = np.random.default_rng(0)
    params = {"l1": {"kernel": rng.normal(size=(4, 6))}, "l2": {"kernel": rng.normal(size=(6, K_CLASSES)) * 0.7}}

    def logits(p, x):
        return jnp.tanh(x @ p["l1"]["kernel"]) @ p["l2"]["kernel"]

    def loss(p, ex):
        x, y = ex
        return -jax.nn.log_softmax(logits(p, x[None])[0])[y]

    x = rng.normal(size=(7, 4))
    y = rng.integers(0, K_CLASSES, size=7)
    return params, logits, loss, x, y


def _dense_blocks(H, layout, params):
    """Blocks of a dense (D, D) matrix over the layout's kernels (row-major (in, out) flattening
    per kernel, kernels in path order): the oracle's view of any block curvature."""
    sizes = [int(np.prod(s)) for s in layout.shapes]
    ids, off = {}, 0
    for p, s, n in zip(layout.paths, layout.shapes, sizes):
        ids[p] = (np.arange(n, dtype=np.float64) + off).reshape(s)
        off += n
    idx = np.rint(np.asarray(layout.to_blocks(ids))).astype(int)
    return np.stack([H[np.ix_(r, r)] for r in idx])


def _grads(loss, params, x, y):
    paths = sorted(flatten_params(params))
    def flat(p, ex):
        g = jax.grad(loss)(p, ex)
        f = flatten_params(g)
        return jnp.concatenate([jnp.ravel(f[k]) for k in paths])
    return flat


@pytest.mark.parametrize("order", ["out_in", "in_out"])
def test_exact_fisher_matches_the_weighted_label_sum(x64, order):
    params, logits, loss, x, y = _mlp()
    layout = BlockLayout.from_params(params, ["l1/kernel", "l2/kernel"], 6, order=order)
    flat = _grads(loss, params, x, y)
    D = sum(int(np.prod(s)) for s in layout.shapes)
    H = np.zeros((D, D))
    p = np.asarray(jax.nn.softmax(logits(params, x)))
    for i in range(len(x)):
        for c in range(K_CLASSES):
            g = np.asarray(flat(params, (x[i], c)))
            H += p[i, c] * np.outer(g, g)
    H /= len(x)
    got = np.asarray(cv.exact_fisher(loss, logits, params, (x, y), layout, chunk_size=4))
    np.testing.assert_allclose(got, _dense_blocks(H, layout, params), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("order", ["out_in", "in_out"])
def test_logit_gauss_newton_is_jt_centring_j(x64, order):
    """The ``logits`` family against the dense oracle (1/N) Σ_i J_iᵀ (I − 11ᵀ/K) J_i, J_i the
    Jacobian of example i's logits by every kernel weight; it does not vanish where the
    exact Fisher does (a saturated softmax), and adding a constant to every logit (what softmax
    ignores) leaves it unchanged."""
    params, logits, loss, x, y = _mlp()
    layout = BlockLayout.from_params(params, ["l1/kernel", "l2/kernel"], 6, order=order)
    paths = sorted(flatten_params(params))

    def flat_logits(p, xi):
        return logits(p, xi[None])[0]

    D = sum(int(np.prod(s)) for s in layout.shapes)
    P = np.eye(K_CLASSES) - 1.0 / K_CLASSES
    H = np.zeros((D, D))
    for i in range(len(x)):
        jac = jax.jacrev(flat_logits)(params, x[i])
        f = flatten_params(jac)
        J = np.concatenate([np.asarray(f[k]).reshape(K_CLASSES, -1) for k in paths], axis=1)   # (K, D)
        H += J.T @ P @ J
    H /= len(x)
    got = np.asarray(cv.logit_gauss_newton(logits, params, (x, y), layout, chunk_size=4))
    np.testing.assert_allclose(got, _dense_blocks(H, layout, params), rtol=1e-9, atol=1e-12)

    def shifted(p, xx):
        return logits(p, xx) + 5.0 * jnp.sum(xx @ p["l1"]["kernel"], axis=-1, keepdims=True)  # common mode
    np.testing.assert_allclose(np.asarray(cv.logit_gauss_newton(shifted, params, (x, y), layout)), got,
                               rtol=1e-9, atol=1e-12)
    hot = {"l1": params["l1"], "l2": {"kernel": params["l2"]["kernel"] * 60.0}}   # p* → 1
    lay1 = BlockLayout.from_params(hot, ["l1/kernel"], 6)
    t_exact = np.trace(np.asarray(cv.exact_fisher(loss, logits, hot, (x, y), lay1)), axis1=1, axis2=2).sum()
    t_logit = np.trace(np.asarray(cv.logit_gauss_newton(logits, hot, (x, y), lay1)), axis1=1, axis2=2).sum()
    assert t_exact < 1e-2 * t_logit


def test_true_fisher_uses_sampled_labels_and_converges_to_the_exact(x64):
    params, logits, loss, x, y = _mlp()
    layout = BlockLayout.from_params(params, ["l1/kernel", "l2/kernel"], 6)
    key = jax.random.PRNGKey(3)
    got = np.asarray(cv.true_fisher(loss, logits, params, (x, y), layout, key=key, n_samples=2))
    ys = np.asarray(jax.random.categorical(key, jnp.asarray(logits(params, x)), axis=-1, shape=(2, len(x)))).ravel()
    want = np.asarray(accumulate_fisher(loss, params, (np.concatenate([x, x]), ys), layout, damping=0.0))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    many = np.asarray(cv.true_fisher(loss, logits, params, (x, y), layout, key=key, n_samples=3000, chunk_size=512))
    exact = np.asarray(cv.exact_fisher(loss, logits, params, (x, y), layout))
    assert np.abs(many - exact).max() < 0.08 * np.abs(exact).max()   # Monte Carlo, 3000 draws per example


def test_at_a_fitted_model_the_empirical_fisher_vanishes_fastest(x64):
    """The fidelity issue's cause in miniature: at labels the model predicts with p* → 1 the
    empirical Fisher scales like (1 − p*)², the exact (true) Fisher like (1 − p*): both vanish,
    the empirical one far faster; the layer-input curvature does not depend on the labels."""
    params, logits, loss, x, _ = _mlp()
    params = {"l1": params["l1"], "l2": {"kernel": params["l2"]["kernel"] * 60.0}}  # saturated softmax
    z = np.asarray(logits(params, x))
    y = np.argmax(z, axis=-1)
    miss = 1.0 - np.asarray(jax.nn.softmax(z)).max(axis=-1)
    assert miss.max() < 1e-2
    layout = BlockLayout.from_params(params, ["l1/kernel"], 6)
    t_emp = np.trace(np.asarray(cv.empirical_fisher(loss, params, (x, y), layout)), axis1=1, axis2=2).sum()
    t_exact = np.trace(np.asarray(cv.exact_fisher(loss, logits, params, (x, y), layout)), axis1=1, axis2=2).sum()
    assert t_emp < 0.2 * t_exact
    h = cv.layer_hessian_blocks(cv.input_moments({"l1/kernel": x[:, None, :]}), layout)
    assert np.trace(h, axis1=1, axis2=2).sum() > 1e3 * t_emp


def test_weighted_accumulate_fisher_is_the_weighted_mean(x64):
    params, _, loss, x, y = _mlp()
    layout = BlockLayout.from_params(params, ["l2/kernel"], 3)
    w = np.linspace(0.1, 2.0, len(x))
    flat = _grads(loss, {"l2": params["l2"], "l1": params["l1"]}, x, y)
    got = np.asarray(accumulate_fisher(loss, params, (x, y), layout, damping=0.5, weights=w, chunk_size=3))
    gs = [np.asarray(jax.grad(loss)(params, (x[i], y[i]))["l2"]["kernel"]) for i in range(len(x))]
    for b, blk in enumerate(got):
        G = [np.asarray(layout.to_blocks({"l2/kernel": g}))[b] for g in gs]
        want = sum(wi * np.outer(gi, gi) for wi, gi in zip(w, G)) / w.sum() + 0.5 * np.eye(3)
        np.testing.assert_allclose(blk, want, rtol=1e-10, atol=1e-12)
    del flat
    with pytest.raises(Exception, match="weights"):
        accumulate_fisher(loss, params, (x, y), layout, damping=0.0, weights=-w)


@pytest.mark.parametrize("chunk", [1, 2, None])
@pytest.mark.parametrize("order", ["out_in", "in_out"])
def test_layer_hessian_blocks_are_the_hessian_of_the_layer_reconstruction(x64, order, chunk):
    """``layer_inputs``: the blocks of ∇²_W (1/2N) Σ_i Σ_p ||x_{i,p} W||² for two kernels (jax.hessian)."""
    rng = np.random.default_rng(1)
    shapes = {"a/kernel": (4, 3), "b/kernel": (2, 6)}
    xs = {"a/kernel": rng.normal(size=(5, 3, 4)), "b/kernel": rng.normal(size=(5, 2, 2))}
    params = {"a": {"kernel": np.zeros(shapes["a/kernel"])}, "b": {"kernel": np.zeros(shapes["b/kernel"])}}
    layout = BlockLayout.from_params(params, ["a/kernel", "b/kernel"], 4, order=order)
    mom = cv.input_moments(xs)
    got = cv.layer_hessian_blocks(mom, layout, chunk=chunk)  # built in chunks of blocks (None: ~2^27 entries)
    assert cv.layer_hessian_blocks(mom, layout, dtype=np.float32, chunk=chunk).dtype == np.float32
    Hs = []
    for p in layout.paths:
        x = jnp.asarray(xs[p])
        f = lambda w, x=x, s=shapes[p]: 0.5 * jnp.sum((x @ w.reshape(s)) ** 2) / x.shape[0]  # noqa: E731
        Hs.append(np.asarray(jax.hessian(f)(jnp.zeros(int(np.prod(shapes[p]))))))
    D = sum(h.shape[0] for h in Hs)
    H = np.zeros((D, D))
    o = 0
    for h in Hs:
        H[o:o + h.shape[0], o:o + h.shape[0]] = h
        o += h.shape[0]
    np.testing.assert_allclose(got, _dense_blocks(H, layout, params), rtol=1e-10, atol=1e-12)


def test_input_statistics_add_up_over_chunks_and_centre_to_the_covariance():
    """Chunked sums equal the whole set's; ``centered_moments`` is ``(1/N) Σ_i Σ_p (x − μ)(x − μ)ᵀ``
    and ``input_means`` the mean over examples and positions (float64 oracle)."""
    x = np.random.default_rng(2).normal(size=(6, 5, 3)) + np.array([1.0, -2.0, 0.5])
    whole = cv.input_statistics({"k": x})["k"]
    parts = [cv.input_statistics({"k": x[s:s + 4]}, 6)["k"] for s in (0, 4)]
    np.testing.assert_allclose(parts[0]["second"] + parts[1]["second"], whole["second"], rtol=1e-12)
    np.testing.assert_allclose(parts[0]["first"] + parts[1]["first"], whole["first"], rtol=1e-12)
    mu = x.reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(cv.input_means({"k": whole})["k"], mu, rtol=1e-12)
    xc = x.reshape(-1, 3) - mu
    np.testing.assert_allclose(cv.centered_moments({"k": whole})["k"], xc.T @ xc / 6, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cv.input_moments({"k": x})["k"], whole["second"], rtol=1e-12)
    with pytest.raises(Exception, match=r"\(in, out\)"):
        cv.bias_shift(np.zeros(3), mu)


@pytest.mark.parametrize("n_masked", [1, 2])
def test_covariance_obs_with_bias_shift_is_the_joint_least_squares_optimum(x64, n_masked):
    """With blocks that hold whole fan-ins, Group-OBS on ``layer_covariance`` followed by
    ``bias_shift`` is the exact minimiser over the kept weights *and* the bias of
    ``Σ_{i,p} ||x W + b − x Ŵ − b̂||²`` with the masked weights at 0 (lstsq oracle per unit)."""
    from zkapex_jax.core.obs import apply_delta, group_obs
    from zkapex_jax.protocol.client import bias_corrected

    rng = np.random.default_rng(3)
    n_in, n_out = 5, 3
    x = rng.normal(size=(8, 4, n_in)) + rng.normal(size=n_in) * 2.0          # (N, P, in), mean far from 0
    W, b = rng.normal(size=(n_in, n_out)), rng.normal(size=n_out)
    params = {"l": {"kernel": W, "bias": b}}
    layout = BlockLayout.from_params(params, ["l/kernel"], n_in, order="out_in")  # one block per output unit
    stats = cv.input_statistics({"l/kernel": x})
    C = cv.layer_hessian_blocks(cv.centered_moments(stats), layout)
    theta_b = np.asarray(layout.to_blocks({"l/kernel": W}))
    mask_b = np.zeros_like(theta_b, dtype=bool)
    for j in range(n_out):
        mask_b[j, rng.choice(n_in, n_masked, replace=False)] = True
    res = group_obs(jnp.asarray(theta_b), jnp.asarray(C), jnp.asarray(mask_b))
    Wu = np.asarray(layout.from_blocks(apply_delta(jnp.asarray(theta_b), res.delta, jnp.asarray(mask_b)))["l/kernel"])
    got = bias_corrected(params, {"l": {"kernel": Wu, "bias": b}}, cv.input_means(stats), ["l/kernel"])
    flat = x.reshape(-1, n_in)
    for j in range(n_out):
        keep = ~mask_b[j]                      # block j holds unit j's fan-in in input order (out_in)
        design = np.concatenate([flat[:, keep], np.ones((len(flat), 1))], axis=1)
        sol = np.linalg.lstsq(design, flat @ W[:, j] + b[j], rcond=None)[0]
        np.testing.assert_allclose(np.asarray(got["l"]["kernel"])[keep, j], sol[:-1], rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(float(got["l"]["bias"][j]), sol[-1], rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(np.asarray(got["l"]["kernel"])[~keep, j], 0.0, rtol=0, atol=1e-12)  # masked
    # the mean pre-activation over the data is unchanged
    np.testing.assert_allclose((flat @ np.asarray(got["l"]["kernel"]) + np.asarray(got["l"]["bias"])).mean(axis=0),
                               (flat @ W + b).mean(axis=0), rtol=1e-9, atol=1e-9)


def test_bias_corrected_refuses_a_kernel_without_its_bias_or_mean():
    from zkapex_jax.protocol.client import bias_corrected

    p = {"l": {"kernel": np.ones((2, 2))}, "m": {"w": np.ones((2, 2))}}
    with pytest.raises(ValueError, match="no bias beside"):
        bias_corrected(p, p, {"l/kernel": np.zeros(2)}, ["l/kernel"])
    with pytest.raises(ValueError, match="'…/kernel'"):
        bias_corrected(p, p, {"m/w": np.zeros(2)}, ["m/w"])
    q = {"l": {"kernel": np.ones((2, 2)), "bias": np.zeros(2)}}
    with pytest.raises(ValueError, match="no mean input"):
        bias_corrected(q, q, {}, ["l/kernel"])


def test_damping_absolute_and_relative():
    c = np.stack([np.diag([1.0, 3.0]), np.diag([1e-6, 1e-6])])
    np.testing.assert_allclose(np.asarray(cv.damp(c, 0.5)), c + 0.5 * np.eye(2), rtol=1e-6)
    rel = np.asarray(cv.damp(c, 0.1, relative=True))
    np.testing.assert_allclose(np.diagonal(rel - c, axis1=1, axis2=2), [[0.2, 0.2], [0.1, 0.1]], rtol=1e-5)


def test_vit_layer_inputs_are_the_dense_inputs_and_every_kind_runs():
    """The linen hook captures what the fc1 kernel multiplies (y = x W + b checked on the captured
    tensors), and client_curvature returns a symmetric, damped (nb, B, B) for every kind."""
    import flax.linen as nn

    from zkapex_jax.models import family
    from zkapex_jax.protocol.client import client_curvature

    fam = family("vit-test")
    _, params = build_model_cached("vit-test", seed=0)
    x = np.random.default_rng(0).random((3, 28, 28, 1)).astype(np.float32)
    y = np.array([0, 1, 2])
    path = "vit/encoder/layer/0/intermediate/dense/kernel"
    got = fam.layer_inputs(params, x, [path])[path]
    seen = {}

    def grab(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if isinstance(context.module, nn.Dense) and "/".join(context.module.path) + "/kernel" == path:
            seen["x"], seen["y"] = args[0], out
        return out

    with nn.intercept_methods(grab):
        fam.predict(params, jnp.asarray(x))
    flat = flatten_params(params)
    np.testing.assert_allclose(got, np.asarray(seen["x"]), rtol=1e-5, atol=1e-6)  # jit vs eager float32
    np.testing.assert_allclose(np.asarray(seen["y"]), got @ np.asarray(flat[path]) + np.asarray(flat[path[:-6] + "bias"]),
                               rtol=1e-4, atol=1e-5)
    layout = BlockLayout.from_params(params, fam.mask_patterns, 16)
    for kind in ("layer_inputs", "layer_covariance", "true", "logits"):  # empirical / exact: the MLP oracles above
        c = np.asarray(client_curvature(fam, params, (x, y), layout, kind=kind, damping=1e-3, key=jax.random.PRNGKey(0)))
        assert c.shape == (layout.num_blocks, 16, 16) and np.isfinite(c).all()
        np.testing.assert_allclose(c, np.swapaxes(c, 1, 2), atol=1e-5 * np.abs(c).max())
        assert np.linalg.eigvalsh(c.astype(np.float64)).min() > 0
    with pytest.raises(ValueError, match="curvature must be one of"):
        client_curvature(fam, params, (x, y), layout, kind="hessian")
    with pytest.raises(ValueError, match="PRNG key"):
        client_curvature(fam, params, (x, y), layout, kind="true")
