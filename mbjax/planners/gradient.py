"""Gradient-based planning: backpropagate J through the model into the action sequence.

R restarts (R - 1 random in the bounds + the warm-started previous solution) are
optimised in parallel for ``iterations`` steps of any optax optimiser (Adam by default)
on the objective sum_r J(a_r). Bounds are kept by ``bound="tanh"``
(a = mid + half tanh(u), optimise u) or ``bound="projection"`` (clip after each step).
J is evaluated with one key per iteration (common random numbers across restarts).
The best sequence seen is executed.

``make_cem_gradient`` (spec ``CEMGradientConfig``) is the hybrid: CEM rounds, then the
same gradient refinement on the top ``num_refine`` elites and the CEM mean.
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
    check_at_most,
    check_positive,
    positive_floats,
)
from mbjax.planners.cem import CEMConfig, CEMParams, cem_iterations, check_cem_params
from mbjax.planners.registry import PlannerSpec, carry_over, register_planner, spec_kind
from mbjax.planners.sampling import (
    Best,
    evaluate,
    make_sequence_planner,
    no_best,
    scorer,
    track_best,
)


@struct.dataclass
class GradientParams:
    learning_rate: float = 0.05


check_learning_rate = positive_floats("learning_rate")


@register_planner
@dataclasses.dataclass(frozen=True)
class GradientConfig(PlannerSpec):
    """The gradient-planner spec."""

    horizon: int = 30
    num_restarts: int = 8
    iterations: int = 50
    bound: str = "tanh"
    optimizer: str | Callable[[float], optax.GradientTransformation] = "adam"
    """An optax optimiser: its name ("adam", "sgd", ...) or learning_rate -> transform."""
    learning_rate: float = GradientParams.learning_rate
    kind: str = spec_kind("gradient")
    takes_proposals = False  # restarts by gradient ascent: no population to join
    params_type = GradientParams
    check_params = staticmethod(check_learning_rate)

    def __post_init__(self):
        check_positive(num_restarts=self.num_restarts, iterations=self.iterations)
        if self.bound not in ("tanh", "projection"):
            raise ValueError(f"planner.bound must be 'tanh' or 'projection', got "
                             f"{self.bound!r}")
        optimizer_of(self.optimizer)
        super().__post_init__()

    def build_search(self, objective, action_low, action_high, params=None) -> Planner:
        return _search_gradient_planner(objective, action_low, action_high, self, params)


def optimizer_of(optimizer) -> Callable[[float], optax.GradientTransformation]:
    """learning_rate -> optax transform, from a callable or the name of an optax one."""
    if callable(optimizer):
        return optimizer
    fn = getattr(optax, optimizer, None) if isinstance(optimizer, str) else None
    if not callable(fn):
        raise ValueError(f"planner.optimizer must be the name of an optax optimiser "
                         f"('adam', 'sgd', ...) or a callable, got {optimizer!r}")
    return fn


@struct.dataclass
class GradientState:
    best: jax.Array  # [H, A] previous solution, shifted


def gradient_refine(objective: Objective, config: GradientConfig, low, high,
                    learning_rate, objective_params, obs, init_actions, key) -> Best:
    """Optimises sequences [R, H, A] by gradient ascent on J; returns the best sequence
    [H, A] seen (starting from init_actions[0]), its return and the non-finite count."""
    mid, half = (low + high) / 2.0, (high - low) / 2.0
    optimizer = optimizer_of(config.optimizer)(learning_rate)
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
        u, opt_state, best = carry
        grads, returns = grad_fn(u, key)
        best, _ = track_best(best, to_actions(u), returns)
        grads = jax.tree_util.tree_map(lambda g: -jnp.nan_to_num(g), grads)  # ascent
        updates, opt_state = optimizer.update(grads, opt_state, u)
        u = optax.apply_updates(u, updates)
        if config.bound == "projection":
            u = jnp.clip(u, low, high)
        return (u, opt_state, best), None

    keys = jax.random.split(key, config.iterations + 1)
    init = (u0, optimizer.init(u0), no_best(init_actions[0]))
    (u, _, best), _ = jax.lax.scan(step, init, keys[:-1])
    best, _ = evaluate(scorer(objective, objective_params, obs), to_actions(u), keys[-1],
                       best)
    return best


def _search_gradient_planner(objective: Objective, action_low, action_high,
                          config: GradientConfig,
                          params: GradientParams | None = None) -> Planner:
    """The planner of ``config``'s search space (``GradientConfig.build_search``)."""

    def solve(box, params: GradientParams, objective_params, state: GradientState, obs,
              key):
        key_init, key_opt = jax.random.split(key)
        rand = jax.random.uniform(key_init, (config.num_restarts - 1,) + state.best.shape,
                                  minval=box.low, maxval=box.high)
        starts = jnp.concatenate([state.best[None], rand], axis=0)
        best = gradient_refine(objective, config, box.low, box.high, params.learning_rate,
                               objective_params, obs, starts, key_opt)
        return best.sequence, best, GradientState(best=box.shift(best.sequence, box.mid)), {}

    return make_sequence_planner(config, action_low, action_high, params,
                                 lambda box: GradientState(best=box.middle()), solve)


@struct.dataclass
class CEMGradientParams:
    cem: CEMParams = CEMParams()
    learning_rate: float = 0.05


@register_planner
@dataclasses.dataclass(frozen=True)
class CEMGradientConfig(CEMConfig):
    """The CEM -> gradient spec: CEM's sizes and floats, then ``refine_iterations``
    gradient steps (Adam, tanh bounds, ``learning_rate``) on the top ``num_refine`` elites
    and the CEM mean. ``return_best`` is unused (the best sequence found is executed)."""

    num_refine: int = 4
    refine_iterations: int = 10
    learning_rate: float = CEMGradientParams.learning_rate
    kind: str = spec_kind("cem_gradient")
    params_type = CEMGradientParams

    def __post_init__(self):
        check_positive(num_refine=self.num_refine, refine_iterations=self.refine_iterations)
        check_at_most("num_refine", self.num_refine, "num_elites", self.num_elites)
        super().__post_init__()

    def check_params(self, params) -> None:
        check_cem_params(params.cem)
        check_learning_rate(params)

    def build_search(self, objective, action_low, action_high, params=None) -> Planner:
        return _search_cem_gradient(objective, action_low, action_high, self, params)


def _search_cem_gradient(objective: Objective, action_low, action_high,
                         spec: CEMGradientConfig, params: CEMGradientParams | None = None
                         ) -> Planner:
    """The planner of ``spec``'s search space (``CEMGradientConfig.build_search``)."""
    grad_config = GradientConfig(horizon=spec.horizon, num_restarts=spec.num_refine + 1,
                                 iterations=spec.refine_iterations)

    def solve(box, params: CEMGradientParams, objective_params, state: GradientState, obs,
              key):
        key_cem, key_grad = jax.random.split(key)
        mean, elites, cem = cem_iterations(objective, spec, box, params.cem, objective_params,
                                           obs, state.best, key_cem)
        starts = jnp.concatenate([mean[None], elites[:spec.num_refine]], axis=0)
        refined = gradient_refine(objective, grad_config, box.low, box.high,
                                  params.learning_rate, objective_params, obs, starts, key_grad)
        better = refined.value > cem.value
        best = Best(jnp.where(better, refined.sequence, cem.sequence),
                    jnp.maximum(refined.value, cem.value),
                    cem.num_nonfinite + refined.num_nonfinite)
        return (best.sequence, best, GradientState(best=box.shift(best.sequence, box.mid)),
                {"cem_return": cem.value})

    return make_sequence_planner(spec, action_low, action_high, params,
                                 lambda box: GradientState(best=box.middle()), solve)


def make_gradient_planner(objective: Objective, action_low, action_high,
                          config: GradientConfig | None = None,
                          params: GradientParams | None = None) -> Planner:
    """Gradient planner over J; see the module docstring (``params=None``:
    ``config.default_params()``).

    Any action parameterisation of ``config`` applies (``GradientConfig.build``)."""
    return (config or GradientConfig()).build(objective, action_low, action_high, params)


def make_cem_gradient(objective: Objective, action_low, action_high,
                      cem_config: CEMConfig | None = None, num_refine: int | None = None,
                      refine_iterations: int | None = None,
                      params: CEMGradientParams | None = None) -> Planner:
    """CEM, then ``refine_iterations`` gradient steps on the top ``num_refine`` elites
    (and the CEM mean); executes the best sequence found.

    ``cem_config`` is a ``CEMGradientConfig`` or a plain ``CEMConfig`` (its fields carried
    over); ``num_refine`` / ``refine_iterations``, when given, override the spec's (4 and
    10 by default). ``params=None``: the spec's ``default_params()``.

    Any action parameterisation of the spec applies (``CEMGradientConfig.build``).
    """
    overrides = {"num_refine": num_refine, "refine_iterations": refine_iterations}
    spec = carry_over(cem_config or CEMConfig(), CEMGradientConfig,
                      **{k: v for k, v in overrides.items() if v is not None})
    return spec.build(objective, action_low, action_high, params)
