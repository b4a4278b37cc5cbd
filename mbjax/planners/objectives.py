"""Objectives J(objective_params, obs, actions [N, H, A], key) -> returns [N] for planners.

``make_model_objective`` scores candidate action sequences with rollouts of a learned
ensemble (``mbjax.models.rollout``):

    J(a) = risk_p( sum_{t<H} gamma^t alive_t (r_t - lambda * u_t - c(a)) + gamma^H alive_H V(s_H) )

over P particles per candidate, where u_t is the ensemble disagreement, c(a) the action
magnitude / smoothness cost, alive_t = 1 until a predicted termination (a terminated
trajectory stops accruing reward, plus an optional one-off ``termination_penalty``), and
risk_p is a risk measure over the particles (``mbjax.planners.risk``: the mean, the worst
case, CVaR_alpha or mean - k std with ``risk_aversion`` k; the default is mean - k std).

``make_env_objective`` plans on the true simulator and ``make_randomized_env_objective`` on
M simulators with randomised physical parameters, the returns aggregated with the same
risk measures over the M simulators (hydrax-style risk-aware planning).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from mbjax.models.ensemble import EnsembleModel
from mbjax.models.rollout import check_propagation, rollout_particles
from mbjax.planners.risk import (
    aggregate,
    check_risk,
    env_with_params,
    physical_params,
    randomize_params,
    replace_params,
)
from mbjax.sharding import shard_along_data
from mbjax.types import Array, PRNGKey


def action_costs(actions: Array, magnitude: float, smoothness: float) -> Array:
    """c(a) per step for sequences [N, H, A]: magnitude |a_t|^2 + smoothness |a_t - a_{t-1}|^2.

    Returns [N, H] (the first step has no smoothness term).
    """
    mag = magnitude * jnp.sum(actions**2, axis=-1)
    diff = jnp.diff(actions, axis=1)
    smooth = smoothness * jnp.concatenate(
        [jnp.zeros(actions.shape[:1] + (1,)), jnp.sum(diff**2, axis=-1)], axis=1)
    return mag + smooth


def discounted_return(rewards: Array, terminated: Array, discount: float,
                      termination_penalty: float = 0.0,
                      terminal_values: Array | None = None) -> Array:
    """sum_t gamma^t alive_t r_t (+ gamma^H alive_H V) for rewards [B, H], terminated [B, H].

    alive_t = prod_{s<t} (1 - terminated_s): the reward of the terminating step counts,
    later ones do not; ``termination_penalty`` is subtracted once at the terminating step.
    """
    horizon = rewards.shape[-1]
    alive_before = jnp.cumprod(1.0 - terminated, axis=-1)
    alive_at = jnp.concatenate([jnp.ones_like(alive_before[..., :1]),
                                alive_before[..., :-1]], axis=-1)
    gammas = discount ** jnp.arange(horizon)
    ret = jnp.sum(gammas * alive_at * (rewards - termination_penalty * terminated), axis=-1)
    if terminal_values is not None:
        ret = ret + discount**horizon * alive_before[..., -1] * terminal_values
    return ret


@struct.dataclass
class ObjectiveParams:
    """The traced floats of a model objective: a sweep over them is a ``vmap``.

    discount: gamma per step, in (0, 1]; uncertainty_penalty: lambda >= 0 (per-step
    ensemble disagreement cost); risk_aversion: k >= 0 in mean - k std over particles
    (risk "mean_std"); cvar_alpha: the CVaR level alpha in (0, 1] (risk "cvar"). New
    fields go at the end (positional constructions stay valid).
    """

    discount: Any = 1.0
    uncertainty_penalty: Any = 0.0
    risk_aversion: Any = 0.0
    cvar_alpha: Any = 1.0


def make_tunable_model_objective(
    model: EnsembleModel,
    reward_fn: Callable | None,
    termination_fn: Callable | None = None,
    num_particles: int = 20,
    propagation: str = "ts_inf",
    with_disagreement: bool = False,
    with_risk: bool = True,
    terminal_value: Callable[[Any, Array], Array] | None = None,
    termination_penalty: float = 0.0,
    action_magnitude_cost: float = 0.0,
    action_smoothness_cost: float = 0.0,
    sample: bool = True,
    risk: str = "mean_std",
    known_next_obs: Callable | None = None,
):
    """Builds J((model_state, hparams, value_params), obs [O], actions [N, H, A], key) -> [N]

    with the objective's floats ``hparams`` (``ObjectiveParams``) given at call time, so
    they may be traced (vmapped over seeds / sweep points):

        J(a) = risk_p( sum_{t<H} gamma^t alive_t (r_t - lambda u_t - c(a))
                       + gamma^H alive_H V(value_params, s_H) )

    Static switches: ``with_disagreement`` computes u_t (needed for lambda != 0; without
    it lambda is ignored), ``with_risk`` applies the risk measure ``risk`` over the P
    particles (without it: the mean). ``risk`` (static, ``mbjax.planners.risk``): "mean",
    "worst" (min over particles), "cvar" (CVaR at the traced level ``hparams.cvar_alpha``)
    or "mean_std" (mean - k std, k = the traced ``hparams.risk_aversion``; the default).
    ``terminal_value(value_params, obs [O]) -> []`` (e.g. a SAC critic's value; None: no
    tail, ``value_params`` unused). ``known_next_obs(obs, next_obs) -> next_obs`` sets
    the observation entries the task computes itself in every predicted step
    (``Env.known_next_obs``; None: none). Other arguments as in ``make_model_objective``.
    """
    check_propagation(propagation, num_particles, model.num_members)
    check_risk(risk)

    def objective(params, obs: Array, actions: Array, key: PRNGKey) -> Array:
        model_state, hparams, value_params = params
        actions = shard_along_data(actions)  # candidates over the mesh's data devices
        n, horizon, _ = actions.shape
        p = num_particles
        obs0 = jnp.broadcast_to(obs, (n * p,) + obs.shape)
        acts = jnp.repeat(actions, p, axis=0)  # particle b = candidate b // P
        out = rollout_particles(model, model_state, obs0, acts, key, reward_fn,
                                termination_fn, propagation, sample, with_disagreement,
                                known_next_obs)
        rewards = out.reward
        if with_disagreement:
            rewards = rewards - hparams.uncertainty_penalty * out.disagreement
        rewards = rewards - action_costs(acts, action_magnitude_cost, action_smoothness_cost)
        values = None
        if terminal_value is not None:
            values = jax.vmap(lambda o: terminal_value(value_params, o))(out.obs[:, -1])
        ret = discounted_return(rewards, out.terminated, hparams.discount,
                                termination_penalty, values).reshape(n, p)
        if with_risk:
            return aggregate(ret, risk, hparams.cvar_alpha, hparams.risk_aversion)
        return ret.mean(-1)

    return objective


def make_model_objective(
    model: EnsembleModel,
    reward_fn: Callable | None,
    termination_fn: Callable | None = None,
    num_particles: int = 20,
    propagation: str = "ts_inf",
    discount: float = 1.0,
    uncertainty_penalty: float = 0.0,
    risk_aversion: float = 0.0,
    terminal_value: Callable[[Array], Array] | None = None,
    termination_penalty: float = 0.0,
    action_magnitude_cost: float = 0.0,
    action_smoothness_cost: float = 0.0,
    sample: bool = True,
    known_next_obs: Callable | None = None,
):
    """Builds J(model_state, obs [O], actions [N, H, A], key) -> returns [N] with fixed
    floats (``make_tunable_model_objective`` takes them at call time).

    Args:
      model: the ensemble; ``model_state`` (its ``ModelState``) is J's first argument.
      reward_fn, termination_fn: unbatched (obs, action, next_obs) -> []; None uses the
        model's learned reward / termination heads.
      num_particles: P particles per candidate (a multiple of E for TS modes; PETS: 20).
      propagation: "ts_inf" (PETS default), "ts1" or "expectation".
      discount: gamma per step.
      uncertainty_penalty: lambda, subtracts lambda * ensemble disagreement per step.
      risk_aversion: k in mean - k std over particles (0: the mean).
      terminal_value: V(obs [O]) -> [], added as gamma^H V(s_H) (a pure function).
      termination_penalty: one-off cost at a predicted termination (PDDM-style).
      action_magnitude_cost, action_smoothness_cost: weights of c(a).
      sample: sample next states from the Gaussian head (True) or use member means.
      known_next_obs: (obs, next_obs) -> next_obs setting the task's own entries of each
        predicted step (``Env.known_next_obs``); None keeps the predictions.
    """
    if not 0.0 < discount <= 1.0:
        raise ValueError(f"discount must be in (0, 1], got {discount}")
    for name, value in (("uncertainty_penalty", uncertainty_penalty),
                        ("risk_aversion", risk_aversion),
                        ("termination_penalty", termination_penalty)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    tunable = make_tunable_model_objective(
        model, reward_fn, termination_fn, num_particles, propagation,
        with_disagreement=uncertainty_penalty > 0, with_risk=risk_aversion > 0,
        terminal_value=None if terminal_value is None else lambda _, o: terminal_value(o),
        termination_penalty=termination_penalty, action_magnitude_cost=action_magnitude_cost,
        action_smoothness_cost=action_smoothness_cost, sample=sample,
        known_next_obs=known_next_obs)
    hparams = ObjectiveParams(discount, uncertainty_penalty, risk_aversion)

    def objective(model_state, obs: Array, actions: Array, key: PRNGKey) -> Array:
        return tunable((model_state, hparams, None), obs, actions, key)

    return objective


def make_sequence_objective(step_fn: Callable, reward_fn: Callable, discount: float = 1.0,
                            termination_fn: Callable | None = None):
    """J for a known deterministic dynamics ``step_fn(params, x, a) -> x'`` (e.g. an env's
    pure ``dynamics`` or a linear system): returns of actions [N, H, A] from x [S].

    ``reward_fn(x, a, x')`` and ``termination_fn`` act on the state ``step_fn`` uses.
    """

    def single(params, x, actions):
        def body(x, a):
            nx = step_fn(params, x, a)
            term = termination_fn(x, a, nx) if termination_fn is not None else 0.0
            return nx, (reward_fn(x, a, nx), term)

        _, (rewards, term) = jax.lax.scan(body, x, actions)
        return discounted_return(rewards, jnp.asarray(term, jnp.float32) * jnp.ones_like(
            rewards), discount)

    def objective(params, x, actions, key):
        del key
        actions = shard_along_data(actions)
        return jax.vmap(single, in_axes=(None, None, 0))(params, x, actions)

    return objective


def make_env_objective(env, discount: float = 1.0, termination_penalty: float = 0.0,
                       simulator: str = "jax"):
    """J for planning on the true simulator: returns of actions [N, H, A] when ``env`` is
    stepped from the env ``State`` given as J's ``obs`` (N parallel copies of the env, e.g.
    N parallel MJX simulations; or, with ``simulator="mujoco"``, N native MuJoCo rollouts
    of a hand ball task, ``mbjax.envs.hand.native``). ``objective_params`` is unused (pass
    None). ``env`` must not auto-reset (use the task env, not ``wrap_for_training``)."""
    from mbjax.models.true_dynamics import simulate, simulate_native

    if simulator == "mujoco":
        from mbjax.envs.hand.native import NativeRollout

        native = NativeRollout(env)
        rollout = lambda state, actions: simulate_native(native, state, actions)  # noqa: E731
    elif simulator == "jax":  # N simulations over the devices
        rollout = lambda state, actions: simulate(env, state, shard_along_data(actions))  # noqa: E731
    else:
        raise ValueError(f"simulator must be 'jax' or 'mujoco', got {simulator!r}")

    def objective(objective_params, state, actions, key):
        del objective_params, key
        out = rollout(state, actions)
        return discounted_return(out.reward, out.terminated, discount, termination_penalty)

    return objective


def make_randomized_env_objective(
    env_fn: Callable,
    nominal_params,
    num_randomized: int,
    scale: float,
    key: PRNGKey,
    risk: str = "mean",
    discount: float = 1.0,
    cvar_alpha: float = 1.0,
    std_weight: float = 0.0,
    termination_penalty: float = 0.0,
    fields=None,
):
    """J for planning on M = ``num_randomized`` simulators with randomised physical
    parameters (domain randomisation; hydrax's risk-aware planning, ``mbjax.planners.risk``):

        J(a) = rho_m( sum_t gamma^t alive_t r_t  on the simulator env_fn(p_m) ),
        p_m = p_nominal (1 + scale u_m),  u_m ~ U(-1, 1) per field,

    with rho the risk measure ``risk`` over the M simulators. The M parameter sets are
    drawn once, here, with ``key`` (``randomize_params``; J's own key is unused: the same
    simulators score every candidate and every planning step). Every candidate of
    actions [N, H, A] is simulated on all M simulators from the same start env ``State``
    (J's ``obs``; a ``vmap`` over the M parameter sets of ``simulate`` of ``env_fn(p_m)``).

    Args:
      env_fn: ``env_fn(params) -> env``, the task env (no auto-reset) simulating with
        physical parameters ``params`` (e.g. ``lambda p: Pendulum(params=p)``, or
        ``lambda p: env_with_params(task_env, p)``); called with traced parameters.
      nominal_params: the nominal parameter dataclass (``PendulumParams``,
        ``CartpoleParams``, ...) or dict; the same handle system identification fits.
      num_randomized: M >= 1.
      scale: relative half-width of the uniform randomisation, in [0, 1) (0: M copies of
        the nominal simulator).
      key: PRNG key of the draw.
      risk: the risk measure over simulators (``RISK_MEASURES``; static).
      discount, cvar_alpha, std_weight: gamma, the CVaR level and k of mean - k std, used
        when J's ``objective_params`` is None. Given an ``ObjectiveParams`` instead, J
        uses its traced ``discount``, ``cvar_alpha`` and ``risk_aversion`` (as k).
      termination_penalty: one-off cost at a termination.
      fields: names of the fields to randomise (default: every float field).

    The drawn parameters are J's attribute ``simulator_params`` ({field: [M, ...]}).
    """
    from mbjax.models.true_dynamics import simulate

    check_risk(risk, cvar_alpha, std_weight)
    drawn = randomize_params(nominal_params, num_randomized, scale, key, fields)

    def returns_on(fields_m, state, actions, gamma):
        env = env_fn(replace_params(nominal_params, fields_m))
        out = simulate(env, state, actions)
        return discounted_return(out.reward, out.terminated, gamma, termination_penalty)

    def objective(objective_params, state, actions, key):
        del key
        if objective_params is None:
            gamma, alpha, k = discount, cvar_alpha, std_weight
        else:
            gamma = objective_params.discount
            alpha, k = objective_params.cvar_alpha, objective_params.risk_aversion
        actions = shard_along_data(actions)
        rets = jax.vmap(returns_on, in_axes=(0, None, None, None))(
            drawn, state, actions, gamma)  # [M, N]
        return aggregate(rets.T, risk, alpha, k)

    objective.simulator_params = drawn
    return objective


def make_randomized_task_objective(env, num_randomized: int, scale: float, key: PRNGKey,
                                   **kwargs):
    """``make_randomized_env_objective`` for an existing task env (wrappers such as
    ``ActionRepeat`` included): its own physical parameters are the nominal ones and
    ``env_with_params`` rebuilds it with p_m. Raises ValueError if the env has none
    (brax / MJX envs)."""
    nominal = physical_params(env)
    if nominal is None:
        raise ValueError(
            f"{env.name}: randomised simulators (num_randomized > 0) are supported for envs "
            "with physical parameters (the pure-JAX SimulatorEnv tasks: pendulum, "
            "cartpole_swingup, ...) only")
    return make_randomized_env_objective(lambda p: env_with_params(env, p), nominal,
                                         num_randomized, scale, key, **kwargs)
