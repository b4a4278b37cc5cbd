"""Planning with a terminal value: does a short horizon plus V(s_H) match a long horizon
without it? Pendulum swing-up (CPU).

1. Train MBPO (``mbpo-cpu``, seed 0, 12 epochs = 2800 env steps): a learned ensemble and
   a SAC agent whose twin critics give V(s) = min_i Q_i(s, pi(s)).
2. Closed-loop MPC with filtered MPPI (128 candidates, kappa 1, beta 0.7, sigma 1), discount
   0.99 (the critic's), horizons H in {2, 5, 10, 25}, with and without the tail
   gamma^H V(s_H), planning on (a) the true simulator, (b) the learned ensemble
   (TS-inf, 7 particles). 8 episodes of 200 steps from the same random starts for every
   setting; the SAC policy alone is the reference.

    python experiments/mbpo/terminal_value.py             # ~8 min on 2 shared cores
    python experiments/mbpo/terminal_value.py --plot-only # redraw the PNG from the JSON

Writes ``results/terminal_value.{json,png}``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import jax
import numpy as np
from common import RESULTS, train_seeds, write_json

import mbjax  # noqa: F401  (CPU XLA flags first)
import mbjax.envs as envs
import mbjax.planners as P
from mbjax.agents import (
    first_episode_return,
    make_env_value_objective,
    make_mbpo_agent,
    make_value_model_objective,
)
from mbjax.envs.wrappers import EpisodeWrapper, strip_episode_info
from mbjax.runner import presets

HORIZONS = (2, 5, 10, 25)
EPISODES = 8
MBPO_ITERATIONS = 12


def evaluate(objective, objective_params, task, horizon: int, observe, key) -> np.ndarray:
    env = envs.VmapWrapper(EpisodeWrapper(task, 200), EPISODES)
    spec = P.MPPIConfig(horizon=horizon, population=128, kappa=1.0, beta=0.7, sigma=1.0)
    planner = P.batch(spec.build(objective, task.action_low, task.action_high))

    @jax.jit
    def run(objective_params, key):
        key_reset, key_plan, key_run = jax.random.split(key, 3)
        state = env.reset(key_reset)  # the same starts for every setting (same key)
        pstate = planner.init(jax.random.split(key_plan, EPISODES))
        _, _, transitions, _ = P.mpc(env, planner, planner.default_params, objective_params,
                                     state, pstate, key_run, 200, observe=observe)
        return first_episode_return(transitions)[0]

    return np.asarray(run(objective_params, key))


def main() -> None:
    if "--plot-only" in sys.argv:  # redraw from the stored JSON
        d = json.loads((RESULTS / "terminal_value.json").read_text())
        plot(d["results"], d["sac_policy_alone"]["return_mean"])
        return
    cfg = dataclasses.replace(presets.get("mbpo-cpu"), num_iterations=MBPO_ITERATIONS)
    agent = make_mbpo_agent(cfg)
    print("training MBPO (model + SAC critic)", flush=True)
    out = train_seeds(agent, [0], MBPO_ITERATIONS)
    state = jax.tree_util.tree_map(lambda x: x[0], out["state"])
    sac, model, task = agent.sac, agent.model, agent.task_env
    gamma = sac.config.discount
    key = jax.random.PRNGKey(2024)

    # Reference: the SAC policy alone (deterministic), same starts.
    env = envs.VmapWrapper(EpisodeWrapper(task, 200), EPISODES)
    key_reset = jax.random.split(key, 3)[0]
    policy = lambda obs, k: sac.act(state.sac_state, obs, k, deterministic=True)
    _, tr = jax.jit(lambda k: envs.rollout(env, policy, env.reset(k), k, 200))(key_reset)
    sac_returns = np.asarray(first_episode_return(tr)[0])
    print(f"SAC policy alone: {sac_returns.mean():.1f}", flush=True)

    rows = []
    for dynamics in ("true simulator", "learned model"):
        for use_value in (False, True):
            for h in HORIZONS:
                t0 = time.perf_counter()
                if dynamics == "true simulator":
                    objective = make_env_value_objective(
                        task, sac.value if use_value else None, gamma)
                    params, observe = state.sac_state, strip_episode_info
                else:
                    objective = make_value_model_objective(
                        model, sac, task.reward_fn, task.termination_fn, num_particles=7,
                        use_value=use_value)
                    params, observe = (state.model_state, state.sac_state), lambda s: s.obs
                returns = evaluate(objective, params, task, h, observe, key)
                rows.append({"dynamics": dynamics, "terminal_value": use_value,
                             "horizon": h, "return_mean": float(returns.mean()),
                             "return_std": float(returns.std()),
                             "returns": returns.tolist(),
                             "wall_s": time.perf_counter() - t0})
                print(f"{dynamics:15s} V={use_value!s:5s} H={h:2d}: "
                      f"{returns.mean():8.1f} +- {returns.std():6.1f}", flush=True)

    write_json("terminal_value", {
        "what": "MPPI MPC on the pendulum, horizon ablation with/without the SAC critic's "
                "terminal value, on the true simulator and on the learned ensemble; "
                f"{EPISODES} episodes of 200 steps from the same random starts",
        "mbpo_config": dataclasses.asdict(cfg),
        "mbpo_training": {"return_mean": out["metrics"]["return_mean"],
                          "env_steps": out["metrics"]["env_steps"], "time": out["time"]},
        "sac_policy_alone": {"return_mean": float(sac_returns.mean()),
                             "return_std": float(sac_returns.std()),
                             "returns": sac_returns.tolist()},
        "results": rows})
    plot(rows, float(sac_returns.mean()))


def plot(rows: list[dict], sac_return: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, dynamics in zip(axes, ("true simulator", "learned model")):
        for use_value, style in ((False, "o--"), (True, "s-")):
            sel = [r for r in rows if r["dynamics"] == dynamics
                   and r["terminal_value"] == use_value]
            h = [r["horizon"] for r in sel]
            m = np.array([r["return_mean"] for r in sel])
            s = np.array([r["return_std"] for r in sel])
            ax.errorbar(h, m, yerr=s, fmt=style, capsize=3,
                        label="with V(s_H)" if use_value else "without V")
        ax.axhline(sac_return, color="gray", lw=1, ls=":", label="SAC policy alone")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(HORIZONS)
        ax.set_xticklabels([str(h) for h in HORIZONS])
        ax.set_xlabel("planning horizon H")
        ax.set_title(f"MPPI on the {dynamics}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"return ({EPISODES} episodes, mean +- std)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "terminal_value.png", dpi=110)
    plt.close(fig)
    print(f"wrote {RESULTS / 'terminal_value.png'}")


if __name__ == "__main__":
    main()
