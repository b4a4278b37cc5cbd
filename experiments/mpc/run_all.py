"""MPC-based model-based RL on CPU: PETS and PDDM vs true-dynamics MPC and a random policy.

Every learning experiment is one ``mbjax train`` command (printed, stored in
``results/results.json`` and listed in the README); this script parses exactly that
command line with the CLI's own parser, runs it with ``mbjax.runner.run.run`` (3 vmapped
seeds each) and then writes, into ``experiments/mpc/results/``:

    results.json        machine, commands, resolved configs, wall times, every return
    results.csv         mean / std / per-seed return vs env steps, one row per iteration
    results.md          the markdown tables that the README shows
    <env>.png           mean +- std over seeds vs env steps (PETS, PDDM; true-dynamics
                        MPC and the random policy as bands)
    per_run/<name>/     config.json, metrics.jsonl, summary.json, learning_curve.png

Run directories with checkpoints go to ``experiments/mpc/runs/`` (git-ignored).

    python experiments/mpc/run_all.py                  # everything (~1.5 h on 2 busy cores)
    python experiments/mpc/run_all.py --only pendulum   # experiments whose name matches
    python experiments/mpc/run_all.py --quick           # tiny sizes, a smoke test -> runs/quick
    python experiments/mpc/run_all.py --list            # print the commands only
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import mbjax  # noqa: F401  (CPU XLA flags before any JAX computation)

HERE = Path(__file__).resolve().parent
SEEDS = 3


@dataclasses.dataclass(frozen=True)
class Experiment:
    env: str
    method: str  # "PETS", "PDDM", "true-dynamics MPC", "random policy"
    args: tuple[str, ...] = ()  # `mbjax train` arguments; () for the random policy
    random_episode_length: int = 0  # random policy only

    @property
    def name(self) -> str:
        return f"{self.env}-{self.method.split()[0].lower()}"

    @property
    def command(self) -> str:
        if not self.args:
            return (f"(random policy: {SEEDS} seeds x 10 envs x 1 episode of "
                    f"{self.random_episode_length} steps, U(low, high) actions)")
        return "mbjax train " + " ".join(self.args)


def _train(preset: str, env: str, *extra: str) -> tuple[str, ...]:
    return (preset, "--env.name", env, "--num-seeds", str(SEEDS), *extra)


# Classic control (a): the CPU presets as they are, 8 iterations of 200-step episodes
# (2 envs per seed) after one random prefill episode per env.
CLASSIC_ITERS = ("--num-iterations", "8")
# brax (b): 200-step episodes, a 2 x 200 model, short horizons; sized to ~10 min per run
# on 2 shared cores (MJX compile included). Early stopping is off (20 epochs on all data,
# PDDM-style): with it, the warm-started model is the baseline to beat by 1 % on a fresh
# holdout split that it has partly trained on, and a member that never beats it keeps its
# old parameters; in a first halfcheetah PETS run two of three seeds stopped after 5
# epochs in every iteration, i.e. kept the model of iteration 1 (see README).
BRAX_COMMON = ("--env.episode-length", "200", "--model.hidden-sizes", "200", "200",
               "--model-train.no-early-stopping", "--num-iterations", "10")
BRAX_PDDM = BRAX_COMMON + ("--planner.horizon", "10", "--planner.population", "200",
                           "--planner.kappa", "10.0")
BRAX_PETS = BRAX_COMMON + ("--planner.horizon", "10", "--planner.population", "100",
                           "--planner.iterations", "2", "--objective.num-particles", "3")


def experiments() -> list[Experiment]:
    out = []
    for env in ("pendulum", "cartpole_swingup"):
        out += [
            Experiment(env, "random policy", random_episode_length=200),
            Experiment(env, "true-dynamics MPC", _train("true-dynamics-mpc-cpu", env)),
            Experiment(env, "PDDM", _train("pddm-cpu", env, *CLASSIC_ITERS)),
            Experiment(env, "PETS", _train("pets-cpu", env, *CLASSIC_ITERS)),
        ]
    for env in ("halfcheetah", "reacher"):
        out += [
            Experiment(env, "random policy", random_episode_length=200),
            Experiment(env, "PDDM", _train("pddm-cpu", env, *BRAX_PDDM)),
            Experiment(env, "PETS", _train("pets-cpu", env, *BRAX_PETS)),
        ]
    return out


QUICK = ("--num-iterations", "2", "--env.episode-length", "50", "--planner.population",
         "32", "--planner.horizon", "10", "--model-train.max-epochs", "3")


def parse_train_args(argv: list[str]):
    """The config (an ``mbjax.agents.MPCConfig`` here) that ``mbjax train <argv>`` would
    run: ``argv[0]`` names the preset, the rest are its flags (the CLI's own parser,
    ``mbjax.cli.config_cli``, ``--planner.kind`` included)."""
    from mbjax.cli import config_cli
    from mbjax.runner import presets

    name, flags = argv[0], list(argv[1:])
    return config_cli(presets.get(name), flags, f"mbjax train {name}")


# -------------------------------------------------------------------------------------
# Running
# -------------------------------------------------------------------------------------


def random_policy_returns(env_name: str, episode_length: int, num_seeds: int,
                          num_envs: int = 10) -> np.ndarray:
    """Returns [num_seeds, num_envs] of one uniform-random-action episode per env."""
    import jax

    import mbjax.envs as envs
    from mbjax.agents import first_episode_return

    env = envs.wrap_for_training(envs.make(env_name), episode_length, num_envs=num_envs)
    policy = envs.uniform_random_policy(env)

    def one_seed(key):
        k_reset, k_roll = jax.random.split(key)
        _, transitions = envs.rollout(env, policy, env.reset(k_reset), k_roll, episode_length)
        return first_episode_return(transitions)[0]

    keys = jax.random.split(jax.random.PRNGKey(1000), num_seeds)
    return np.asarray(jax.jit(jax.vmap(one_seed))(keys))


def run_experiment(exp: Experiment, runs_dir: Path, results_dir: Path, quick: bool) -> dict:
    from mbjax.runner.run import read_metrics, run

    t0 = time.perf_counter()
    if not exp.args:
        length = 50 if quick else exp.random_episode_length
        returns = random_policy_returns(exp.env, length, SEEDS)
        per_seed = returns.mean(1)
        return {"name": exp.name, "env": exp.env, "method": exp.method,
                "command": exp.command, "wall_s": time.perf_counter() - t0,
                "episode_length": length, "returns_per_seed": per_seed.tolist(),
                "return_mean": float(per_seed.mean()), "return_std": float(per_seed.std()),
                "episodes": int(returns.size)}

    args = list(exp.args) + (list(QUICK) if quick else [])
    args += ["--out-dir", str(runs_dir), "--run-name", exp.name, "--checkpoint-every", "0"]
    config = parse_train_args(args)
    from mbjax.agents import config_to_dict

    shutil.rmtree(runs_dir / exp.name, ignore_errors=True)  # ours: a fresh run each time
    summary = run(config)
    wall = time.perf_counter() - t0
    rows = read_metrics(runs_dir / exp.name)
    per_run = results_dir / "per_run" / exp.name
    per_run.mkdir(parents=True, exist_ok=True)
    for f in ("config.json", "metrics.jsonl", "summary.json", "learning_curve.png"):
        shutil.copy(runs_dir / exp.name / f, per_run / f)
    iterations = sorted({r["iteration"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    table = np.array([[next(r["return_mean"] for r in rows
                            if r["iteration"] == i and r["seed"] == s) for s in seeds]
                      for i in iterations])  # [iterations, seeds]
    steps = [next(r["env_steps"] for r in rows if r["iteration"] == i) for i in iterations]
    return {"name": exp.name, "env": exp.env, "method": exp.method, "command": exp.command,
            "wall_s": wall, "config": config_to_dict(config), "summary": summary,
            "iterations": iterations, "env_steps": steps, "seeds": seeds,
            "returns": table.tolist(),
            "return_mean": table.mean(1).tolist(), "return_std": table.std(1).tolist(),
            "iteration_s": [np.mean([r["time/iteration_s"] for r in rows
                                     if r["iteration"] == i]) for i in iterations]}


# -------------------------------------------------------------------------------------
# Reporting
# -------------------------------------------------------------------------------------


def _band(result: dict) -> tuple[float, float]:
    """A non-learning baseline as one number: mean +- std over seeds (of the mean over
    its episodes / iterations)."""
    if "returns" in result:
        per_seed = np.asarray(result["returns"]).mean(0)
        return float(per_seed.mean()), float(per_seed.std())
    return result["return_mean"], result["return_std"]


def plot_env(env: str, results: list[dict], path: Path, machine: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    colors = {"PETS": "C0", "PDDM": "C1", "true-dynamics MPC": "C2", "random policy": "C7"}
    learners = [r for r in results if r["method"] in ("PETS", "PDDM")]
    xmax = max((max(r["env_steps"]) for r in learners), default=1)
    for r in learners:
        x, m, s = np.asarray(r["env_steps"]), np.asarray(r["return_mean"]), \
            np.asarray(r["return_std"])
        ax.plot(x, m, marker="o", ms=3, color=colors[r["method"]],
                label=f"{r['method']} ({len(r['seeds'])} seeds)")
        ax.fill_between(x, m - s, m + s, color=colors[r["method"]], alpha=0.2)
    for r in results:
        if r["method"] in ("PETS", "PDDM"):
            continue
        m, s = _band(r)
        ax.axhline(m, color=colors[r["method"]], ls="--", label=r["method"])
        ax.axhspan(m - s, m + s, color=colors[r["method"]], alpha=0.12)
    ax.set_xlim(0, xmax * 1.03)
    ax.set_xlabel("environment steps (incl. random prefill)")
    ax.set_ylabel("episode return (mean ± std over seeds)")
    ax.set_title(f"{env} ({machine})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_csv(results: list[dict], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["env", "method", "iteration", "env_steps", "return_mean", "return_std",
                    "returns_per_seed"])
        for r in results:
            if "returns" in r:
                for i, steps, m, s, per in zip(r["iterations"], r["env_steps"],
                                               r["return_mean"], r["return_std"],
                                               r["returns"]):
                    w.writerow([r["env"], r["method"], i, steps, f"{m:.2f}", f"{s:.2f}",
                                " ".join(f"{v:.2f}" for v in per)])
            else:
                w.writerow([r["env"], r["method"], "", 0, f"{r['return_mean']:.2f}",
                            f"{r['return_std']:.2f}",
                            " ".join(f"{v:.2f}" for v in r["returns_per_seed"])])


def markdown(results: list[dict], machine: dict) -> str:
    lines = [f"Machine: {machine['cpu']} ({machine['cpu_count']} cores, shared), "
             f"{machine['device_kind']}, jax {machine['jax']}; code: {machine.get('git')}.",
             "", "Summary: episode return (200 steps), mean ± std over seeds; PETS and PDDM "
             "at their last iteration.", "",
             "| env | random policy | PDDM | PETS | true-dynamics MPC | env steps |",
             "|---|---|---|---|---|---|"]
    for env in dict.fromkeys(r["env"] for r in results):
        cells, steps = [], ""
        for method in ("random policy", "PDDM", "PETS", "true-dynamics MPC"):
            r = next((r for r in results if r["env"] == env and r["method"] == method), None)
            if r is None:
                cells.append("not run")
            elif method in ("PETS", "PDDM"):
                cells.append(f"{r['return_mean'][-1]:.1f} ± {r['return_std'][-1]:.1f}")
                steps = str(r["env_steps"][-1])
            else:
                cells.append("{:.1f} ± {:.1f}".format(*_band(r)))
        lines.append(f"| {env} | " + " | ".join(cells) + f" | {steps} |")
    lines.append("")
    for env in dict.fromkeys(r["env"] for r in results):
        rs = [r for r in results if r["env"] == env]
        learners = [r for r in rs if r["method"] in ("PETS", "PDDM")]
        lines.append(f"**{env}** — episode return, mean ± std over {SEEDS} seeds, vs env "
                     "steps (prefill included)")
        lines.append("")
        if learners:
            steps = learners[0]["env_steps"]
            lines.append("| method | " + " | ".join(str(s) for s in steps) + " | wall |")
            lines.append("|---|" + "---|" * (len(steps) + 1))
            for r in learners:
                cells = [f"{m:.1f} ± {s:.1f}" for m, s in zip(r["return_mean"],
                                                            r["return_std"])]
                lines.append(f"| {r['method']} | " + " | ".join(cells)
                             + f" | {r['wall_s'] / 60:.1f} min |")
        for r in rs:
            if r["method"] in ("PETS", "PDDM"):
                continue
            m, s = _band(r)
            what = ("per episode, over its MPC episodes" if "returns" in r
                    else f"{r['episodes']} episodes")
            lines.append(f"| {r['method']} | {m:.1f} ± {s:.1f} ({what}) "
                         + "| " * (len(learners[0]["env_steps"]) - 1 if learners else 0)
                         + f"| {r['wall_s'] / 60:.1f} min |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (2 iterations of 50 steps); writes runs/quick/")
    parser.add_argument("--only", default="", help="run experiments whose name contains this")
    parser.add_argument("--list", action="store_true", help="print the commands and exit")
    args = parser.parse_args(argv)

    todo = [e for e in experiments() if args.only in e.name]
    if args.list:
        for e in todo:
            print(f"{e.name:32s} {e.command}")
        return 0
    from mbjax.utils.bench import git_state, machine_info

    here = Path(os.path.relpath(HERE))  # relative paths in the stored summaries
    runs_dir = here / "runs" / ("quick" if args.quick else "full")
    results_dir = runs_dir / "results" if args.quick else here / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    store = results_dir / "results.json"
    previous = json.loads(store.read_text())["experiments"] if store.exists() else []
    done = {r["name"]: r for r in previous}
    machine = dict(machine_info(), git=git_state())
    for e in todo:
        print(f"\n=== {e.name}: {e.command}", flush=True)
        done[e.name] = run_experiment(e, runs_dir, results_dir, args.quick)
        done[e.name]["machine"] = machine
        print(f"=== {e.name}: {done[e.name]['wall_s'] / 60:.1f} min", flush=True)
        # Written after every experiment, so a partial run keeps what it finished.
        order = [x.name for x in experiments()]
        results = sorted(done.values(), key=lambda r: order.index(r["name"])
                         if r["name"] in order else len(order))
        store.write_text(json.dumps({"machine": machine, "quick": args.quick,
                                     "experiments": results}, indent=1))
    results = sorted(done.values(), key=lambda r: [x.name for x in experiments()]
                     .index(r["name"]))
    write_csv(results, results_dir / "results.csv")
    label = f"{machine['device_kind']}, {machine['cpu_count']} cores"
    for env in dict.fromkeys(r["env"] for r in results):
        plot_env(env, [r for r in results if r["env"] == env], results_dir / f"{env}.png",
                 label)
    table = markdown(results, machine)
    (results_dir / "results.md").write_text(table + "\n")
    if not args.quick:  # the README's tables are drawn from results.json by tables.py
        subprocess.run([sys.executable, str(HERE.parent / "tables.py")], check=True)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
