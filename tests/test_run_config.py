"""Run configs: every stored config.json loads (old layouts too), round-trips, and a bad
one is an error naming the file and the field. Nothing here compiles."""

import dataclasses
import json
from pathlib import Path

import pytest

from mbjax.agents import (
    AGENTS,
    ConfigError,
    MBPOConfig,
    MPCConfig,
    RunConfig,
    config_to_dict,
    make_agent,
    register_agent,
)
from mbjax.planners import CEMConfig, MPPIConfig
from mbjax.runner import presets
from mbjax.runner.run import config_from_dict, load_run_config

REPO = Path(__file__).resolve().parents[1]
COMMITTED = sorted(REPO.glob("experiments/**/config.json"))


def test_committed_run_configs_load_with_their_values():
    """The run directories committed under experiments/ were written by older code (flat
    planner fields, no algorithm tag): each loads, keeps its values, and round-trips."""
    assert len(COMMITTED) >= 20
    for path in COMMITTED:
        raw = json.loads(path.read_text())
        config = load_run_config(path.parent)
        assert config.algorithm == raw.get("algorithm", "mpc"), path
        assert config.num_iterations == raw["num_iterations"], path
        planner = raw["planner"]
        assert config.planner.kind == planner["kind"], path
        assert config.planner.horizon == planner["horizon"], path
        if "num_particles" in planner:  # the old flat layout
            assert config.objective.num_particles == planner["num_particles"], path
        if planner["kind"] == "mppi":
            assert (config.planner.kappa, config.planner.sigma) == (planner["kappa"],
                                                                    planner["sigma"]), path
        assert config_from_dict(config_to_dict(config)) == config, path


def test_every_preset_round_trips_through_json():
    for name in presets.names():
        config = presets.get(name)
        assert config_from_dict(json.loads(json.dumps(config_to_dict(config)))) == config


@pytest.mark.parametrize("text, message", [
    ('{"algorithm": "mpc", "num_iterations": 3', "not JSON"),
    ('{"algorithm": "mpc", "num_iteratons": 3}', "num_iteratons: unknown field of MPCConfig"),
    ('{"algorithm": "mpc", "planner": {"kind": "mppi", "sigma": -1.0}}',
     "planner.sigma must be > 0, got -1.0"),
    ('{"algorithm": "mpc", "planner": {"kind": "cme"}}', "planner.kind: unknown planner 'cme'"),
    ('{"algorithm": "mcp"}', "algorithm: unknown agent 'mcp'. Did you mean 'mpc'?"),
    ('{"algorithm": "mpc", "model": {"kind": "ensemble", "num_elites": 9}}', "num_elites"),
    ('{"algorithm": "mpc", "env": [1, 2]}', "env: expected a mapping"),
    ('[1, 2]', "expected a mapping"),
])
def test_bad_config_json_names_the_file_and_the_field(tmp_path, text, message):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_run_config(tmp_path)
    assert f"config.json in {tmp_path} is invalid" in str(info.value)
    assert message in str(info.value)


def test_agent_registry_names_errors_and_duplicates():
    assert {"mpc", "mbpo", "distill"} <= set(AGENTS.names())
    with pytest.raises(ValueError, match="agent 'mpc' is already registered"):
        register_agent(MPCConfig, make_agent, lambda c: ())
    with pytest.raises(TypeError, match="must subclass mbjax.agents.RunConfig"):
        register_agent(dict, make_agent, lambda c: ())

    @dataclasses.dataclass(frozen=True)
    class Untagged(RunConfig):
        pass

    with pytest.raises(ValueError, match="algorithm = '<name>'"):
        register_agent(Untagged, make_agent, lambda c: ())


def test_traced_fields_are_the_hparams_leaves():
    """What sweeps vmap: each agent's traced fields, and nothing shape-changing."""
    from mbjax.agents import agent_spec

    mpc = presets.get("pddm-cpu")
    fields = agent_spec(mpc).traced_fields(mpc)
    assert {"planner.kappa", "planner.beta", "planner.sigma", "objective.discount",
            "objective.uncertainty_penalty", "model_train.learning_rate"} <= set(fields)
    assert "planner.horizon" not in fields and "planner.population" not in fields
    mbpo = presets.get("mbpo-cpu")
    fields = agent_spec(mbpo).traced_fields(mbpo)
    assert {"real_ratio", "sac.actor_learning_rate", "sac.target_entropy"} <= set(fields)
    assert not any(f.startswith("planner.") for f in fields)  # acting="policy"
    value = presets.get("mpc-value-cpu")
    assert "planner.alpha" in agent_spec(value).traced_fields(value)


def test_configs_validate_fields_by_name():
    with pytest.raises(ValueError, match=r"objective.num_particles \(4\) must be a multiple "
                                         r"of model.num_members \(3\)"):
        dataclasses.replace(presets.get("pddm-cpu"),
                            objective=dataclasses.replace(MPCConfig().objective,
                                                          num_particles=4))
    with pytest.raises(ValueError, match="replan_every"):
        dataclasses.replace(presets.get("pddm-cpu"), replan_every=26)
    with pytest.raises(ValueError, match="need a learned model"):
        dataclasses.replace(presets.get("true-dynamics-mpc-cpu"),
                            objective=dataclasses.replace(MPCConfig().objective,
                                                          risk_aversion=1.0))
    with pytest.raises(ValueError, match="acting='mpc' plans on the model"):
        MBPOConfig(model_based=False, acting="mpc")
    assert isinstance(MBPOConfig().planner, CEMConfig)
    assert isinstance(MPCConfig().planner, MPPIConfig)


def test_nonsense_sizes_are_rejected_naming_the_field():
    """Decisions (issue: nonsense sizes): a buffer below one episode per env or below a
    minibatch is rejected when the agent is built (the episode length is known then); an
    empty model.hidden_sizes is rejected; the default weight decay fits any depth."""
    import jax
    import jax.numpy as jnp

    from mbjax.models import EnsembleConfig, EnsembleModel
    from mbjax.planners.base import check_bounds

    pddm = presets.get("pddm-cpu")  # pendulum: 200-step episodes, 2 envs
    with pytest.raises(ValueError, match=r"buffer_capacity \(300\) holds 150 steps per env, "
                                         r"less than one episode \(200 steps\)"):
        make_agent(dataclasses.replace(pddm, buffer_capacity=300))
    small_batch = dataclasses.replace(pddm, env=dataclasses.replace(pddm.env,
                                                                    episode_length=10),
                                      buffer_capacity=40)
    with pytest.raises(ValueError, match=r"must be >= the minibatch size \(64\)"):
        make_agent(small_batch)
    mbpo = presets.get("mbpo-cpu")
    with pytest.raises(ValueError, match="buffer_capacity"):
        make_agent(dataclasses.replace(mbpo, buffer_capacity=100))
    distill = presets.get("mpc-distill-cpu")
    with pytest.raises(ValueError, match="dataset_capacity"):
        make_agent(dataclasses.replace(distill, dataset_capacity=100))
    with pytest.raises(ValueError, match="model.hidden_sizes is empty"):
        EnsembleConfig(hidden_sizes=())
    two_layers = EnsembleConfig(hidden_sizes=(32, 32))  # used to fail: 5 PETS decays
    assert two_layers.layer_weight_decay == ()
    assert EnsembleConfig().layer_weight_decay == (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)
    model = EnsembleModel(3, 1, EnsembleConfig(hidden_sizes=(8, 8, 8, 8)))
    params = model.init_params(jax.random.PRNGKey(0))
    assert float(model.weight_decay_penalty(params)[0]) > 0  # the PETS schedule applies
    with pytest.raises(ValueError, match="action bounds must be finite"):
        check_bounds(jnp.array([-jnp.inf]), jnp.array([1.0]))


def test_model_registry_switch_and_errors():
    from mbjax.models import (
        MODELS,
        EnsembleConfig,
        ModelSpec,
        model_spec,
        register_model,
        switch_model,
    )

    @dataclasses.dataclass(frozen=True)
    class TinySpec(ModelSpec):
        kind: str = "test_tiny"
        width: int = 4

    register_model(TinySpec, lambda spec, o, a, t: None)
    try:
        assert model_spec("test_tiny") is TinySpec
        tiny = switch_model(EnsembleConfig(num_members=3, num_elites=2), "test_tiny")
        assert tiny == TinySpec(num_members=3, probabilistic=True)
        with pytest.raises(ValueError, match="model 'test_tiny' is already registered"):
            register_model(TinySpec, lambda spec, o, a, t: None)
        with pytest.raises(ValueError, match="belongs to TinySpec"):
            EnsembleConfig(kind="test_tiny")
        with pytest.raises(KeyError, match="Did you mean 'ensemble'"):
            model_spec("ensembel")
    finally:
        MODELS.unregister("test_tiny")
