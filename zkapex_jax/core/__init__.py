"""The paper's math, as pure functions over arrays and pytrees (no files, no printing).

- :mod:`.params` — parameter paths (``flatten_params``, ``select_paths``, ``set_paths``);
- :mod:`.blocks` — cutting kernels into blocks of B weights (``BlockLayout``);
- :mod:`.fisher` — per-example gradients (vmap) and the block-wise empirical Fisher C;
- :mod:`.mask` — the provider's saliency scores and the sparse mask M;
- :mod:`.obs` — Group-OBS: factorize C once, δ = −C⁻¹E(EᵀC⁻¹E)⁻¹θ_M for every block;
- :mod:`.quant` — fixed-point maps, the inverse Fisher and the honest witness for the proof.

The public names are re-exported from :mod:`zkapex_jax`.
"""
