"""ONE end-to-end smoke run of the tiny ViT on a few hundred images:
train -> personalize -> provider mask -> client Fisher -> Group-OBS -> accuracies."""

import jax
import numpy as np

from zkapex_jax.studies import image as P
from zkapex_jax.core.params import flatten_params


def test_tiny_vit_end_to_end():
    cfg = P.PipelineConfig.tiny(max_global_train=300, max_test=300, global_epochs=2, pers_epochs=2,
                                n_mask_forget=24, n_mask_retain=24, block_size=16, n_mia=30)
    data = P.load_data(cfg, seed=0)
    assert data.global_train.n == 300 and data.personal_train.n == 4 * 2 * cfg.n_train_per_domain

    k_glob, k_pers = jax.random.split(jax.random.PRNGKey(0))
    theta_g, hist = P.train_global(cfg, data, key=k_glob)
    assert len(hist["loss"]) == 2 and hist["loss"][-1] < hist["loss"][0]
    theta_p, _ = P.personalize(cfg, theta_g, data, key=k_pers)

    mask = P.provider_mask(cfg, theta_g, data)           # provider: global model only
    layout = P.block_layout(cfg, theta_p)
    assert mask.num_masked == int(np.floor(cfg.mask_fraction * layout.size + 0.5))
    fisher = P.client_fisher(cfg, theta_p, data, layout)  # client: its own data, theta_p
    assert fisher.shape == (layout.num_blocks, 16, 16)
    theta_u, info = P.unlearn(theta_p, fisher, mask, layout)

    flat_u, flat_p = flatten_params(theta_u), flatten_params(theta_p)
    changed = 0
    for p, m in mask.dense().items():
        m = np.asarray(m)
        assert np.all(np.asarray(flat_u[p])[m] == 0.0)
        changed += int(np.sum(np.asarray(flat_u[p])[~m] != np.asarray(flat_p[p])[~m]))
    assert changed > 0  # the compensation moved unmasked weights
    assert np.isfinite(info["max_residual"]) and info["max_residual"] < 1e-2
    # the ordering a working compensation must show whatever the data: Group-OBS minimizes the
    # client's quadratic loss increase ½δᵀCδ over updates that zero the mask, and mask-only is one
    # of them — a zero Fisher, δ = 0 or an empty mask breaks this
    from zkapex_jax.protocol.api import statement_blocks
    tp, tu = statement_blocks(theta_p, layout), statement_blocks(theta_u, layout)
    mb = np.asarray(mask.to_blocks(layout), dtype=bool)
    C = np.asarray(fisher, dtype=np.float64)
    quad = lambda d: float(np.einsum("bi,bij,bj->", d, C, d))  # noqa: E731
    q_obs, q_mask = quad(tu - tp), quad(np.where(mb, -tp, 0.0))
    assert mb.any() and np.trace(C, axis1=1, axis2=2).min() > 0
    assert q_obs < 0.999 * q_mask, (q_obs, q_mask)

    for params in (theta_p, P.mask_only(theta_p, mask), theta_u):
        r = P.evaluate(cfg, params, data, seed=0)
        for k in ("personal_acc_orig", "personal_acc_shift", "personal_acc", "forget_acc", "other_acc",
                  "mia_acc", "mia_auc"):
            assert 0.0 <= r[k] <= 1.0, (k, r[k])
