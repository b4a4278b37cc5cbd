"""Model-based policy optimisation (MBPO, Janner et al. 2019) as one compiled program.

SAC learns from short branched rollouts of a learned probabilistic ensemble that start
from states the agent has really visited (the notes' "Option C: partial trajectories from
all states in the data"). One iteration is one MBPO epoch of ``steps_per_iteration``
vector-env steps, in chunks of ``model_train_every`` (F) steps:

    every F env steps (start of a chunk):
      1. fit the ensemble on the real buffer (``mbjax.models.training``: bootstrap,
         holdout early stopping, elites)
      2. branched rollouts: F * M start states from the real buffer (``start_mode``),
         each step a' ~ pi(s), s' ~ N(mu_e, sigma_e^2) of ONE random elite e per sample,
         r = reward_fn, d = termination_fn; a rollout stops at a predicted termination
         (later steps are masked) and after k steps, k from the rollout schedule
         [start epoch, end epoch, min k, max k] (linear in the epoch, floored); the
         valid transitions go to a fixed-capacity model buffer from which only the newest
         ``model_retain_iterations`` epochs' worth (F * M * k per chunk) is sampled
    each env step: a ~ pi(s) (or an MPC action, ``acting="mpc"``), store the real
      transition, G SAC updates on batches of ``real_ratio`` real + the rest model data
    end of the iteration: deterministic-policy evaluation episodes.

``model_based=False`` is plain SAC on the real buffer: the model-free baseline at equal
env steps. Start modes (the notes' options): "A" = full-length rollouts (the episode
length) from initial states, "B" = short (scheduled k) rollouts from initial states,
"C" = short rollouts from all visited states (MBPO, the default). Initial states are the
rows of the real buffer that follow an episode end (or begin the stream).

``make_mbpo_train(config)`` returns ``MBPOTrainer(init, train_iteration, train,
evaluate, ...)`` with the interface of ``mbjax.training.loop.Trainer``: shapes never
change, so ``train_iteration`` compiles once, and ``jax.vmap`` over seeds works. The whole
state (SAC params and its three Adam states, the model and its Adam state, both buffers,
the running env, keys, the iteration = the rollout schedule's position) is one pytree,
so ``mbjax.training.run`` checkpoints and resumes it exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

import mbjax.envs as envs
import mbjax.planners as P
from mbjax.agents import base
from mbjax.agents.config import EnvConfig, ObjectiveConfig, RunConfig, require_at_least
from mbjax.agents.sac import SAC_TRACED_FIELDS, SACConfig, SACHParams, make_sac, sac_hparams
from mbjax.buffers import (
    as_dataset,
    make_replay_buffer,
    rollout_buffer_add,
    rollout_buffer_init,
    rollout_buffer_sample,
)
from mbjax.models.base import DynamicsModel, ModelSpec, build_model
from mbjax.models.ensemble import EnsembleConfig
from mbjax.models.training import ModelTrainConfig
from mbjax.planners import CEMConfig, PlannerSpec, traced_fields
from mbjax.planners.objectives import ObjectiveParams
from mbjax.types import Array, PRNGKey, Transition

StartMode = Literal["C", "B", "A"]


@dataclasses.dataclass(frozen=True)
class MBPOConfig(RunConfig):
    """MBPO (or plain SAC with ``model_based=False``). Defaults: MBPO on Hopper, Janner
    et al. 2019, App. C and the released configs (github.com/jannerm/mbpo,
    ``examples/config/hopper``): epochs of 1000 steps, 5000 random initial steps, model
    retrained every 250 steps, 400 rollouts per env step (100k per retraining), rollout
    schedule [20, 150, 1, 15], 20 SAC updates per env step on 5 % real data, model buffer
    retaining one epoch of rollouts, 7 members / 5 elites of 4 x 200 swish, SAC (256, 256),
    Adam 3e-4, tau 5e-3, gamma 0.99."""

    algorithm = "mbpo"

    preset: str = "mbpo"
    env: EnvConfig = EnvConfig(name="hopper")
    num_iterations: int = 125
    sac: SACConfig = SACConfig()
    model: ModelSpec = EnsembleConfig()
    model_train: ModelTrainConfig = ModelTrainConfig()
    model_based: bool = True
    """False: SAC on real data only (no model, no rollouts)."""
    steps_per_iteration: int = 1000
    """Vector-env steps per iteration (MBPO's epoch length)."""
    init_steps: int = 5000
    """Uniform-random env transitions (all envs together) before the first iteration."""
    updates_per_step: int = 20
    """G: SAC gradient updates per vector-env step."""
    model_train_every: int = 250
    """F: refit the model and redo the branched rollouts every F steps."""
    rollouts_per_step: int = 400
    """M: branched rollouts started per vector-env step (F * M start states per refit)."""
    rollout_schedule: tuple[int, int, int, int] = (20, 150, 1, 15)
    """[start epoch, end epoch, min k, max k]: k grows linearly between the epochs."""
    start_mode: StartMode = "C"
    """C: scheduled k from all visited states (MBPO); B: scheduled k from initial
    states; A: full episodes (episode length) from initial states."""
    real_ratio: float = 0.05
    """Fraction of real transitions in each SAC batch (the rest: model rollouts); traced."""
    model_retain_iterations: int = 1
    """Sample model data only from the rollouts of the newest this many iterations."""
    checkpoint_model_buffer: bool = True
    """Keep the model buffer (the branched rollouts, regenerable from the model and the
    real data) in checkpoints. Off: checkpoints are smaller (MBPO-Hopper: the model buffer
    is most of the state) and a resumed run starts from an empty model buffer, which the
    next refit refills, so it no longer equals the uninterrupted run exactly."""
    buffer_capacity: int = 1_000_000
    """Real transitions kept."""
    eval_envs: int = 5
    """Deterministic-policy evaluation episodes per iteration (parallel envs)."""
    acting: Literal["policy", "mpc"] = "policy"
    """policy: act with the SAC actor; mpc: plan on the model with a short horizon and
    the SAC critic as terminal value (``planner``, ``objective``), e.g. ``mpc-value``."""
    planner: PlannerSpec = CEMConfig(horizon=5, population=100, num_elites=10, iterations=3)
    """Planner for ``acting="mpc"`` (not built otherwise)."""
    objective: ObjectiveConfig = ObjectiveConfig(num_particles=5, discount=0.99)
    """Objective for ``acting="mpc"``; its discount should match the critic's
    ``sac.discount`` so the reward sum and the value tail are on one scale."""
    proposal_fraction: float = 0.0
    """``acting="mpc"``: fraction of the planner's candidates that are rollouts of the SAC
    actor's mean through the model (traced; TD-MPC2, ``mbjax.planners.proposals``); > 0
    builds the proposals (a sweep over it needs a base value > 0)."""
    proposal_noise: float = 0.1
    """Std of the proposals' action noise, in half-ranges of the bounds."""
    planner_chunk_size: int = 0
    """Plan this many envs at a time (``planners.batch``'s ``chunk_size``: less memory,
    the same plans); 0 = all ``num_envs`` in one batch (``acting="mpc"``)."""

    def __post_init__(self):
        super().__post_init__()
        require_at_least(self, 0, "planner_chunk_size")
        require_at_least(self, 1, "steps_per_iteration", "updates_per_step",
                         "model_train_every", "rollouts_per_step", "model_retain_iterations",
                         "buffer_capacity", "eval_envs")
        if self.init_steps < 0:
            raise ValueError(f"init_steps must be >= 0, got {self.init_steps}")
        if self.init_steps % self.num_envs:
            raise ValueError(f"init_steps ({self.init_steps}) must be a multiple of "
                             f"num_envs ({self.num_envs})")
        if self.steps_per_iteration % self.model_train_every:
            raise ValueError(f"steps_per_iteration ({self.steps_per_iteration}) must be a "
                             f"multiple of model_train_every ({self.model_train_every})")
        if len(self.rollout_schedule) != 4:
            raise ValueError("rollout_schedule needs 4 entries [start epoch, end epoch, "
                             f"min k, max k], got {self.rollout_schedule}")
        start, end, lo, hi = self.rollout_schedule
        if not 1 <= lo <= hi or end < start:
            raise ValueError("rollout_schedule needs 1 <= min k <= max k and start epoch "
                             f"<= end epoch, got {self.rollout_schedule}")
        if self.start_mode not in ("A", "B", "C"):
            raise ValueError(f"start_mode must be A, B or C, got {self.start_mode!r}")
        if not 0.0 <= self.real_ratio <= 1.0:
            raise ValueError(f"real_ratio must be in [0, 1], got {self.real_ratio}")
        if self.acting not in ("policy", "mpc"):
            raise ValueError(f"acting must be 'policy' or 'mpc', got {self.acting!r}")
        if self.acting == "mpc" and not self.model_based:
            raise ValueError("acting='mpc' plans on the model: it needs model_based=True")
        if self.acting == "mpc":
            self.objective.check_particles(self.model.num_members)
        self.objective.check_learned_model()  # MBPO never plans on the simulator
        P.check_proposals(self.proposal_fraction, self.proposal_noise, self.planner)
        if self.planner_chunk_size and self.acting != "mpc":
            raise ValueError("planner_chunk_size chunks the planner of acting='mpc'; with "
                             "acting='policy' no planner is built: leave it 0")
        if self.proposal_fraction > 0 and self.acting != "mpc":
            raise ValueError("proposal_fraction > 0 feeds the planner of acting='mpc'; "
                             "with acting='policy' there is no planner: set it to 0")
        if self.buffer_capacity < self.num_envs:
            raise ValueError(f"buffer_capacity ({self.buffer_capacity}) must be >= "
                             f"num_envs ({self.num_envs})")

    @property
    def description(self) -> str:
        """A few words for ``mbjax presets`` and the run banner."""
        if not self.model_based:
            return "sac"
        what = "mbpo" if self.acting == "policy" else f"{self.planner.kind}+V mpc"
        return what if self.start_mode == "C" else f"{what} ({self.start_mode})"


@struct.dataclass
class MBPOHParams:
    """MBPO's traced floats: SAC's, the real-data ratio, the model learning rate and,
    for ``acting="mpc"``, the planner's and the objective's."""

    sac: SACHParams
    real_ratio: Any
    model_learning_rate: Any
    planner: Any  # None unless acting == "mpc"
    objective: ObjectiveParams
    proposal_fraction: Any = 0.0


def mbpo_hparams(config: MBPOConfig, action_size: int) -> MBPOHParams:
    """The traced floats of ``config`` (``action_size``: SAC's default target entropy)."""
    return MBPOHParams(
        sac=sac_hparams(config.sac, action_size), real_ratio=config.real_ratio,
        model_learning_rate=config.model_train.learning_rate,
        planner=config.planner.default_params() if config.acting == "mpc" else None,
        objective=base.objective_params(config.objective),
        proposal_fraction=config.proposal_fraction)


def mbpo_traced_fields(config: MBPOConfig) -> tuple[str, ...]:
    """Dotted config fields held in ``MBPOHParams`` (vmapped by sweeps)."""
    fields = SAC_TRACED_FIELDS + ("real_ratio", "model_train.learning_rate")
    if config.acting == "mpc":
        fields += tuple(f"planner.{f}" for f in traced_fields(type(config.planner)))
        fields += base.OBJECTIVE_TRACED_FIELDS + ("proposal_fraction",)
    return fields


# ---------------------------------------------------------------------------------------
# The rollout schedule and the model buffer.


def rollout_length(schedule, epoch) -> Array:
    """MBPO's k(epoch) = floor(min_k + clip((epoch - a) / (b - a), 0, 1) (max_k - min_k))
    for schedule [a, b, min_k, max_k]; int32 [] (``epoch`` may be traced)."""
    start, end, lo, hi = schedule
    epoch = jnp.asarray(epoch, jnp.float32)
    if end > start:
        frac = jnp.clip((epoch - start) / (end - start), 0.0, 1.0)
    else:
        frac = (epoch >= start).astype(jnp.float32)
    return jnp.floor(lo + frac * (hi - lo)).astype(jnp.int32)


# ---------------------------------------------------------------------------------------
# Start states and branched rollouts.


def initial_state_mask(buffer_state) -> Array:
    """bool [C, N]: rows of a replay buffer (``mbjax.buffers``) holding the first
    transition of an episode: the row after an episode end of the same env, or the
    oldest row while the ring has not wrapped (the very first row of the stream)."""
    C, _ = buffer_state.episode_end.shape
    rows = jnp.arange(C)
    oldest = (buffer_state.insert_pos - buffer_state.size) % C
    age = (rows - oldest) % C  # 0 = oldest stored row
    valid = (age < buffer_state.size)[:, None]
    prev_end = jnp.roll(buffer_state.episode_end, 1, axis=0)  # row t-1 (mod C)
    first = jnp.where((rows == oldest)[:, None], buffer_state.size < C, prev_end)
    return valid & first


def sample_initial_obs(buffer_state, key: PRNGKey, batch_size: int) -> Array:
    """Observations of uniformly drawn episode-initial rows (``initial_state_mask``);
    falls back to uniform over all rows when none is stored. Returns [batch_size, O]."""
    mask = initial_state_mask(buffer_state)
    C, N = mask.shape
    flat_mask = mask.reshape(-1)
    prefix = jnp.cumsum(flat_mask, dtype=jnp.int32)
    count = prefix[-1]
    key_init, key_any = jax.random.split(key)
    u = jax.random.randint(key_init, (batch_size,), 0, jnp.maximum(count, 1))
    pick = jnp.searchsorted(prefix, u, side="right")
    anyrow = jax.random.randint(key_any, (batch_size,), 0,
                                jnp.maximum(buffer_state.size * N, 1))
    flat = jnp.where(count > 0, pick, anyrow)
    return buffer_state.data.obs[flat // N, flat % N]


def make_elite_step(model: DynamicsModel, reward_fn, termination_fn, known_next_obs=None):
    """step(model_state, obs [B, O], action [B, A], key) -> (next_obs, reward, done) [B]:
    each sample uses ONE uniformly drawn elite member and samples s' from its Gaussian
    (its mean for deterministic models). ``reward_fn``/``termination_fn`` None use the
    model's reward / termination heads. ``known_next_obs(obs, next_obs) -> next_obs``
    (``Env.known_next_obs``) sets the entries the task computes itself. A model state
    without ``elites`` (a custom model, ``mbjax.models.base``) draws from all its
    members."""

    def step(model_state, obs: Array, action: Array, key: PRNGKey):
        key_member, key_noise, key_reward = jax.random.split(key, 3)
        b = obs.shape[0]
        if hasattr(model_state, "elites") and hasattr(model_state, "params"):
            elites = model_state.elites
            # Predict with the elites only: slice the member axis of the parameters.
            elite_params = jax.tree_util.tree_map(lambda x: x[elites], model_state.params)
            pred = model.predict(model_state.replace(params=elite_params), obs, action)
            num = elites.shape[0]
        else:
            pred, num = model.predict(model_state, obs, action), model.num_members
        member = jax.random.randint(key_member, (b,), 0, num)
        rows = jnp.arange(b)
        mean = pred.next_obs_mean[member, rows]
        std = pred.next_obs_std[member, rows]
        next_obs = mean + std * jax.random.normal(key_noise, mean.shape)
        if known_next_obs is not None:
            next_obs = jax.vmap(known_next_obs)(obs, next_obs)
        if reward_fn is not None:
            reward = jax.vmap(reward_fn)(obs, action, next_obs)
        else:
            r_mu, r_std = pred.reward_mean[member, rows], pred.reward_std[member, rows]
            reward = r_mu + r_std * jax.random.normal(key_reward, r_mu.shape)
        if termination_fn is not None:
            done = jax.vmap(termination_fn)(obs, action, next_obs)
        elif pred.termination_prob is not None:
            done = (pred.termination_prob[member, rows] > 0.5).astype(jnp.float32)
        else:
            done = jnp.zeros(b)
        return next_obs, reward.astype(jnp.float32), jnp.asarray(done, jnp.float32)

    return step


def branched_rollouts(step, step_params, policy, obs0: Array, key: PRNGKey, length,
                      max_length: int) -> tuple[Transition, Array]:
    """Rolls B start states [B, O] forward up to ``length`` (<= ``max_length``) steps.

    ``policy(obs [B, O], key) -> action [B, A]``; ``step(step_params, obs, action, key) ->
    (next_obs, reward, done)`` (e.g. ``make_elite_step``). Step t of rollout b is valid iff
    t < ``length`` (may be traced), no earlier step of b terminated, and the prediction is
    finite; a terminating step itself is valid (it carries done = 1).

    The work is that of the valid steps, not of ``max_length``: a ``lax.while_loop`` runs
    step t only while t < ``length`` and some rollout is alive (MBPO's Hopper schedule has
    k = 1 for 20 epochs with max_length 15). Step t uses the t-th of
    ``jax.random.split(key, max_length)``, so a rollout does not depend on ``max_length``
    or on when the loop stops. Under ``vmap`` with a batched ``length`` the loop runs the
    largest one, masked per batch element.

    Returns (transitions with leaves [T, B, ...], valid bool [T, B]), T = max_length; the
    rows of steps that were not run are zeros and invalid.
    """
    b = obs0.shape[0]
    keys = jax.random.split(key, max_length)
    length = jnp.minimum(jnp.asarray(length, jnp.int32), max_length)

    def one_step(obs, alive, t):
        key_act, key_step = jax.random.split(keys[t])
        action = policy(obs, key_act)
        next_obs, reward, done = step(step_params, obs, action, key_step)
        finite = jnp.all(jnp.isfinite(next_obs), axis=-1) & jnp.isfinite(reward)
        valid = alive & finite
        tr = Transition(obs=obs, action=action, reward=jnp.where(finite, reward, 0.0),
                        next_obs=jnp.where(finite[:, None], next_obs, obs),
                        done=done, truncated=jnp.zeros_like(done))
        alive = valid & (done < 0.5)
        return jnp.where(alive[:, None], tr.next_obs, obs), alive, tr, valid

    # the output rows' shapes and dtypes, without running a step
    tr_row, valid_row = jax.eval_shape(lambda o: one_step(o, jnp.ones(b, bool), 0)[2:], obs0)
    out = jax.tree_util.tree_map(lambda x: jnp.zeros((max_length,) + x.shape, x.dtype),
                                 (tr_row, valid_row))

    def cond(carry):
        t, _, alive, _ = carry
        return (t < length) & jnp.any(alive)

    def body(carry):
        t, obs, alive, (trs, valids) = carry
        obs, alive_next, tr, valid = one_step(obs, alive, t)
        trs = jax.tree_util.tree_map(lambda buf, x: buf.at[t].set(x), trs, tr)
        return t + 1, obs, alive_next, (trs, valids.at[t].set(valid))

    _, _, _, (transitions, valid) = jax.lax.while_loop(
        cond, body, (jnp.zeros((), jnp.int32), obs0, jnp.ones(b, bool), out))
    return transitions, valid


# ---------------------------------------------------------------------------------------
# The training loop.


@struct.dataclass
class MBPOState:
    """Everything MBPO carries between iterations (and checkpoints)."""

    sac_state: Any  # its hparams are MBPOHParams.sac
    model_state: Any  # None for plain SAC
    real_buffer: Any
    model_buffer: Any  # None for plain SAC
    env_state: Any  # the running training envs (episodes span iterations)
    planner_state: Any  # None unless acting == "mpc"
    hparams: MBPOHParams
    key: PRNGKey
    iteration: Array  # int32, iterations done (= the rollout schedule's epoch)
    env_steps: Array  # int32, env transitions taken (random initial steps included)
    last_return: Array  # [N] return of each env's latest finished training episode


class MBPOAgent(NamedTuple):
    init: Any  # (key, hparams=None) -> MBPOState
    train_iteration: Any  # (state) -> (state, metrics)
    train: Any  # (key, hparams=None) -> (state, metrics [num_iterations])
    evaluate: Any  # (state, key) -> evaluation returns [eval_envs]
    evaluate_episodes: Any  # (state, key) -> (those returns, task measures {name: [eval_envs]})
    default_hparams: MBPOHParams
    env: envs.Env  # the batched training env
    eval_env: envs.Env
    task_env: envs.Env
    model: DynamicsModel | None
    sac: Any
    planner: Any  # unbatched planner (acting == "mpc") or None
    config: MBPOConfig
    max_rollout_length: int
    episode_length: int
    checkpoint_leaves_out: tuple[str, ...] = ()  # MBPOState fields not in checkpoints


def mix_batches(real, model, real_ratio, batch_size: int):
    """SAC batches [G, B, ...]: the first round(real_ratio * B) rows of each batch from
    ``real`` and the rest from ``model`` (both [G, B, ...]; ``model`` None = all real).
    ``real_ratio`` may be traced: the split is a row mask, not a shape."""
    if model is None:
        return real
    n_real = jnp.round(real_ratio * batch_size)
    take_real = jnp.arange(batch_size) < n_real  # [B]
    return jax.tree_util.tree_map(
        lambda r, m: jnp.where(take_real.reshape((1, -1) + (1,) * (r.ndim - 2)), r, m),
        real, model)


def sample_sac_batches(real_buffer, buffer_state, model_buffer, real_ratio, key_real,
                       key_model, num_batches: int, batch_size: int, window):
    """``num_batches`` SAC batches [G, B, ...] mixing real rows (``real_buffer`` state
    ``buffer_state``) and rows of the newest ``window`` model transitions
    (``model_buffer``; None = real data only) by ``mix_batches``."""
    as_batches = lambda x: jax.tree_util.tree_map(
        lambda y: y.reshape((num_batches, batch_size) + y.shape[1:]), x)
    n = num_batches * batch_size
    real = as_batches(real_buffer.sample(buffer_state, key_real, n))
    model_rows = None if model_buffer is None else as_batches(
        rollout_buffer_sample(model_buffer, key_model, n, window))
    return mix_batches(real, model_rows, real_ratio, batch_size)


def finished_return(stats: dict, last_return: Array) -> Array:
    """Mean return of the training episodes that finished this iteration (``stats``:
    per-step ``finished`` counts and ``finished_return_sum``), or, if none did, the mean
    of each env's latest finished episode (``last_return`` [N])."""
    finished = jnp.sum(stats["finished"])
    return jnp.where(finished > 0, jnp.sum(stats["finished_return_sum"])
                     / jnp.maximum(finished, 1), jnp.mean(last_return))


def summarise_iteration(model_metrics: dict, sac_metrics: dict) -> dict:
    """One row from the per-chunk model metrics and per-step SAC metrics: booleans
    (failures) any, counts the last chunk's, everything else the mean."""
    last = ("model/epochs", "model/num_train", "model/num_holdout",
            "rollout/valid_transitions")
    metrics = {}
    for name, v in model_metrics.items():
        if v.dtype == jnp.bool_:
            metrics[name] = jnp.any(v)
        else:
            metrics[name] = v[-1] if name in last else jnp.mean(v)
    metrics.update({k: jnp.mean(v) for k, v in sac_metrics.items()})
    return metrics


def make_refit_and_rollout(model_trainer, real_buffer, elite_step, sac,
                           num_starts: int, max_k: int, from_all_states: bool):
    """refit(state, k, key) -> (state, metrics): fit the model on the whole real buffer,
    then ``num_starts`` branched rollouts of k (<= max_k, may be traced) steps with the
    current policy from buffer states (all visited ones, or episode starts), their valid
    steps appended to the model buffer."""

    def refit(ts: MBPOState, k, key):
        key_model, key_start, key_roll = jax.random.split(key, 3)
        data, num_valid = as_dataset(ts.real_buffer)
        model_state, metrics = model_trainer.train(
            ts.model_state, data, num_valid, key_model,
            learning_rate=ts.hparams.model_learning_rate)
        if from_all_states:
            obs0 = real_buffer.sample(ts.real_buffer, key_start, num_starts).obs
        else:
            obs0 = sample_initial_obs(ts.real_buffer, key_start, num_starts)
        policy = lambda obs, key: sac.act(ts.sac_state, obs, key)
        transitions, valid = branched_rollouts(elite_step, model_state, policy, obs0,
                                               key_roll, k, max_k)
        flat = jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), transitions)
        model_buffer = rollout_buffer_add(ts.model_buffer, flat, valid.reshape(-1))
        metrics = dict(metrics)
        metrics["rollout/valid_transitions"] = jnp.sum(valid, dtype=jnp.int32)
        # Mean steps before a rollout ended (termination, divergence or k).
        metrics["rollout/mean_length"] = jnp.mean(jnp.sum(valid, axis=0))
        metrics["rollout/terminated_fraction"] = jnp.mean(
            jnp.any(valid & (transitions.done > 0.5), axis=0))
        return ts.replace(model_state=model_state, model_buffer=model_buffer), metrics

    return refit


def make_mbpo_agent(config: MBPOConfig, task_env: envs.Env | None = None) -> MBPOAgent:
    """Builds the compiled MBPO (or SAC) loop for ``config`` (module docstring);
    ``task_env`` replaces ``envs.make(config.env.name)`` (a custom or instrumented env)."""
    cfg = config
    task = base.make_task(cfg, task_env)
    L, n_env = task.episode_length, cfg.num_envs
    env, eval_env = base.batched_env(task, n_env), base.batched_env(task, cfg.eval_envs)
    base.check_buffer_holds(cfg.buffer_capacity, n_env, L, cfg.sac.batch_size)
    obs_size, action_size = task.env.observation_size, task.env.action_size
    sac = make_sac(obs_size, action_size, task.env.action_low, task.env.action_high, cfg.sac)
    example = base.example_transition(task.env)
    real_buffer = make_replay_buffer(cfg.buffer_capacity, n_env)
    random_policy = envs.uniform_random_policy(env)
    default_hparams = mbpo_hparams(cfg, action_size)

    G, batch_size, F = cfg.updates_per_step, cfg.sac.batch_size, cfg.model_train_every
    chunks = cfg.steps_per_iteration // F
    starts_per_chunk = F * cfg.rollouts_per_step
    model = model_trainer = elite_step = None
    max_k = model_capacity = 0
    if cfg.model_based:
        model_trainer = build_model(cfg.model, obs_size, action_size, cfg.model_train)
        model = model_trainer.model
        reward_fns = base.reward_functions(task, cfg.model, cfg.env.name)
        elite_step = make_elite_step(model, *reward_fns, task.env.known_next_obs)
        max_k = L if cfg.start_mode == "A" else cfg.rollout_schedule[3]
        model_capacity = starts_per_chunk * max_k * chunks * cfg.model_retain_iterations
    planner = batched_planner = None
    if cfg.acting == "mpc":
        objective = base.model_objective(model, task, cfg.model, cfg.objective,
                                         cfg.env.name, terminal_value=sac.value)
        if cfg.proposal_fraction > 0:  # the actor's rollouts join the candidates
            objective = P.make_proposal_objective(
                objective, P.model_mean_step(model),
                lambda sac_state, obs: sac.act(sac_state, obs, jax.random.PRNGKey(0), True),
                task.env.action_low, task.env.action_high, cfg.proposal_noise)
        planner = cfg.planner.build(objective, task.env.action_low, task.env.action_high)
        batched_planner = base.batch_planner(planner, cfg.planner_chunk_size)

    def planner_inputs(ts: MBPOState):
        """The planner's objective_params: (model, objective floats, SAC for the value)."""
        inputs = (ts.model_state, ts.hparams.objective, ts.sac_state)
        if cfg.proposal_fraction > 0:
            return P.ProposalInputs(inputs, ts.sac_state, ts.hparams.proposal_fraction)
        return inputs

    refit_and_rollout = make_refit_and_rollout(
        model_trainer, real_buffer, elite_step, sac, starts_per_chunk, max_k,
        from_all_states=cfg.start_mode == "C")

    def init(key: PRNGKey, hparams: MBPOHParams | None = None) -> MBPOState:
        hparams = default_hparams if hparams is None else hparams
        key, key_sac, key_model, key_reset, key_prefill, key_plan = jax.random.split(key, 6)
        env_state = env.reset(key_reset)
        buffer_state = real_buffer.init(example)
        if cfg.init_steps > 0:
            env_state, transitions = envs.rollout(env, random_policy, env_state, key_prefill,
                                                  cfg.init_steps // n_env)
            buffer_state = real_buffer.add(buffer_state, transitions)
        return MBPOState(
            sac_state=sac.init(key_sac, hparams.sac),
            model_state=model_trainer.init(key_model) if cfg.model_based else None,
            real_buffer=buffer_state,
            model_buffer=rollout_buffer_init(example, model_capacity)
            if cfg.model_based else None,
            env_state=env_state,
            planner_state=batched_planner.init(jax.random.split(key_plan, n_env))
            if planner is not None else None,
            hparams=hparams, key=key, iteration=jnp.zeros((), jnp.int32),
            env_steps=jnp.asarray(cfg.init_steps, jnp.int32), last_return=jnp.zeros(n_env))

    def act(ts: MBPOState, obs, planner_state, key, deterministic=False):
        if planner is None:
            return sac.act(ts.sac_state, obs, key, deterministic), planner_state
        keys = jax.random.split(key, obs.shape[0])
        action, planner_state, _ = batched_planner.plan(
            ts.hparams.planner, planner_inputs(ts),
            planner_state, obs, keys)
        return action, planner_state

    def env_step(carry, key):
        ts, window = carry
        key_act, key_real, key_model, key_update, key_plan = jax.random.split(key, 5)
        action, pstate = act(ts, ts.env_state.obs, ts.planner_state, key_act)
        next_state = env.step(ts.env_state, action)
        buffer_state = real_buffer.add(ts.real_buffer,
                                       envs.transition(ts.env_state, action, next_state))
        ended = next_state.done > 0.5
        episode_return = ts.env_state.info["episode_return"] + next_state.reward
        if pstate is not None:  # a fresh planner for each new episode
            pstate = base.reset_where(ended, batched_planner.init(
                jax.random.split(key_plan, n_env)), pstate)
        batches = sample_sac_batches(real_buffer, buffer_state, ts.model_buffer,
                                     ts.hparams.real_ratio, key_real, key_model, G,
                                     batch_size, window)
        sac_state, sac_metrics = sac.update_many(ts.sac_state, batches, key_update)
        ts = ts.replace(sac_state=sac_state, real_buffer=buffer_state, env_state=next_state,
                        planner_state=pstate,
                        last_return=jnp.where(ended, episode_return, ts.last_return))
        stats = {"finished_return_sum": jnp.sum(jnp.where(ended, episode_return, 0.0)),
                 "finished": jnp.sum(ended)}
        return (ts, window), (sac_metrics, stats)

    def chunk(carry, key):
        ts, k = carry
        key_refit, key_steps = jax.random.split(key)
        metrics = {}
        if cfg.model_based:
            ts, metrics = refit_and_rollout(ts, k, key_refit)
        window = starts_per_chunk * k * chunks * cfg.model_retain_iterations
        (ts, _), (sac_metrics, stats) = jax.lax.scan(env_step, (ts, window),
                                                     jax.random.split(key_steps, F))
        return (ts, k), (metrics, sac_metrics, stats)

    def run_eval(ts: MBPOState, key):
        key_reset, key_run, key_plan = jax.random.split(key, 3)
        state = eval_env.reset(key_reset)
        if planner is None:
            policy = lambda obs, key: act(ts, obs, None, key, deterministic=True)[0]
            _, transitions = envs.rollout(eval_env, policy, state, key_run, L)
        else:
            pstate = batched_planner.init(jax.random.split(key_plan, cfg.eval_envs))
            _, _, transitions, _ = P.mpc(
                eval_env, batched_planner, ts.hparams.planner,
                planner_inputs(ts), state, pstate,
                key_run, L)
        returns, lengths = base.first_episode_return(transitions)
        return returns, lengths, base.first_episode_measures(task.env, transitions)

    def train_iteration(ts: MBPOState):
        key, key_chunks, key_eval = jax.random.split(ts.key, 3)
        k = jnp.asarray(L, jnp.int32) if cfg.start_mode == "A" else rollout_length(
            cfg.rollout_schedule, ts.iteration)
        (ts, _), (model_metrics, sac_metrics, stats) = jax.lax.scan(
            chunk, (ts, k), jax.random.split(key_chunks, chunks))
        returns, lengths, measures = run_eval(ts, key_eval)
        finished = jnp.sum(stats["finished"])
        train_return = finished_return(stats, ts.last_return)
        ts = ts.replace(key=key, iteration=ts.iteration + 1,
                        env_steps=ts.env_steps + cfg.steps_per_iteration * n_env)
        metrics = summarise_iteration(model_metrics, sac_metrics)
        metrics.update({
            "iteration": ts.iteration, "env_steps": ts.env_steps,
            "return_mean": jnp.mean(returns), "return_min": jnp.min(returns),
            "return_max": jnp.max(returns), "episode_length": jnp.mean(lengths),
            "train/return": train_return, "train/episodes_finished": finished,
            "rollout/length": k,
            **base.measure_metrics(measures),
        })
        if cfg.model_based:
            metrics["rollout/model_buffer_size"] = ts.model_buffer.size
        return ts, metrics

    def evaluate_episodes(ts: MBPOState, key: PRNGKey):
        """Evaluation episodes with the current agent (nothing is trained or stored):
        their returns and the task's success measures (``Env.episode_measures``)."""
        returns, _, measures = run_eval(ts, key)
        return returns, measures

    def evaluate(ts: MBPOState, key: PRNGKey):
        """The returns of ``evaluate_episodes``."""
        return run_eval(ts, key)[0]

    return MBPOAgent(init=init, train_iteration=train_iteration,
                     train=base.scan_train(init, train_iteration, cfg.num_iterations),
                     evaluate=evaluate, evaluate_episodes=evaluate_episodes,
                     default_hparams=default_hparams, env=env,
                     eval_env=eval_env, task_env=task.env, model=model, sac=sac,
                     planner=planner, config=cfg, max_rollout_length=max_k,
                     episode_length=L,
                     checkpoint_leaves_out=() if cfg.checkpoint_model_buffer
                     or not cfg.model_based else ("model_buffer",))


base.register_agent(MBPOConfig, make_mbpo_agent, mbpo_traced_fields)
