"""PDDM on the 24-DoF MJX hand: the main run, baselines, ablations and pictures.

Commands (each writes under experiments/pddm_hand/results/ and names the machine):

  python experiments/pddm_hand/run.py main --task hand_track            # CPU-sized, 3 seeds
  python experiments/pddm_hand/run.py main --task hand_baoding --scale gpu   # the paper's size
  python experiments/pddm_hand/run.py baselines --task hand_track       # random / hold-still
  python experiments/pddm_hand/run.py true-dynamics --task hand_track   # MPPI on the simulator
  python experiments/pddm_hand/run.py ablation planner --task hand_track
  python experiments/pddm_hand/run.py ablation horizon|model_size|ensemble --task ...
  python experiments/pddm_hand/run.py report --task hand_track          # tables + plots again
  MUJOCO_GL=egl python experiments/pddm_hand/run.py media               # GIFs in media/

``main`` and every ablation variant are ordinary ``mbjax.runner.run.run`` runs
(``make_mpc_agent`` vmapped over seeds). Checkpoints are deleted after a CPU run unless
``--keep-checkpoints`` (they hold the whole replay buffer); only runs kept that way can
be resumed (``mbjax train --resume``) or evaluated (``mbjax eval``). The committed run
directories hold config.json and metrics.jsonl: ``report`` and ``experiments/tables.py``
work on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import mbjax  # noqa: F401  (XLA flags before JAX starts)

sys.path.insert(0, str(Path(__file__).parent))
from configs import (  # noqa: E402
    ABLATIONS,
    ablation_configs,
    pddm_planner,
    scale_config,
    task_sigma,
)

import mbjax.envs as envs  # noqa: E402
from mbjax.agents import (  # noqa: E402
    first_episode_measures,
    first_episode_return,
    make_mpc_agent,
)
from mbjax.utils.bench import git_state, machine_info  # noqa: E402

HERE = Path(__file__).parent
RESULTS = HERE / "results"
MEDIA = HERE / "media"


def _device() -> str:
    info = machine_info()
    return f"{info['device_kind']} ({info['cpu']}, {info['cpu_count']} cores)"


def train_run(config, keep_checkpoints: bool) -> dict:
    """Runs ``config`` to the end (resuming its checkpoint if one is there, skipping a
    finished run); returns its summary. Deletes the checkpoints unless kept."""
    from mbjax.runner.run import run

    run_dir = Path(config.out_dir) / config.default_run_name
    if (run_dir / "summary.json").exists() and not (run_dir / "checkpoints").exists():
        print(f"{run_dir} is complete; skipping (delete it to rerun)")
        return json.loads((run_dir / "summary.json").read_text())
    if run_dir.exists() and not (run_dir / "checkpoints").exists():
        shutil.rmtree(run_dir)  # an interrupted run without a checkpoint: start again
    if (run_dir / "checkpoints").exists():
        summary = run(resume=run_dir)
    else:
        summary = run(config)
    if not keep_checkpoints:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return summary


def _curve(run_dir: Path) -> dict:
    """Per-iteration return mean/std over seeds (and env steps) of a finished run."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if line.strip()]
    its = sorted({r["iteration"] for r in rows})
    ret = np.array([[r["return_mean"] for r in rows if r["iteration"] == i] for i in its])
    steps = [next(r["env_steps"] for r in rows if r["iteration"] == i) for i in its]
    length = np.array([[r["episode_length"] for r in rows if r["iteration"] == i]
                       for i in its])
    secs = [next(r["time/iteration_s"] for r in rows if r["iteration"] == i) for i in its]
    # an episode with a drop scores below -drop_penalty / 2 (-250 by default)
    dropped = np.array([[r["return_min"] < -250 for r in rows if r["iteration"] == i]
                        for i in its])
    return {"iteration": its, "env_steps": steps, "return_mean": ret.mean(1).tolist(),
            "return_std": ret.std(1).tolist(), "returns_per_seed": ret.tolist(),
            "episode_length": length.mean(1).tolist(), "iteration_s": secs,
            "seeds_with_drop": dropped.sum(1).tolist()}


# -- baselines ---------------------------------------------------------------------------
def baselines(task: str, episodes: int, out: Path) -> dict:
    """First-episode returns of the uniform random policy and of a = 0 (hold the
    mid-range pose still), ``episodes`` episodes each, in one compiled program."""
    env = envs.make(task)
    length = env.default_episode_length
    wenv = envs.VmapWrapper(envs.EpisodeWrapper(env, length), 2 * episodes)
    scale = jnp.concatenate([jnp.ones(episodes), jnp.zeros(episodes)])[:, None]

    @jax.jit
    def run(key):
        k_reset, k_act = jax.random.split(key)
        state = wenv.reset(k_reset)

        def policy(obs, k):
            return scale * jax.random.uniform(k, obs.shape[:-1] + (24,), minval=-1, maxval=1)

        _, tr = envs.rollout(wenv, policy, state, k_act, length)
        return first_episode_return(tr), first_episode_measures(env, tr)

    t0, code = time.perf_counter(), git_state()
    (ret, ep_len), measures = jax.device_get(run(jax.random.PRNGKey(123)))
    res = {"task": task, "device": _device(), "code": code, "episodes": episodes,
           "episode_length_limit": length, "wall_s": time.perf_counter() - t0}
    for name, sl in (("random", slice(0, episodes)), ("hold_still", slice(episodes, None))):
        res[name] = {"return_mean": float(ret[sl].mean()), "return_std": float(ret[sl].std()),
                     "length_mean": float(ep_len[sl].mean()),
                     "measures": {k: float(np.mean(v[sl])) for k, v in measures.items()}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return res


# -- true-dynamics MPC --------------------------------------------------------------------
def true_dynamics(task: str, population: int, num_envs: int, sigma: float, out: Path,
                  simulator: str = "jax", options: str = "") -> dict:
    """PDDM's MPPI planning on the simulator itself (N MJX hands per planning call, or N
    native MuJoCo rollouts with ``simulator="mujoco"``): an upper bound for the learned
    model at this N. One episode per env; the task's success measures are recorded.
    ``options``: the task's constructor options (``EnvConfig.options``, e.g. another goal)."""
    cfg = scale_config("cpu", task)
    cfg = dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, options=options))
    cfg = dataclasses.replace(cfg, true_dynamics=True, num_envs=num_envs, num_seeds=1,
                              prefill_episodes=0, num_iterations=1,
                              planner=pddm_planner(population=population, sigma=sigma),
                              objective=dataclasses.replace(cfg.objective,
                                                            simulator=simulator),
                              run_name=f"true-dynamics-{task}-N{population}-sigma{sigma}")
    agent = make_mpc_agent(cfg)
    t0, code = time.perf_counter(), git_state()
    state = jax.jit(agent.init)(jax.random.PRNGKey(0))
    _, metrics = jax.device_get(jax.jit(agent.train_iteration)(state))
    res = {"task": task, "device": _device(), "population": population,
           "horizon": cfg.planner.horizon, "sigma": sigma, "num_envs": num_envs,
           "any_episode_dropped": bool(metrics["return_min"] < -250),
           "return_mean": float(metrics["return_mean"]),
           "return_min": float(metrics["return_min"]),
           "return_max": float(metrics["return_max"]),
           "episode_length": float(metrics["episode_length"]),
           "simulator": simulator, "options": options, "code": code,
           "measures": {k.removeprefix("task/"): float(v) for k, v in metrics.items()
                        if k.startswith("task/")},
           "wall_s": time.perf_counter() - t0}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return res


# -- reports --------------------------------------------------------------------------------
def _reference_lines(ax, task: str) -> None:
    base = RESULTS / f"baselines-{task}.json"
    if base.exists():
        b = json.loads(base.read_text())
        ax.axhline(b["random"]["return_mean"], color="tab:red", ls=":",
                   label=f"random policy ({b['random']['return_mean']:.0f})")
        ax.axhline(b["hold_still"]["return_mean"], color="tab:gray", ls="--",
                   label=f"hold still, a = 0 ({b['hold_still']['return_mean']:.1f})")
    if task == "hand_track":  # a ball parked at the circle's centre: distance = radius
        env = envs.make(task)
        parked = -env.distance_weight * env.radius * env.default_episode_length
        ax.axhline(parked, color="tab:purple", ls=(0, (1, 3)),
                   label=f"ball parked at the circle's centre ({parked:.0f})")
    for p in sorted(RESULTS.glob(f"true-dynamics-{task}-N*.json")):
        t = json.loads(p.read_text())
        ax.axhline(t["return_mean"], color="tab:green", ls="-.",
                   label=f"MPPI on the true simulator, N={t['population']}, "
                         f"sigma={t.get('sigma', 0.9)} ({t['return_mean']:.1f})")


def report(task: str, runs: dict[str, Path], name: str, title: str) -> dict:
    """Learning curves (mean +- std over seeds) of ``runs`` + reference lines; a table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {label: _curve(d) for label, d in runs.items() if (d / "metrics.jsonl").exists()}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    no_drop = []
    for i, (label, c) in enumerate(curves.items()):
        color = f"C{i}"
        x = np.asarray(c["env_steps"])
        m, s = np.asarray(c["return_mean"]), np.asarray(c["return_std"])
        axes[0].plot(x, m, marker="o", color=color, label=label)
        axes[0].fill_between(x, m - s, m + s, color=color, alpha=0.15)
        per_seed = np.asarray(c["returns_per_seed"])
        no_drop.extend(per_seed[per_seed > -250].tolist())
        for k in range(per_seed.shape[1]):
            axes[1].plot(x, per_seed[:, k], marker=".", lw=0.9, color=color, alpha=0.8,
                         label=label if k == 0 else None)
    _reference_lines(axes[0], task)
    axes[0].set_xlabel("environment steps (random prefill included)")
    axes[0].set_ylabel("MPC episode return (mean ± std over seeds)")
    axes[0].set_title(f"{title} — {task}", fontsize=10)
    axes[0].grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    _reference_lines(axes[1], task)
    axes[1].set_xlabel("environment steps")
    axes[1].set_ylabel("return per seed (mean of its episodes)")
    axes[1].set_title("each seed; zoomed: episodes with a drop (-500) fall off the chart",
                      fontsize=9)
    base = RESULTS / f"baselines-{task}.json"
    if base.exists():
        no_drop.append(json.loads(base.read_text())["hold_still"]["return_mean"])
    lo = min(no_drop) if no_drop else -100.0
    axes[1].set_ylim(1.25 * lo, 0.0)
    axes[1].grid(alpha=0.3)
    fig.suptitle(_device(), fontsize=8)
    fig.tight_layout()
    png = RESULTS / f"{name}.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)

    rows = []
    for label, c in curves.items():
        r = np.asarray(c["returns_per_seed"])
        last = r[-3:].mean(0) if len(r) >= 3 else r[-1]
        rows.append({"variant": label, "run_dir": str(runs[label]),
                     "seeds": int(r.shape[1]), "iterations": len(c["iteration"]),
                     "env_steps": int(c["env_steps"][-1]),
                     "return_first_iteration": float(r[0].mean()),
                     "return_last3_mean": float(last.mean()),
                     "return_last3_std_over_seeds": float(last.std()),
                     "return_best_iteration": float(r.mean(1).max()),
                     "episode_length_last": float(c["episode_length"][-1]),
                     "seed_iterations_with_drop": int(sum(c["seeds_with_drop"])),
                     "seed_iterations": int(r.size),
                     "seconds_per_iteration": float(np.median(c["iteration_s"]))})
    lines = [f"# {title}: {task}", "", f"machine: {_device()}", "",
             "| variant | seeds | iters | env steps | return it. 1 | return last 3 it. "
             "(mean ± std over seeds) | best it. | (seed, it.) with a drop | s / it. |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['seeds']} | {r['iterations']} | {r['env_steps']} "
                     f"| {r['return_first_iteration']:.1f} | {r['return_last3_mean']:.1f} ± "
                     f"{r['return_last3_std_over_seeds']:.1f} | {r['return_best_iteration']:.1f}"
                     f" | {r['seed_iterations_with_drop']}/{r['seed_iterations']} "
                     f"| {r['seconds_per_iteration']:.0f} |")
    lines += ["", "Returns: mean over the seeds of each seed's mean MPC episode return (2 "
              "hands per seed per iteration at CPU scale); 'last 3 it.' averages each seed "
              "over the last three iterations first. s / it.: median wall time of an "
              "iteration (model fit + MPC episodes) after compilation."]
    base = RESULTS / f"baselines-{task}.json"
    if base.exists():
        b = json.loads(base.read_text())
        lines.append("")
        lines.append(f"random policy: {b['random']['return_mean']:.1f} ± "
                     f"{b['random']['return_std']:.1f} (episode length "
                     f"{b['random']['length_mean']:.0f}); hold still (a = 0): "
                     f"{b['hold_still']['return_mean']:.1f} ± "
                     f"{b['hold_still']['return_std']:.1f} (length "
                     f"{b['hold_still']['length_mean']:.0f}); {b['episodes']} episodes each")
    for p in sorted(RESULTS.glob(f"true-dynamics-{task}-N*.json")):
        t = json.loads(p.read_text())
        lines.append(f"MPPI on the true simulator (N={t['population']}, H={t['horizon']}, "
                     f"sigma={t.get('sigma', 0.9)}): "
                     f"{t['return_mean']:.1f} (min {t['return_min']:.1f}, max "
                     f"{t['return_max']:.1f}) over {t['num_envs']} episode(s)")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"{name}.json").write_text(json.dumps({"task": task, "device": _device(),
                                                      "rows": rows, "curves": curves},
                                                     indent=2))
    print("\n".join(lines))
    print(f"wrote {png}, {RESULTS / (name + '.md')}")
    return {"rows": rows}


# -- media --------------------------------------------------------------------------------
def mpc_episode(env, planner, steps: int, params=None, objective_params=None,
                observe=lambda s: s):
    """A jitted episode of ``planner`` acting on ``env`` (no auto-reset): returns the
    first state's (qpos, obs) and per step (qpos, obs, reward, done). ``params``: the
    planner's (default: its defaults); ``objective_params`` and ``observe`` (what the
    planner sees of the env state: the state itself for the simulator objective,
    ``lambda s: s.obs`` for a learned model) as in ``mbjax.planners.mpc``."""
    params = planner.default_params if params is None else params

    @jax.jit
    def episode(key):
        k_reset, k_plan = jax.random.split(key)
        state = env.reset(k_reset)

        def body(carry, k):
            s, ps = carry
            a, ps, _ = planner.plan(params, objective_params, ps, observe(s), k)
            ns = env.step(s, a)
            return (ns, ps), (ns.physics.qpos, ns.obs, ns.reward, ns.done)

        (_, _), out = jax.lax.scan(body, (state, planner.init(k_plan)),
                                   jax.random.split(k_plan, steps))
        return state.physics.qpos, state.obs, out

    return episode


def media(tasks: list[str], steps: int, population: int, fps: float) -> None:
    """GIFs of MPPI on the true simulator (N candidates, H = 7, the task's sigma)."""
    import mbjax.planners as P
    from mbjax.envs.hand.render import RenderUnavailableError, render_frames, save_gif

    MEDIA.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        env = envs.make(task)
        spec = pddm_planner(population=population, horizon=7, sigma=task_sigma(task))
        planner = spec.build(P.make_env_objective(env), env.action_low, env.action_high)
        t0 = time.perf_counter()
        episode = mpc_episode(env, planner, steps)
        q0, o0, (qpos, obs, reward, done) = jax.device_get(episode(jax.random.PRNGKey(7)))
        qpos = np.concatenate([q0[None], qpos])
        obs = np.concatenate([o0[None], obs])
        ended = np.flatnonzero(done > 0)
        last = int(ended[0]) if ended.size else steps - 1  # last step shown
        outcome = f"dropped at step {last}" if ended.size else "no drop"
        print(f"{task}: MPPI N={population} on the simulator, {steps} steps, return "
              f"{reward[:last + 1].sum():.1f}, {outcome} ({time.perf_counter() - t0:.0f} s)")
        try:
            frames = render_frames(env, qpos[:last + 2], obs[:last + 2], camera="diag")
        except RenderUnavailableError as err:
            print(f"skipping pictures: {err}")
            return
        gif = MEDIA / f"{task}.gif"
        save_gif(frames, gif, fps=fps)
        from PIL import Image

        Image.fromarray(frames[len(frames) // 2]).save(MEDIA / f"{task}.png")
        print(f"wrote {gif} ({len(frames)} frames) and {MEDIA / (task + '.png')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("main")
    p.add_argument("--task", default="hand_track")
    p.add_argument("--scale", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--num-iterations", type=int, default=None)
    p.add_argument("--keep-checkpoints", action="store_true")
    p = sub.add_parser("baselines")
    p.add_argument("--task", default="hand_track")
    p.add_argument("--episodes", type=int, default=16)
    p = sub.add_parser("true-dynamics")
    p.add_argument("--task", default="hand_track")
    p.add_argument("--population", type=int, default=64)
    p.add_argument("--num-envs", type=int, default=2)
    p.add_argument("--sigma", type=float, default=None,
                   help="MPPI noise (default: the task's, configs.TASK_SIGMA or 0.9)")
    p.add_argument("--simulator", default="jax", choices=["jax", "mujoco"],
                   help="roll the candidates out on MJX or native MuJoCo (objective.simulator)")
    p = sub.add_parser("ablation")
    p.add_argument("which", choices=list(ABLATIONS))
    p.add_argument("--task", default="hand_track")
    p.add_argument("--scale", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--variants", nargs="*", default=None)
    p.add_argument("--num-iterations", type=int, default=None)
    p.add_argument("--num-seeds", type=int, default=None)
    p.add_argument("--keep-checkpoints", action="store_true")
    p = sub.add_parser("report")
    p.add_argument("--task", default="hand_track")
    p.add_argument("--scale", default="cpu", choices=["cpu", "gpu"])
    p = sub.add_parser("media")
    p.add_argument("--tasks", nargs="*", default=["hand_track", "hand_baoding", "hand_cube"])
    p.add_argument("--steps", type=int, default=75)
    p.add_argument("--population", type=int, default=48)
    p.add_argument("--fps", type=float, default=25.0)
    args = parser.parse_args()

    if args.cmd == "main":
        cfg = scale_config(args.scale, args.task)
        if args.num_iterations:
            cfg = dataclasses.replace(cfg, num_iterations=args.num_iterations)
        train_run(cfg, args.keep_checkpoints or args.scale == "gpu")
        run_dir = Path(cfg.out_dir) / cfg.default_run_name
        report(args.task, {f"PDDM ({args.scale})": run_dir},
               f"main-{args.scale}-{args.task}", "PDDM, learned model")
    elif args.cmd == "baselines":
        baselines(args.task, args.episodes, RESULTS / f"baselines-{args.task}.json")
    elif args.cmd == "true-dynamics":
        sigma = task_sigma(args.task) if args.sigma is None else args.sigma
        suffix = "" if args.simulator == "jax" else f"-{args.simulator}"
        true_dynamics(args.task, args.population, args.num_envs, sigma,
                      RESULTS / f"true-dynamics-{args.task}-N{args.population}"
                                f"-sigma{sigma}{suffix}.json", args.simulator)
    elif args.cmd == "ablation":
        base = scale_config(args.scale, args.task)
        changes = {}
        if args.num_iterations:
            changes["num_iterations"] = args.num_iterations
        if args.num_seeds:
            changes["num_seeds"] = args.num_seeds
        if changes:  # its own runs, also for the reference variant
            tag = "-".join(f"{k.replace('num_', '')}{v}" for k, v in changes.items())
            changes["run_name"] = f"{base.preset}-{args.task}-{tag}-seed{base.seed}"
        base = dataclasses.replace(base, **changes)
        runs = {}
        for label, cfg in ablation_configs(args.which, base, args.variants).items():
            print(f"== {args.which}: {label} -> {cfg.default_run_name}", flush=True)
            train_run(cfg, args.keep_checkpoints)
            runs[label] = Path(cfg.out_dir) / cfg.default_run_name
        # include variants finished earlier (e.g. run one at a time)
        for label, cfg in ablation_configs(args.which, base).items():
            d = Path(cfg.out_dir) / cfg.default_run_name
            if label not in runs and (d / "metrics.jsonl").exists():
                runs[label] = d
        report(args.task, runs, f"ablation-{args.which}-{args.scale}-{args.task}",
               f"ablation: {args.which}")
    elif args.cmd == "report":
        cfg = scale_config(args.scale, args.task)
        run_dir = Path(cfg.out_dir) / cfg.default_run_name
        if (run_dir / "metrics.jsonl").exists():
            report(args.task, {f"PDDM ({args.scale})": run_dir},
                   f"main-{args.scale}-{args.task}", "PDDM, learned model")
    elif args.cmd == "media":
        media(args.tasks, args.steps, args.population, args.fps)


if __name__ == "__main__":
    main()
