"""Planner distillation with DAgger: the student reproduces the MPC teacher's actions on
states it visits itself (held-out labels), and acts nearly as well as the teacher from the
same start states."""

import jax
import numpy as np

from mbjax.agents import DistillConfig, EnvConfig, make_distill_agent
from mbjax.envs.classic import Pendulum
from mbjax.planners import MPPIConfig


def test_dagger_student_matches_teacher_on_held_out_labels():
    """Pendulum started within 1 rad of upright (a unimodal task: swing-up from hanging
    has two mirror-image solutions, which makes single labels ambiguous), true-dynamics
    MPPI teacher, 2 seeds vmapped.

    ``student/heldout_action_mse`` of iteration i is measured on the labels collected in
    iteration i, before the student trains on them, at states the student itself visited
    (DAgger: from iteration 1 on it acts with probability 1 - 0.3^i). Units: actions
    scaled to [-1, 1]. Bound: 25 % of the labels' second moment (what a zero student
    would score), i.e. the student explains > 75 % of the teacher's action variance.

    Returns: the trained student and the teacher MPC are run from the SAME 32 start states
    per seed (``evaluate`` / ``evaluate_teacher`` with one key). Measured student cost /
    teacher cost (mean returns of both seeds pooled; returns are negative) over 10 seed
    pairs (keys split(PRNGKey(b), 2), eval key PRNGKey(100 + b), b = 0..9): 1.01, 1.03,
    1.09, 1.12, 1.05, 1.20, 1.21, 1.01, 1.28, 1.10 (mean 1.11; single seeds 0.98-1.50);
    this test's seeds (b = 0): 1.008. Bound 1.35. A zero-action policy scores ~2.3x the
    teacher's cost on these starts (-205 vs -88). (The previous check compared the
    student's evaluation with the teacher's iteration-0 COLLECTION episodes, other start
    states: their ratio ranged 0.5-108 over seeds, so it could not bound anything tight.)
    """
    cfg = DistillConfig(
        preset="tiny", env=EnvConfig(name="pendulum", episode_length=50),
        planner=MPPIConfig(horizon=15, population=64, kappa=1.0, beta=0.7, sigma=1.0),
        hidden_sizes=(32, 32), student_updates=300, num_envs=4, num_iterations=4,
        eval_envs=32)
    trainer = make_distill_agent(cfg, task_env=Pendulum(init_angle_range=1.0))
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    state, m = jax.jit(jax.vmap(trainer.train))(keys)
    n = int(state.dataset.size[0]) * cfg.num_envs
    labels = np.asarray(state.dataset.data["action"]).reshape(2, -1)[:, :n] / 2.0
    second_moment = float((labels**2).mean())
    err = np.asarray(m["student/heldout_action_mse"])  # [seeds, iterations]
    assert err[:, -1].mean() < 0.25 * second_moment, (err, second_moment)
    np.testing.assert_allclose(m["collect/teacher_probability"][0], 0.3 ** np.arange(4),
                               rtol=1e-5)
    # The student acts nearly as well as the teacher from the same start states.
    eval_keys = jax.random.split(jax.random.PRNGKey(100), 2)
    student = np.asarray(jax.jit(jax.vmap(trainer.evaluate))(state, eval_keys))
    teacher = np.asarray(jax.jit(jax.vmap(trainer.evaluate_teacher))(state, eval_keys))
    assert student.shape == teacher.shape == (2, 32)
    assert student.mean() > 1.35 * teacher.mean(), (student.mean(), teacher.mean())
