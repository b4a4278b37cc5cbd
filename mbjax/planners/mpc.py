"""Executing plans in an environment: open-loop and closed-loop MPC, both as ``lax.scan``.

* ``open_loop``: plan once from the start state, then execute the whole plan (H steps);
  on a deterministic system the executed return is the plan's predicted return (tested on
  a linear-quadratic problem in tests/test_planners_lq.py).
* ``mpc``: replan every ``replan_every`` = k steps (1 = classic MPC) from the current state
  with the warm-started planner state, execute the first k actions of the plan, repeat;
  ``num_steps`` must be a multiple of k.

Warm starts in ``mpc``. ``plan`` returns a state warm-started for one executed action;
after k actions ``mpc`` calls ``planner.advance(state, info, k - 1)`` (the generic shift of
``planners.base.planner_advance`` when the planner has none), so the next call starts
from the plan shifted by k, its last steps filled as the planner fills its own shift (the
middle of the bounds, or the repeated last action for MPPI), and MPPI's filter starts from
the last executed action plan[k - 1]. For k = 1 nothing changes.

Auto-resets. When an env of an ``EpisodeWrapper`` with auto-reset ends its episode
(terminal or truncated) inside ``mpc``, the env restarts but the warm start belongs to
the old episode: that env's planner state is replaced by ``planner.init`` (keyed by
``fold_in(key, 1)`` of the block's key) before the next replan. A restart is read from
the episode info (``episode_restarted``: done and the step counter back at 0); envs
without that info (bare task envs, which do not auto-reset) keep their warm start. With
k > 1 the actions left in the block after a mid-block restart are still executed (the
plan was made before the restart); the re-initialisation applies at the next replan.

Both return the transitions for data aggregation (``mbjax.types.Transition``, leading time
axis) and the planner infos. For N environments pass a batched env
(``VmapWrapper``/``wrap_for_training``) and a batched planner (``planners.batch``).
``observe(env_state)`` says what the planner starts from: the observation (learned model,
the default) or the env ``State`` itself (planning on the true simulator).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from mbjax.envs.acting import transition
from mbjax.envs.base import Env, State
from mbjax.planners.base import Planner, planner_advance
from mbjax.types import Array, PRNGKey


def _obs(state: State):
    return state.obs


def episode_restarted(state: State) -> Array | None:
    """Whether the step into ``state`` ended its episode and auto-reset the env: done and
    ``info["steps"]`` back at 0 (``EpisodeWrapper``). Shape [] or [N]; None for states
    without episode info (no auto-reset)."""
    if "steps" not in state.info:
        return None
    return (state.done > 0.5) & (state.info["steps"] == 0)


def _execute(env: Env, env_state: State, actions):
    """Steps ``env`` through actions [k, ...] (time first); returns (state, transitions,
    restarted [k, ...] or None)."""

    def body(s, a):
        ns = env.step(s, a)
        return ns, (transition(s, a, ns), episode_restarted(ns))

    env_state, (transitions, restarted) = jax.lax.scan(body, env_state, actions)
    return env_state, transitions, restarted


def _reinit_where(planner: Planner, restarted: Array, planner_state, key: PRNGKey):
    """``planner_state`` with the envs flagged by ``restarted`` [] or [N] re-initialised."""
    keys = jax.random.split(key, restarted.shape[0]) if restarted.ndim else key
    fresh = planner.init(keys)

    def select(new, old):
        mask = restarted.reshape(restarted.shape + (1,) * (jnp.ndim(old) - restarted.ndim))
        return jnp.where(mask, new, old)

    return jax.tree_util.tree_map(select, fresh, planner_state)


def mpc(env: Env, planner: Planner, params, objective_params, env_state: State,
        planner_state, key: PRNGKey, num_steps: int, replan_every: int = 1,
        observe: Callable = _obs):
    """Closed-loop MPC for ``num_steps`` env steps; see the module docstring.

    Returns (env_state, planner_state, transitions [T, ...], infos [T / k, ...]).
    """
    if replan_every < 1 or replan_every > planner.horizon:
        raise ValueError(f"replan_every must be in [1, horizon={planner.horizon}], got "
                         f"{replan_every}")
    if num_steps % replan_every:
        raise ValueError(f"num_steps ({num_steps}) must be a multiple of replan_every "
                         f"({replan_every})")
    batched = env_state.obs.ndim == 2
    advance = planner_advance(planner)

    def replan(carry, key):
        env_state, planner_state = carry
        keys = jax.random.split(key, env_state.obs.shape[0]) if batched else key
        _, planner_state, info = planner.plan(params, objective_params, planner_state,
                                              observe(env_state), keys)
        if batched:
            actions = info["plan"][:, :replan_every].swapaxes(0, 1)  # [k, N, A]
        else:
            actions = info["plan"][:replan_every]
        if replan_every > 1:
            planner_state = advance(planner_state, info, replan_every - 1)
        env_state, transitions, restarted = _execute(env, env_state, actions)
        if restarted is not None:
            planner_state = _reinit_where(planner, restarted.any(0), planner_state,
                                          jax.random.fold_in(key, 1))
        return (env_state, planner_state), (transitions, info)

    keys = jax.random.split(key, num_steps // replan_every)
    (env_state, planner_state), (transitions, infos) = jax.lax.scan(
        replan, (env_state, planner_state), keys)
    transitions = jax.tree_util.tree_map(
        lambda x: x.reshape((num_steps,) + x.shape[2:]), transitions)
    return env_state, planner_state, transitions, infos


def open_loop(env: Env, planner: Planner, params, objective_params, env_state: State,
              planner_state, key: PRNGKey, observe: Callable = _obs):
    """Plans once and executes the full plan of H actions without replanning.

    Returns (env_state, transitions [H, ...], info).
    """
    batched = env_state.obs.ndim == 2
    if batched:
        key = jax.random.split(key, env_state.obs.shape[0])
    _, _, info = planner.plan(params, objective_params, planner_state, observe(env_state), key)
    actions = info["plan"].swapaxes(0, 1) if batched else info["plan"]
    env_state, transitions, _ = _execute(env, env_state, actions)
    return env_state, transitions, info
