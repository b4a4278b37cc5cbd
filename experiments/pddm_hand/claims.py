"""The notes' claims on the hand, measured on ``hand_track`` at CPU scale (issue 17).

  python experiments/pddm_hand/claims.py compare   # PDDM vs PETS vs MBPO vs SAC (~25 min)
  python experiments/pddm_hand/claims.py goals     # goals swapped at test time (~20 min)
  python experiments/pddm_hand/claims.py plot      # redraw the PNG from the JSON
  MUJOCO_GL=egl python experiments/pddm_hand/claims.py gif   # the learned model planning

``compare``: the package's CPU hand presets (``mbjax presets``: pddm-, pets-, mbpo-,
sac-hand-track-cpu), 3 seeds vmapped in one program each, at equal environment steps:
400 random steps, then 200 per iteration for 10 iterations (2400 in all). PDDM and PETS
report the return of the episodes their planner collects in each iteration; MBPO and SAC
that of 5 deterministic-policy episodes after each iteration. Writes
``results/claims-compare-hand_track.{json,png}``; the PDDM run keeps its checkpoint for
``goals``.

``goals``: that PDDM run, trained on the circle, plans with its learned model for other
goals with no retraining (``mbjax.runner.run.evaluate(run, env_options=...)``, the same as
``mbjax eval RUN --env-options ...``). The goal clock and target are not learned: the
task sets them in every predicted step (``Env.known_next_obs``). Compared, per goal, with
a PDDM model trained on that goal (same budget) and with MPPI on the true simulator
(native MuJoCo, N 256). Writes ``results/claims-goals-hand_track.json``.

``gif``: one episode of that PDDM run's planner (seed 0, its learned model) on the circle
it was trained on and on the figure-eight, as GIFs/PNGs in media/ (+ JSON of the returns).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

import mbjax  # noqa: F401  (XLA flags before JAX starts)

sys.path.insert(0, str(Path(__file__).parent))
from configs import task_sigma  # noqa: E402
from run import MEDIA, RESULTS, mpc_episode, true_dynamics  # noqa: E402

from mbjax.runner import presets  # noqa: E402
from mbjax.runner.run import evaluate, load_trained, read_metrics, run  # noqa: E402
from mbjax.utils.bench import git_state, machine_info  # noqa: E402

TASK = "hand_track"
#: label -> the algorithm of its hand preset (``presets.hand_preset_name``)
METHODS = {"PDDM": "pddm", "PETS": "pets", "MBPO": "mbpo", "SAC": "sac"}
#: label -> ``EnvConfig.options`` of the goal ("" = the trained circle)
GOALS = {"circle (trained on)": "", "figure-eight": "path='figure8'",
         "reversed (clockwise)": "direction=-1", "twice as fast (2 s per lap)": "period=2.0"}
EVAL_SEED = 2024
COMPARE_JSON = RESULTS / f"claims-compare-{TASK}.json"
GOALS_JSON = RESULTS / f"claims-goals-{TASK}.json"


def slug(options: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", options).strip("-")


def method_config(algorithm: str, options: str = ""):
    """The CPU hand preset of ``algorithm`` on TASK, with the task options, run under
    results/ as claims-<algorithm>-<task>[-<options>]."""
    cfg = presets.get(presets.hand_preset_name(algorithm, TASK, cpu=True))
    name = f"claims-{algorithm}-{TASK}" + (f"-{slug(options)}" if options else "")
    return dataclasses.replace(cfg, out_dir=str(RESULTS), run_name=name,
                               env=dataclasses.replace(cfg.env, options=options))


def train(cfg, keep_checkpoint: bool) -> Path:
    """Trains ``cfg`` (or resumes / skips it: see below); returns its run directory.

    A finished run (summary.json, and a checkpoint if one must be kept) is not redone."""
    run_dir = Path(cfg.out_dir) / cfg.run_name
    ckpt = run_dir / "checkpoints"
    done = (run_dir / "summary.json").exists() and (ckpt.exists() or not keep_checkpoint)
    if done:
        print(f"{run_dir} is finished; reusing it (delete it to rerun)", flush=True)
        return run_dir
    if ckpt.exists():
        run(resume=run_dir)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        run(cfg)
    if not keep_checkpoint:
        shutil.rmtree(ckpt, ignore_errors=True)
    return run_dir


def curves(run_dir: Path) -> dict:
    """Per iteration: env steps, per-seed returns and task measures, seconds."""
    rows = read_metrics(run_dir)
    its = sorted({r["iteration"] for r in rows})
    by_it = {i: sorted((r for r in rows if r["iteration"] == i), key=lambda r: r["seed"])
             for i in its}
    per_seed = lambda k: [[r[k] for r in by_it[i]] for i in its]  # noqa: E731
    names = sorted(k for k in rows[0] if k.startswith("task/"))
    return {"iteration": its, "env_steps": [by_it[i][0]["env_steps"] for i in its],
            "returns_per_seed": per_seed("return_mean"),
            "measures_per_seed": {k.removeprefix("task/"): per_seed(k) for k in names},
            "iteration_s": [by_it[i][0].get("time/iteration_s") for i in its]}


def compare() -> dict:
    code, machine = git_state(), machine_info()
    out = {"task": TASK, "machine": machine, "code": code, "methods": {}}
    for label, algorithm in METHODS.items():
        cfg = method_config(algorithm)
        print(f"== {label}: {presets.hand_preset_name(algorithm, TASK, True)}", flush=True)
        t0 = time.perf_counter()
        run_dir = train(cfg, keep_checkpoint=algorithm == "pddm")
        summary = json.loads((run_dir / "summary.json").read_text())
        out["methods"][label] = {
            "preset": presets.hand_preset_name(algorithm, TASK, True),
            "run_dir": str(run_dir.relative_to(RESULTS.parent)),
            "config": json.loads((run_dir / "config.json").read_text()),
            "num_seeds": cfg.num_seeds, "wall_s": time.perf_counter() - t0,
            "run_code": summary.get("code"), **curves(run_dir)}
        COMPARE_JSON.write_text(json.dumps(out, indent=2))
    plot()
    return out


def plot() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = json.loads(COMPARE_JSON.read_text())
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for label, m in d["methods"].items():
        r = np.asarray(m["returns_per_seed"])
        mean, std = r.mean(1), r.std(1)
        ax.plot(m["env_steps"], mean, marker="o", ms=3, label=label)
        ax.fill_between(m["env_steps"], mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return (100 steps)")
    ax.set_yscale("symlog", linthresh=10)
    ax.set_title(f"{TASK}: mean ± std over 3 seeds (CPU presets)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(COMPARE_JSON.with_suffix(".png"), dpi=110)
    print(f"wrote {COMPARE_JSON.with_suffix('.png')}")


def goals(selected: list[str]) -> dict:
    pddm_dir = RESULTS / method_config("pddm").run_name
    if not (pddm_dir / "checkpoints").exists():
        raise SystemExit(f"{pddm_dir} has no checkpoint: run `claims.py compare` first "
                         "(it keeps the PDDM run's checkpoint)")
    code, machine = git_state(), machine_info()
    out = json.loads(GOALS_JSON.read_text()) if GOALS_JSON.exists() else {"goals": {}}
    out.update({"task": TASK, "machine": machine, "code": code, "eval_seed": EVAL_SEED,
                "trained_on_circle": str(pddm_dir.relative_to(RESULTS.parent))})
    for label in selected:
        options = GOALS[label]
        row = out["goals"].get(label, {})
        row["options"] = options
        print(f"== {label} ({options or 'defaults'})", flush=True)
        swapped = evaluate(pddm_dir, EVAL_SEED, env_options=options)
        row["circle_model"] = {k: swapped[k] for k in ("return_mean", "returns_per_seed",
                                                       "measures")}
        if options:
            own_dir = train(method_config("pddm", options), keep_checkpoint=True)
            own = evaluate(own_dir, EVAL_SEED)
            shutil.rmtree(own_dir / "checkpoints", ignore_errors=True)
            row["own_model"] = {k: own[k] for k in ("return_mean", "returns_per_seed",
                                                    "measures")}
            row["own_model"]["run_dir"] = str(own_dir.relative_to(RESULTS.parent))
        sim = true_dynamics(TASK, 256, 4, task_sigma(TASK),
                            RESULTS / f"claims-true-dynamics-{TASK}-{slug(options) or 'circle'}"
                                      ".json", simulator="mujoco", options=options)
        row["true_dynamics"] = {k: sim[k] for k in ("return_mean", "return_min",
                                                    "return_max", "population", "horizon",
                                                    "num_envs", "measures")}
        out["goals"][label] = row
        GOALS_JSON.write_text(json.dumps(out, indent=2))
    return out


def learned_model_episode(run_dir: Path, options: str, seed_index: int, key):
    """One episode (no auto-reset) of the run's MPC planner with seed ``seed_index``'s
    learned model on the task built with ``options``: the task env and (qpos [T + 1, nq],
    obs [T + 1, O], reward [T], done [T])."""
    import jax

    cfg, agent, state = load_trained(run_dir, options)
    one = jax.tree_util.tree_map(lambda x: x[seed_index], state)
    env = agent.task_env
    episode = mpc_episode(env, agent.planner, env.default_episode_length, one.hparams.planner,
                          (one.model_state, one.hparams.objective, None), lambda s: s.obs)
    q0, o0, (qpos, obs, reward, done) = jax.device_get(episode(key))
    return env, (np.concatenate([q0[None], qpos]), np.concatenate([o0[None], obs]), reward,
                 done)


def gif() -> dict:
    import jax
    from PIL import Image

    from mbjax.envs.hand.render import render_frames, save_gif

    pddm_dir = RESULTS / method_config("pddm").run_name
    out = {"run_dir": str(pddm_dir.relative_to(RESULTS.parent)), "machine": machine_info(),
           "code": git_state(), "seed_index": 0, "episodes": {}}
    MEDIA.mkdir(parents=True, exist_ok=True)
    for name, options in (("circle", ""), ("figure8", "path='figure8'")):
        env, (qpos, obs, reward, done) = learned_model_episode(pddm_dir, options, 0,
                                                               jax.random.PRNGKey(11))
        ended = np.flatnonzero(done > 0)
        last = int(ended[0]) if ended.size else len(reward) - 1
        out["episodes"][name] = {"options": options, "return": float(reward[:last + 1].sum()),
                                 "steps": last + 1, "dropped": bool(ended.size)}
        print(name, out["episodes"][name], flush=True)
        frames = render_frames(env, qpos[:last + 2], obs[:last + 2], camera="diag")
        stem = MEDIA / f"{TASK}_learned_{name}"
        save_gif(frames, stem.with_suffix(".gif"), fps=12.5)
        Image.fromarray(frames[len(frames) // 2]).save(stem.with_suffix(".png"))
    (RESULTS / f"claims-gif-{TASK}.json").write_text(json.dumps(out, indent=2))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("compare")
    p = sub.add_parser("goals")
    p.add_argument("--goal", action="append", choices=list(GOALS),
                   help="goals to run (repeatable; default: all)")
    sub.add_parser("plot")
    sub.add_parser("gif")
    args = parser.parse_args()
    if args.cmd == "compare":
        compare()
    elif args.cmd == "goals":
        goals(args.goal or list(GOALS))
    elif args.cmd == "gif":
        gif()
    else:
        plot()


if __name__ == "__main__":
    main()
