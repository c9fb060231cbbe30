"""Data-parallel Fisher accumulation over 2 host devices equals the single-device result.

Runs in a subprocess because the number of host devices is fixed when JAX starts
(``XLA_FLAGS=--xla_force_host_platform_device_count=2``)."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec
    from zkapex_jax.core.blocks import BlockLayout
    from zkapex_jax.core.fisher import accumulate_fisher, data_mesh

    assert len(jax.devices()) == 2, jax.devices()
    rng = np.random.default_rng(0)
    params = {"d1": {"kernel": jnp.asarray(rng.normal(size=(4, 6)), jnp.float32),
                     "bias": jnp.zeros(6, jnp.float32)},
              "d2": {"kernel": jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)}}

    def loss(p, ex):
        x, y = ex
        h = jnp.tanh(x @ p["d1"]["kernel"] + p["d1"]["bias"])
        logits = h @ p["d2"]["kernel"]
        return jax.nn.logsumexp(logits) - logits[y]

    n = 11  # not a multiple of the device count or of the chunk
    batch = (jnp.asarray(rng.normal(size=(n, 4)), jnp.float32), jnp.asarray(rng.integers(0, 3, n), jnp.int32))
    layout = BlockLayout.from_params(params, ["d1/kernel", "d2/kernel"], 6)
    with jax.numpy_dtype_promotion("strict"):
        ref = accumulate_fisher(loss, params, batch, layout, damping=1e-4, chunk_size=4)
        mesh = data_mesh()
        for sharding in (mesh, NamedSharding(mesh, PartitionSpec("data"))):
            for chunk in (3, 4, 64):
                f = accumulate_fisher(loss, params, batch, layout, damping=1e-4, chunk_size=chunk, sharding=sharding)
                assert f.shape == ref.shape, (f.shape, ref.shape)
                assert f.sharding.is_fully_replicated, f.sharding
                assert len(f.sharding.device_set) == 2
                np.testing.assert_allclose(np.asarray(f), np.asarray(ref), rtol=1e-5, atol=1e-6)
        # the compiled program really splits the batch: it holds a cross-device reduction
        # (one reduction after the scan, none inside it)
        from zkapex_jax.core.fisher import _fisher_scan, _prepare_chunks, _scan_shardings
        chunks, weights, m = _prepare_chunks(batch, n, 4, mesh)
        hlo = _fisher_scan.lower(jax.device_put(params, NamedSharding(m, PartitionSpec())), chunks, weights,
                                 np.float32(1e-4), np.float32(n), loss_fn=loss, layout=layout, n=n,
                                 **_scan_shardings(m, mesh)).compile().as_text()
        colls = [l for l in hlo.splitlines() if "all-reduce(" in l or "reduce-scatter(" in l]
        assert colls, "no cross-device reduction in the compiled program"
        assert not any("while/body" in l for l in colls), colls
    print("SHARDED_OK")
    """
)


def test_sharded_fisher_matches_single_device():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SHARDED_OK" in proc.stdout
