"""Re-plan with a trained run's final models under other planner floats (no retraining).

PDDM's MPPI floats (kappa, sigma, beta) are traced hyper-parameters in the agent's state
(``MPCState.hparams.planner``, an ``MPPIParams`` pytree), so one vmapped call evaluates
the final model of every seed under several settings:

    python experiments/mpc/planner_sweep.py experiments/mpc/runs/full/reacher-pddm

writes ``results/planner_sweep_<run>.json`` (needs the run's checkpoint, which
``run_all.py`` keeps under ``runs/``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import mbjax  # noqa: F401  (CPU XLA flags first)

HERE = Path(__file__).resolve().parent

SETTINGS = [  # (kappa, sigma); beta stays at the run's value
    (10.0, 1.0), (100.0, 1.0), (10.0, 0.3), (100.0, 0.3)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from mbjax.agents import make_agent
    from mbjax.checkpoint import load_latest
    from mbjax.runner.run import comparable_config, load_run_config
    from mbjax.utils.bench import machine_info

    run_dir = Path(args.run_dir)
    config = load_run_config(run_dir)
    assert config.algorithm == "mpc" and config.planner.kind == "mppi", \
        "the sweep varies the MPC agent's MPPI kappa and sigma"
    agent = make_agent(config)
    keys = jnp.stack([jax.random.PRNGKey(config.seed + i) for i in range(config.num_seeds)])
    template = jax.eval_shape(jax.vmap(agent.init), keys)
    state = load_latest(run_dir, template, {"config": comparable_config(config)})

    def evaluate(kappa, sigma, state, key):
        hparams = state.hparams
        planner = hparams.planner.replace(kappa=kappa, sigma=sigma)
        return agent.evaluate(state.replace(hparams=hparams.replace(planner=planner)), key)

    kappas = jnp.array([k for k, _ in SETTINGS])
    sigmas = jnp.array([s for _, s in SETTINGS])
    eval_keys = jax.random.split(jax.random.PRNGKey(4321), config.num_seeds)
    sweep = jax.jit(jax.vmap(jax.vmap(evaluate, in_axes=(None, None, 0, 0)),
                             in_axes=(0, 0, None, None)))
    t0 = time.perf_counter()
    returns = np.asarray(sweep(kappas, sigmas, state, eval_keys))  # [settings, seeds, E, N]
    wall = time.perf_counter() - t0
    per_seed = returns.reshape(len(SETTINGS), config.num_seeds, -1).mean(-1)
    rows = [{"kappa": k, "sigma": s, "beta": float(config.planner.beta),
             "return_mean": float(per_seed[i].mean()), "return_std": float(per_seed[i].std()),
             "returns_per_seed": per_seed[i].tolist()}
            for i, (k, s) in enumerate(SETTINGS)]
    out = {"run_dir": str(run_dir), "iteration": int(np.asarray(state.iteration)[0]),
           "episodes_per_seed": int(returns[0, 0].size), "wall_s": wall, "settings": rows,
           "machine": machine_info()}
    path = HERE / "results" / f"planner_sweep_{run_dir.name}.json"
    path.write_text(json.dumps(out, indent=1))
    for r in rows:
        print(f"kappa {r['kappa']:6.1f} sigma {r['sigma']:.1f}: "
              f"{r['return_mean']:8.1f} ± {r['return_std']:.1f}")
    print(f"{wall:.0f} s -> {path}")


if __name__ == "__main__":
    main()
