"""mbjax sweep: float planner axes vmapped with the seeds, shape axes as separate runs."""

import json

import pytest

from mbjax.cli import main
from mbjax.runner.run import read_metrics, run
from mbjax.runner.sweep import SweepSpec, load_spec, programs, run_sweep, set_field

TINY = {
    "env.name": "pendulum", "env.episode_length": 50, "model.num_members": 2,
    "model.num_elites": 2, "model.hidden_sizes": [32, 32], "model.probabilistic": False,
    "model.weight_decay": [], "model_train.batch_size": 32, "model_train.max_epochs": 5,
    "planner.population": 32, "objective.num_particles": 2, "planner.beta": 0.7,
    "planner.sigma": 1.0, "num_envs": 2, "num_iterations": 2, "buffer_capacity": 2000,
}


def test_spec_validation_and_program_split(tmp_path):
    spec = SweepSpec(preset="pddm-cpu", overrides=TINY, num_seeds=2,
                     grid={"planner.kappa": [1.0, 10.0], "planner.horizon": [5, 10]})
    progs = programs(spec)
    assert len(progs) == 2  # horizon changes shapes; kappa is vmapped
    config, shape_point, float_points = progs[0]
    assert shape_point == {"planner.horizon": 5} and config.planner.horizon == 5
    assert float_points == [{"planner.kappa": 1.0}, {"planner.kappa": 10.0}]
    assert config.num_seeds == 4 and config.model.hidden_sizes == (32, 32)
    with pytest.raises(KeyError, match="planner.kapa"):
        programs(SweepSpec(grid={"planner.kapa": [1.0]}))
    with pytest.raises(ValueError, match="non-empty"):
        SweepSpec(grid={"planner.kappa": []})
    with pytest.raises(KeyError):
        SweepSpec(grid={"planner.kappa": [1.0]}, preset="nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: {planner.kappa: [1.0]}\nseeds: 3\n")
    with pytest.raises(ValueError, match="unknown spec keys"):
        load_spec(bad)
    with pytest.raises(ValueError):  # the config's own validation still runs
        set_field(config, "planner.horizon", 0)


@pytest.mark.slow
def test_sweep_two_by_two_equals_separate_runs(tmp_path):
    spec_path = tmp_path / "spec.yaml"
    spec = {"preset": "pddm-cpu", "overrides": TINY, "num_seeds": 2, "name": "s",
            "out_dir": str(tmp_path), "grid": {"planner.kappa": [1.0, 10.0],
                                               "planner.horizon": [5, 10]}}
    import yaml

    spec_path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(spec_path), "--workers", "2"]) == 0  # 2 programs at once
    root = tmp_path / "s"
    assert sorted(p.name for p in root.glob("program_*.log")) == ["program_0.log",
                                                                  "program_1.log"]
    results = json.loads((root / "sweep.json").read_text())["results"]
    assert len(results) == 4 and all(len(r["returns"]) == 2 for r in results)
    assert (root / "sweep.png").stat().st_size > 1000
    assert (root / "sweep.md").read_text().count("\n") == 6
    # A vmapped point equals a plain run with that kappa and the same seeds.
    config, _, _ = programs(load_spec(spec_path))[0]
    plain = set_field(set_field(config, "planner.kappa", 10.0), "num_seeds", 2)
    plain = set_field(set_field(plain, "run_name", "plain"), "out_dir", str(tmp_path))
    run(plain)
    ref = sorted(read_metrics(tmp_path / "plain"), key=lambda r: (r["seed"], r["iteration"]))
    swept = sorted([r for r in read_metrics(root / "horizon=5")
                    if r["point"] == "horizon=5,kappa=10.0"],
                   key=lambda r: (r["seed"], r["iteration"]))
    assert len(ref) == len(swept) == 4
    for a, b in zip(ref, swept):
        assert b["return_mean"] == pytest.approx(a["return_mean"], rel=1e-3, abs=1e-2)
    # The two kappas differ (the floats really reach the planner).
    finals = {r["point"]: r["return_mean"] for r in results}
    assert finals["horizon=5,kappa=1.0"] != finals["horizon=5,kappa=10.0"]


@pytest.mark.slow
def test_wandb_sweep_config_and_agent_run_offline(tmp_path, monkeypatch):
    """`mbjax sweep --wandb` writes a valid wandb sweep whose command, with one grid
    point's ${args} as `wandb agent` expands them, trains and logs to wandb (offline)."""
    import yaml

    spec = {"preset": "pddm-cpu", "overrides": dict(TINY, num_iterations=1), "num_seeds": 2,
            "name": "w", "out_dir": str(tmp_path),
            "grid": {"planner.kappa": [1.0, 10.0], "planner.horizon": [5, 10]}}
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(spec_path), "--wandb"]) == 0
    sweep = yaml.safe_load((tmp_path / "w" / "wandb_sweep.yaml").read_text())
    assert sweep["method"] == "grid" and sweep["metric"]["name"] == "return_last_mean"
    assert sweep["parameters"] == {"planner.kappa": {"values": [1.0, 10.0]},
                                   "planner.horizon": {"values": [5, 10]}}
    command = sweep["command"]
    assert command[:3] == ["${env}", "mbjax", "agent"] and command[-1] == "${args}"
    assert not (tmp_path / "w" / "sweep.json").exists()  # nothing trained yet

    # What `wandb agent` runs for the point (kappa 10, horizon 5):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    argv = command[2:-1] + ["--planner.kappa=10.0", "--planner.horizon=5"]
    assert main(argv) == 0
    run_dir = tmp_path / "w" / "agent" / "horizon=5,kappa=10.0"  # grid order (sorted)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["planner"]["kappa"] == 10.0 and config["planner"]["horizon"] == 5
    assert config["num_seeds"] == 2 and config["wandb"]["mode"] == "offline"
    assert len(read_metrics(run_dir)) == 2  # 2 seeds x 1 iteration
    # wandb's offline run (synced later with `wandb sync`) holds the logged metrics and
    # the sweep metric in its summary.
    records = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(records) == 1, sorted(str(p) for p in run_dir.rglob("*"))[:20]
    data = records[0].read_bytes()
    assert b"return_last_mean" in data and b"return_mean" in data
    # Bad arguments say what the agent expects.
    assert main(["agent", "--planner.kappa", "1.0"]) == 2


MBPO_TINY = {"env.episode_length": 20, "steps_per_iteration": 20, "model_train_every": 10,
             "init_steps": 100, "rollouts_per_step": 2, "updates_per_step": 2,
             "num_iterations": 2, "eval_envs": 2, "rollout_schedule": [0, 2, 1, 2],
             "model.num_members": 3, "model.num_elites": 2, "model.hidden_sizes": [16, 16],
             "model_train.max_epochs": 2, "sac.hidden_sizes": [16, 16],
             "sac.batch_size": 32}


@pytest.mark.slow
def test_mbpo_sweep_vmaps_real_ratio_and_a_point_equals_its_plain_run(tmp_path):
    """MBPO's floats are traced: a grid over real_ratio x actor learning rate is ONE
    program (4 vmapped points), and each point equals a plain run of that config."""
    spec = SweepSpec(preset="mbpo-cpu", overrides=MBPO_TINY, num_seeds=1, name="m",
                     out_dir=str(tmp_path), grid={"real_ratio": [0.05, 0.5],
                                                  "sac.actor_learning_rate": [3e-4, 3e-3]})
    todo = programs(spec)
    assert len(todo) == 1 and len(todo[0][2]) == 4  # one compiled program
    results = run_sweep(spec)
    finals = {r["point"]: r["return_mean"] for r in results}
    assert len(set(finals.values())) == 4, finals  # the floats reach the program
    config = set_field(set_field(todo[0][0], "real_ratio", 0.5), "num_seeds", 1)
    config = set_field(set_field(config, "sac.actor_learning_rate", 3e-3), "run_name", "plain")
    plain = run(set_field(config, "out_dir", str(tmp_path)))
    point = "real_ratio=0.5,actor_learning_rate=0.003"
    assert finals[point] == pytest.approx(plain["return_last_mean"], rel=1e-3, abs=1e-2)
