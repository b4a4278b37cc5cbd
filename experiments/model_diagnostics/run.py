"""Model diagnostics on brax halfcheetah with random-policy data (CPU-sized).

Collects 16 envs x 500 steps of uniform-random actions (12 envs train, 4 held out),
trains a PETS/MBPO-style probabilistic ensemble (7 members, 4 x 200 swish), and writes
one-step error/NLL, k-step open-loop error and calibration to
``experiments/model_diagnostics/results/diagnostics-halfcheetah-seed0/``.

    python experiments/model_diagnostics/run.py            # the committed results
    python experiments/model_diagnostics/run.py --seed 1   # any DiagnosticsConfig field

Equivalent CLI: ``mbjax diagnostics --env halfcheetah --ks 1 2 5 10 15 20 30 50
--no-save --out-dir experiments/model_diagnostics/results``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tyro

import mbjax  # noqa: F401  (CPU XLA flags before any JAX computation)
from mbjax.jobs.diagnostics import DiagnosticsConfig, run_diagnostics

RESULTS = Path(__file__).resolve().parent / "results"

HALFCHEETAH = DiagnosticsConfig(
    env="halfcheetah",
    num_envs=16,
    steps=500,
    eval_envs=4,
    members=7,
    elites=5,
    hidden_sizes=(200, 200, 200, 200),
    probabilistic=True,
    epochs=50,
    ks=(1, 2, 5, 10, 15, 20, 30, 50),
    propagation="ts_inf",
    seed=0,
    out_dir=str(RESULTS),
    save=False,  # the checkpoint (~15 MB) is not committed
)


def main() -> None:
    cfg = tyro.cli(DiagnosticsConfig, default=HALFCHEETAH)
    run_diagnostics(dataclasses.replace(cfg))


if __name__ == "__main__":
    main()
