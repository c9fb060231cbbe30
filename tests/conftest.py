"""Shared fixtures: dtype-promotion and precision contexts for the oracle tests."""

import jax
import pytest


@pytest.fixture
def x64():
    """float64 enabled and strict dtype promotion: compare against float64 numpy oracles."""
    with jax.enable_x64(True), jax.numpy_dtype_promotion("strict"):
        yield


@pytest.fixture
def strict():
    """Strict dtype promotion (no implicit int/float or width mixing)."""
    with jax.numpy_dtype_promotion("strict"):
        yield


def empirical_fisher(rng, nb, B, n, damping, spread=(1.0, 1.0)):
    """(nb,B,B) empirical Fisher of n random per-example gradients per block plus damping·I
    (n < B leaves flat directions at the damping); ``spread`` scales the coordinates."""
    import numpy as np

    g = rng.normal(size=(nb, n, B)) * np.linspace(*spread, B)
    return np.einsum("kni,knj->kij", g, g) / n + damping * np.eye(B)
