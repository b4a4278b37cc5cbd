"""The configs every agent shares: one run config, the env, the planning objective.

A run = the shared run fields, declared once in ``RunConfig`` (which preset, seeds, where
the run directory goes, checkpoints, wandb, devices, data parallelism, several processes,
the env and how many iterations), + the algorithm's own fields. Each agent's config
subclasses ``RunConfig`` (``MPCConfig``, ``MBPOConfig``, ``DistillConfig``, or a user's
own), so every agent gets every run feature and the CLI flags stay flat
(``mbjax train mbpo-cpu --devices 0 --sac.actor-learning-rate 1e-3``). We chose
inheritance over a nested ``RunConfig(agent=...)`` field to keep those flags (and every
existing ``config.json``) as they were; the runner only ever reads ``RunConfig`` fields.

Configs are frozen dataclasses; invalid values fail at construction, naming the field.
``config_to_dict`` / ``config_from_dict`` are the one (de)serialiser of run configs: the
agent is found by the ``algorithm`` tag, a planner by its ``kind``; unknown keys are
errors; ``config.json`` files written before the algorithm layer (flat planner fields,
no ``algorithm`` tag) are converted by ``upgrade_legacy_config``.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, ClassVar, Literal

from mbjax.models.base import ModelSpec, model_spec
from mbjax.planners import PlannerSpec, planner_spec
from mbjax.planners.objectives import ObjectiveParams
from mbjax.planners.risk import RISK_MEASURES

Propagation = Literal["ts_inf", "ts1", "expectation"]
RiskMeasure = Literal["mean", "worst", "cvar", "mean_std"]  # RISK_MEASURES


def require_at_least(config, minimum: int, *fields: str, prefix: str = "") -> None:
    """``<prefix><field> must be >= minimum, got <value>`` for the first field below it."""
    for f in fields:
        if getattr(config, f) < minimum:
            raise ValueError(f"{prefix}{f} must be >= {minimum}, got {getattr(config, f)}")


RESET_MODES = ("fresh", "cached")
SIMULATORS = ("jax", "mujoco")  # ObjectiveConfig.simulator


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """Which environment, and how episodes are cut."""

    name: str = "pendulum"
    """Registered environment name (``mbjax envs``)."""
    episode_length: int = 0
    """Control steps per episode; 0 = the task's default."""
    action_repeat: int = 1
    """Repeat each action this many times (reward summed)."""
    reset_mode: Literal["fresh", "cached"] = "fresh"
    """Auto-reset of an episode that ends early (``EpisodeWrapper``): "fresh" draws a new
    initial state (one ``reset`` per env step under vmap: a whole ``mjx.make_data`` on MJX
    tasks), "cached" restarts the env from its episode's first state (no reset cost;
    each iteration's episodes still start from fresh draws)."""

    options: str = ""
    """Task options passed to the env's constructor, ``key=value`` pairs separated by
    commas (values are Python literals, else strings), e.g. ``reward=turn,wrist_weight=1``
    on ``hand_baoding``; ``mbjax envs`` and each env's docstring list them. Empty = the
    task's defaults."""

    def __post_init__(self):
        self.parsed_options()  # a malformed pair fails here, with the pair named
        if self.episode_length < 0:
            raise ValueError(f"env.episode_length must be >= 0, got {self.episode_length}")
        if self.action_repeat < 1:
            raise ValueError(f"env.action_repeat must be >= 1, got {self.action_repeat}")
        if self.reset_mode not in RESET_MODES:
            raise ValueError(f"env.reset_mode must be one of {', '.join(RESET_MODES)}, got "
                             f"{self.reset_mode!r}")


    def parsed_options(self) -> dict[str, Any]:
        """``options`` as keyword arguments: "a=1,b=turn" -> {"a": 1, "b": "turn"}."""
        return parse_options(self.options, "env.options")


def parse_options(text: str, what: str) -> dict[str, Any]:
    """Comma-separated ``key=value`` pairs -> dict; each value a Python literal (number,
    bool, None, quoted string) or else the plain string. Raises ValueError naming the bad
    pair."""
    import ast

    out: dict[str, Any] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = (x.strip() for x in pair.partition("="))
        if not sep or not key.isidentifier():
            raise ValueError(f"{what}: {pair!r} is not a key=value pair (e.g. "
                             "'reward=turn,wrist_weight=1')")
        if key in out:
            raise ValueError(f"{what}: {key!r} is given twice")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


@dataclasses.dataclass(frozen=True)
class WandbConfig:
    """Weights & Biases logging: off unless asked for; never required."""

    mode: Literal["disabled", "offline", "online"] = "disabled"
    project: str = "mbjax"
    entity: str = ""

    def __post_init__(self):
        if self.mode not in ("disabled", "offline", "online"):
            raise ValueError(f"wandb.mode must be disabled, offline or online, got "
                             f"{self.mode!r}")


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """Several processes / hosts in one run (``mbjax.distributed``); off by default."""

    enabled: bool = False
    """Call jax.distributed.initialize; with the fields below left empty JAX detects
    SLURM, Open MPI, Kubernetes and Cloud TPU pods (and reads JAX_COORDINATOR_ADDRESS)."""
    coordinator_address: str = ""
    """HOST:PORT of process 0 (the same on every process)."""
    num_processes: int = 0
    """Number of processes (0 = detect)."""
    process_id: int = -1
    """This process's id in [0, num_processes) (-1 = detect)."""
    timeout_s: int = 300
    """Seconds to wait for all processes to connect."""

    def __post_init__(self):
        if self.num_processes < 0:
            raise ValueError(f"distributed.num_processes must be >= 0, got "
                             f"{self.num_processes}")
        if self.timeout_s < 1:
            raise ValueError(f"distributed.timeout_s must be >= 1, got {self.timeout_s}")
        if self.num_processes and not -1 <= self.process_id < self.num_processes:
            raise ValueError(f"distributed.process_id must be in [0, {self.num_processes}) "
                             f"(or -1 to detect), got {self.process_id}")


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    """How a planner scores action sequences with a learned model
    (``mbjax.planners.make_tunable_model_objective``) or on the simulator. ``discount``,
    ``uncertainty_penalty``, ``risk_aversion`` and ``cvar_alpha`` are traced
    (``ObjectiveParams``): sweeps vmap them. ``risk`` aggregates the returns over the
    particles of a learned model, or over ``num_randomized`` simulators with randomised
    physical parameters when planning on the simulator (``mbjax.planners.risk``)."""

    num_particles: int = 3
    """Particles per candidate (a multiple of the ensemble size for ts modes)."""
    propagation: Propagation = "ts_inf"
    """ts_inf | ts1 | expectation (PETS, Chua et al. 2018)."""
    discount: float = 1.0
    uncertainty_penalty: float = 0.0
    """lambda of -lambda * ensemble disagreement per step."""
    risk_aversion: float = 0.0
    """k of mean - k std over particles (risk mean_std)."""
    risk: RiskMeasure = "mean_std"
    """mean | worst | cvar | mean_std: the risk measure over particles / randomised
    simulators (mean_std with risk_aversion 0 is the mean)."""
    cvar_alpha: float = 1.0
    """CVaR level alpha in (0, 1] for risk cvar: the mean of the worst alpha-fraction."""
    num_randomized: int = 0
    """M simulators with randomised physical parameters for true-dynamics planning
    (0 = the nominal simulator only)."""
    randomization_scale: float = 0.1
    """Relative half-width s of the uniform randomisation p (1 + s U(-1, 1)), in [0, 1)."""
    simulator: Literal["jax", "mujoco"] = "jax"
    """What a true-dynamics planner rolls its candidates out on: "jax", the task env's own
    JAX step (MJX for the MuJoCo tasks), or "mujoco", native MuJoCo threads through a host
    callback (hand tasks only, ~10x faster than MJX on a CPU, no gradients;
    ``mbjax.envs.hand.native``). The closed loop always steps the task env."""

    def __post_init__(self):
        if self.num_particles < 1:
            raise ValueError(f"objective.num_particles must be >= 1, got "
                             f"{self.num_particles}")
        if self.propagation not in ("ts_inf", "ts1", "expectation"):
            raise ValueError(f"objective.propagation must be ts_inf, ts1 or expectation, "
                             f"got {self.propagation!r}")
        if not 0.0 < self.discount <= 1.0:
            raise ValueError(f"objective.discount must be in (0, 1], got {self.discount}")
        require_at_least(self, 0, "uncertainty_penalty", "risk_aversion", "num_randomized",
                         prefix="objective.")
        if self.risk not in RISK_MEASURES:
            raise ValueError(f"objective.risk must be one of {', '.join(RISK_MEASURES)}, "
                             f"got {self.risk!r}")
        if not 0.0 < self.cvar_alpha <= 1.0:
            raise ValueError(f"objective.cvar_alpha must be in (0, 1], got {self.cvar_alpha}")
        if not 0.0 <= self.randomization_scale < 1.0:
            raise ValueError(f"objective.randomization_scale must be in [0, 1), got "
                             f"{self.randomization_scale}")
        if self.simulator not in SIMULATORS:
            raise ValueError(f"objective.simulator must be one of {', '.join(SIMULATORS)}, "
                             f"got {self.simulator!r}")
        if self.simulator == "mujoco" and self.num_randomized:
            raise ValueError("objective.simulator 'mujoco' plans on the nominal hand model; "
                             "randomised simulators (objective.num_randomized > 0) need "
                             "objective.simulator 'jax'")
        if self.risk_aversion and self.risk != "mean_std":
            raise ValueError(f"objective.risk_aversion is the k of risk mean_std; it would be "
                             f"ignored with objective.risk {self.risk!r}: set it to 0")
        if self.cvar_alpha != 1.0 and self.risk != "cvar":
            raise ValueError(f"objective.cvar_alpha is the level of risk cvar; it would be "
                             f"ignored with objective.risk {self.risk!r}: set it to 1")

    @property
    def with_risk(self) -> bool:
        """Whether the risk measure differs from the plain mean (computed when on)."""
        return self.risk != "mean_std" or self.risk_aversion > 0

    def check_planning_on(self, num_members: int | None) -> None:
        """Checks the objective against what it plans on: a learned model of
        ``num_members`` members, or the simulator (None; deterministic, so a risk measure
        needs ``num_randomized`` > 0 randomised simulators)."""
        if num_members is not None:
            self.check_particles(num_members)
            self.check_learned_model()
        elif self.uncertainty_penalty:
            raise ValueError("objective.uncertainty_penalty: disagreement penalties need a "
                             "learned model; the simulator (true_dynamics) is deterministic: "
                             "set it to 0")
        elif self.with_risk and self.risk != "mean" and not self.num_randomized:
            raise ValueError(f"objective.risk {self.risk!r} with objective.risk_aversion "
                             f"{self.risk_aversion}: risk measures need a learned model or "
                             "objective.num_randomized > 0 randomised simulators; the "
                             "nominal simulator (true_dynamics) is deterministic")

    def check_learned_model(self) -> None:
        """Planning on a learned model: its risk is over particles, not simulators."""
        if self.simulator != "jax":
            raise ValueError(f"objective.simulator {self.simulator!r} chooses the simulator "
                             "of true-dynamics planning (true_dynamics=True); this run plans "
                             "on a learned model: leave it at 'jax'")
        if self.num_randomized:
            raise ValueError("objective.num_randomized > 0 is supported for true-dynamics "
                             "planning (true_dynamics=True) only; on a learned model the "
                             "risk measure is over its particles: set it to 0")

    def check_particles(self, num_members: int) -> None:
        """TS propagation needs num_particles to be a multiple of the ensemble size."""
        if self.propagation != "expectation" and self.num_particles % num_members:
            raise ValueError(
                f"objective.num_particles ({self.num_particles}) must be a multiple of "
                f"model.num_members ({num_members}) for {self.propagation}")


def objective_params(config: ObjectiveConfig) -> ObjectiveParams:
    """The traced floats of ``config`` (``mbjax.planners.ObjectiveParams``)."""
    return ObjectiveParams(discount=config.discount,
                           uncertainty_penalty=config.uncertainty_penalty,
                           risk_aversion=config.risk_aversion,
                           cvar_alpha=config.cvar_alpha)


OBJECTIVE_TRACED_FIELDS = ("objective.discount", "objective.uncertainty_penalty",
                           "objective.risk_aversion", "objective.cvar_alpha")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The fields every run has, whatever the algorithm. Subclasses add their own fields
    and set ``algorithm`` (their registered name, ``mbjax.agents.register_agent``)."""

    algorithm: ClassVar[str] = ""
    """The agent's registered name (a class attribute, written to config.json)."""

    preset: str = ""
    """Name of the preset this config came from (for the record)."""
    env: EnvConfig = EnvConfig()
    num_envs: int = 1
    """Parallel environments (vmapped)."""
    num_iterations: int = 10
    seed: int = 0
    num_seeds: int = 1
    """Independent seeds trained at once (vmapped): seed, seed + 1, ..."""
    out_dir: str = "runs"
    run_name: str = ""
    """Run directory name under out_dir; empty = <preset>-<env>-seed<seed>."""
    checkpoint_every: int = 1
    """Save a checkpoint every this many iterations (0 = only at the end)."""
    checkpoint_async: bool = True
    """Write checkpoints on a background thread: the run waits for the state's copy to host
    memory, not for the write, which overlaps the next iteration (one write at a time;
    the last is awaited before the run returns). Multi-process runs always write in the
    foreground (their saves synchronise the processes)."""
    wandb: WandbConfig = WandbConfig()
    devices: int = 1
    """Devices the run is spread over (0 = all; of every process under multi-host)."""
    data_parallel: int = 1
    """Devices per seed: each seed's planner candidates and model minibatches are split
    over this many devices (gradients all-reduced); seeds split over devices /
    data_parallel groups, so num_seeds must be a multiple of that (``mbjax.sharding``)."""
    distributed: DistributedConfig = DistributedConfig()
    check_memory: bool = True
    """Before the run starts, compare the memory its compiled programs need with what the
    device has free (``mbjax.utils.memory``) and stop with an error if it will not fit."""

    def __post_init__(self):
        require_at_least(self, 1, "num_envs", "num_iterations", "num_seeds", "data_parallel")
        require_at_least(self, 0, "checkpoint_every", "devices")

    @property
    def default_run_name(self) -> str:
        name = self.preset or self.algorithm
        return self.run_name or f"{name}-{self.env.name.replace('/', '_')}-seed{self.seed}"

    @property
    def description(self) -> str:
        """A few words for ``mbjax presets`` and the run banner (agents refine it)."""
        return self.algorithm


# Fields that change how a run is computed, not what it computes: a checkpoint may be
# resumed with other values (e.g. on a machine with another number of devices).
RUNTIME_FIELDS = ("devices", "data_parallel", "distributed", "check_memory",
                  "checkpoint_async")


# ---------------------------------------------------------------------------------------
# (De)serialisation.


class ConfigError(ValueError):
    """A stored config (a run's config.json) that cannot be read back."""


def config_to_dict(config: RunConfig) -> dict:
    """JSON-ready dict of a run config, with its ``algorithm`` tag first."""
    return {"algorithm": config.algorithm,
            **json.loads(json.dumps(dataclasses.asdict(config)))}


def _resolve_class(cls, values: dict, where: str):
    """The concrete dataclass for a field typed ``cls``: a planner or model spec by its
    ``kind`` (a model without one is the built-in ensemble)."""
    if isinstance(cls, type) and issubclass(cls, ModelSpec):
        try:
            return model_spec(values.get("kind", "ensemble"))
        except KeyError as err:
            raise ConfigError(f"{where}kind: {err.args[0]}") from None

    if isinstance(cls, type) and issubclass(cls, PlannerSpec):
        kind = values.get("kind")
        if not isinstance(kind, str):
            raise ConfigError(f"{where}kind: missing (which planner?)")
        try:
            return planner_spec(kind)
        except KeyError as err:
            raise ConfigError(f"{where}kind: {err.args[0]}") from None
    return cls


def dataclass_from_dict(cls, values: Any, where: str = ""):
    """Builds dataclass ``cls`` from nested dicts (lists -> tuples); every unknown key,
    wrong type or invalid value raises ``ConfigError`` naming the dotted field."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where.rstrip('.') or 'config'}: expected a mapping, got "
                          f"{type(values).__name__}")
    cls = _resolve_class(cls, values, where)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields) - {"algorithm"})
    if unknown:
        raise ConfigError(f"{where}{unknown[0]}: unknown field of {cls.__name__} "
                          f"(valid: {', '.join(fields)})")
    kwargs = {}
    for name, value in values.items():
        if name not in fields:
            continue
        t = hints[name]
        if dataclasses.is_dataclass(t):
            value = dataclass_from_dict(t, value, f"{where}{name}.")
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (ValueError, TypeError, KeyError) as err:
        raise ConfigError(f"{where}{err.args[0] if err.args else err}") from None


def upgrade_legacy_config(d: dict) -> dict:
    """A config.json dict from before the algorithm layer -> today's layout.

    Then: no ``algorithm`` tag meant the MPC loop; one flat ``planner`` held every
    planner's fields plus the objective's (num_particles, propagation, discount,
    uncertainty_penalty, risk_aversion) and ``replan_every``. MBPO planned with its
    critic's discount (``sac.discount``). Dicts already in today's layout pass unchanged.
    """
    d = dict(d)
    d.setdefault("algorithm", "mpc")
    planner = d.get("planner")
    if not isinstance(planner, dict) or "objective" in d or "kind" not in planner:
        return d
    planner = dict(planner)
    objective = {k: planner.pop(k) for k in ("num_particles", "propagation", "discount",
                                             "uncertainty_penalty", "risk_aversion")
                 if k in planner}
    replan_every = planner.pop("replan_every", 1)
    if d["algorithm"] == "mpc":
        d["replan_every"] = replan_every
    if d["algorithm"] == "mbpo":
        objective["discount"] = d.get("sac", {}).get("discount", 0.99)
    try:
        spec = planner_spec(planner["kind"])
    except KeyError as err:
        raise ConfigError(f"planner.kind: {err.args[0]}") from None
    names = {f.name for f in dataclasses.fields(spec)}
    if "population" in planner and "population" not in names and "num_restarts" in names:
        planner["num_restarts"] = planner["population"]  # the old gradient planner's restarts
    d["planner"] = {k: v for k, v in planner.items() if k in names}
    d["objective"] = objective
    return d
