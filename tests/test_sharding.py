"""A run spread over several devices (mbjax.sharding): same metrics as one device.

Runs in a subprocess with 8 forced CPU host devices (the flag must be set before JAX
starts, and this test process already started it)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from mbjax.sharding import seed_sharding

SCRIPT = textwrap.dedent("""
    import dataclasses, json, sys
    import jax
    from mbjax.models import EnsembleConfig, ModelTrainConfig
    from mbjax.sharding import jit_over_seeds, seed_sharding, vmap_over_seeds
    from mbjax.agents import EnvConfig, MPCConfig, ObjectiveConfig, make_mpc_agent
    from mbjax.planners import MPPIConfig
    from mbjax.runner.run import read_metrics, run

    assert jax.local_device_count() == 8, jax.devices()
    out = sys.argv[1]
    base = MPCConfig(
        preset="tiny", env=EnvConfig(name="pendulum", episode_length=50),
        model=EnsembleConfig(num_members=2, num_elites=2, hidden_sizes=(32, 32),
                             probabilistic=False, weight_decay=()),
        model_train=ModelTrainConfig(batch_size=32, max_epochs=5),
        planner=MPPIConfig(horizon=10, population=32, kappa=1.0, beta=0.7, sigma=1.0),
        objective=ObjectiveConfig(num_particles=2),
        num_envs=2, num_iterations=2, buffer_capacity=2000, num_seeds=4, out_dir=out)
    result = {}
    # one device; all 8 as 4 seed groups x 2 data devices (seeds alone split over 4
    # devices is the all-reduce count below: compiled, not run, to keep the test cheap)
    for name, devices, data in (("one", 1, 1), ("mixed", 0, 2)):
        run(dataclasses.replace(base, devices=devices, data_parallel=data, run_name=name))
        result[name] = read_metrics(f"{out}/{name}")
    # Resuming the sharded run from its first checkpoint gives the same metrics.
    part = dataclasses.replace(base, devices=0, data_parallel=2, run_name="part")
    run(part, stop_after=1)
    run(part, resume=f"{out}/part")
    result["resumed"] = read_metrics(f"{out}/part")
    # Float all-reduces in the compiled iteration: none when only seeds are split (they
    # never talk; vmapped while loops only agree on their stop flag, a pred[] reduce);
    # model gradients and candidate returns summed over devices when a seed's data is.
    trainer = make_mpc_agent(base)
    counts = {}
    for devices, data in ((4, 1), (8, 8)):
        sharding = seed_sharding(4, devices, data)
        init = jit_over_seeds(vmap_over_seeds(trainer.init, sharding), sharding)
        keys = jax.device_put(jax.random.split(jax.random.PRNGKey(0), 4), sharding)
        step = jit_over_seeds(vmap_over_seeds(trainer.train_iteration, sharding), sharding)
        hlo = step.lower(init(keys)).compile().as_text()
        counts[f"{devices}x{data}"] = sum(
            "f32" in line.split("all-reduce(")[0]
            for line in hlo.splitlines() if "all-reduce(" in line)
    result["all_reduce"] = counts
    print("RESULT" + json.dumps(result))
""")


def run_on_devices(script: str, devices: int, tmp_path, timeout: int) -> tuple[dict, str]:
    """Runs ``script`` with ``devices`` forced CPU host devices; (its RESULT json, its
    output on one line: rich may wrap lines)."""
    env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "")
                                      + f" --xla_force_host_platform_device_count={devices}"),
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(l for l in out.stdout.splitlines() if l.startswith("RESULT"))
    return json.loads(line[len("RESULT"):]), " ".join(out.stdout.split())


@pytest.mark.slow
def test_seeds_and_data_on_eight_devices_equal_one_device(tmp_path):
    result, text = run_on_devices(SCRIPT, 8, tmp_path, timeout=600)
    assert "x 8 devices (4 seeds x 2 data)" in text
    key = lambda r: (r["seed"], r["iteration"])
    one, mixed, resumed = (sorted(result[k], key=key) for k in ("one", "mixed", "resumed"))
    assert [key(r) for r in one] == [key(r) for r in mixed] == [key(r) for r in resumed]
    assert len(one) == 8  # 4 seeds x 2 iterations
    for a, c, d in zip(one, mixed, resumed):
        for k in ("return_mean", "model/train_loss", "env_steps"):
            # Per-device kernels and the order of the gradient sum differ in rounding only.
            assert c[k] == pytest.approx(a[k], rel=1e-3, abs=1e-3), (k, a, c)
            assert d[k] == c[k], (k, c, d)  # resume is exact on the same sharding
    assert result["all_reduce"]["4x1"] == 0, result["all_reduce"]
    assert result["all_reduce"]["8x8"] > 0, result["all_reduce"]


AGENTS_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    from mbjax.cli import main
    from mbjax.runner.run import read_metrics

    assert jax.local_device_count() == 4, jax.devices()
    out = sys.argv[1]
    tiny = {
        "mbpo-cpu": ["--env.episode-length", "20", "--steps-per-iteration", "20",
                     "--model-train-every", "10", "--init-steps", "100",
                     "--rollouts-per-step", "2", "--updates-per-step", "2",
                     "--num-iterations", "2", "--eval-envs", "2",
                     "--rollout-schedule", "0", "2", "1", "2", "--model.num-members", "3",
                     "--model.num-elites", "2", "--model.hidden-sizes", "16", "16",
                     "--model-train.max-epochs", "2", "--sac.hidden-sizes", "16", "16",
                     "--sac.batch-size", "32"],
        "mpc-distill-cpu": ["--env.episode-length", "20", "--num-iterations", "2",
                            "--planner.population", "16", "--planner.horizon", "8",
                            "--student-updates", "20", "--num-envs", "2", "--eval-envs", "2"],
    }
    result = {}
    for preset, args in tiny.items():
        # 4 devices as 2 seed groups x 2 data devices splits both ways at once
        for name, devices, data in (("one", "1", "1"), ("data", "0", "2")):
            run_name = f"{preset}-{name}"
            assert main(["train", preset, *args, "--num-seeds", "4", "--devices", devices,
                         "--data-parallel", data, "--out-dir", out,
                         "--run-name", run_name]) == 0
            result[run_name] = read_metrics(f"{out}/{run_name}")
    print("RESULT" + json.dumps(result))
""")


@pytest.mark.slow
def test_mbpo_and_distillation_on_four_devices_equal_one_device(tmp_path):
    """`mbjax train mbpo-cpu --devices 0 --data-parallel 2` (4 forced host devices: 2 seed
    groups x 2 data devices) gives the 1-device metrics; the same for distillation."""
    result, text = run_on_devices(AGENTS_SCRIPT, 4, tmp_path, timeout=800)
    assert "x 4 devices (2 seeds x 2 data)" in text
    key = lambda r: (r["seed"], r["iteration"])
    for preset, fields in (("mbpo-cpu", ("return_mean", "sac/critic_loss",
                                         "model/train_loss")),
                           ("mpc-distill-cpu", ("return_mean", "student/train_loss"))):
        one, data = (sorted(result[f"{preset}-{n}"], key=key) for n in ("one", "data"))
        assert len(one) == 8 and [key(r) for r in one] == [key(r) for r in data]
        for a, c in zip(one, data):
            for k in fields:
                assert c[k] == pytest.approx(a[k], rel=1e-3, abs=1e-3), (preset, k, a, c)


def test_seed_sharding_validates_counts():
    assert seed_sharding(3, 1) is None  # one device: plain jit
    with pytest.raises(ValueError, match="only 1 cpu"):
        seed_sharding(4, 8)
    with pytest.raises(ValueError, match=">= 0"):
        seed_sharding(4, -1)
    with pytest.raises(ValueError, match="data_parallel must be >= 1"):
        seed_sharding(4, 1, 0)
    with pytest.raises(ValueError, match="multiple of data_parallel"):
        seed_sharding(4, 1, 2)


def test_shard_along_data_is_identity_without_a_mesh():
    import jax.numpy as jnp

    from mbjax.sharding import data_parallel_size, shard_along_data

    x = {"a": jnp.ones((4, 3)), "b": jnp.ones(5)}
    assert data_parallel_size() == 1
    assert shard_along_data(x) is x
