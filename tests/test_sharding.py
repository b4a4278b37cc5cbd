"""Seeds spread over several devices (mbjax.sharding): same metrics as one device.

Runs in a subprocess with 4 forced CPU host devices (the flag must be set before JAX
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
    from mbjax.training import EnvConfig, PlannerConfig, TrainConfig
    from mbjax.training.run import read_metrics, run, list_checkpoints

    assert jax.local_device_count() == 4, jax.devices()
    out = sys.argv[1]
    base = TrainConfig(
        preset="tiny", env=EnvConfig(name="pendulum", episode_length=50),
        model=EnsembleConfig(num_members=2, num_elites=2, hidden_sizes=(32, 32),
                             probabilistic=False, weight_decay=()),
        model_train=ModelTrainConfig(batch_size=32, max_epochs=5),
        planner=PlannerConfig(kind="mppi", horizon=10, population=32, kappa=1.0, beta=0.7,
                              sigma=1.0, num_particles=2),
        num_envs=2, num_iterations=2, buffer_capacity=2000, num_seeds=4, out_dir=out)
    result = {}
    for name, devices in (("one", 1), ("all", 0)):
        run(dataclasses.replace(base, devices=devices, run_name=name))
        result[name] = read_metrics(f"{out}/{name}")
    # Resuming the sharded run from its first checkpoint gives the same metrics.
    part = dataclasses.replace(base, devices=0, run_name="part")
    run(part, stop_after=1)
    run(None, resume=f"{out}/part")
    result["resumed"] = read_metrics(f"{out}/part")
    print("RESULT" + json.dumps(result))
""")


@pytest.mark.slow
def test_seeds_on_four_devices_equal_one_device(tmp_path):
    env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "")
                                      + " --xla_force_host_platform_device_count=4"),
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(l for l in out.stdout.splitlines() if l.startswith("RESULT"))
    result = json.loads(line[len("RESULT"):])
    assert "x 4 devices" in " ".join(out.stdout.split())  # rich may wrap the line
    key = lambda r: (r["seed"], r["iteration"])
    one, many, resumed = (sorted(result[k], key=key) for k in ("one", "all", "resumed"))
    assert [key(r) for r in one] == [key(r) for r in many] == [key(r) for r in resumed]
    assert len(one) == 8  # 4 seeds x 2 iterations
    for a, b, c in zip(one, many, resumed):
        for k in ("return_mean", "model/train_loss", "env_steps"):
            # Per-device kernels may differ in float rounding only.
            assert b[k] == pytest.approx(a[k], rel=1e-3, abs=1e-3), (k, a, b)
            assert c[k] == b[k], (k, b, c)  # resume is exact on the same sharding


def test_seed_sharding_validates_counts():
    assert seed_sharding(3, 1) is None  # one device: plain jit
    with pytest.raises(ValueError, match="only 1 local"):
        seed_sharding(4, 8)
    with pytest.raises(ValueError, match=">= 0"):
        seed_sharding(4, -1)
