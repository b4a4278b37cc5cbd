"""Terminal values for planning: V(s) from a SAC critic, and objectives that use it.

The notes' "plan with a terminal value function": plan over a short horizon H and add a
tail estimate of what follows,

    J(a_{0:H}) = sum_{t<H} gamma^t r_t + gamma^H V(s_H),

with V(s) = min_i Q_i(s, pi(s)) from a SAC agent (twin critics, the actor's
deterministic action tanh(mu(s))). With gamma = the critic's discount, V estimates the
(soft, entropy-regularised) return of following pi after the horizon, so a short plan
that ends in a good state is preferred even when its first H rewards are worse.

* ``sac_terminal_value(sac, sac_state)`` -> V(obs [O]) -> [] for
  ``mbjax.planners.make_model_objective(..., terminal_value=V)`` (fixed critic);
* ``make_value_model_objective(model, sac, ...)`` -> J((model_state, sac_state), obs,
  actions, key): the critic is an objective parameter, so a loop that keeps training
  the critic plans with the current one without recompiling;
* ``make_env_value_objective(env, value_fn, discount)`` -> J(value_params, env_state,
  actions, key): the same on the true simulator (``make_env_objective`` plus V).
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from mbjax.agents.sac import SAC
from mbjax.models.ensemble import EnsembleModel
from mbjax.models.true_dynamics import simulate
from mbjax.planners.objectives import discounted_return, make_model_objective
from mbjax.types import Array


def sac_terminal_value(sac: SAC, sac_state) -> Callable[[Array], Array]:
    """V(obs [O]) -> [] = min_i Q_i(obs, pi_det(obs)) for a fixed SAC state."""

    def value(obs: Array) -> Array:
        return sac.value(sac_state, obs)

    return value


def make_value_model_objective(model: EnsembleModel, sac: SAC, reward_fn, termination_fn,
                               num_particles: int, propagation: str = "ts_inf",
                               discount: float | None = None, use_value: bool = True,
                               **objective_kwargs):
    """J((model_state, sac_state), obs [O], actions [N, H, A], key) -> returns [N].

    ``make_model_objective`` with ``terminal_value = V`` built from the ``sac_state`` given
    at call time (``use_value=False`` drops it: the same J without the tail). ``discount``
    defaults to the critic's gamma so the tail and the rewards are on the same scale.
    """
    gamma = sac.config.discount if discount is None else discount

    def objective(params, obs, actions, key):
        model_state, sac_state = params
        value = sac_terminal_value(sac, sac_state) if use_value else None
        inner = make_model_objective(model, reward_fn, termination_fn, num_particles,
                                     propagation, discount=gamma, terminal_value=value,
                                     **objective_kwargs)
        return inner(model_state, obs, actions, key)

    return objective


def make_env_value_objective(env, value_fn: Callable | None, discount: float = 0.99):
    """J(value_params, env_state, actions [N, H, A], key) -> returns [N] on the true
    simulator: sum_t gamma^t alive_t r_t + gamma^H alive_H value_fn(value_params, s_H).

    ``env`` must not auto-reset (the task env); ``value_fn(params, obs [O]) -> []``, e.g.
    ``sac.value``; None plans without a tail (then ``value_params`` is unused).
    """

    def objective(value_params, state, actions, key):
        del key
        out = simulate(env, state, actions)
        values = None
        if value_fn is not None:
            values = jax.vmap(lambda o: value_fn(value_params, o))(out.obs[:, -1])
        return discounted_return(out.reward, out.terminated, discount,
                                 terminal_values=values)

    return objective
