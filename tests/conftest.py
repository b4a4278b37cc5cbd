"""Shared fixtures. Importing mbjax first sets mbjax's CPU XLA flags."""

import mbjax  # noqa: F401  (sets XLA flags before any JAX computation)
import jax
import pytest

CLASSIC_ENVS = ["pendulum", "cartpole_swingup"]


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)
