"""Soft actor-critic in pure JAX (Haarnoja et al. 2018a, "Soft Actor-Critic"; 2018b,
"Soft Actor-Critic Algorithms and Applications", automatic entropy tuning).

``make_sac(obs_size, action_size, action_low, action_high, config)`` returns ``SAC``, a
NamedTuple of pure functions over a ``SACState`` pytree:

* twin soft Q networks Q_1, Q_2 (one two-member ensemble MLP, ``mbjax.networks.mlp``:
  one batched matmul per layer) and their Polyak-averaged targets
  Q'_i <- tau Q_i + (1 - tau) Q'_i;
* a tanh-Gaussian actor: u ~ N(mu(s), sigma(s)^2), a = tanh(u) in [-1, 1]^A,
  log pi(a|s) = log N(u; mu, sigma^2) - sum_j log(1 - tanh(u_j)^2);
  env actions are a rescaled affinely to [action_low, action_high];
* a learned temperature alpha = exp(log_alpha) with target entropy -|A| by default.

One update on a batch of transitions (obs, action in env units, reward, next_obs, done):

    y        = scale * r + gamma (1 - d) (min_i Q'_i(s', a') - alpha log pi(a'|s')),
               a' ~ pi(.|s')                                    (``critic_target``)
    L_Q      = 1/2 sum_i mean (Q_i(s, a) - y)^2
    L_pi     = mean (alpha log pi(a~|s) - min_i Q_i(s, a~)),    a~ ~ pi(.|s) (new Q)
    L_alpha  = mean (-log_alpha (log pi(a~|s) + target_entropy))  (stop-gradient on log pi)

then the target networks move by tau. ``update_many`` is a ``lax.scan`` of updates over a
stack of batches. Everything is a pure function, so a whole training run is one program
and ``vmap`` over seeds works. Time-limit truncations are not terminal: ``done`` is the
terminal flag only (``mbjax.types.Transition.done``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from mbjax.networks.mlp import ACTIVATIONS, ensemble_mlp_apply, ensemble_mlp_init
from mbjax.types import Array, PRNGKey


@dataclasses.dataclass(frozen=True)
class SACConfig:
    """SAC hyper-parameters. Defaults: Haarnoja et al. 2018b, Table 1 (also MBPO's SAC,
    Janner et al. 2019, App. C): Adam 3e-4 for actor, critics and temperature, batch 256,
    2 hidden layers of 256 ReLU units, gamma 0.99, tau 5e-3, target entropy -|A|."""

    hidden_sizes: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    actor_learning_rate: float = 3e-4
    critic_learning_rate: float = 3e-4
    alpha_learning_rate: float = 3e-4
    discount: float = 0.99
    tau: float = 5e-3
    """Polyak averaging rate of the target critics."""
    batch_size: int = 256
    init_alpha: float = 1.0
    target_entropy: float | None = None
    """None = -|A| (SAC's default; MBPO's released configs use e.g. -1 for Hopper)."""
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    """The actor's log-std is squashed into [log_std_min, log_std_max] with tanh."""
    reward_scale: float = 1.0

    def __post_init__(self):
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"sac.hidden_sizes must be positive, got {self.hidden_sizes}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown sac.activation {self.activation!r}; valid: "
                             f"{', '.join(ACTIVATIONS)}")
        for f in ("actor_learning_rate", "critic_learning_rate", "alpha_learning_rate",
                  "init_alpha"):
            if getattr(self, f) <= 0:
                raise ValueError(f"sac.{f} must be > 0, got {getattr(self, f)}")
        if not 0.0 <= self.discount <= 1.0:
            raise ValueError(f"sac.discount must be in [0, 1], got {self.discount}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"sac.tau must be in (0, 1], got {self.tau}")
        if self.batch_size < 1:
            raise ValueError(f"sac.batch_size must be >= 1, got {self.batch_size}")
        if self.log_std_min >= self.log_std_max:
            raise ValueError("sac.log_std_min must be < sac.log_std_max")


@struct.dataclass
class SACHParams:
    """SAC's traced floats (vmappable over seeds / sweep points): the three Adam step
    sizes, the entropy target and the initial temperature."""

    actor_learning_rate: Any
    critic_learning_rate: Any
    alpha_learning_rate: Any
    target_entropy: Any
    init_alpha: Any


def sac_hparams(config: SACConfig, action_size: int) -> SACHParams:
    """The traced floats of ``config`` (target entropy None -> -|A|)."""
    target = -action_size if config.target_entropy is None else config.target_entropy
    return SACHParams(actor_learning_rate=config.actor_learning_rate,
                      critic_learning_rate=config.critic_learning_rate,
                      alpha_learning_rate=config.alpha_learning_rate,
                      target_entropy=float(target), init_alpha=config.init_alpha)


#: Dotted ``sac.*`` config fields held in ``SACHParams``.
SAC_TRACED_FIELDS = ("sac.actor_learning_rate", "sac.critic_learning_rate",
                     "sac.alpha_learning_rate", "sac.target_entropy", "sac.init_alpha")


@struct.dataclass
class SACState:
    """Parameters, optimizer states and counters of one SAC agent.

    ``actor`` and ``critic`` are ensemble-MLP layer lists (E = 1 actor, E = 2 twin
    critics, ``mbjax.networks.mlp``); ``target_critic`` has the critic's structure.
    """

    actor: Any
    critic: Any
    target_critic: Any
    log_alpha: Array  # []
    actor_opt: Any
    critic_opt: Any
    alpha_opt: Any
    steps: Array  # int32 [], gradient updates done
    hparams: SACHParams  # the traced floats this agent trains with


class SAC(NamedTuple):
    """SAC's pure functions (see the module docstring) and static sizes."""

    init: Any  # (key, hparams=None) -> SACState
    act: Any  # (state, obs [..., O], key, deterministic=False) -> action [..., A] env units
    sample: Any  # (actor, obs [B, O], key) -> (a in [-1, 1] [B, A], log_prob [B])
    q_values: Any  # (critic, obs [B, O], action [B, A] env units) -> [2, B]
    critic_target: Any  # (state, batch, key) -> y [B]
    update: Any  # (state, batch, key) -> (state, metrics)
    update_many: Any  # (state, batches [G, B, ...], key) -> (state, metrics averaged)
    value: Any  # (state, obs [..., O]) -> min_i Q_i(s, pi_det(s)) [...]
    config: SACConfig
    obs_size: int
    action_size: int
    target_entropy: float
    default_hparams: SACHParams


def td_target(reward: Array, done: Array, next_q1: Array, next_q2: Array,
              next_log_prob: Array, alpha: Array, discount: float,
              reward_scale: float = 1.0) -> Array:
    """Soft TD target y = scale r + gamma (1 - d) (min(Q'_1, Q'_2) - alpha log pi(a'|s')).

    All arrays share one shape ([] or [B]); ``alpha`` broadcasts.
    """
    soft_v = jnp.minimum(next_q1, next_q2) - alpha * next_log_prob
    return reward_scale * reward + discount * (1.0 - done) * soft_v


def tanh_gaussian_log_prob(u: Array, mean: Array, log_std: Array) -> Array:
    """log pi(tanh(u)) for u ~ N(mean, exp(log_std)^2), summed over the last axis.

    log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)) (stable for large |u|).
    """
    z = (u - mean) * jnp.exp(-log_std)
    gauss = -0.5 * z**2 - log_std - 0.5 * math.log(2.0 * math.pi)
    log_det = 2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u))
    return jnp.sum(gauss - log_det, axis=-1)


def make_sac(obs_size: int, action_size: int, action_low, action_high,
             config: SACConfig | None = None) -> SAC:
    """Builds SAC for observations [obs_size] and actions in [action_low, action_high]."""
    cfg = config or SACConfig()
    if obs_size < 1 or action_size < 1:
        raise ValueError(f"obs_size and action_size must be >= 1, got {obs_size}, "
                         f"{action_size}")
    low = jnp.asarray(action_low, jnp.float32).reshape(action_size)
    high = jnp.asarray(action_high, jnp.float32).reshape(action_size)
    mid, half = 0.5 * (high + low), 0.5 * (high - low)
    default_hparams = sac_hparams(cfg, action_size)
    target_entropy = default_hparams.target_entropy
    # Adam = scale_by_adam then -learning_rate; the step sizes come from state.hparams
    # (traced), so one program trains several learning rates (same maths as optax.adam).
    actor_opt = critic_opt = alpha_opt = optax.scale_by_adam()
    hidden = tuple(cfg.hidden_sizes)

    def to_unit(action):
        return jnp.clip((action - mid) / half, -1.0, 1.0)

    def to_env(a):
        return mid + half * a

    def actor_head(actor, obs):
        out = ensemble_mlp_apply(actor, obs.reshape(1, -1, obs_size), cfg.activation)[0]
        mean, raw = out[:, :action_size], out[:, action_size:]
        log_std = cfg.log_std_min + 0.5 * (cfg.log_std_max - cfg.log_std_min) * (
            jnp.tanh(raw) + 1.0)
        return mean, log_std

    def sample(actor, obs, key):
        mean, log_std = actor_head(actor, obs)
        u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
        return jnp.tanh(u), tanh_gaussian_log_prob(u, mean, log_std)

    def q_unit(critic, obs, a_unit):
        x = jnp.concatenate([obs, a_unit], axis=-1)
        return ensemble_mlp_apply(critic, x, cfg.activation)[..., 0]  # [2, B]

    def q_values(critic, obs, action):
        return q_unit(critic, obs, to_unit(action))

    def init(key: PRNGKey, hparams: SACHParams | None = None) -> SACState:
        hparams = default_hparams if hparams is None else hparams
        key_actor, key_critic = jax.random.split(key)
        actor = ensemble_mlp_init(key_actor, 1, (obs_size, *hidden, 2 * action_size))
        critic = ensemble_mlp_init(key_critic, 2, (obs_size + action_size, *hidden, 1))
        log_alpha = jnp.log(jnp.asarray(hparams.init_alpha, jnp.float32))
        return SACState(actor=actor, critic=critic, target_critic=critic,
                        log_alpha=log_alpha, actor_opt=actor_opt.init(actor),
                        critic_opt=critic_opt.init(critic),
                        alpha_opt=alpha_opt.init(log_alpha),
                        steps=jnp.zeros((), jnp.int32), hparams=hparams)

    def act(state: SACState, obs: Array, key: PRNGKey, deterministic: bool = False):
        batch_shape = obs.shape[:-1]
        flat = obs.reshape(-1, obs_size)
        if deterministic:
            a = jnp.tanh(actor_head(state.actor, flat)[0])
        else:
            a, _ = sample(state.actor, flat, key)
        return to_env(a).reshape(batch_shape + (action_size,))

    def value(state: SACState, obs: Array) -> Array:
        batch_shape = obs.shape[:-1]
        flat = obs.reshape(-1, obs_size)
        a = jnp.tanh(actor_head(state.actor, flat)[0])
        return jnp.min(q_unit(state.critic, flat, a), axis=0).reshape(batch_shape)

    def critic_target(state: SACState, batch, key: PRNGKey) -> Array:
        next_a, next_logp = sample(state.actor, batch.next_obs, key)
        next_q = q_unit(state.target_critic, batch.next_obs, next_a)
        return td_target(batch.reward, batch.done, next_q[0], next_q[1], next_logp,
                         jnp.exp(state.log_alpha), cfg.discount, cfg.reward_scale)

    def step(adam_direction, learning_rate):
        """The Adam update: -learning_rate * scale_by_adam's direction."""
        return jax.tree_util.tree_map(lambda u: u * -learning_rate, adam_direction)

    def critic_loss(critic, obs, a_unit, y):
        q = q_unit(critic, obs, a_unit)
        return 0.5 * jnp.sum(jnp.mean((q - y) ** 2, axis=-1)), q

    def actor_loss(actor, critic, obs, alpha, key):
        a, logp = sample(actor, obs, key)
        q = jnp.min(q_unit(critic, obs, a), axis=0)
        return jnp.mean(alpha * logp - q), logp

    def update(state: SACState, batch, key: PRNGKey):
        key_target, key_actor = jax.random.split(key)
        alpha = jnp.exp(state.log_alpha)
        y = jax.lax.stop_gradient(critic_target(state, batch, key_target))
        (c_loss, q), c_grads = jax.value_and_grad(critic_loss, has_aux=True)(
            state.critic, batch.obs, to_unit(batch.action), y)
        hp = state.hparams
        c_upd, critic_opt_state = critic_opt.update(c_grads, state.critic_opt, state.critic)
        critic = optax.apply_updates(state.critic, step(c_upd, hp.critic_learning_rate))

        (a_loss, logp), a_grads = jax.value_and_grad(actor_loss, has_aux=True)(
            state.actor, critic, batch.obs, alpha, key_actor)
        a_upd, actor_opt_state = actor_opt.update(a_grads, state.actor_opt, state.actor)
        actor = optax.apply_updates(state.actor, step(a_upd, hp.actor_learning_rate))

        logp = jax.lax.stop_gradient(logp)
        alpha_grad = jax.grad(
            lambda la: jnp.mean(-la * (logp + hp.target_entropy)))(state.log_alpha)
        al_upd, alpha_opt_state = alpha_opt.update(alpha_grad, state.alpha_opt,
                                                   state.log_alpha)
        log_alpha = optax.apply_updates(state.log_alpha, step(al_upd, hp.alpha_learning_rate))

        target = jax.tree_util.tree_map(lambda t, c: (1.0 - cfg.tau) * t + cfg.tau * c,
                                        state.target_critic, critic)
        state = state.replace(actor=actor, critic=critic, target_critic=target,
                              log_alpha=log_alpha, actor_opt=actor_opt_state,
                              critic_opt=critic_opt_state, alpha_opt=alpha_opt_state,
                              steps=state.steps + 1)
        metrics = {"sac/critic_loss": c_loss, "sac/actor_loss": a_loss,
                   "sac/alpha": alpha, "sac/entropy": -jnp.mean(logp),
                   "sac/q_mean": jnp.mean(q), "sac/target_mean": jnp.mean(y)}
        return state, metrics

    def update_many(state: SACState, batches, key: PRNGKey):
        num = jax.tree_util.tree_leaves(batches)[0].shape[0]

        def body(state, xs):
            batch, key = xs
            return update(state, batch, key)

        state, metrics = jax.lax.scan(body, state, (batches, jax.random.split(key, num)))
        return state, jax.tree_util.tree_map(jnp.mean, metrics)

    return SAC(init=init, act=act, sample=sample, q_values=q_values,
               critic_target=critic_target, update=update, update_many=update_many,
               value=value, config=cfg, obs_size=int(obs_size),
               action_size=int(action_size), target_entropy=target_entropy,
               default_hparams=default_hparams)
