"""Shared helpers of the experiments in this folder: train an agent's seeds (vmapped)
iteration by iteration, record metrics and timings, write JSON and plots."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mbjax.utils.bench import machine_info

RESULTS = Path(__file__).resolve().parent / "results"


def train_seeds(agent, seeds: list[int], num_iterations: int | None = None,
                keep: tuple[str, ...] = ()) -> dict:
    """Runs ``jax.vmap(agent.train_iteration)`` over ``seeds`` (one compile; any
    ``mbjax.agents`` agent, with its ``default_hparams``) and returns
    {"metrics": {name: [iterations][seeds]}, "state": final state, "time": {...}}.
    ``keep`` names extra metrics to record beside return/env steps."""
    n = num_iterations or agent.config.num_iterations
    keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
    t0 = time.perf_counter()
    state = jax.block_until_ready(jax.jit(jax.vmap(agent.init))(keys))
    t_init = time.perf_counter() - t0
    step = jax.jit(jax.vmap(agent.train_iteration), donate_argnums=0)
    names = ("return_mean", "env_steps") + tuple(keep)
    rows = {k: [] for k in names}
    times = []
    for i in range(n):
        t = time.perf_counter()
        state, m = step(state)
        m = jax.device_get(m)
        times.append(time.perf_counter() - t)
        for k in names:
            rows[k].append(np.asarray(m[k]).tolist())
        print(f"  iteration {i + 1}/{n}: return {np.mean(m['return_mean']):8.1f} "
              f"({times[-1]:.1f} s)", flush=True)
    return {"metrics": rows, "state": state,
            "time": {"init_s": t_init, "first_iteration_s": times[0],
                     "iteration_median_s": float(np.median(times[1:] or times)),
                     "total_s": t_init + sum(times)}}


def steps_to_threshold(env_steps: list, returns: list, threshold: float) -> list:
    """Per seed: env steps at the first iteration whose return >= threshold (None if
    never)."""
    r = np.asarray(returns)  # [iterations, seeds]
    s = np.asarray(env_steps)
    out = []
    for j in range(r.shape[1]):
        hit = np.flatnonzero(r[:, j] >= threshold)
        out.append(int(s[hit[0], j]) if hit.size else None)
    return out


def write_json(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = dict(payload, machine=machine_info())
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")
    return path


def draw_curves(ax, curves: dict, title: str, ylabel: str = "evaluation return",
                xlabel: str = "environment steps",
                hline: tuple[float, str] | None = None) -> None:
    """curves: label -> (env_steps [iters], returns [iters, seeds]); mean +- std bands."""
    for label, (steps, returns) in curves.items():
        r = np.asarray(returns, dtype=float)
        mean, std = r.mean(1), r.std(1)
        ax.plot(steps, mean, marker="o", ms=3, label=f"{label} ({r.shape[1]} seeds)")
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    if hline is not None:
        ax.axhline(hline[0], color="gray", ls="--", lw=1, label=hline[1])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_curves(name: str, curves: dict, title: str, ylabel: str = "evaluation return",
                hline: tuple[float, str] | None = None) -> Path:
    """One panel of ``draw_curves``, saved as ``results/<name>.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    draw_curves(ax, curves, title, ylabel, hline=hline)
    fig.tight_layout()
    path = RESULTS / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
    return path
