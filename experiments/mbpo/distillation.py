"""Distilling an MPC teacher into an MLP student with DAgger on the pendulum (CPU).

Teacher: filtered MPPI (H = 25, 128 candidates) on the true simulator, and, as a second
run, on a learned 3-member ensemble refitted every iteration on the data collected so far.
Student: a (64, 64) ReLU MLP, 500 Adam steps per iteration on all labels; 6 DAgger
iterations of 4 envs x 200 steps (iteration i executes the teacher with probability
0.3^i). 3 seeds (vmapped). Afterwards the teacher and the student are evaluated from the
same 4 start states per seed, and the time per action is measured at batch size 1.

    python experiments/mbpo/distillation.py               # ~6 min on 2 shared cores
    python experiments/mbpo/distillation.py --teacher true

Writes ``results/distillation.{json,png}``.
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import numpy as np
from common import RESULTS, train_seeds, write_json

import mbjax  # noqa: F401  (CPU XLA flags first)
from mbjax.agents import make_distill_agent
from mbjax.runner import presets
from mbjax.utils.bench import time_call

SEEDS = [0, 1, 2]


def time_per_action(agent, state) -> dict:
    """Median seconds per action at batch size 1: one planner call vs one student forward
    (both jitted, compile excluded)."""
    one = jax.tree_util.tree_map(lambda x: x[0], state)  # seed 0
    env = agent.eval_env.env  # the episode-wrapped task, unbatched
    env_state = env.reset(jax.random.PRNGKey(3))
    pstate = agent.planner.init(jax.random.PRNGKey(4))
    plan = jax.jit(agent.teacher_plan)
    act = jax.jit(agent.student_act)
    key = jax.random.PRNGKey(5)
    _, teacher_s = time_call(lambda: plan(one, env_state, pstate, key)[0], repeats=30)
    _, student_s = time_call(lambda: act(one.student, env_state.obs), repeats=200)
    return {"teacher_s": teacher_s, "student_s": student_s,
            "speedup": teacher_s / student_s}


def run_teacher(true_dynamics: bool) -> dict:
    cfg = dataclasses.replace(presets.get("mpc-distill-cpu"), true_dynamics=true_dynamics)
    agent = make_distill_agent(cfg)
    out = train_seeds(agent, SEEDS, cfg.num_iterations,
                      ("collect/return", "collect/teacher_probability",
                       "student/heldout_action_mse", "student/train_loss"))
    state = out["state"]
    keys = jax.random.split(jax.random.PRNGKey(1234), len(SEEDS))
    student = np.asarray(jax.jit(jax.vmap(agent.evaluate))(state, keys))
    teacher = np.asarray(jax.jit(jax.vmap(agent.evaluate_teacher))(state, keys))
    timing = time_per_action(agent, state)
    m = out["metrics"]
    return {
        "config": dataclasses.asdict(cfg),
        "per_iteration": m,
        "final_eval": {"teacher_return_mean": float(teacher.mean()),
                       "teacher_return_std": float(teacher.std()),
                       "student_return_mean": float(student.mean()),
                       "student_return_std": float(student.std()),
                       "return_ratio_student_over_teacher": float(student.mean()
                                                                  / teacher.mean()),
                       "teacher_per_episode": teacher.tolist(),
                       "student_per_episode": student.tolist()},
        "time_per_action": timing,
        "time": out["time"],
    }


def plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, res in results.items():
        m = res["per_iteration"]
        it = np.arange(1, len(m["return_mean"]) + 1)
        r = np.asarray(m["return_mean"])
        axes[0].plot(it, r.mean(1), marker="o", label=f"student ({label} teacher)")
        axes[0].fill_between(it, r.mean(1) - r.std(1), r.mean(1) + r.std(1), alpha=0.2)
        axes[0].axhline(res["final_eval"]["teacher_return_mean"], ls="--", lw=1,
                        color=axes[0].lines[-1].get_color(), label=f"{label} teacher")
        e = np.asarray(m["student/heldout_action_mse"])
        axes[1].semilogy(it, e.mean(1), marker="o", label=f"{label} teacher")
    axes[0].set_xlabel("DAgger iteration")
    axes[0].set_ylabel("evaluation return (student)")
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    axes[1].set_xlabel("DAgger iteration")
    axes[1].set_ylabel("student MSE on new (held-out) labels")
    axes[1].legend(fontsize=8)
    axes[1].grid(alpha=0.3)
    fig.suptitle("Pendulum: MPC teacher -> MLP student (DAgger, CPU scale)")
    fig.tight_layout()
    fig.savefig(RESULTS / "distillation.png", dpi=110)
    plt.close(fig)
    print(f"wrote {RESULTS / 'distillation.png'}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher", choices=("true", "model", "both"), default="both")
    args = parser.parse_args()
    teachers = {"true": [True], "model": [False], "both": [True, False]}[args.teacher]
    results = {}
    for true_dynamics in teachers:
        label = "true-simulator" if true_dynamics else "learned-model"
        print(f"{label} teacher", flush=True)
        results[label] = run_teacher(true_dynamics)
        print(results[label]["final_eval"], results[label]["time_per_action"], flush=True)
    write_json("distillation", {
        "what": "DAgger distillation of MPPI MPC into an MLP on the pendulum; teacher vs "
                "student return from the same start states and time per action (batch 1)",
        "seeds": SEEDS, "results": results})
    plot(results)


if __name__ == "__main__":
    main()
