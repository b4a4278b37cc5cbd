"""MBPO vs model-free SAC at equal environment steps on the pendulum swing-up (CPU).

Three agents, 3 seeds each (vmapped), all starting from 400 uniform-random steps and
evaluated after every 200-step epoch with 5 deterministic-policy episodes:

* MBPO (``mbpo-cpu`` preset): 7-member probabilistic ensemble, 5 elites, branched
  rollouts (k 1 -> 5), G = 10 SAC updates per env step on 5 % real data;
* SAC, G = 1 (``sac-cpu``: SAC's own update rate), run 2.5x longer to see where it gets;
* SAC, G = 10 on real data only (MBPO's update budget without the model).

    python experiments/mbpo/mbpo_vs_sac.py            # ~8 min on 2 shared cores

Writes ``results/mbpo_vs_sac.{json,png}``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from common import plot_curves, steps_to_threshold, train_seeds, write_json

import mbjax  # noqa: F401  (CPU XLA flags first)
from mbjax.agents import make_mbpo_agent
from mbjax.runner import presets

SEEDS = [0, 1, 2]
MBPO_ITERATIONS = 12  # 400 + 12 x 200 = 2800 env steps
SAC_ITERATIONS = 30  # 6400 env steps
THRESHOLD = -300.0  # "solved": within the hand-designed expert's band (-120..-400)


def main() -> None:
    mbpo = presets.get("mbpo-cpu")
    sac = presets.get("sac-cpu")
    agents = {
        "MBPO (G=10, 5% real)": (dataclasses.replace(mbpo, num_iterations=MBPO_ITERATIONS),
                                 MBPO_ITERATIONS),
        "SAC (G=1)": (dataclasses.replace(sac, num_iterations=SAC_ITERATIONS),
                      SAC_ITERATIONS),
        "SAC (G=10, real only)": (dataclasses.replace(sac, updates_per_step=10,
                                                      num_iterations=MBPO_ITERATIONS),
                                  MBPO_ITERATIONS),
    }
    results, curves = {}, {}
    for label, (cfg, iters) in agents.items():
        print(f"{label}: {cfg.num_iterations} iterations, seeds {SEEDS}", flush=True)
        keep = ("train/return", "sac/alpha") + (
            ("model/holdout_mse", "rollout/length") if cfg.model_based else ())
        out = train_seeds(make_mbpo_agent(cfg), SEEDS, iters, keep)
        m = out["metrics"]
        steps = [s[0] for s in m["env_steps"]]
        curves[label] = (steps, m["return_mean"])
        r = np.asarray(m["return_mean"])
        at_equal = r[MBPO_ITERATIONS - 1]
        results[label] = {
            "config": dataclasses.asdict(cfg),
            "env_steps": steps,
            "return_mean_per_seed": m["return_mean"],
            "metrics": {k: v for k, v in m.items() if k not in ("return_mean", "env_steps")},
            f"return_at_{steps[MBPO_ITERATIONS - 1]}_steps": {
                "mean": float(at_equal.mean()), "std": float(at_equal.std()),
                "per_seed": at_equal.tolist()},
            "final_return": {"mean": float(r[-1].mean()), "std": float(r[-1].std())},
            "steps_to_threshold": steps_to_threshold(m["env_steps"], m["return_mean"],
                                                     THRESHOLD),
            "time": out["time"],
        }
    write_json("mbpo_vs_sac", {
        "what": "pendulum swing-up, evaluation return (5 deterministic episodes from random "
                "starts, 200 steps) vs env steps; MBPO vs SAC at equal env steps",
        "threshold": THRESHOLD, "seeds": SEEDS, "results": results})
    plot_curves("mbpo_vs_sac", curves, "Pendulum: MBPO vs SAC (CPU scale)",
                hline=(THRESHOLD, "threshold -300"))


if __name__ == "__main__":
    main()
