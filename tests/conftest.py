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
