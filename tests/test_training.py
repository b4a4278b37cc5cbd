"""The compiled MBRL loop: learning, seeds, trace counts, checkpoint/resume, CLI."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mbjax.envs as envs
from mbjax.agents import EnvConfig, MPCConfig, ObjectiveConfig, make_agent, make_mpc_agent
from mbjax.checkpoint import CheckpointError
from mbjax.cli import main
from mbjax.models import EnsembleConfig, ModelTrainConfig
from mbjax.planners import MPPIConfig
from mbjax.runner import presets
from mbjax.runner.run import list_checkpoints, read_metrics, run

TINY = MPCConfig(
    preset="tiny",
    env=EnvConfig(name="pendulum", episode_length=50),
    model=EnsembleConfig(num_members=2, num_elites=2, hidden_sizes=(32, 32),
                         probabilistic=False, weight_decay=()),
    model_train=ModelTrainConfig(batch_size=32, max_epochs=5),
    planner=MPPIConfig(horizon=10, population=32, kappa=1.0, beta=0.7, sigma=1.0),
    objective=ObjectiveConfig(num_particles=2),
    num_envs=2, num_iterations=3, buffer_capacity=2000,
)


def _metrics_without_time(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


@pytest.mark.slow
def test_pddm_learns_pendulum_swing_up():
    """Short PDDM-style run: the MPC return rises from random-policy level (~-1200 over
    200 steps; zero torque from hanging down ~-2000) to near the hand-designed expert
    (-120..-400 depending on the start; see tests/test_planners.py)."""
    # pddm-cpu's model, model fitting and MPPI (2 envs), one seed, 5 iterations.
    cfg = dataclasses.replace(presets.get("pddm-cpu"), num_seeds=1, num_iterations=5,
                              buffer_capacity=10_000)
    trainer = make_mpc_agent(cfg)
    _, metrics = jax.jit(trainer.train)(jax.random.PRNGKey(0))
    returns = np.asarray(metrics["return_mean"])
    assert returns[0] < -700, returns  # the first MPC episode uses a random-data model
    assert returns[-2:].max() > -400, returns


@pytest.mark.slow  # > 8 s: kept out of the quick loop (CI runs it)
def test_k_seeds_equal_k_single_seed_runs():
    trainer = make_mpc_agent(dataclasses.replace(TINY, num_iterations=2))
    keys = jnp.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(7)])
    _, batched = jax.jit(jax.vmap(trainer.train))(keys)
    train = jax.jit(trainer.train)
    for i in range(2):
        _, single = train(keys[i])
        for k in ("return_mean", "model/train_loss", "env_steps"):
            np.testing.assert_allclose(batched[k][i], single[k], rtol=2e-4, atol=1e-4)


@pytest.mark.parametrize("reset_mode,resets", [("fresh", 2), ("cached", 1)])
def test_each_piece_compiles_once_over_iterations(reset_mode, resets):
    counts = {"step": 0, "reset": 0}

    class CountingPendulum(envs.classic.Pendulum):
        def _step(self, state, action):
            counts["step"] += 1
            return super()._step(state, action)

        def _reset(self, key):
            counts["reset"] += 1
            return super()._reset(key)

    cfg = dataclasses.replace(TINY, env=dataclasses.replace(TINY.env, reset_mode=reset_mode))
    trainer = make_mpc_agent(cfg, task_env=CountingPendulum())
    chex.clear_trace_counter()
    iteration = jax.jit(chex.assert_max_traces(trainer.train_iteration, n=1))
    state = jax.jit(trainer.init)(jax.random.PRNGKey(0))
    after_init = dict(counts)
    for _ in range(3):
        state, _ = iteration(state)
    # One trace of the iteration: env.step traced once in MPC (the planner's objective is
    # the model, not the env), reset once per episode start + once per step for a fresh
    # auto-reset (a cached one restarts from the episode's first state: no reset).
    assert counts["step"] - after_init["step"] == 1
    assert counts["reset"] - after_init["reset"] == resets
    assert int(state.iteration) == 3


@pytest.mark.slow  # > 8 s: kept out of the quick loop (CI runs it)
def test_resume_after_stop_equals_uninterrupted(tmp_path):
    full = dataclasses.replace(TINY, out_dir=str(tmp_path), run_name="full")
    run(full)
    part = dataclasses.replace(TINY, out_dir=str(tmp_path), run_name="part")
    run(part, stop_after=1)
    assert len(read_metrics(tmp_path / "part")) == 1
    run(None, resume=tmp_path / "part")
    a = _metrics_without_time(read_metrics(tmp_path / "full"))
    b = _metrics_without_time(read_metrics(tmp_path / "part"))
    assert len(a) == 3 and a == b
    # The trained agent evaluated on another task (no retraining): options equal to the
    # defaults give the run's own numbers, another torque limit other numbers.
    from mbjax.runner.run import evaluate

    own = evaluate(tmp_path / "full")
    same = evaluate(tmp_path / "full", env_options="max_torque=2.0")
    weak = evaluate(tmp_path / "full", env_options="max_torque=0.5")
    assert same["return_mean"] == own["return_mean"] != weak["return_mean"]
    assert json.loads((tmp_path / "full" / "eval-max_torque_0.5.json").read_text())[
        "env_options"] == "max_torque=0.5"
    with pytest.raises(TypeError, match="no option"):
        evaluate(tmp_path / "full", env_options="bogus=1")


@pytest.mark.slow  # > 8 s: kept out of the quick loop (CI runs it)
def test_mismatched_config_and_corrupt_checkpoint(tmp_path):
    cfg = dataclasses.replace(TINY, out_dir=str(tmp_path), run_name="r", num_iterations=2)
    run(cfg)
    other = dataclasses.replace(cfg, planner=dataclasses.replace(cfg.planner, horizon=12))
    with pytest.raises(ValueError, match=r"planner.horizon: run has 10, given 12"):
        run(other, resume=tmp_path / "r")
    # A checkpoint of another config (copied in from elsewhere) names the differing field.
    ckpts = list_checkpoints(tmp_path / "r")
    assert [p.name for p in ckpts] == ["iter_000001", "iter_000002"]
    from mbjax import checkpoint
    from mbjax.runner.run import comparable_config

    trainer = make_mpc_agent(other)
    template = jax.eval_shape(jax.vmap(trainer.init), jnp.stack([jax.random.PRNGKey(0)]))
    with pytest.raises(CheckpointError, match="planner.horizon: checkpoint 10, expected 12"):
        checkpoint.load(ckpts[-1], template, {"config": comparable_config(other),
                                              "iteration": 2})
    # Corrupt the newest checkpoint: a clear message, and the previous one still loads.
    for f in (ckpts[-1] / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"\0garbage" * 8)
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoint.load(ckpts[-1], jax.eval_shape(
            jax.vmap(make_mpc_agent(cfg).init), jnp.stack([jax.random.PRNGKey(0)])),
            {"config": comparable_config(cfg), "iteration": 2})
    summary = run(None, resume=tmp_path / "r")  # falls back to iter_000001, reruns iter 2
    assert summary["iterations"] == 2
    # The CLI: runtime flags may be given when resuming, other fields are refused.
    assert main(["train", "--resume", str(tmp_path / "r"), "--planner.horizon", "12"]) == 2
    assert main(["train", "--resume", str(tmp_path / "r"), "--devices", "1"]) == 0


@pytest.mark.slow
def test_sigkill_during_training_then_resume_gives_identical_metrics(tmp_path):
    args = ["train", "pddm-cpu", "--env.episode-length", "50", "--num-iterations", "6",
            "--num-envs", "2", "--num-seeds", "1", "--planner.horizon", "10",
            "--planner.population", "32", "--model-train.max-epochs", "5",
            "--buffer-capacity", "2000", "--out-dir", str(tmp_path)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "mbjax.cli", *args, "--run-name", "killed"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = tmp_path / "killed"
    deadline = time.time() + 600
    while time.time() < deadline:  # kill once at least two iterations were checkpointed
        if len(list_checkpoints(run_dir)) >= 2 or proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(read_metrics(run_dir))
    assert 0 < done_before < 6, done_before
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert main(args + ["--run-name", "clean"]) == 0
    a = _metrics_without_time(read_metrics(tmp_path / "clean"))
    b = _metrics_without_time(read_metrics(run_dir))
    assert len(a) == 6 and a == b
    shutil.rmtree(tmp_path)


def test_cli_train_help_and_bad_values(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "pddm-cpu", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--planner.horizon" in out and "--num-seeds" in out
    with pytest.raises(SystemExit):
        main(["train", "--planner.horizon", "0"])
    assert "planner.horizon must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--planner.num-elites", "900", "--planner.kind", "cem"])
    assert "num_elites" in capsys.readouterr().err
    assert main(["train", "--env.name", "nope"]) == 2
    assert "unknown environment 'nope'" in capsys.readouterr().err
    assert main(["train", "nopreset"]) == 2
    assert "unknown preset 'nopreset'" in capsys.readouterr().err
    assert main(["presets"]) == 0
    assert "pddm-cpu" in capsys.readouterr().out


@pytest.mark.slow  # > 8 s: kept out of the quick loop (CI runs it)
def test_a_run_that_will_not_fit_stops_before_it_starts(tmp_path, monkeypatch):
    """The memory check compares the compiled programs' peak with the free memory."""
    import importlib

    runner = importlib.import_module("mbjax.runner.run")  # the module, not run()
    monkeypatch.setattr(runner, "available_bytes", lambda: 1 << 20)  # 1 MiB free
    cfg = dataclasses.replace(TINY, out_dir=str(tmp_path), run_name="r", num_iterations=1)
    with pytest.raises(MemoryError, match=r"needs \d+\.\d+ GiB .* but 0\.00 GiB are free"
                                          r".*--planner-chunk-size"):
        run(cfg)
    assert read_metrics(tmp_path / "r") == []  # not a single iteration ran


@pytest.mark.slow  # > 8 s: kept out of the quick loop (CI runs it)
def test_run_writes_run_directory(tmp_path):
    cfg = dataclasses.replace(TINY, out_dir=str(tmp_path), run_name="r", num_iterations=2,
                              num_seeds=2)
    summary = run(cfg)
    run_dir = tmp_path / "r"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["planner"]["horizon"] == 10 and config["num_seeds"] == 2
    rows = read_metrics(run_dir)
    assert sorted((r["seed"], r["iteration"]) for r in rows) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert (run_dir / "learning_curve.png").stat().st_size > 1000
    assert summary["iterations"] == 2 and len(summary["seeds"]) == 2
    with pytest.raises(FileExistsError, match="--resume"):
        run(cfg)


def test_default_config_is_valid_pddm():
    cfg = MPCConfig()  # the defaults form a consistent (PDDM) config
    assert (cfg.model.num_members, cfg.planner.kind, cfg.objective.num_particles) == (3, "mppi", 3)
    assert cfg.model.hidden_sizes == (500, 500) and not cfg.model.probabilistic


HAND_PRESETS = {presets.hand_preset_name(a, t, cpu): (a, t, cpu)
                for a in presets.HAND_ALGORITHMS for t in presets.HAND_TASKS
                for cpu in (False, True)}
# Tracing a hand preset takes ~6 s (the MJX hand); the hand presets are one function of
# (algorithm, task, scale), so each algorithm is traced once (CPU-sized, hand_track), plus
# the flagship at paper size; test_hand_presets checks the rest field by field.
TRACED_PRESETS = ([n for n in presets.names() if n not in HAND_PRESETS]
                  + [presets.hand_preset_name(a, "hand_track", True)
                     for a in presets.HAND_ALGORITHMS] + ["pddm-hand-baoding",
                                                          "pddm-hand-cube-cpu"])
#: The success measures each hand task reports per iteration (``task/<name>``).
TASK_MEASURES = {"hand_track": {"rotation", "half_turns", "on_target", "dropped"},
                 "hand_baoding": {"rotation", "half_turns", "on_target", "dropped"},
                 "hand_cube": {"final_error", "start_error", "success", "dropped"}}


def test_hand_presets():
    """Every (algorithm, task, scale) is listed, on its task, with cached auto-reset, the
    task's MPPI noise, and the paper's sizes (PDDM: 3 x 2 x 500, N 700, 30 hands) or CPU
    ones."""
    assert set(HAND_PRESETS) <= set(presets.names()) and len(HAND_PRESETS) == 30
    for name, (algorithm, task, cpu) in HAND_PRESETS.items():
        cfg = presets.get(name)
        assert (cfg.env.name, cfg.env.reset_mode, cfg.preset) == (task, "cached", name)
        if algorithm in ("pddm", "true-dynamics"):
            assert cfg.planner.kind == "mppi" and cfg.planner.horizon == 7
            assert cfg.planner.sigma == (0.3 if task == "hand_baoding" else 0.9)
            native = cpu and cfg.true_dynamics and task != "hand_cube"
            assert cfg.planner.population == (700 if not cpu else 128 if algorithm == "pddm"
                                              else 256 if native else 64)
            assert cfg.num_envs == (2 if cpu else 30)
            assert cfg.true_dynamics == (algorithm == "true-dynamics")
            assert cfg.objective.simulator == ("mujoco" if native else "jax")
        if algorithm == "pddm":
            assert cfg.model.hidden_sizes == ((200, 200) if cpu else (500, 500))
            assert not cfg.model.probabilistic and cfg.model.num_members == 3
        if algorithm == "pets":
            assert cfg.planner.kind == "cem" and cfg.model.probabilistic
            assert cfg.objective.num_particles == (6 if cpu else 20)
        if algorithm in ("mbpo", "sac"):
            assert cfg.model_based == (algorithm == "mbpo")
            assert cfg.steps_per_iteration == (200 if cpu else 1000)
    with pytest.raises(KeyError, match="hand task"):
        presets.hand_preset("pddm", "hand_pen", cpu=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", TRACED_PRESETS)
def test_every_preset_builds_and_traces(name):
    """Each preset is a valid config whose trainer's state and iteration trace (abstractly:
    ``jax.eval_shape``, nothing compiles) and whose iteration returns a finite-shaped
    ``return_mean`` per seed."""
    trainer = make_agent(presets.get(name))
    state = jax.eval_shape(trainer.init, jax.random.PRNGKey(0))
    _, metrics = jax.eval_shape(trainer.train_iteration, state)
    assert metrics["return_mean"].shape == ()
    task = presets.get(name).env.name
    reported = {k.removeprefix("task/") for k in metrics if k.startswith("task/")}
    assert reported == TASK_MEASURES.get(task, set()), (task, reported)


def test_env_options_reach_the_task_env_or_are_refused():
    """``--env.options key=value,...`` builds the task with those constructor arguments;
    malformed pairs, unknown keys and options beside an explicit task_env are errors."""
    from mbjax.agents import make_task
    from mbjax.agents.config import parse_options

    assert parse_options("reward=turn, wrist_weight=1,radius=2.5e-2,x='ab'", "o") == {
        "reward": "turn", "wrist_weight": 1, "radius": 0.025, "x": "ab"}
    assert parse_options("", "o") == {}
    cfg = MPCConfig(env=EnvConfig(name="pendulum", options="max_torque=1.5"))
    assert make_task(cfg).env.max_torque == 1.5
    for bad, match in (("max_torque", "key=value"), ("a=1,a=2", "twice")):
        with pytest.raises(ValueError, match=match):
            EnvConfig(name="pendulum", options=bad)
    with pytest.raises(TypeError, match="no option"):
        make_task(MPCConfig(env=EnvConfig(name="pendulum", options="bogus=1")))
    with pytest.raises(ValueError, match="task_env"):
        make_task(cfg, task_env=envs.make("pendulum"))
