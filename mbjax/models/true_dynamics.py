"""The true simulator as a dynamics model: planning on ground truth.

A planner that scores action sequences with a learned ensemble calls
``rollout_particles(model, model_state, obs0 [B, O], actions [B, H, A], key, ...)`` and gets
a :class:`~mbjax.models.rollout.ModelRollout`. :class:`TrueDynamicsModel` offers the same
call on the real environment, so the same planner can be run with perfect dynamics (an
upper bound on what any learned model can give, and a check of the planner itself).

**The start of a rollout is the environment's** ``State`` **, not an observation.** An
observation rarely determines the simulator state (brax/MJX envs drop positions, contact
caches and RNG keys from it; even the pendulum's observation [cos, sin, theta_dot] is a
function of the state, not the state), so a ground-truth planner passes the ``State`` it
got from ``env.reset``/``env.step`` where a model-based planner passes ``state.obs``.

Because ``env.step`` is a pure function of (state, action), a "copy" of the env costs
nothing: :func:`simulate` just steps the given ``State`` forward with ``lax.scan`` over the
horizon and ``vmap`` over the B action sequences. The same code runs the pure-JAX classic
tasks and the brax/MJX tasks. The simulator is deterministic, so particles that share an
action sequence share a trajectory and the ensemble disagreement is zero.

Give it the environment whose steps the planner plans over (e.g. with ``ActionRepeat`` if
the agent acts every k physics steps) but **without auto-reset** (no ``EpisodeWrapper``,
or one with ``auto_reset=False``): an auto-reset in the middle of an imagined rollout would
continue it from a fresh episode. Time-limit truncations (``info["truncation"]``) are not
counted as terminations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mbjax.envs.acting import transition
from mbjax.envs.base import Env, State
from mbjax.models.rollout import ModelRollout, RewardFn, rollout_from_steps
from mbjax.types import Array, PRNGKey


def _check_state(env: Env, state: State) -> int:
    """Returns the number of leading batch axes of ``state`` (0 or 1), or raises."""
    obs = getattr(state, "obs", None)
    if obs is None or not hasattr(obs, "ndim"):
        raise TypeError(
            f"{env.name}: the true simulator starts from the env's State (from env.reset or "
            f"env.step), got {type(state).__name__}; an observation does not determine the "
            "simulator state.")
    if obs.ndim not in (1, 2) or obs.shape[-1] != env.observation_size:
        raise ValueError(
            f"{env.name}: state.obs has shape {obs.shape}; expected ({env.observation_size},) "
            f"for one start state or (B, {env.observation_size}) for one per action "
            "sequence.")
    return obs.ndim - 1


def _simulate_one(env: Env, state: State, actions: Array, reward_fn: RewardFn | None,
                  termination_fn: RewardFn | None) -> ModelRollout:
    """One action sequence [H, A] from one unbatched ``State``; outputs without a B axis."""

    def body(carry, action):
        s, terminated = carry
        ns = env.step(s, action)
        tr = transition(s, action, ns)  # next_obs before any reset; done = terminal only
        reward = tr.reward if reward_fn is None else reward_fn(tr.obs, action, tr.next_obs)
        done = tr.done if termination_fn is None else termination_fn(tr.obs, action,
                                                                     tr.next_obs)
        terminated = jnp.maximum(terminated, jnp.asarray(done, jnp.float32))
        return (ns, terminated), (tr.next_obs, jnp.asarray(reward, jnp.float32), terminated)

    (_, _), (obs_seq, reward, terminated) = jax.lax.scan(
        body, (state, jnp.zeros((), jnp.float32)), actions)
    return rollout_from_steps(state.obs, obs_seq, reward, terminated)


def simulate(
    env: Env,
    state: State,
    actions: Array,
    reward_fn: RewardFn | None = None,
    termination_fn: RewardFn | None = None,
) -> ModelRollout:
    """Rolls action sequences out in the real environment from a given ``State``.

    With x_0 = ``state`` and x_{t+1} = env.step(x_t, a_t), the rollout of sequence b holds
    obs[b, t] = obs(x_t) (t = 0..H), reward[b, t] = r(x_t, a_t, x_{t+1}) and
    terminated[b, t] = max_{k <= t} done(x_{k+1}): once a step is terminal, every later
    step counts as terminated (the simulator keeps stepping; shapes are static).

    Args:
      env: the environment (pure ``step``; no auto-reset, see the module docstring).
      state: the start ``State``, either one unbatched state shared by all sequences or a
        batch with leading axis B (one start state per sequence).
      actions: [B, H, A] action sequences, or [H, A] for a single sequence (then the
        outputs have no B axis and ``state`` must be unbatched).
      reward_fn, termination_fn: optional unbatched (obs, action, next_obs) -> [] that
        replace the env's own reward / terminal flag (e.g. to plan for another task).

    Returns:
      ``ModelRollout`` with obs [B, H + 1, O] (obs[:, 0] = state.obs), reward [B, H],
      terminated [B, H] (1.0 / 0.0) and disagreement [B, H] = 0 (deterministic).
    """
    batch_axes = _check_state(env, state)
    actions = jnp.asarray(actions)
    if actions.ndim not in (2, 3) or actions.shape[-1] != env.action_size:
        raise ValueError(
            f"{env.name}: actions have shape {actions.shape}; expected (B, H, "
            f"{env.action_size}) or (H, {env.action_size}).")
    if actions.ndim == 2:
        if batch_axes:
            raise ValueError(
                f"{env.name}: a single action sequence (H, A) needs one unbatched start "
                f"state, got a batch of {state.obs.shape[0]} states.")
        return _simulate_one(env, state, actions, reward_fn, termination_fn)
    if batch_axes and state.obs.shape[0] != actions.shape[0]:
        raise ValueError(
            f"{env.name}: {state.obs.shape[0]} start states for {actions.shape[0]} action "
            "sequences; pass one state per sequence or one shared unbatched state.")
    one = lambda s, a: _simulate_one(env, s, a, reward_fn, termination_fn)
    return jax.vmap(one, in_axes=(0 if batch_axes else None, 0))(state, actions)


class TrueDynamicsModel:
    """The real environment behind the learned-model rollout interface.

    ``TrueDynamicsModel(env).rollout_particles(state, actions, key, reward_fn=...)`` mirrors
    ``mbjax.models.rollout.rollout_particles(model, model_state, obs0, actions, key,
    reward_fn=...)``, except that it starts from the env's ``State`` (see the module
    docstring: ground-truth planning needs the simulator state, not the observation).

    Attributes:
      env: the environment that is simulated (no auto-reset).
    """

    #: A deterministic simulator: one "member", every particle is its own trajectory.
    num_members: int = 1

    def __init__(self, env: Env):
        if not isinstance(env, Env):
            raise TypeError(f"TrueDynamicsModel needs an mbjax Env, got {type(env).__name__}")
        self.env = env

    def rollout_particles(
        self,
        state: State,
        actions: Array,
        key: PRNGKey | None = None,
        reward_fn: RewardFn | None = None,
        termination_fn: RewardFn | None = None,
        propagation: str = "ts_inf",
        sample: bool = True,
        with_disagreement: bool = False,
    ) -> ModelRollout:
        """Simulates B action sequences [B, H, A] from ``state``; see :func:`simulate`.

        ``state`` is one unbatched ``State`` (shared) or a batch of B states. ``key``,
        ``propagation``, ``sample`` and ``with_disagreement`` are accepted for interface
        parity with the ensemble and ignored (the simulator is deterministic; the
        disagreement is zero). ``reward_fn``/``termination_fn`` default to the env's own
        reward and terminal flag.
        """
        del key, propagation, sample, with_disagreement
        if jnp.ndim(actions) != 3:
            raise ValueError(f"rollout_particles takes actions of shape (B, H, A), got "
                             f"{jnp.shape(actions)}")
        return simulate(self.env, state, actions, reward_fn, termination_fn)

    def rollout(self, state: State, actions: Array, key: PRNGKey | None = None,
                num_particles: int = 1, **kwargs) -> ModelRollout:
        """ONE action sequence [H, A] from ONE state, as ``num_particles`` identical
        particles (outputs [P, ...]), mirroring ``mbjax.models.rollout.rollout``."""
        actions = jnp.asarray(actions)
        if actions.ndim != 2:
            raise ValueError(f"rollout takes one action sequence (H, A), got {actions.shape}")
        acts = jnp.broadcast_to(actions, (num_particles,) + actions.shape)
        return self.rollout_particles(state, acts, key, **kwargs)

    def __repr__(self) -> str:
        return f"TrueDynamicsModel({self.env!r})"


def simulate_native(
    native,
    state: State,
    actions: Array,
    reward_fn: RewardFn | None = None,
    termination_fn: RewardFn | None = None,
) -> ModelRollout:
    """``simulate`` on native MuJoCo: the same rollout of actions [B, H, A] from one
    unbatched ``state``, with the physics stepped by ``native``
    (``mbjax.envs.hand.native.NativeRollout``, a host callback; no gradients) and the
    reward / terminal flag computed from the observations by ``reward_fn`` /
    ``termination_fn`` (default: the task env's own).

    Returns ``ModelRollout`` with obs [B, H + 1, O], reward [B, H], terminated [B, H]
    (cumulative, as in ``simulate``) and zero disagreement.
    """
    env = native.env
    if _check_state(env, state):
        raise ValueError(f"{env.name}: native rollouts start from one unbatched state, got "
                         f"a batch of {state.obs.shape[0]}")
    reward_fn = env.reward_fn if reward_fn is None else reward_fn
    termination_fn = env.termination_fn if termination_fn is None else termination_fn
    next_obs = native.next_obs(state, actions)  # [B, H, O]
    obs0 = jnp.broadcast_to(state.obs, next_obs[:, 0].shape)  # [B, O]
    obs = jnp.concatenate([obs0[:, None], next_obs], 1)
    per_step = lambda f: jax.vmap(jax.vmap(f))
    reward = per_step(reward_fn)(obs[:, :-1], actions, next_obs).astype(jnp.float32)
    done = per_step(termination_fn)(obs[:, :-1], actions, next_obs).astype(jnp.float32)
    terminated = jax.lax.cummax(done, axis=1)
    return rollout_from_steps(obs0, next_obs, reward, terminated)
