"""Where branched rollouts start (the notes' options A / B / C) on the pendulum (CPU).

MBPO (``mbpo-cpu``: G = 10, 5 % real data, k 1 -> 5) with three start modes, 3 seeds each:

* C (MBPO): 1000 start states per model refit drawn from ALL visited states, k steps;
* B: 1000 start states drawn from episode-initial states only, k steps;
* A: 50 start states from episode-initial states, rolled out for a whole episode
  (200 steps): 10 000 model transitions per refit, 2x what C makes at k = 5.

    python experiments/mbpo/start_modes.py            # ~9 min on 2 shared cores

Writes ``results/start_modes.{json,png}``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from common import plot_curves, steps_to_threshold, train_seeds, write_json

import mbjax  # noqa: F401  (CPU XLA flags first)
from mbjax.agents import make_mbpo_agent
from mbjax.runner import presets

SEEDS = [0, 1, 2]
ITERATIONS = 12
THRESHOLD = -300.0


def main() -> None:
    base = dataclasses.replace(presets.get("mbpo-cpu"), num_iterations=ITERATIONS)
    modes = {
        "C: k steps from all visited states": base,
        "B: k steps from initial states": dataclasses.replace(base, start_mode="B"),
        "A: full episodes from initial states": dataclasses.replace(
            base, start_mode="A", rollouts_per_step=1),
    }
    results, curves = {}, {}
    for label, cfg in modes.items():
        print(f"{label}", flush=True)
        out = train_seeds(make_mbpo_agent(cfg), SEEDS, ITERATIONS,
                          ("rollout/length", "rollout/mean_length",
                           "rollout/model_buffer_size", "sac/q_mean", "train/return"))
        m = out["metrics"]
        steps = [s[0] for s in m["env_steps"]]
        curves[label] = (steps, m["return_mean"])
        r = np.asarray(m["return_mean"])
        results[label] = {
            "start_mode": cfg.start_mode, "rollouts_per_step": cfg.rollouts_per_step,
            "env_steps": steps, "return_mean_per_seed": m["return_mean"],
            "metrics": {k: v for k, v in m.items() if k not in ("return_mean", "env_steps")},
            "final_return": {"mean": float(r[-1].mean()), "std": float(r[-1].std()),
                             "per_seed": r[-1].tolist()},
            "best_return_mean": float(r.mean(1).max()),
            "steps_to_threshold": steps_to_threshold(m["env_steps"], m["return_mean"],
                                                     THRESHOLD),
            "time": out["time"],
        }
    write_json("start_modes", {
        "what": "MBPO on the pendulum with branched rollouts started from all visited "
                "states (C), from initial states (B), or full episodes from initial "
                "states (A); evaluation return vs env steps",
        "threshold": THRESHOLD, "seeds": SEEDS, "base_config": dataclasses.asdict(base),
        "results": results})
    plot_curves("start_modes", curves, "Pendulum: MBPO rollout start modes (CPU scale)",
                hline=(THRESHOLD, "threshold -300"))


if __name__ == "__main__":
    main()
