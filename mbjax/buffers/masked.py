"""A flat ring of transitions that appends only the rows a mask marks valid.

MBPO's model buffer: branched rollouts of a static length produce [T * B] rows of which
only some are real (a rollout stops at a predicted termination or after k steps); the
valid ones are compacted into the ring in order, so shapes never depend on how many
there were. Sampling can be restricted to the newest ``window`` rows (MBPO samples only
the rollouts of the last epochs).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from mbjax.types import Array, PRNGKey


@struct.dataclass
class RolloutBufferState:
    """A flat ring of model transitions: data leaves [C, ...]; rows [0, size) valid, the
    newest at ``insert_pos - 1``."""

    data: Any
    insert_pos: Array  # int32 []
    size: Array  # int32 []


def rollout_buffer_init(example: Any, capacity: int) -> RolloutBufferState:
    """Zero storage for ``capacity`` transitions shaped like ``example`` (unbatched)."""
    data = jax.tree_util.tree_map(lambda x: jnp.zeros((capacity,) + jnp.shape(x),
                                                      jnp.asarray(x).dtype), example)
    zero = jnp.zeros((), jnp.int32)
    return RolloutBufferState(data=data, insert_pos=zero, size=zero)


def rollout_buffer_add(state: RolloutBufferState, batch, valid: Array) -> RolloutBufferState:
    """Appends the rows of ``batch`` (leaves [K, ...]) where ``valid`` [K] is true, in order.

    Valid rows are compacted (row i goes to insert_pos + #valid rows before it, mod C);
    when more than C are valid only the newest C are kept. Shapes are static.
    """
    capacity = jax.tree_util.tree_leaves(state.data)[0].shape[0]
    valid = valid.astype(bool)
    rank = jnp.cumsum(valid) - 1
    total = jnp.sum(valid, dtype=jnp.int32)
    keep = valid & (rank >= total - capacity)
    rows = jnp.where(keep, (state.insert_pos + rank) % capacity, capacity)  # C = dropped
    data = jax.tree_util.tree_map(lambda d, x: d.at[rows].set(x, mode="drop"),
                                  state.data, batch)
    return RolloutBufferState(
        data=data,
        insert_pos=((state.insert_pos + total) % capacity).astype(jnp.int32),
        size=jnp.minimum(state.size + total, capacity).astype(jnp.int32))


def rollout_buffer_sample(state: RolloutBufferState, key: PRNGKey, batch_size: int,
                          window: Array | int | None = None):
    """``batch_size`` rows uniformly (with replacement) from the newest
    min(size, ``window``) rows (all valid rows if ``window`` is None)."""
    capacity = jax.tree_util.tree_leaves(state.data)[0].shape[0]
    n = state.size if window is None else jnp.minimum(state.size, window)
    back = jax.random.randint(key, (batch_size,), 0, jnp.maximum(n, 1))
    rows = (state.insert_pos - 1 - back) % capacity
    return jax.tree_util.tree_map(lambda d: d[rows], state.data)
