"""Gradient-based planning: backpropagate J through the model into the action sequence.

R restarts (R - 1 random in the bounds + the warm-started previous solution) are
optimised in parallel for ``iterations`` steps of any optax optimiser (Adam by default)
on the objective sum_r J(a_r). Bounds are kept by ``bound="tanh"``
(a = mid + half tanh(u), optimise u) or ``bound="projection"`` (clip after each step).
J is evaluated with one key per iteration (common random numbers across restarts).
The best sequence seen is executed.

``make_cem_gradient`` is the hybrid: CEM rounds, then the same gradient refinement on the
top ``num_refine`` elites.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

from mbjax.planners.base import (
    Objective,
    Planner,
    check_bounds,
    check_positive,
    sanitize_returns,
    shift,
)
from mbjax.planners.cem import CEMConfig, CEMParams, cem_iterations, check_cem_params


@dataclasses.dataclass(frozen=True)
class GradientConfig:
    horizon: int = 30
    num_restarts: int = 8
    iterations: int = 50
    bound: str = "tanh"
    optimizer: Callable[[float], optax.GradientTransformation] = optax.adam

    def __post_init__(self):
        check_positive(horizon=self.horizon, num_restarts=self.num_restarts,
                       iterations=self.iterations)
        if self.bound not in ("tanh", "projection"):
            raise ValueError(f"bound must be 'tanh' or 'projection', got {self.bound!r}")


@struct.dataclass
class GradientParams:
    learning_rate: float = 0.05


@struct.dataclass
class GradientState:
    best: jax.Array  # [H, A] previous solution, shifted


def gradient_refine(objective: Objective, config: GradientConfig, low, high,
                    learning_rate, objective_params, obs, init_actions, key):
    """Optimises sequences [R, H, A] by gradient ascent on J; returns (best [H, A],
    best return, number of non-finite returns seen)."""
    mid, half = (low + high) / 2.0, (high - low) / 2.0
    optimizer = config.optimizer(learning_rate)
    if config.bound == "tanh":
        to_actions = lambda u: mid + half * jnp.tanh(u)
        u0 = jnp.arctanh(jnp.clip((init_actions - mid) / half, -0.999, 0.999))
    else:
        to_actions = lambda u: jnp.clip(u, low, high)
        u0 = init_actions

    def total(u, key):
        returns = objective(objective_params, obs, to_actions(u), key)
        return jnp.sum(jnp.where(jnp.isfinite(returns), returns, 0.0)), returns

    grad_fn = jax.grad(total, has_aux=True)

    def step(carry, key):
        u, opt_state, best_seq, best_ret, nbad = carry
        grads, returns = grad_fn(u, key)
        returns, bad = sanitize_returns(returns)
        i = jnp.argmax(returns)
        better = returns[i] > best_ret
        best_seq = jnp.where(better, to_actions(u)[i], best_seq)
        best_ret = jnp.maximum(best_ret, returns[i])
        grads = jax.tree_util.tree_map(lambda g: -jnp.nan_to_num(g), grads)  # ascent
        updates, opt_state = optimizer.update(grads, opt_state, u)
        u = optax.apply_updates(u, updates)
        if config.bound == "projection":
            u = jnp.clip(u, low, high)
        return (u, opt_state, best_seq, best_ret, nbad + bad), None

    keys = jax.random.split(key, config.iterations + 1)
    init = (u0, optimizer.init(u0), init_actions[0], jnp.array(-jnp.inf), jnp.array(0))
    (u, _, best_seq, best_ret, nbad), _ = jax.lax.scan(step, init, keys[:-1])
    final, bad = sanitize_returns(objective(objective_params, obs, to_actions(u), keys[-1]))
    i = jnp.argmax(final)
    better = final[i] > best_ret
    best_seq = jnp.where(better, to_actions(u)[i], best_seq)
    return best_seq, jnp.maximum(best_ret, final[i]), nbad + bad


def make_gradient_planner(objective: Objective, action_low, action_high,
                          config: GradientConfig | None = None,
                          params: GradientParams | None = None) -> Planner:
    config = config or GradientConfig()
    params = params or GradientParams()
    if float(params.learning_rate) <= 0:
        raise ValueError(f"learning_rate must be > 0, got {params.learning_rate}")
    low, high = check_bounds(action_low, action_high)
    mid = (low + high) / 2.0
    h, a = config.horizon, low.shape[0]

    def init(key):
        del key
        return GradientState(best=jnp.broadcast_to(mid, (h, a)))

    def plan(params: GradientParams, objective_params, state: GradientState, obs, key):
        key_init, key_opt = jax.random.split(key)
        rand = jax.random.uniform(key_init, (config.num_restarts - 1, h, a), minval=low,
                                  maxval=high)
        starts = jnp.concatenate([state.best[None], rand], axis=0)
        best, best_ret, nbad = gradient_refine(objective, config, low, high,
                                               params.learning_rate, objective_params, obs,
                                               starts, key_opt)
        info = {"plan": best, "best_return": best_ret, "num_nonfinite": nbad}
        return best[0], GradientState(best=shift(best, mid)), info

    return Planner(init=init, plan=plan, default_params=params, horizon=h, action_size=a)


@struct.dataclass
class CEMGradientParams:
    cem: CEMParams = CEMParams()
    learning_rate: float = 0.05


def make_cem_gradient(objective: Objective, action_low, action_high,
                      cem_config: CEMConfig | None = None, num_refine: int = 4,
                      refine_iterations: int = 10,
                      params: CEMGradientParams | None = None) -> Planner:
    """CEM, then ``refine_iterations`` gradient steps on the top ``num_refine`` elites
    (and the CEM mean); executes the best sequence found."""
    cem_config = cem_config or CEMConfig()
    params = params or CEMGradientParams()
    check_cem_params(params.cem)
    if num_refine < 1 or num_refine > cem_config.num_elites:
        raise ValueError(f"num_refine must be in [1, num_elites={cem_config.num_elites}], "
                         f"got {num_refine}")
    low, high = check_bounds(action_low, action_high)
    mid = (low + high) / 2.0
    h, a = cem_config.horizon, low.shape[0]
    grad_config = GradientConfig(horizon=h, num_restarts=num_refine + 1,
                                 iterations=refine_iterations)

    def init(key):
        del key
        return GradientState(best=jnp.broadcast_to(mid, (h, a)))

    def plan(params: CEMGradientParams, objective_params, state, obs, key):
        key_cem, key_grad = jax.random.split(key)
        mean, best_seq, best_ret, elites, nbad = cem_iterations(
            objective, cem_config, low, high, params.cem, objective_params, obs, state.best,
            key_cem)
        starts = jnp.concatenate([mean[None], elites[:num_refine]], axis=0)
        refined, refined_ret, bad = gradient_refine(
            objective, grad_config, low, high, params.learning_rate, objective_params, obs,
            starts, key_grad)
        better = refined_ret > best_ret
        best = jnp.where(better, refined, best_seq)
        info = {"plan": best, "best_return": jnp.maximum(refined_ret, best_ret),
                "cem_return": best_ret, "num_nonfinite": nbad + bad}
        return best[0], GradientState(best=shift(best, mid)), info

    return Planner(init=init, plan=plan, default_params=params, horizon=h, action_size=a)
