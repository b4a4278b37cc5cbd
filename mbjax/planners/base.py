"""What every planner shares: the objective type, the Planner pair, validation, batching.

A planner optimises an action sequence a[0:H] of a black-box objective

    J(objective_params, obs, actions [N, H, A], key) -> returns [N]

(a population-level objective: see ``mbjax.planners.objectives``). Planners know nothing
of the model behind J, so the same planner runs on a learned ensemble or on the true
simulator. ``objective_params`` is whatever J needs that changes over time (the model's
``ModelState``); ``obs`` is whatever J starts from (an observation, or an env ``State``
for the true simulator).

``Planner(init, plan)``:
  init(key) -> state
  plan(params, objective_params, state, obs, key) -> (action [A], state, info)
where ``params`` is the planner's pytree of tunable floats (temperatures, smoothing, std):
a sweep over them is a ``vmap``. Sizes (horizon, population, iterations) are static.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mbjax.types import Array, PRNGKey

Objective = Callable[[Any, Any, Array, PRNGKey], Array]


class Planner(NamedTuple):
    """A planner as two pure functions plus its default tunable parameters."""

    init: Callable[[PRNGKey], Any]
    plan: Callable[..., tuple[Array, Any, dict]]
    default_params: Any
    horizon: int
    action_size: int


def check_bounds(action_low, action_high, action_size: int | None = None):
    """Validates action bounds: 1-D, equal shapes, low < high. Returns float32 arrays."""
    low = jnp.asarray(action_low, jnp.float32)
    high = jnp.asarray(action_high, jnp.float32)
    if low.ndim != 1 or low.shape != high.shape:
        raise ValueError(f"action bounds must be 1-D arrays of equal shape [A], got "
                         f"{low.shape} and {high.shape}")
    if action_size is not None and low.shape[0] != action_size:
        raise ValueError(f"action bounds have size {low.shape[0]}, expected {action_size}")
    if not bool(jnp.all(low < high)):
        raise ValueError(f"every action_low must be < action_high, got {low} and {high}")
    return low, high


def check_positive(**sizes: int) -> None:
    for name, value in sizes.items():
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def sanitize_returns(returns: Array) -> tuple[Array, Array]:
    """NaN policy shared by all planners: non-finite returns count as -inf.

    Returns (returns with NaN/+-inf replaced by a very low finite value, number replaced).
    A finite floor (not -inf) keeps softmax weights and means well defined.
    """
    bad = ~jnp.isfinite(returns)
    return jnp.where(bad, -1e30, returns), jnp.sum(bad)


def shift(sequence: Array, fill: Array) -> Array:
    """Warm start: drops the first step of [H, A] and appends ``fill`` [A] at the end."""
    return jnp.concatenate([sequence[1:], fill[None]], axis=0)


def batch(planner: Planner, batched_objective_params: bool = False,
          chunk_size: int | None = None) -> Planner:
    """The same planner for N environments at once (one compiled call).

    ``init(keys [N])`` and ``plan(params, objective_params, states, obs [N, ...], keys [N])``
    vmap over the leading axis of state, obs and key; planner ``params`` are shared, and
    ``objective_params`` too unless ``batched_objective_params`` (e.g. one model per env).

    ``chunk_size`` = C plans C environments at a time (``lax.map`` over ceil(N / C)
    chunks, each vmapped) with the same results. On a CPU the
    particles of a whole large batch no longer fit in cache and per-env time grows with N
    (e.g. 30 -> 38 ms at N = 16 -> 256 on 2 cores); chunks of 8-16 keep it at its
    best. On a GPU leave it None: one big batch is what keeps the device busy.
    """
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    obj_axis = 0 if batched_objective_params else None
    vplan = jax.vmap(planner.plan, in_axes=(None, obj_axis, 0, 0, 0))
    if chunk_size is None:
        plan = vplan
    else:
        def plan(params, objective_params, states, obs, keys):
            if batched_objective_params:
                return jax.lax.map(lambda a: planner.plan(params, *a),
                                   (objective_params, states, obs, keys),
                                   batch_size=chunk_size)
            return jax.lax.map(lambda a: planner.plan(params, objective_params, *a),
                               (states, obs, keys), batch_size=chunk_size)
    return planner._replace(init=jax.vmap(planner.init), plan=plan)
