"""What every planner shares: the objective type, the Planner tuple, validation, batching.

A planner optimises an action sequence a[0:H] of a black-box objective

    J(objective_params, obs, actions [N, H, A], key) -> returns [N]

(a population-level objective: see ``mbjax.planners.objectives``). Planners know nothing
of the model behind J, so the same planner runs on a learned ensemble or on the true
simulator. ``objective_params`` is whatever J needs that changes over time (the model's
``ModelState``); ``obs`` is whatever J starts from (an observation, or an env ``State``
for the true simulator).

``Planner(init, plan, default_params, horizon, action_size, advance=None)``:
  init(key) -> state
  plan(params, objective_params, state, obs, key) -> (action [A], state, info)
  advance(state, info, steps) -> state      (optional)
where ``params`` is the planner's pytree of tunable floats (temperatures, smoothing, std):
a sweep over them is a ``vmap``. Sizes (horizon, population, iterations) are static.

``plan`` returns the state warm-started for the NEXT step (its solution shifted by one
step). When a caller executes k > 1 actions of ``info["plan"]`` before replanning
(``mpc(replan_every=k)``) it calls ``advance(state, info, k - 1)`` to move the warm start
on by the k - 1 extra steps. The default (``advance=None``, see ``planner_advance``) shifts
every [..., H, A] leaf of the state by ``steps``, repeating its last step: after ``plan``'s
own shift that last step is the planner's fill value (the middle of the bounds, or the
repeated last action), so shifting once by 1 and then by k - 1 equals shifting by k.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mbjax.types import Array, PRNGKey

Objective = Callable[[Any, Any, Array, PRNGKey], Array]


class Planner(NamedTuple):
    """A planner as pure functions plus its default tunable parameters.

    ``advance(state, info, steps) -> state`` (optional) moves the warm start of a state
    returned by ``plan`` on by ``steps`` more executed actions; None means the generic
    shift of ``shift_sequences`` (see the module docstring).
    """

    init: Callable[[PRNGKey], Any]
    plan: Callable[..., tuple[Array, Any, dict]]
    default_params: Any
    horizon: int
    action_size: int
    advance: Callable[[Any, dict, int], Any] | None = None


def check_bounds(action_low, action_high, action_size: int | None = None):
    """Validates action bounds: 1-D, equal shapes, finite, low < high. Returns float32
    arrays. (Sampling planners draw around the middle of the box and scale noise by its
    width: an infinite bound would make every candidate NaN.)"""
    low = jnp.asarray(action_low, jnp.float32)
    high = jnp.asarray(action_high, jnp.float32)
    if not (bool(jnp.all(jnp.isfinite(low))) and bool(jnp.all(jnp.isfinite(high)))):
        raise ValueError(f"action bounds must be finite, got {low} and {high}; planners "
                         "sample inside the box (clip an unbounded action space to the "
                         "range that matters)")
    if low.ndim != 1 or low.shape != high.shape:
        raise ValueError(f"action bounds must be 1-D arrays of equal shape [A], got "
                         f"{low.shape} and {high.shape}")
    if action_size is not None and low.shape[0] != action_size:
        raise ValueError(f"action bounds have size {low.shape[0]}, expected {action_size}")
    if not bool(jnp.all(low < high)):
        raise ValueError(f"every action_low must be < action_high, got {low} and {high}")
    return low, high


def check_positive(**sizes: int) -> None:
    """``planner.<name> must be >= 1, got <value>`` for each size below 1."""
    for name, value in sizes.items():
        if int(value) < 1:
            raise ValueError(f"planner.{name} must be >= 1, got {value}")


def check_at_most(name: str, value, bound_name: str, bound) -> None:
    """``planner.<name> (v) must be <= planner.<bound_name> (b)`` unless v <= b."""
    if value > bound:
        raise ValueError(f"planner.{name} ({value}) must be <= planner.{bound_name} "
                         f"({bound})")


def check_elite_sizes(population: int, num_elites: int, iterations: int) -> None:
    """The sizes of an elite-based sampler (CEM, iCEM): all >= 1, num_elites <= population."""
    check_positive(population=population, num_elites=num_elites, iterations=iterations)
    check_at_most("num_elites", num_elites, "population", population)


def check_range(name: str, value, low: float = -np.inf, high: float = np.inf, *,
                include_low: bool = True, include_high: bool = True) -> None:
    """Checks low <= value <= high (``include_*=False``: strict) for a float or an array of
    them (a sweep); traced values are not checked.

    The message names the field: ``planner.sigma must be > 0, got -1.0``.
    """
    if isinstance(value, jax.core.Tracer):
        return
    v = np.asarray(value)
    ok = (v >= low if include_low else v > low) & (v <= high if include_high else v < high)
    if np.all(ok):
        return
    if high == np.inf:
        want = f"{'>=' if include_low else '>'} {low}"
    elif low == -np.inf:
        want = f"{'<=' if include_high else '<'} {high}"
    else:
        want = f"in {'[' if include_low else '('}{low}, {high}{']' if include_high else ')'}"
    raise ValueError(f"planner.{name} must be {want}, got {value}")


def positive_floats(*names: str) -> Callable[[Any], None]:
    """A params check: each named float of a params struct (or spec) must be > 0."""

    def check(params) -> None:
        for name in names:
            check_range(name, getattr(params, name), 0, include_low=False)

    return check


def sanitize_returns(returns: Array) -> tuple[Array, Array]:
    """NaN policy shared by all planners: non-finite returns count as -inf.

    Returns (returns with NaN/+-inf replaced by a very low finite value, number replaced).
    A finite floor (not -inf) keeps softmax weights and means well defined.
    """
    bad = ~jnp.isfinite(returns)
    return jnp.where(bad, -1e30, returns), jnp.sum(bad)


def shift(sequence: Array, fill: Array, steps: int = 1) -> Array:
    """Warm start: drops the first ``steps`` steps of [..., H, A] and appends ``fill``.

    ``fill`` [..., A] broadcasts against the leading axes; ``steps`` (static, 0..H) copies
    of it end the result: out[..., t, :] = sequence[..., t + steps, :] for t < H - steps.
    """
    if steps == 0:
        return sequence
    tail = jnp.broadcast_to(fill[..., None, :], sequence.shape[:-2] + (steps,)
                            + sequence.shape[-1:])
    return jnp.concatenate([sequence[..., steps:, :], tail], axis=-2)


def shift_sequences(state, horizon: int, action_size: int, steps: int):
    """The generic warm-start advance: every leaf of ``state`` whose trailing shape is
    [H, A] is shifted by ``steps`` (static), repeating its last step; other leaves stay."""

    def leaf(x):
        if jnp.ndim(x) >= 2 and tuple(x.shape[-2:]) == (horizon, action_size):
            return shift(x, x[..., -1, :], steps)
        return x

    return jax.tree_util.tree_map(leaf, state)


def planner_advance(planner: Planner) -> Callable[[Any, dict, int], Any]:
    """``planner.advance``, or the generic ``shift_sequences`` when it has none."""
    if planner.advance is not None:
        return planner.advance
    return lambda state, info, steps: shift_sequences(state, planner.horizon,
                                                      planner.action_size, steps)


def batch(planner: Planner, batched_objective_params: bool = False,
          chunk_size: int | None = None) -> Planner:
    """The same planner for N environments at once (one compiled call).

    ``init(keys [N])``, ``plan(params, objective_params, states, obs [N, ...], keys [N])``
    and ``advance(states, infos, steps)`` vmap over the leading axis of state, obs, info
    and key; planner ``params`` are shared, and ``objective_params`` too unless
    ``batched_objective_params`` (e.g. one model per env).

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
    one = planner_advance(planner)

    def advance(states, infos, steps: int):
        return jax.vmap(lambda s, i: one(s, i, steps))(states, infos)

    return planner._replace(init=jax.vmap(planner.init), plan=plan, advance=advance)
