"""The random-policy rollout report: the quickstart's main job until training lands.

Runs ``num_envs`` copies of an environment under a uniform random policy for
``num_steps`` control steps in ONE compiled ``lax.scan``, then reports episode returns,
the reward/termination-function check and throughput, and writes ``report.json`` and
``rewards.png`` into the run directory.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    """Random-policy rollout report."""

    env: str = "cartpole_swingup"
    """Registered environment name (see ``mbjax envs``)."""
    num_envs: int = 64
    """Parallel environments (vmapped)."""
    num_steps: int = 400
    """Control steps per environment."""
    episode_length: int = 0
    """Steps per episode; 0 = the task's default."""
    seed: int = 0
    """Seed of the PRNG key; the same seed gives the same numbers."""
    out_dir: str = "runs"
    """Parent folder of the run directory."""

    def validate(self) -> None:
        for field in ("num_envs", "num_steps"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
        if self.episode_length < 0:
            raise ValueError(f"episode_length must be >= 0, got {self.episode_length}")


def _episode_returns(reward: np.ndarray, episode_end: np.ndarray) -> np.ndarray:
    """Returns of the episodes completed in a [T, N] rollout."""
    returns, running = [], np.zeros(reward.shape[1])
    for t in range(reward.shape[0]):
        running += reward[t]
        ended = episode_end[t] > 0.5
        returns.extend(running[ended].tolist())
        running[ended] = 0.0
    return np.asarray(returns)


def run_rollout_report(cfg: RolloutConfig, console=None) -> dict:
    """Runs the report and returns its summary dict (also written to report.json)."""
    import mbjax.envs as envs

    cfg.validate()
    from rich.console import Console

    console = console or Console()
    base = envs.make(cfg.env)
    env = envs.wrap_for_training(base, episode_length=cfg.episode_length or None,
                                 num_envs=cfg.num_envs)
    policy = envs.uniform_random_policy(env)

    @jax.jit
    def run(key):
        key_reset, key_roll = jax.random.split(key)
        state = env.reset(key_reset)
        return envs.rollout(env, policy, state, key_roll, cfg.num_steps)[1]

    console.print(f"[bold]mbjax rollout[/] {env!r} on {jax.devices()[0].device_kind}; "
                  f"{cfg.num_envs} envs x {cfg.num_steps} steps")
    t0 = time.perf_counter()
    with console.status("compiling and running the first rollout..."):
        tr = jax.block_until_ready(run(jax.random.PRNGKey(cfg.seed)))
    compile_and_run_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(run(jax.random.PRNGKey(cfg.seed + 1)))
    run_s = time.perf_counter() - t0
    steps_per_s = cfg.num_envs * cfg.num_steps / run_s

    reward_check = None
    if base.has_reward_fn:
        batched = jax.vmap(jax.vmap(env.reward_fn))
        predicted = batched(tr.obs, tr.action, tr.next_obs)
        reward_check = float(jnp.max(jnp.abs(predicted - tr.reward)))
    reward = np.asarray(tr.reward)
    returns = _episode_returns(reward, np.asarray(tr.episode_end))

    out = Path(cfg.out_dir) / f"rollout-{cfg.env.replace('/', '_')}-seed{cfg.seed}"
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "config": dataclasses.asdict(cfg),
        "env": repr(env),
        "device": jax.devices()[0].device_kind,
        "platform": platform.platform(),
        "episodes_completed": int(returns.size),
        "episode_return_mean": float(returns.mean()) if returns.size else None,
        "episode_return_std": float(returns.std()) if returns.size else None,
        "mean_step_reward": float(reward.mean()),
        "terminations": int(np.asarray(tr.done).sum()),
        "truncations": int(np.asarray(tr.truncated).sum()),
        "reward_fn_max_abs_error": reward_check,
        "compile_and_first_run_s": compile_and_run_s,
        "steps_per_s": steps_per_s,
    }
    (out / "report.json").write_text(json.dumps(summary, indent=2))
    _plot_rewards(reward, out / "rewards.png", title=f"{cfg.env}: random policy")

    from rich.table import Table

    table = Table(title=f"random-policy rollout of {cfg.env}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k in ("episodes_completed", "episode_return_mean", "episode_return_std",
              "mean_step_reward", "terminations", "truncations", "reward_fn_max_abs_error",
              "compile_and_first_run_s", "steps_per_s"):
        v = summary[k]
        table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    console.print(table)
    console.print(f"wrote {out / 'report.json'} and {out / 'rewards.png'}")
    summary["run_dir"] = str(out)
    return summary


def _plot_rewards(reward: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    mean, std = reward.mean(axis=1), reward.std(axis=1)
    t = np.arange(reward.shape[0])
    ax.plot(t, mean, label="mean over envs")
    ax.fill_between(t, mean - std, mean + std, alpha=0.3, label="± std")
    ax.set_xlabel("control step")
    ax.set_ylabel("reward")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
