"""Distilling an MPC planner into a policy network with DAgger (the notes' "Option 1").

The teacher is closed-loop MPC (any ``mbjax.planners`` planner) on the true simulator
(``true_dynamics=True``) or on a learned ensemble refitted every iteration on all real
data; the student is a deterministic MLP a = mid + half tanh(f_phi(s)). Each iteration
(Ross et al. 2011, DAgger):

    1. (learned teacher) fit the ensemble on the real buffer
    2. run N envs for E episodes; at every visited state the planner computes its action
       a*(s) (the label); the env executes a* with probability beta_i = beta_decay^i and
       the student's pi(s) otherwise (i = 0: pure teacher, then mostly the student, so
       the labels cover the states the student itself reaches)
    3. aggregate (s, a*(s)) into a fixed-capacity dataset and regress the student on all
       of it: ``student_updates`` Adam steps on mean ||(pi(s) - a*) / half||^2
    4. evaluate the deterministic student from fresh resets.

``metrics["student/heldout_action_mse"]`` is the student's error on the labels of step 2,
measured before step 3 trains on them (normalised action units, [-1, 1]^A). At test time
the student costs one MLP forward per action against the planner's
population x horizon x particles model steps (``experiments/mbpo/distill.py`` times both).

``make_distill_agent(config)`` returns an agent (``mbjax.agents.base``: init /
train_iteration / train / evaluate / default_hparams), so ``mbjax train mpc-distill``
runs it with the usual run directory, checkpoints, devices and sweeps. Traced floats
(``DistillHParams``): the teacher planner's params, the objective's, the model and
student learning rates and the DAgger ``beta_decay``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

import mbjax.envs as envs
import mbjax.planners as P
from mbjax.agents import base
from mbjax.agents.config import EnvConfig, ObjectiveConfig, RunConfig, require_at_least
from mbjax.buffers import as_dataset, make_replay_buffer
from mbjax.envs.wrappers import strip_episode_info
from mbjax.models.base import ModelSpec, build_model
from mbjax.models.ensemble import EnsembleConfig
from mbjax.models.training import ModelTrainConfig
from mbjax.networks.mlp import ACTIVATIONS, ensemble_mlp_init, mlp_apply
from mbjax.planners import MPPIConfig, PlannerSpec, traced_fields
from mbjax.planners.objectives import ObjectiveParams
from mbjax.types import PRNGKey


@dataclasses.dataclass(frozen=True)
class DistillConfig(RunConfig):
    """Planner distillation with DAgger. Defaults: a CPU-sized pendulum swing-up with the
    true-simulator MPPI teacher of the ``true-dynamics-mpc-cpu`` preset."""

    algorithm = "distill"

    preset: str = "mpc-distill"
    env: EnvConfig = EnvConfig(name="pendulum")
    num_envs: int = 4
    num_iterations: int = 6
    planner: PlannerSpec = MPPIConfig(horizon=25, population=128, kappa=1.0, beta=0.7,
                                      sigma=1.0)
    """The teacher's planner (any registered kind)."""
    objective: ObjectiveConfig = ObjectiveConfig(num_particles=3)
    """The teacher's objective: on the learned model, or on the simulator (its discount,
    and its risk over ``num_randomized`` randomised simulators)."""
    true_dynamics: bool = True
    """Teacher plans on the true simulator; False: on an ensemble fitted to the data."""
    model: ModelSpec = EnsembleConfig(num_members=3, num_elites=3, hidden_sizes=(64, 64),
                                           activation="silu", probabilistic=False,
                                           weight_decay=())
    model_train: ModelTrainConfig = ModelTrainConfig(batch_size=64, max_epochs=20)
    prefill_episodes: int = 1
    """Random episodes per env before the first iteration (learned teacher only)."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Student MLP."""
    activation: str = "relu"
    learning_rate: float = 1e-3
    """Student Adam step size (traced)."""
    batch_size: int = 256
    student_updates: int = 500
    """Adam steps on the aggregated dataset per iteration."""
    beta_decay: float = 0.3
    """DAgger mixing: iteration i executes the teacher with probability beta_decay^i."""
    episodes_per_iteration: int = 1
    dataset_capacity: int = 50_000
    buffer_capacity: int = 50_000
    """Real transitions kept for the learned teacher's model."""
    eval_envs: int = 4
    proposal_fraction: float = 0.0
    """Fraction of the teacher's candidates that are rollouts of the student (traced;
    TD-MPC2 / GPC, ``mbjax.planners.proposals``); > 0 builds the proposals (a sweep
    over it needs a base value > 0). 0: the plain teacher (DAgger, Ross et al. 2011)."""
    proposal_noise: float = 0.1
    """Std of the proposals' action noise, in half-ranges of the bounds."""
    planner_chunk_size: int = 0
    """Plan this many envs at a time (``planners.batch``'s ``chunk_size``: less memory,
    the same plans); 0 = all ``num_envs`` in one batch."""

    def __post_init__(self):
        super().__post_init__()
        require_at_least(self, 0, "planner_chunk_size")
        P.check_proposals(self.proposal_fraction, self.proposal_noise, self.planner)
        self.objective.check_planning_on(None if self.true_dynamics  # the teacher's
                                         else self.model.num_members)
        require_at_least(self, 1, "student_updates", "episodes_per_iteration",
                         "dataset_capacity", "buffer_capacity", "eval_envs", "batch_size")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"hidden_sizes must be positive, got {self.hidden_sizes}")
        if not 0.0 <= self.beta_decay <= 1.0:
            raise ValueError(f"beta_decay must be in [0, 1], got {self.beta_decay}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; valid: "
                             f"{', '.join(ACTIVATIONS)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.prefill_episodes < 0:
            raise ValueError(f"prefill_episodes must be >= 0, got {self.prefill_episodes}")

    @property
    def description(self) -> str:
        return f"distill {self.planner.kind}" + ("" if self.true_dynamics else " (model)")


@struct.dataclass
class DistillHParams:
    """Distillation's traced floats."""

    planner: Any
    objective: ObjectiveParams
    model_learning_rate: Any
    learning_rate: Any  # the student's Adam step size
    beta_decay: Any
    proposal_fraction: Any = 0.0


def distill_hparams(config: DistillConfig) -> DistillHParams:
    return DistillHParams(planner=config.planner.default_params(),
                          objective=base.objective_params(config.objective),
                          model_learning_rate=config.model_train.learning_rate,
                          learning_rate=config.learning_rate, beta_decay=config.beta_decay,
                          proposal_fraction=config.proposal_fraction)


def distill_traced_fields(config: DistillConfig) -> tuple[str, ...]:
    return (tuple(f"planner.{f}" for f in traced_fields(type(config.planner)))
            + base.OBJECTIVE_TRACED_FIELDS
            + ("model_train.learning_rate", "learning_rate", "beta_decay",
               "proposal_fraction"))


@struct.dataclass
class DistillState:
    student: Any  # MLP layers (E = 1)
    opt_state: Any
    dataset: Any  # replay-buffer state of {"obs", "action"} labels
    real_buffer: Any  # real transitions (learned teacher) or None
    model_state: Any  # the teacher's ensemble or None
    hparams: DistillHParams
    key: PRNGKey
    iteration: jax.Array
    env_steps: jax.Array


class Student(NamedTuple):
    """The student policy a = mid + half tanh(f_phi(s)) and its regression step."""

    init: Any  # (key) -> layers
    act: Any  # (layers, obs [..., O]) -> action [..., A]
    fit: Any  # (layers, opt_state, sample(key) -> batch, key, learning_rate) -> (...)
    optimizer: optax.GradientTransformation  # scale_by_adam (opt_state = optimizer.init)
    half: jax.Array  # [A] half the action range: errors are in units of it


def make_student(obs_size: int, action_size: int, low, high, hidden_sizes, activation: str,
                 num_updates: int) -> Student:
    """``fit`` runs ``num_updates`` Adam steps on mean ||(pi(s) - a*) / half||^2 over
    batches drawn by ``sample(key)``; returns (layers, opt_state, losses [num_updates])."""
    low, high = jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32)
    mid, half = 0.5 * (high + low), 0.5 * (high - low)
    adam = optax.scale_by_adam()  # the step size is traced (times -learning_rate)

    def init(key):
        return ensemble_mlp_init(key, 1, (obs_size, *hidden_sizes, action_size))

    def act(layers, obs):
        return mid + half * jnp.tanh(mlp_apply(layers, obs, activation))

    def fit(layers, opt_state, sample, key, learning_rate):
        def body(c, key):
            layers, opt_state = c
            batch = sample(key)

            def loss_fn(layers):
                pred = act(layers, batch["obs"])
                return jnp.mean(jnp.sum(((pred - batch["action"]) / half) ** 2, axis=-1))

            loss, grads = jax.value_and_grad(loss_fn)(layers)
            direction, opt_state = adam.update(grads, opt_state, layers)
            step = jax.tree_util.tree_map(lambda u: u * -learning_rate, direction)
            return (optax.apply_updates(layers, step), opt_state), loss

        (layers, opt_state), losses = jax.lax.scan(body, (layers, opt_state),
                                                   jax.random.split(key, num_updates))
        return layers, opt_state, losses

    return Student(init=init, act=act, fit=fit, optimizer=adam, half=half)


class DistillAgent(NamedTuple):
    init: Any
    train_iteration: Any
    train: Any
    evaluate: Any  # (state, key) -> student returns [eval_envs]
    evaluate_teacher: Any  # (state, key) -> teacher MPC returns [eval_envs]
    default_hparams: DistillHParams
    student_act: Any  # (student params, obs [..., O]) -> action [..., A]
    teacher_plan: Any  # (state, env_state (unbatched), planner_state, key) -> (a, pstate)
    planner: P.Planner
    env: envs.Env
    eval_env: envs.Env
    task_env: envs.Env
    config: DistillConfig


def make_distill_agent(config: DistillConfig, task_env: envs.Env | None = None
                       ) -> DistillAgent:
    """Builds the compiled DAgger loop for ``config``; see the module docstring."""
    cfg = config
    task = base.make_task(cfg, task_env)
    L, N = task.episode_length, cfg.num_envs
    env, eval_env = base.batched_env(task, N), base.batched_env(task, cfg.eval_envs)
    base.check_buffer_holds(cfg.dataset_capacity, N, task.episode_length, cfg.batch_size,
                            "dataset_capacity")
    if not cfg.true_dynamics:
        base.check_buffer_holds(cfg.buffer_capacity, N, task.episode_length,
                                cfg.model_train.batch_size)
    obs_size, action_size = task.env.observation_size, task.env.action_size
    student = make_student(obs_size, action_size, task.env.action_low, task.env.action_high,
                           cfg.hidden_sizes, cfg.activation, cfg.student_updates)
    adam, half = student.optimizer, student.half
    model = model_trainer = None
    if cfg.true_dynamics:
        objective = base.simulator_objective(task, cfg.objective)
        observe = strip_episode_info
    else:
        model_trainer = build_model(cfg.model, obs_size, action_size, cfg.model_train)
        model = model_trainer.model
        objective = base.model_objective(model, task, cfg.model, cfg.objective, cfg.env.name)
        observe = lambda s: s.obs
    proposing = cfg.proposal_fraction > 0
    if proposing:  # the student's rollouts join the teacher's candidates
        step = P.env_step(task.env) if cfg.true_dynamics else P.model_mean_step(model)
        objective = P.make_proposal_objective(
            objective, step, student.act, task.env.action_low, task.env.action_high,
            cfg.proposal_noise, observe=(lambda s: s.obs) if cfg.true_dynamics else
            (lambda o: o))
    planner = cfg.planner.build(objective, task.env.action_low, task.env.action_high)
    batched = base.batch_planner(planner, cfg.planner_chunk_size)
    dataset = make_replay_buffer(cfg.dataset_capacity, N)
    real_buffer = make_replay_buffer(cfg.buffer_capacity, N)
    label_example = {"obs": jnp.zeros(obs_size), "action": jnp.zeros(action_size)}
    default_hparams = distill_hparams(cfg)

    def teacher_inputs(ts: DistillState):
        inputs = (ts.model_state, ts.hparams.objective, None)
        if proposing:
            return P.ProposalInputs(inputs, ts.student, ts.hparams.proposal_fraction)
        return inputs

    def init(key: PRNGKey, hparams: DistillHParams | None = None) -> DistillState:
        key, key_student, key_model, key_prefill = jax.random.split(key, 4)
        layers = student.init(key_student)
        real_state = model_state = None
        env_steps = 0
        if not cfg.true_dynamics:
            real_state = base.random_prefill(
                env, real_buffer, real_buffer.init(base.example_transition(task.env)),
                key_prefill, cfg.prefill_episodes, L)
            model_state = model_trainer.init(key_model)
            env_steps = cfg.prefill_episodes * L * N
        return DistillState(student=layers, opt_state=adam.init(layers),
                            dataset=dataset.init(label_example), real_buffer=real_state,
                            model_state=model_state,
                            hparams=default_hparams if hparams is None else hparams, key=key,
                            iteration=jnp.zeros((), jnp.int32),
                            env_steps=jnp.asarray(env_steps, jnp.int32))

    def teacher_plan(ts: DistillState, env_state, planner_state, key):
        """The teacher's action for ONE env state (with episode info) and its new state."""
        action, planner_state, _ = planner.plan(ts.hparams.planner, teacher_inputs(ts),
                                                planner_state, observe(env_state), key)
        return action, planner_state

    def collect_episode(carry, key):
        ts, beta = carry
        key_reset, key_plan, key_steps = jax.random.split(key, 3)
        env_state = env.reset(key_reset)
        pstate = batched.init(jax.random.split(key_plan, N))

        def step(c, key):
            env_state, pstate = c
            key_plan, key_mix = jax.random.split(key)
            label, pstate, _ = batched.plan(ts.hparams.planner, teacher_inputs(ts), pstate,
                                            observe(env_state), jax.random.split(key_plan, N))
            action_student = student.act(ts.student, env_state.obs)
            use_teacher = jax.random.uniform(key_mix, (N, 1)) < beta
            action = jnp.where(use_teacher, label, action_student)
            next_state = env.step(env_state, action)
            tr = envs.transition(env_state, action, next_state)
            err = jnp.sum(((action_student - label) / half) ** 2, axis=-1)
            return (next_state, pstate), ({"obs": env_state.obs, "action": label}, tr, err)

        _, (labels, transitions, err) = jax.lax.scan(step, (env_state, pstate),
                                                     jax.random.split(key_steps, L))
        data = dataset.add(ts.dataset, labels)
        real = real_buffer.add(ts.real_buffer, transitions) if ts.real_buffer is not None \
            else None
        ret, _ = base.first_episode_return(transitions)
        return (ts.replace(dataset=data, real_buffer=real), beta), (ret, jnp.mean(err))

    def student_episodes(ts: DistillState, key):
        """The student's evaluation episodes: (returns [E], success measures {name: [E]})."""
        key_reset, key_run = jax.random.split(key)
        policy = lambda obs, key: student.act(ts.student, obs)
        _, transitions = envs.rollout(eval_env, policy, eval_env.reset(key_reset), key_run, L)
        return (base.first_episode_return(transitions)[0],
                base.first_episode_measures(task.env, transitions))

    def run_student(ts: DistillState, key):
        return student_episodes(ts, key)[0]

    def evaluate_teacher(ts: DistillState, key):
        """Teacher MPC episodes from the same start states as ``evaluate(ts, key)``."""
        key_reset, key_rest = jax.random.split(key)
        key_plan, key_run = jax.random.split(key_rest)
        pstate = batched.init(jax.random.split(key_plan, cfg.eval_envs))
        _, _, transitions, _ = P.mpc(eval_env, batched, ts.hparams.planner, teacher_inputs(ts),
                                     eval_env.reset(key_reset), pstate, key_run, L,
                                     observe=observe)
        return base.first_episode_return(transitions)[0]

    def train_iteration(ts: DistillState):
        key, key_model, key_collect, key_train, key_eval = jax.random.split(ts.key, 5)
        metrics = {}
        if not cfg.true_dynamics:
            data, num_valid = as_dataset(ts.real_buffer)
            model_state, metrics = model_trainer.train(
                ts.model_state, data, num_valid, key_model,
                learning_rate=ts.hparams.model_learning_rate)
            ts = ts.replace(model_state=model_state)
        beta = jnp.asarray(ts.hparams.beta_decay, jnp.float32) ** ts.iteration
        (ts, _), (collect_returns, heldout_err) = jax.lax.scan(
            collect_episode, (ts, beta),
            jax.random.split(key_collect, cfg.episodes_per_iteration))
        layers, opt_state, losses = student.fit(
            ts.student, ts.opt_state, lambda k: dataset.sample(ts.dataset, k, cfg.batch_size),
            key_train, ts.hparams.learning_rate)
        ts = ts.replace(student=layers, opt_state=opt_state)
        returns, measures = student_episodes(ts, key_eval)
        ts = ts.replace(key=key, iteration=ts.iteration + 1,
                        env_steps=ts.env_steps + cfg.episodes_per_iteration * L * N)
        metrics = dict(metrics)
        metrics.update({
            "iteration": ts.iteration, "env_steps": ts.env_steps,
            "return_mean": jnp.mean(returns), "return_min": jnp.min(returns),
            "return_max": jnp.max(returns), "collect/return": jnp.mean(collect_returns),
            "collect/teacher_probability": beta,
            "student/heldout_action_mse": jnp.mean(heldout_err),
            "student/train_loss": losses[-1], "student/dataset_size": ts.dataset.size * N,
            **base.measure_metrics(measures),
        })
        return ts, metrics

    return DistillAgent(init=init, train_iteration=train_iteration,
                        train=base.scan_train(init, train_iteration, cfg.num_iterations),
                        evaluate=run_student, evaluate_teacher=evaluate_teacher,
                        default_hparams=default_hparams, student_act=student.act,
                        teacher_plan=teacher_plan, planner=planner, env=env,
                        eval_env=eval_env, task_env=task.env, config=cfg)


base.register_agent(DistillConfig, make_distill_agent, distill_traced_fields)
