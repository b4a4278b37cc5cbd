"""Multi-host training with jax.distributed (mbjax.distributed): two CPU processes on
localhost, one device each, run one training with the seeds split across them."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from mbjax.agents import DistributedConfig

SCRIPT = textwrap.dedent("""
    import json, sys
    import dataclasses
    from mbjax.agents import (DistributedConfig, EnvConfig, MBPOConfig, MPCConfig,
                              ObjectiveConfig, SACConfig)
    from mbjax.models import EnsembleConfig, ModelTrainConfig
    from mbjax.planners import MPPIConfig
    from mbjax.runner.run import run

    out, port, pid, phase = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    algorithm = sys.argv[5]
    multi = phase != "single"
    model = EnsembleConfig(num_members=2, num_elites=2, hidden_sizes=(32, 32),
                           probabilistic=False, weight_decay=())
    if algorithm == "mpc":
        cfg = MPCConfig(
            preset="tiny", env=EnvConfig(name="pendulum", episode_length=50), model=model,
            model_train=ModelTrainConfig(batch_size=32, max_epochs=5),
            planner=MPPIConfig(horizon=10, population=32, kappa=1.0, beta=0.7, sigma=1.0),
            objective=ObjectiveConfig(num_particles=2), num_envs=2, buffer_capacity=2000)
    else:
        cfg = MBPOConfig(
            preset="tiny-mbpo", env=EnvConfig(name="pendulum", episode_length=20),
            model=dataclasses.replace(model, probabilistic=True),
            model_train=ModelTrainConfig(batch_size=32, max_epochs=2),
            sac=SACConfig(hidden_sizes=(16, 16), batch_size=32), steps_per_iteration=20,
            model_train_every=10, init_steps=100, rollouts_per_step=2, updates_per_step=2,
            rollout_schedule=(0, 2, 1, 2), eval_envs=2, buffer_capacity=2000)
    cfg = dataclasses.replace(
        cfg, num_iterations=2, num_seeds=2, out_dir=out,
        devices=0, run_name="multi" if multi else "single",
        distributed=DistributedConfig(
            enabled=multi, coordinator_address=f"localhost:{port}" if multi else "",
            num_processes=2 if multi else 0, process_id=pid if multi else -1,
            timeout_s=120))
    if phase == "first":
        run(cfg, stop_after=1)
    elif phase == "resume":
        run(cfg, resume=f"{out}/multi")
    else:
        run(cfg)
    print("DONE", pid)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(tmp_path, phase: str, processes: int, algorithm: str) -> list[str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if "device_count" not in f)  # one device per process
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path), port, str(i),
                               phase, algorithm], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
             for i in range(processes)]
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, out[-3000:]
        outs.append(out)
    return outs


def _rows(path):
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(rows, key=lambda r: (r["iteration"], r["seed"]))


@pytest.mark.slow
def test_two_processes_train_checkpoint_once_and_resume(tmp_path):
    algorithm = "mpc"
    run_dir = tmp_path / "multi"
    _launch(tmp_path, "first", 2, algorithm)
    # One checkpoint, written once by the two processes together; no temporary dirs.
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts == ["iter_000001"], ckpts
    state_dir = run_dir / "checkpoints" / "iter_000001" / "state"
    assert sorted(p.name for p in (state_dir / "array_metadatas").iterdir()) == \
        ["process_0", "process_1"]  # each process wrote its own shards
    assert len(_rows(run_dir / "metrics.jsonl")) == 2  # 2 seeds x 1 iteration, once

    outs = _launch(tmp_path, "resume", 2, algorithm)
    assert "resumed" in outs[0] and "DONE 1" in outs[1]
    multi = _rows(run_dir / "metrics.jsonl")
    assert [(r["iteration"], r["seed"]) for r in multi] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == \
        ["iter_000001", "iter_000002"]
    assert json.loads((run_dir / "summary.json").read_text())["iterations"] == 2

    # The same run in one process on one device gives the same numbers.
    _launch(tmp_path, "single", 1, algorithm)
    single = _rows(tmp_path / "single" / "metrics.jsonl")
    for a, b in zip(single, multi):
        for k in ("return_mean", "model/train_loss", "env_steps"):
            assert b[k] == pytest.approx(a[k], rel=1e-3, abs=1e-3), (k, a, b)


@pytest.mark.slow
def test_mbpo_on_two_processes_equals_one(tmp_path):
    """MBPO (SAC, model, branched rollouts) with its seeds split over two processes gives
    the one-process metrics (checkpointing and resume across processes are the runner's,
    tested above with the MPC agent)."""
    _launch(tmp_path, "full", 2, "mbpo")
    _launch(tmp_path, "single", 1, "mbpo")
    multi = _rows(tmp_path / "multi" / "metrics.jsonl")
    single = _rows(tmp_path / "single" / "metrics.jsonl")
    assert [(r["iteration"], r["seed"]) for r in multi] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert [(r["iteration"], r["seed"]) for r in single] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    for a, b in zip(single, multi):
        for k in ("return_mean", "model/train_loss", "sac/critic_loss", "env_steps"):
            assert b[k] == pytest.approx(a[k], rel=1e-3, abs=1e-3), (k, a, b)


def test_distributed_config_validates():
    with pytest.raises(ValueError, match="process_id must be in"):
        DistributedConfig(enabled=True, num_processes=2, process_id=2)
    with pytest.raises(ValueError, match="num_processes must be >= 0"):
        DistributedConfig(num_processes=-1)
