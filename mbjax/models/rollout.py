"""Multi-step rollouts of an ensemble with uncertainty propagation (PETS, Chua et al. 2018).

A batch of B particles, each with its own action sequence, is propagated for H steps:

* ``"ts_inf"`` (TS-inf): particle b is bound to member b mod E for the whole rollout;
  with B = N candidates x P particles (P a multiple of E), each candidate's particles
  cover the members evenly (P / E each).
* ``"ts1"`` (TS-1): every step the particles are randomly re-assigned to members
  (a fresh permutation, so each member still gets B / E particles).
* ``"expectation"``: every particle moves to the mean prediction of all members.

TS modes sample s' ~ N(mu_e, sigma_e^2) for probabilistic models (``sample=True``);
deterministic models (and ``sample=False``) use mu_e. The noise comes from
``mbjax.utils.random.hash_normal`` (a counter hash seeded from the key, ~4x faster than
``jax.random.normal`` on CPU; PETS-sized plans draw tens of millions of normals per call).
All members' predictions are laid out as one batched matmul [E, B / E, ...], so TS-inf
and TS-1 cost one member-forward per particle. ``disagreement`` (std over members of the
predicted means, averaged over observation dims; MOPO/MOReL-style uncertainty) evaluates
all members on all particles (E x the compute) and is only computed when asked for.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import struct

from mbjax.models.ensemble import EnsembleModel, ModelState
from mbjax.types import Array, PRNGKey
from mbjax.utils.random import hash_normal

PROPAGATIONS = ("ts_inf", "ts1", "expectation")

RewardFn = Callable[[Array, Array, Array], Array]


@struct.dataclass
class ModelRollout:
    """Predicted trajectories of B particles over H steps.

    Attributes:
      obs: [B, H + 1, O] predicted observations, obs[:, 0] = the start observation.
      reward: [B, H] reward of each predicted step.
      terminated: [B, H] 1.0 where the step's termination flag fires.
      disagreement: [B, H] ensemble disagreement (zeros unless requested).
    """

    obs: Array
    reward: Array
    terminated: Array
    disagreement: Array


def rollout_from_steps(obs0: Array, next_obs: Array, reward: Array, terminated: Array,
                       disagreement: Array | None = None) -> ModelRollout:
    """Assembles a ``ModelRollout`` from the start observation and the H predicted steps.

    Args:
      obs0: [..., O] start observation(s); next_obs: [..., H, O] the observation after
        each step; reward, terminated: [..., H].
      disagreement: [..., H]; None = zeros (not computed, or a deterministic model).

    Returns:
      ``ModelRollout`` with obs [..., H + 1, O] = [obs0, next_obs] along the step axis.
    """
    obs = jnp.concatenate([obs0[..., None, :], next_obs], axis=-2)
    disagreement = jnp.zeros_like(reward) if disagreement is None else disagreement
    return ModelRollout(obs=obs, reward=reward, terminated=terminated,
                        disagreement=disagreement)


def _to_members(x: Array, num_members: int) -> Array:
    """[B, ...] -> [E, B / E, ...] with particle b at (b mod E, b div E)."""
    b = x.shape[0]
    return x.reshape((b // num_members, num_members) + x.shape[1:]).swapaxes(0, 1)


def _from_members(y: Array) -> Array:
    """[E, B / E, ...] -> [B, ...], the inverse of ``_to_members``."""
    return y.swapaxes(0, 1).reshape((-1,) + y.shape[2:])


def check_propagation(propagation: str, num_particles: int, num_members: int) -> None:
    """Validates a propagation mode and particle count (clear errors at build time)."""
    if propagation not in PROPAGATIONS:
        raise ValueError(f"unknown propagation {propagation!r}; valid: {', '.join(PROPAGATIONS)}")
    if propagation != "expectation" and num_particles % num_members:
        raise ValueError(
            f"{propagation} needs the number of particles ({num_particles}) to be a multiple "
            f"of the ensemble size ({num_members}) so every member gets the same share")


def model_step(model: EnsembleModel, state: ModelState, obs: Array, action: Array, key: PRNGKey,
               propagation: str = "ts_inf", sample: bool = True,
               with_disagreement: bool = False):
    """One propagated step for B particles.

    Args:
      obs: [B, O]; action: [B, A]; B must be a multiple of E for TS modes.

    Returns:
      (next_obs [B, O], reward [B] or None (no reward head), termination prob [B] or None,
      disagreement [B]).
    """
    num_members = model.num_members
    key_perm, key_noise = jax.random.split(key)
    b = obs.shape[0]
    disagreement = jnp.zeros(b)

    if propagation == "expectation" or with_disagreement:
        full = model.predict(state, obs, action)  # [E, B, ...]
        if with_disagreement:
            disagreement = jnp.std(full.next_obs_mean, axis=0).mean(-1)
    if propagation == "expectation":
        mean = lambda x: None if x is None else x.mean(0)
        return (mean(full.next_obs_mean), mean(full.reward_mean), mean(full.termination_prob),
                disagreement)

    perm = jax.random.permutation(key_perm, b) if propagation == "ts1" else jnp.arange(b)
    inv = jnp.argsort(perm)
    if with_disagreement:
        # Reuse the all-member predictions: slot j holds particle perm[j], member j mod E.
        member = jnp.arange(b) % num_members
        pick = lambda x: None if x is None else x[member, perm][inv]
        mu, std = pick(full.next_obs_mean), pick(full.next_obs_std)
        r_mu, r_std, term = pick(full.reward_mean), pick(full.reward_std), \
            pick(full.termination_prob)
    else:
        grouped = model.predict(state, _to_members(obs[perm], num_members),
                                _to_members(action[perm], num_members))
        unpick = lambda x: None if x is None else _from_members(x)[inv]
        mu, std = unpick(grouped.next_obs_mean), unpick(grouped.next_obs_std)
        r_mu, r_std, term = unpick(grouped.reward_mean), unpick(grouped.reward_std), \
            unpick(grouped.termination_prob)
    if sample and model.config.probabilistic:
        k1, k2 = jax.random.split(key_noise)
        mu = mu + std * hash_normal(k1, mu.shape)
        if r_mu is not None:
            r_mu = r_mu + r_std * hash_normal(k2, r_mu.shape)
    return mu, r_mu, term, disagreement


def rollout_particles(
    model: EnsembleModel,
    state: ModelState,
    obs0: Array,
    actions: Array,
    key: PRNGKey,
    reward_fn: RewardFn | None = None,
    termination_fn: RewardFn | None = None,
    propagation: str = "ts_inf",
    sample: bool = True,
    with_disagreement: bool = False,
    known_next_obs: RewardFn | None = None,
) -> ModelRollout:
    """Propagates B particles through the model for H steps (``lax.scan`` over time).

    Args:
      obs0: [B, O] start observations; actions: [B, H, A].
      reward_fn, termination_fn: unbatched (obs, action, next_obs) -> []; when None the
        model's reward / termination heads are used (they must be enabled).
      known_next_obs: unbatched (obs [O], predicted next_obs [O]) -> next_obs [O] that
        sets the entries the task computes itself (``Env.known_next_obs``: a goal clock,
        a target) before rewards; None keeps the prediction.
    """
    check_propagation(propagation, obs0.shape[0], model.num_members)
    if reward_fn is None and not model.config.learn_reward:
        raise ValueError("no reward_fn given and the model has no reward head "
                         "(EnsembleConfig.learn_reward=False)")
    horizon = actions.shape[1]

    def body(obs, xs):
        action, key = xs
        next_obs, r_head, term_head, dis = model_step(
            model, state, obs, action, key, propagation, sample, with_disagreement)
        if known_next_obs is not None:
            next_obs = jax.vmap(known_next_obs)(obs, next_obs)
        if reward_fn is not None:
            reward = jax.vmap(reward_fn)(obs, action, next_obs)
        else:
            reward = r_head
        if termination_fn is not None:
            term = jax.vmap(termination_fn)(obs, action, next_obs)
        elif term_head is not None:
            term = (term_head > 0.5).astype(jnp.float32)
        else:
            term = jnp.zeros(obs.shape[0])
        return next_obs, (next_obs, reward, term, dis)

    keys = jax.random.split(key, horizon)
    if propagation == "ts_inf" and not with_disagreement:
        return _rollout_ts_inf(model, state, obs0, actions, keys, reward_fn, termination_fn,
                               sample, known_next_obs)
    _, (obs_seq, reward, term, dis) = jax.lax.scan(
        body, obs0, (actions.swapaxes(0, 1), keys))
    return rollout_from_steps(obs0, obs_seq.swapaxes(0, 1), reward.T, term.T, dis.T)


def _rollout_ts_inf(model, state, obs0, actions, keys, reward_fn, termination_fn, sample,
                    known_next_obs=None):
    """TS-inf kept in member-major layout [E, B / E, ...] for the whole scan: one
    transpose in and out instead of two per step (same distribution as the generic path)."""
    num_members = model.num_members
    obs_m = _to_members(obs0, num_members)  # [E, b, O]
    act_m = jnp.moveaxis(_to_members(actions, num_members), 2, 0)  # [H, E, b, A]
    per_particle = lambda f: jax.vmap(jax.vmap(f))

    def body(obs, xs):
        action, key = xs
        pred = model.predict(state, obs, action)
        mu, r_mu = pred.next_obs_mean, pred.reward_mean
        if sample and model.config.probabilistic:
            k1, k2 = jax.random.split(jax.random.split(key)[1])
            mu = mu + pred.next_obs_std * hash_normal(k1, mu.shape)
            if r_mu is not None:
                r_mu = r_mu + pred.reward_std * hash_normal(k2, r_mu.shape)
        if known_next_obs is not None:
            mu = per_particle(known_next_obs)(obs, mu)
        reward = per_particle(reward_fn)(obs, action, mu) if reward_fn is not None else r_mu
        if termination_fn is not None:
            term = per_particle(termination_fn)(obs, action, mu)
        elif pred.termination_prob is not None:
            term = (pred.termination_prob > 0.5).astype(jnp.float32)
        else:
            term = jnp.zeros(obs.shape[:2])
        return mu, (mu, reward, jnp.asarray(term, jnp.float32))

    _, (obs_seq, reward, term) = jax.lax.scan(body, obs_m, (act_m, keys))
    flat = lambda x: _from_members(jnp.moveaxis(x, 0, 2))  # [H, E, b, ...] -> [B, H, ...]
    return rollout_from_steps(obs0, flat(obs_seq), flat(reward), flat(term))


def rollout(
    model: EnsembleModel,
    state: ModelState,
    obs0: Array,
    actions: Array,
    key: PRNGKey,
    num_particles: int | None = None,
    **kwargs,
) -> ModelRollout:
    """Rolls ONE action sequence out from ONE observation with ``num_particles`` particles.

    Args:
      obs0: [O]; actions: [H, A]; num_particles: default E (one per member).
      **kwargs: as ``rollout_particles`` (reward_fn, termination_fn, propagation, ...).

    Returns:
      ``ModelRollout`` with a leading particle axis [P, ...].
    """
    p = num_particles or model.num_members
    obs = jnp.broadcast_to(obs0, (p,) + obs0.shape)
    acts = jnp.broadcast_to(actions, (p,) + actions.shape)
    return rollout_particles(model, state, obs, acts, key, **kwargs)
