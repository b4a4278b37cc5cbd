"""Per-feature standardisation with statistics fitted on (the valid rows of) data."""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct

from mbjax.types import Array


@struct.dataclass
class Normalizer:
    """x_norm = (x - mean) / std, per feature. mean, std: [d]."""

    mean: Array
    std: Array

    @classmethod
    def identity(cls, size: int) -> Normalizer:
        return cls(mean=jnp.zeros(size), std=jnp.ones(size))

    def normalize(self, x: Array) -> Array:
        return (x - self.mean) / self.std

    def denormalize(self, x: Array) -> Array:
        return x * self.std + self.mean

    def denormalize_std(self, s: Array) -> Array:
        """Scales a standard deviation from normalised to data units."""
        return s * self.std


def fit_normalizer(x: Array, mask: Array | None = None, min_std: float = 1e-6) -> Normalizer:
    """Mean and std of x [N, d] over rows where mask [N] is 1 (all rows if None).

    Features with std < ``min_std`` (constants) get std 1 so they pass through unscaled.
    """
    if mask is None:
        mask = jnp.ones(x.shape[0])
    keep = mask[:, None] > 0
    x = jnp.where(keep, x, 0.0)  # unused rows may hold anything, NaN included
    w = jnp.where(keep, mask[:, None], 0.0) / jnp.maximum(mask.sum(), 1.0)
    mean = jnp.sum(w * x, axis=0)
    var = jnp.sum(w * jnp.where(keep, x - mean, 0.0) ** 2, axis=0)
    std = jnp.sqrt(var)
    std = jnp.where(std < min_std, 1.0, std)
    return Normalizer(mean=mean, std=std)
