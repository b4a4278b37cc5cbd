"""Shared fixtures. Importing mbjax first sets mbjax's CPU XLA flags."""

import jax
import pytest

import mbjax  # noqa: F401  (sets XLA flags before any JAX computation)

CLASSIC_ENVS = ["pendulum", "cartpole_swingup"]


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)
