"""Spreading a run over devices with ``jax.sharding``: seeds, and the data of one seed.

A training state of ``run`` has a leading seed axis [S, ...] (``jax.vmap`` over seeds).
The devices form a two-axis mesh ``("seeds", "data")`` of shape [D / K, K]:

* ``seeds``: seeds never talk to each other, so [S, ...] arrays are placed with
  ``NamedSharding(mesh, P("seeds"))`` and each device row runs S / (D / K) seeds with
  no communication;
* ``data`` (K = ``data_parallel`` devices per seed): inside one seed the big batch axes
  are split over K devices by ``shard_along_data`` (a ``with_sharding_constraint``): the
  planner's candidate action sequences [N, H, A] (so the particles of a learned model,
  or N parallel MJX simulations when planning on the simulator) and the model's
  training minibatch [E, B, ...]. The model parameters stay replicated, so XLA's SPMD
  partitioner computes each device's share of the loss and all-reduces the gradients
  over ``data`` before the (replicated) Adam update.

Everything is ``jit`` + shardings (GSPMD); results equal the single-device run up to
float reassociation (per-device kernels, the order of the gradient sum). Functions call
``shard_along_data`` unconditionally: with no mesh (one device) or K = 1 it returns its
input, so the same code runs everywhere.

Multi-host (several processes, ``mbjax.distributed``): the mesh spans every process's
devices (``jax.devices()``), seeds split across hosts first.

On a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (set before JAX starts)
gives 8 host devices for testing.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

SEED_AXIS = "seeds"
DATA_AXIS = "data"


def make_mesh(num_seeds: int, devices: int = 1, data_parallel: int = 1) -> Mesh | None:
    """The ("seeds", "data") mesh of ``devices`` devices (0 = all), ``data_parallel``
    of them per seed; None for a single device (plain ``jit``).

    Raises ValueError, saying what to change, when fewer devices exist than asked for,
    when ``devices`` is not a multiple of ``data_parallel``, or when ``num_seeds`` is not
    a multiple of the number of seed groups (devices / data_parallel).
    """
    available = jax.devices()  # all processes' devices (= local ones on one host)
    if devices < 0:
        raise ValueError(f"devices must be >= 0 (0 = all devices), got {devices}")
    if data_parallel < 1:
        raise ValueError(f"data_parallel must be >= 1, got {data_parallel}")
    count = len(available) if devices == 0 else devices
    if count > len(available):
        raise ValueError(f"devices={devices} but only {len(available)} "
                         f"{available[0].platform} device(s) exist; use --devices 0 for all")
    if count % data_parallel:
        raise ValueError(f"the device count ({count}) must be a multiple of data_parallel "
                         f"({data_parallel}); change --devices or --data-parallel")
    if count == 1:
        return None
    groups = count // data_parallel
    if num_seeds % groups:
        raise ValueError(f"num_seeds ({num_seeds}) must be a multiple of the number of seed "
                         f"groups (devices / data_parallel = {groups}) to split seeds "
                         "evenly; change --num-seeds, --devices or --data-parallel")
    grid = np.array(available[:count]).reshape(groups, data_parallel)
    return Mesh(grid, (SEED_AXIS, DATA_AXIS))


def seed_sharding(num_seeds: int, devices: int = 1, data_parallel: int = 1
                  ) -> NamedSharding | None:
    """The sharding of [S, ...] arrays: seeds over the mesh's ``seeds`` axis, replicated
    over ``data`` (see ``make_mesh``). None for one device."""
    mesh = make_mesh(num_seeds, devices, data_parallel)
    return None if mesh is None else NamedSharding(mesh, PartitionSpec(SEED_AXIS))


def data_parallel_size() -> int:
    """K: devices along the ``data`` axis of the mesh being traced under (1 if none)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or DATA_AXIS not in mesh.axis_names:
        return 1
    return int(dict(mesh.shape)[DATA_AXIS])


def shard_along_data(tree, axis: int = 0):
    """Splits ``axis`` of every leaf of ``tree`` over the mesh's ``data`` devices.

    Call it on batch-like arrays (candidates [N, H, A], minibatches [E, B, ...]) inside a
    jitted function. A no-op without a mesh, with K = 1, or for a leaf whose size along
    ``axis`` is not a multiple of K (that leaf stays as XLA places it).
    """
    k = data_parallel_size()
    if k == 1:
        return tree

    def constrain(x):
        if x.ndim <= axis or x.shape[axis] % k:
            return x
        spec = PartitionSpec(*([None] * axis), DATA_AXIS)
        return jax.lax.with_sharding_constraint(x, spec)

    return jax.tree_util.tree_map(constrain, tree)


def vmap_over_seeds(fn, sharding: NamedSharding | None):
    """``jax.vmap(fn)`` over the seed axis; under a mesh, sharding constraints inside
    ``fn`` get the ``seeds`` axis for the vmapped dimension (``spmd_axis_name``)."""
    if sharding is None:
        return jax.vmap(fn)
    return jax.vmap(fn, spmd_axis_name=SEED_AXIS)


def jit_over_seeds(fn, sharding: NamedSharding | None, donate: bool = False):
    """``jax.jit(fn)`` whose inputs and outputs (every leaf [S, ...]) are sharded by seed,
    traced and run under the sharding's mesh (so ``shard_along_data`` sees it)."""
    donate_argnums = (0,) if donate else ()
    if sharding is None:
        return jax.jit(fn, donate_argnums=donate_argnums)
    jitted = jax.jit(fn, in_shardings=sharding, out_shardings=sharding,
                     donate_argnums=donate_argnums)

    @functools.wraps(fn)
    def call(*args):
        if any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(args)):
            return jitted(*args)  # traced by an outer transform (e.g. eval_shape)
        with jax.set_mesh(sharding.mesh):
            return jitted(*args)

    call.lower = lambda *args: _lower_under(sharding.mesh, jitted, *args)
    return call


def _lower_under(mesh, jitted, *args):
    with jax.set_mesh(mesh):
        return jitted.lower(*args)


def place(tree, sharding: NamedSharding | None):
    """Puts every leaf [S, ...] of ``tree`` on the seed sharding (no-op without one).

    With several processes each leaf must hold the same values on every process (as the
    keys and states ``run`` builds from the config do); each process keeps its shards.
    """
    if sharding is None:
        return tree
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(x):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x  # already global (e.g. restored from a checkpoint)
        return jax.make_array_from_callback(np.shape(x), sharding,
                                            lambda idx: np.asarray(x)[idx])

    return jax.tree_util.tree_map(put, tree)
