"""MBPO vs SAC at equal environment steps on brax Hopper and HalfCheetah (CPU budget).

Each (env, agent) pair is one ``mbjax train`` run of a preset (3 vmapped seeds, a run
directory with metrics, checkpoints every epoch): ``mbpo-hopper-cpu``, ``sac-hopper-cpu``,
``mbpo-halfcheetah-cpu``, ``sac-halfcheetah-cpu`` (see ``mbjax/runner/presets.py`` for
how they cut MBPO's published settings down to 30k env steps on 2 CPU cores). The script
starts each run, resumes it if it was interrupted, skips it if it is complete, and then
reads all four runs' ``metrics.jsonl`` into a table, ``results/brax_locomotion.json`` and
``results/brax_locomotion.png``.

    python experiments/mbpo/brax_locomotion.py                 # all four (~2 h on 2 cores)
    python experiments/mbpo/brax_locomotion.py --envs hopper --agents mbpo
    python experiments/mbpo/brax_locomotion.py --report-only   # table/plot from the runs

Run directories: ``experiments/mbpo/runs/<preset>`` (not committed; ~50 MB each).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
from common import RESULTS, draw_curves, steps_to_threshold, write_json

import mbjax  # noqa: F401  (CPU XLA flags first)
from mbjax.agents import config_to_dict
from mbjax.checkpoint import list_checkpoints
from mbjax.runner import presets
from mbjax.runner.run import read_metrics, run

RUNS = Path(__file__).resolve().parent / "runs"
ENVS = ("hopper", "halfcheetah")
AGENTS = ("mbpo", "sac")
LABELS = {"mbpo": "MBPO (G=10, 5% real)", "sac": "SAC (G=1)"}
# MBPO paper (Janner et al. 2019, Fig. 2), gym Hopper-v2: about 3100 at 75k steps (our
# budget stops at 30k; brax's Hopper is a different simulator with the same rewards).
PUBLISHED = {"hopper": "MBPO paper, gym Hopper: ~3100 at 75k env steps"}


def run_dir(env: str, agent: str) -> Path:
    return RUNS / f"{agent}-{env}-cpu"


def train(env: str, agent: str) -> None:
    """Trains (or resumes, or skips if finished) one preset's run."""
    config = dataclasses.replace(presets.get(f"{agent}-{env}-cpu"), out_dir=str(RUNS),
                                 run_name=f"{agent}-{env}-cpu")
    path = run_dir(env, agent)
    done = (path / "summary.json").exists()
    if done:
        print(f"{path} is complete; skipping")
        return
    run(None if list_checkpoints(path) else config,
        resume=path if list_checkpoints(path) else None)


def curves(env: str, agent: str) -> dict | None:
    """{"env_steps": [iters], "returns": [iters][seeds], ...} from the run's metrics."""
    path = run_dir(env, agent)
    if not (path / "metrics.jsonl").exists():
        return None
    rows = read_metrics(path)
    seeds = sorted({r["seed"] for r in rows})
    its = sorted({r["iteration"] for r in rows})
    by = {(r["iteration"], r["seed"]): r for r in rows}
    complete = [i for i in its if all((i, s) in by for s in seeds)]
    get = lambda k: [[by[i, s].get(k) for s in seeds] for i in complete]  # noqa: E731
    times = [by[i, seeds[0]]["time/iteration_s"] for i in complete]
    return {"seeds": seeds, "env_steps": [by[i, seeds[0]]["env_steps"] for i in complete],
            "returns": get("return_mean"), "train_return": get("train/return"),
            "model_holdout_mse": get("model/holdout_mse") if agent == "mbpo" else None,
            "iteration_median_s": float(np.median(times[1:] or times)),
            "total_s": float(np.sum(times)),
            "config": json.loads((path / "config.json").read_text())}


def summarise(c: dict) -> dict:
    r = np.asarray(c["returns"], dtype=float)  # [iterations, seeds]
    last3 = r[-3:].mean(0)
    return {"env_steps": c["env_steps"][-1],
            "final": {"mean": float(r[-1].mean()), "std": float(r[-1].std()),
                      "per_seed": r[-1].tolist()},
            "last3_mean": {"mean": float(last3.mean()), "std": float(last3.std())},
            "best_mean_curve": float(r.mean(1).max()),
            # Mean over all evaluated epochs (area under the curve / epochs): sample
            # efficiency in one number, less sensitive to one noisy final evaluation.
            "curve_mean": {"mean": float(r.mean()), "std": float(r.mean(0).std())}}


def report(envs: tuple[str, ...]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = {}
    fig, axes = plt.subplots(1, len(envs), figsize=(6.0 * len(envs), 4), squeeze=False)
    for ax, env in zip(axes[0], envs):
        results[env], panel = {}, {}
        for agent in AGENTS:
            c = curves(env, agent)
            if c is None:
                continue
            s = summarise(c)
            results[env][agent] = dict(c, summary=s)
            panel[LABELS[agent]] = (c["env_steps"], c["returns"])
            print(f"{env:12s} {LABELS[agent]:22s} {s['env_steps']:6d} steps: final "
                  f"{s['final']['mean']:8.1f} +- {s['final']['std']:6.1f} | last 3 "
                  f"{s['last3_mean']['mean']:8.1f} | all epochs {s['curve_mean']['mean']:8.1f} | "
                  f"{c['iteration_median_s']:.0f} "
                  f"s/epoch")
        if "sac" in results[env] and "mbpo" in results[env]:
            # Sample efficiency: env steps MBPO needs to reach SAC's final return.
            sac_final = results[env]["sac"]["summary"]["final"]["mean"]
            mbpo = results[env]["mbpo"]
            per_step = [[s] * len(mbpo["seeds"]) for s in mbpo["env_steps"]]
            results[env]["mbpo_steps_to_sac_final"] = {
                "threshold": sac_final,
                "per_seed": steps_to_threshold(per_step, mbpo["returns"], sac_final)}
        draw_curves(ax, panel, f"brax {env}: MBPO vs SAC (CPU budget)",
                    ylabel="evaluation return (5 deterministic episodes)",
                    xlabel="environment steps (5000 random included)")
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / "brax_locomotion.png", dpi=110)
    plt.close(fig)
    write_json("brax_locomotion", {
        "what": "brax hopper / halfcheetah (mjx backend), evaluation return (5 "
                "deterministic-policy episodes of up to 1000 steps) vs env steps; MBPO vs "
                "SAC at equal env steps, 3 vmapped seeds each",
        "presets": {f"{a}-{e}-cpu": config_to_dict(presets.get(f"{a}-{e}-cpu"))
                    for e in envs for a in AGENTS},
        "published": PUBLISHED, "results": results})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--envs", nargs="+", choices=ENVS, default=list(ENVS))
    p.add_argument("--agents", nargs="+", choices=AGENTS, default=list(AGENTS))
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args()
    if not a.report_only:
        for env in a.envs:
            for agent in a.agents:
                train(env, agent)
    report(tuple(e for e in ENVS if any(curves(e, ag) for ag in AGENTS)))


if __name__ == "__main__":
    main()
