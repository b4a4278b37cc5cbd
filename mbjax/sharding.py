"""Spreading independent seeds over the local devices with ``jax.sharding``.

A training state of ``run`` has a leading seed axis [S, ...] (``jax.vmap`` over seeds).
Seeds never talk to each other, so placing that axis on a one-axis device mesh
``("seeds",)`` with ``NamedSharding(mesh, P("seeds"))`` lets ``jit`` run S / D seeds on
each of D devices with no communication; results equal the single-device run up to the
float differences of per-device kernel choices.

What this does not do yet (issue #8): shard the environments or planner candidates of
one seed, reduce model gradients across devices, or span several hosts.

On a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (set before JAX starts)
gives 8 host devices for testing.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def seed_sharding(num_seeds: int, devices: int) -> NamedSharding | None:
    """The sharding of [S, ...] arrays over ``devices`` local devices (0 = all of them).

    Returns None for one device (plain single-device ``jit``). Raises ValueError when
    fewer devices exist than asked for, or when S is not a multiple of the device count.
    """
    available = jax.local_devices()
    if devices < 0:
        raise ValueError(f"devices must be >= 0 (0 = all local devices), got {devices}")
    count = len(available) if devices == 0 else devices
    if count > len(available):
        raise ValueError(f"devices={devices} but only {len(available)} local "
                         f"{available[0].platform} device(s) exist; use --devices 0 for all")
    if count == 1:
        return None
    if num_seeds % count:
        raise ValueError(f"num_seeds ({num_seeds}) must be a multiple of the device count "
                         f"({count}) to split seeds evenly; change --num-seeds or --devices")
    mesh = Mesh(np.array(available[:count]), ("seeds",))
    return NamedSharding(mesh, PartitionSpec("seeds"))


def jit_over_seeds(fn, sharding: NamedSharding | None, donate: bool = False):
    """``jax.jit(fn)`` whose inputs and outputs (every leaf [S, ...]) are sharded by seed."""
    donate_argnums = (0,) if donate else ()
    if sharding is None:
        return jax.jit(fn, donate_argnums=donate_argnums)
    return jax.jit(fn, in_shardings=sharding, out_shardings=sharding,
                   donate_argnums=donate_argnums)


def place(tree, sharding: NamedSharding | None):
    """Puts every leaf [S, ...] of ``tree`` on the seed sharding (no-op without one)."""
    return tree if sharding is None else jax.device_put(tree, sharding)
