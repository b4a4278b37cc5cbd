"""Run machinery: run directories, checkpoints and resume, presets, sweeps.

It knows agents only through the protocol of ``mbjax.agents.base`` (``make_agent``,
``default_hparams``, ``init``, ``train_iteration``, ``evaluate``), so every registered
agent gets devices, data parallelism, several processes, checkpoints, resume, sweeps
and the CLI.
"""

from mbjax.runner.run import SeedBatch, evaluate, load_run_config, read_metrics, run

__all__ = ["SeedBatch", "evaluate", "load_run_config", "read_metrics", "run"]
