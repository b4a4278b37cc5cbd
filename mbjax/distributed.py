"""Several processes (hosts) running one run: JAX's own ``jax.distributed`` machinery.

Every process runs the same ``mbjax train ...`` command. ``initialize`` connects them
(``jax.distributed.initialize``); the device mesh of ``mbjax.sharding`` then spans all
processes' devices (``jax.devices()``), so one jitted program runs the seeds (and the
data of each seed) across hosts, each process computing on its own devices' shards.
Cross-process collectives use NCCL on GPUs, ICI on TPUs and gloo on CPUs.

Who writes what: every process takes part in each checkpoint save (orbax writes each
array shard from the process that holds it, the metadata once); the run directory's
other files (config.json, metrics.jsonl, plots, summary.json, wandb) are written by
process 0 only (``is_primary``). Metrics are gathered to every process with
``gather``.

Launching (``DistributedConfig``; ``--distributed.enabled`` turns it on):

* explicitly: ``--distributed.coordinator-address HOST0:PORT --distributed.num-processes
  P --distributed.process-id I`` on each of the P processes;
* on SLURM, Open MPI, Kubernetes or a Cloud TPU pod slice, only
  ``--distributed.enabled``: JAX detects the coordinator, process count and id from the
  cluster's environment (``JAX_COORDINATOR_ADDRESS`` is honoured too).
"""

from __future__ import annotations

import jax
import numpy as np


def is_initialized() -> bool:
    """True once ``jax.distributed.initialize`` has run in this process."""
    from jax._src import distributed as _dist  # jax exposes no public query

    return _dist.global_state.client is not None


def initialize(config) -> None:
    """Calls ``jax.distributed.initialize`` as ``config`` (a ``DistributedConfig``) says.

    A no-op when ``config`` is None or not enabled, or when already initialised. Must run
    before anything touches a JAX device (``mbjax.runner.run.run`` calls it first).
    """
    if config is None or not config.enabled or is_initialized():
        return
    kwargs = {}
    if config.coordinator_address:
        kwargs["coordinator_address"] = config.coordinator_address
    if config.num_processes:
        kwargs["num_processes"] = config.num_processes
    if config.process_id >= 0:
        kwargs["process_id"] = config.process_id
    try:
        jax.distributed.initialize(**kwargs, initialization_timeout=config.timeout_s)
    except RuntimeError as err:
        raise RuntimeError(
            f"jax.distributed.initialize({kwargs}) failed: {err}. Start all "
            f"{config.num_processes or 'the'} processes with the same coordinator address "
            "(process 0's HOST:PORT), each with its own --distributed.process-id, or run "
            "inside SLURM / Open MPI / a TPU pod for automatic detection.") from err


def is_primary() -> bool:
    """True on process 0 (the one that writes the run directory's files)."""
    return jax.process_index() == 0


def sync(name: str) -> None:
    """A barrier of all processes (no-op with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def gather(tree):
    """The whole value of every leaf as numpy on every process (``jax.device_get`` with
    one process; ``process_allgather`` of the global arrays with several)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return jax.tree_util.tree_map(np.asarray,
                                  multihost_utils.process_allgather(tree, tiled=True))
