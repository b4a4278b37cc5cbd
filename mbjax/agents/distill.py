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

``make_distill_train(config)`` returns a trainer with the ``init / train_iteration /
train / evaluate`` interface of ``mbjax.training.loop.Trainer``, so ``mbjax train
mpc-distill`` runs it with the usual run directory and checkpoints.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

import mbjax.envs as envs
import mbjax.planners as P
from mbjax.buffers import as_dataset, make_replay_buffer
from mbjax.envs.wrappers import EpisodeWrapper
from mbjax.models.ensemble import EnsembleConfig, EnsembleModel
from mbjax.models.training import ModelTrainConfig, make_model_trainer
from mbjax.networks.mlp import ACTIVATIONS, ensemble_mlp_init, mlp_apply
from mbjax.training.config import EnvConfig, PlannerConfig, WandbConfig
from mbjax.types import PRNGKey, Transition


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Planner distillation with DAgger. Defaults: a CPU-sized pendulum swing-up with the
    true-simulator MPPI teacher of the ``true-dynamics-mpc-cpu`` preset."""

    algorithm: Literal["distill"] = "distill"
    """Tag that tells the run directory which trainer to build (leave as is)."""
    preset: str = "mpc-distill"
    env: EnvConfig = EnvConfig(name="pendulum")
    planner: PlannerConfig = PlannerConfig(kind="mppi", horizon=25, population=128,
                                           kappa=1.0, beta=0.7, sigma=1.0, num_particles=3)
    """The teacher's planner."""
    true_dynamics: bool = True
    """Teacher plans on the true simulator; False: on an ensemble fitted to the data."""
    model: EnsembleConfig = EnsembleConfig(num_members=3, num_elites=3, hidden_sizes=(64, 64),
                                           activation="silu", probabilistic=False,
                                           weight_decay=())
    model_train: ModelTrainConfig = ModelTrainConfig(batch_size=64, max_epochs=20)
    prefill_episodes: int = 1
    """Random episodes per env before the first iteration (learned teacher only)."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Student MLP."""
    activation: str = "relu"
    learning_rate: float = 1e-3
    batch_size: int = 256
    student_updates: int = 500
    """Adam steps on the aggregated dataset per iteration."""
    beta_decay: float = 0.3
    """DAgger mixing: iteration i executes the teacher with probability beta_decay^i."""
    num_envs: int = 4
    episodes_per_iteration: int = 1
    num_iterations: int = 6
    dataset_capacity: int = 50_000
    buffer_capacity: int = 50_000
    """Real transitions kept for the learned teacher's model."""
    eval_envs: int = 4
    seed: int = 0
    num_seeds: int = 1
    out_dir: str = "runs"
    run_name: str = ""
    checkpoint_every: int = 1
    wandb: WandbConfig = WandbConfig()

    def __post_init__(self):
        for f in ("student_updates", "num_envs", "episodes_per_iteration", "num_iterations",
                  "dataset_capacity", "buffer_capacity", "eval_envs", "num_seeds",
                  "batch_size"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be >= 1, got {getattr(self, f)}")
        if not 0.0 <= self.beta_decay <= 1.0:
            raise ValueError(f"beta_decay must be in [0, 1], got {self.beta_decay}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be > 0")
        if self.prefill_episodes < 0 or self.checkpoint_every < 0:
            raise ValueError("prefill_episodes and checkpoint_every must be >= 0")
        if (not self.true_dynamics and self.planner.propagation != "expectation"
                and self.planner.num_particles % self.model.num_members):
            raise ValueError(f"planner.num_particles ({self.planner.num_particles}) must be "
                             f"a multiple of model.num_members ({self.model.num_members})")

    @property
    def default_run_name(self) -> str:
        return self.run_name or f"{self.preset}-{self.env.name.replace('/', '_')}-seed{self.seed}"

    @property
    def description(self) -> str:
        return f"distill {self.planner.kind}" + ("" if self.true_dynamics else " (model)")


@struct.dataclass
class DistillState:
    student: Any  # MLP layers (E = 1)
    opt_state: Any
    dataset: Any  # replay-buffer state of {"obs", "action"} labels
    real_buffer: Any  # real transitions (learned teacher) or None
    model_state: Any  # the teacher's ensemble or None
    key: PRNGKey
    iteration: jax.Array
    env_steps: jax.Array


class DistillTrainer(NamedTuple):
    init: Any
    train_iteration: Any
    train: Any
    evaluate: Any  # (state, key) -> student returns [eval_envs]
    evaluate_teacher: Any  # (state, key) -> teacher MPC returns [eval_envs]
    student_act: Any  # (student params, obs [..., O]) -> action [..., A]
    teacher_plan: Any  # (state, env_state (unbatched), planner_state, key) -> (a, pstate)
    planner: P.Planner
    env: envs.Env
    eval_env: envs.Env
    task_env: envs.Env
    config: DistillConfig


def make_distill_train(config: DistillConfig, task_env: envs.Env | None = None
                       ) -> DistillTrainer:
    """Builds the compiled DAgger loop for ``config``; see the module docstring."""
    from mbjax.training.loop import _strip_episode_info, first_episode_return, make_planner

    cfg = config
    task = task_env if task_env is not None else envs.make(cfg.env.name)
    if cfg.env.action_repeat > 1:
        task = envs.ActionRepeat(task, cfg.env.action_repeat)
    L = cfg.env.episode_length or getattr(task, "default_episode_length", 1000)
    N = cfg.num_envs
    env = envs.VmapWrapper(EpisodeWrapper(task, L), N)
    eval_env = envs.VmapWrapper(EpisodeWrapper(task, L), cfg.eval_envs)
    obs_size, action_size = task.observation_size, task.action_size
    low = jnp.asarray(task.action_low, jnp.float32)
    high = jnp.asarray(task.action_high, jnp.float32)
    mid, half = 0.5 * (high + low), 0.5 * (high - low)
    optimizer = optax.adam(cfg.learning_rate)

    model = model_trainer = None
    if cfg.true_dynamics:
        objective = P.make_env_objective(task, cfg.planner.discount)
        observe = _strip_episode_info
    else:
        if not task.has_reward_fn and not cfg.model.learn_reward:
            raise ValueError(f"{cfg.env.name} has no reward function of observations; set "
                             "--model.learn-reward True")
        model = EnsembleModel(obs_size, action_size, cfg.model)
        model_trainer = make_model_trainer(model, cfg.model_train)
        objective = P.make_model_objective(
            model, task.reward_fn if task.has_reward_fn else None,
            task.termination_fn if task.has_reward_fn else None,
            num_particles=cfg.planner.num_particles, propagation=cfg.planner.propagation,
            discount=cfg.planner.discount)
        observe = lambda s: s.obs
    planner = make_planner(cfg.planner, objective, low, high)
    batched = P.batch(planner)
    dataset = make_replay_buffer(cfg.dataset_capacity, N)
    real_buffer = make_replay_buffer(cfg.buffer_capacity, N)
    label_example = {"obs": jnp.zeros(obs_size), "action": jnp.zeros(action_size)}
    example = Transition(obs=jnp.zeros(obs_size), action=jnp.zeros(action_size),
                         reward=jnp.zeros(()), next_obs=jnp.zeros(obs_size),
                         done=jnp.zeros(()), truncated=jnp.zeros(()))
    random_policy = envs.uniform_random_policy(env)

    def student_act(student, obs):
        return mid + half * jnp.tanh(mlp_apply(student, obs, cfg.activation))

    def init(key: PRNGKey) -> DistillState:
        key, key_student, key_model, key_prefill = jax.random.split(key, 4)
        student = ensemble_mlp_init(key_student, 1,
                                    (obs_size, *cfg.hidden_sizes, action_size))
        real_state = model_state = None
        env_steps = 0
        if not cfg.true_dynamics:
            real_state = real_buffer.init(example)
            model_state = model_trainer.init(key_model)

            def prefill(buf, key):
                key_reset, key_roll = jax.random.split(key)
                _, transitions = envs.rollout(env, random_policy, env.reset(key_reset),
                                              key_roll, L)
                return real_buffer.add(buf, transitions), None

            if cfg.prefill_episodes > 0:
                real_state, _ = jax.lax.scan(prefill, real_state, jax.random.split(
                    key_prefill, cfg.prefill_episodes))
            env_steps = cfg.prefill_episodes * L * N
        return DistillState(student=student, opt_state=optimizer.init(student),
                            dataset=dataset.init(label_example), real_buffer=real_state,
                            model_state=model_state, key=key,
                            iteration=jnp.zeros((), jnp.int32),
                            env_steps=jnp.asarray(env_steps, jnp.int32))

    def teacher_plan(ts: DistillState, env_state, planner_state, key):
        """The teacher's action for ONE env state (with episode info) and its new state."""
        action, planner_state, _ = planner.plan(planner.default_params, ts.model_state,
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
            label, pstate, _ = batched.plan(planner.default_params, ts.model_state, pstate,
                                            observe(env_state), jax.random.split(key_plan, N))
            student = student_act(ts.student, env_state.obs)
            use_teacher = jax.random.uniform(key_mix, (N, 1)) < beta
            action = jnp.where(use_teacher, label, student)
            next_state = env.step(env_state, action)
            tr = envs.transition(env_state, action, next_state)
            err = jnp.sum(((student - label) / half) ** 2, axis=-1)
            return (next_state, pstate), ({"obs": env_state.obs, "action": label}, tr, err)

        _, (labels, transitions, err) = jax.lax.scan(step, (env_state, pstate),
                                                     jax.random.split(key_steps, L))
        data = dataset.add(ts.dataset, labels)
        real = real_buffer.add(ts.real_buffer, transitions) if ts.real_buffer is not None \
            else None
        ret, _ = first_episode_return(transitions)
        return (ts.replace(dataset=data, real_buffer=real), beta), (ret, jnp.mean(err))

    def train_student(ts: DistillState, key):
        def body(c, key):
            student, opt_state = c
            batch = dataset.sample(ts.dataset, key, cfg.batch_size)

            def loss_fn(student):
                pred = student_act(student, batch["obs"])
                return jnp.mean(jnp.sum(((pred - batch["action"]) / half) ** 2, axis=-1))

            loss, grads = jax.value_and_grad(loss_fn)(student)
            updates, opt_state = optimizer.update(grads, opt_state, student)
            return (optax.apply_updates(student, updates), opt_state), loss

        (student, opt_state), losses = jax.lax.scan(
            body, (ts.student, ts.opt_state), jax.random.split(key, cfg.student_updates))
        return ts.replace(student=student, opt_state=opt_state), losses

    def run_student(ts: DistillState, key):
        key_reset, key_run = jax.random.split(key)
        policy = lambda obs, key: student_act(ts.student, obs)
        _, transitions = envs.rollout(eval_env, policy, eval_env.reset(key_reset), key_run, L)
        return first_episode_return(transitions)[0]

    def evaluate_teacher(ts: DistillState, key):
        """Teacher MPC episodes from the same start states as ``evaluate(ts, key)``."""
        key_reset, key_rest = jax.random.split(key)
        key_plan, key_run = jax.random.split(key_rest)
        eval_planner = P.batch(planner)
        pstate = eval_planner.init(jax.random.split(key_plan, cfg.eval_envs))
        _, _, transitions, _ = P.mpc(eval_env, eval_planner, planner.default_params,
                                     ts.model_state, eval_env.reset(key_reset), pstate,
                                     key_run, L, observe=observe)
        return first_episode_return(transitions)[0]

    def train_iteration(ts: DistillState):
        key, key_model, key_collect, key_train, key_eval = jax.random.split(ts.key, 5)
        metrics = {}
        if not cfg.true_dynamics:
            data, num_valid = as_dataset(ts.real_buffer)
            model_state, metrics = model_trainer.train(ts.model_state, data, num_valid,
                                                       key_model)
            ts = ts.replace(model_state=model_state)
        beta = jnp.asarray(cfg.beta_decay, jnp.float32) ** ts.iteration
        (ts, _), (collect_returns, heldout_err) = jax.lax.scan(
            collect_episode, (ts, beta),
            jax.random.split(key_collect, cfg.episodes_per_iteration))
        ts, losses = train_student(ts, key_train)
        returns = run_student(ts, key_eval)
        ts = ts.replace(key=key, iteration=ts.iteration + 1,
                        env_steps=ts.env_steps + cfg.episodes_per_iteration * L * N)
        metrics = dict(metrics)
        metrics.update({
            "iteration": ts.iteration,
            "env_steps": ts.env_steps,
            "return_mean": jnp.mean(returns),
            "return_min": jnp.min(returns),
            "return_max": jnp.max(returns),
            "collect/return": jnp.mean(collect_returns),
            "collect/teacher_probability": beta,
            "student/heldout_action_mse": jnp.mean(heldout_err),
            "student/train_loss": losses[-1],
            "student/dataset_size": ts.dataset.size * N,
        })
        return ts, metrics

    def evaluate(ts: DistillState, key: PRNGKey):
        """Deterministic student episodes from fresh resets; returns [eval_envs]."""
        return run_student(ts, key)

    def train(key: PRNGKey):
        ts = init(key)
        return jax.lax.scan(lambda s, _: train_iteration(s), ts, None,
                            length=cfg.num_iterations)

    return DistillTrainer(init=init, train_iteration=train_iteration, train=train,
                          evaluate=evaluate, evaluate_teacher=evaluate_teacher,
                          student_act=student_act, teacher_plan=teacher_plan,
                          planner=planner, env=env, eval_env=eval_env, task_env=task,
                          config=cfg)
