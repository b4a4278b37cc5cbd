"""The skeleton every built-in planner shares; each planner writes only its own rule.

``make_sequence_planner(spec, low, high, params, init, solve, advance)`` does the
preamble (params and bounds validation, the ``ActionBox`` of bounds, their middle, H and
A) and wraps ``solve`` into ``plan``:

  solve(box, params, objective_params, state, obs, key)
      -> (solution [H, A], best: Best, next_state, extra_info)
  plan -> (solution[0], next_state, {"plan": solution, "best_return": best.value,
                                     "num_nonfinite": best.num_nonfinite, **extra_info})

Inside ``solve``, ``Best`` keeps the best sequence seen, its return and the count of
non-finite returns (scored with the shared NaN policy, ``sanitize_returns``):
``evaluate`` scores a population and updates it; ``sampling_round`` is one round of a
sampling planner (sample from the carried distribution, score, update the distribution)
and ``sampling_rounds`` scans it for a number of iterations with one key per round.

Policy proposals (``mbjax.planners.proposals``): when J carries a ``propose``, ``scorer``
returns a ``ProposalScore`` and the rounds splice the policy's candidates into every
population (``proposing_sampler``); planners that build populations themselves (iCEM)
call ``proposals_for`` / ``with_proposals``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mbjax.planners.base import Planner, check_bounds, sanitize_returns, shift
from mbjax.planners.proposals import splice
from mbjax.planners.splines import make_spline
from mbjax.types import Array, PRNGKey


class ActionBox(NamedTuple):
    """Validated action bounds [A] of a planner, their middle, and the sizes H and A of
    the sequences it searches.

    ``shift(sequence [..., H, A], fill [..., A], steps=1)`` is the warm-start shift of
    those sequences: ``mbjax.planners.base.shift`` (drop a step, append ``fill``) for a
    per-step planner; for a planner over K spline knots (``horizon`` = K) the knots
    re-sampled ``steps`` executed steps later (``mbjax.planners.splines``). Planners
    warm-start through ``box.shift`` so that a parameterisation applies to them.
    """

    low: Array
    high: Array
    mid: Array
    horizon: int
    action_size: int
    shift: Callable = shift

    def middle(self) -> Array:
        """The constant sequence [H, A] at the middle of the bounds (every initial mean)."""
        return jnp.broadcast_to(self.mid, (self.horizon, self.action_size))


def action_box(action_low, action_high, horizon: int, shift_fn: Callable = shift
               ) -> ActionBox:
    """``ActionBox`` of bounds checked by ``check_bounds``; mid = (low + high) / 2."""
    low, high = check_bounds(action_low, action_high)
    return ActionBox(low, high, (low + high) / 2.0, horizon, low.shape[0], shift_fn)


def spec_box(spec, action_low, action_high) -> ActionBox:
    """The box of the sequences ``spec``'s planner searches: H steps, or K knots with the
    knots' re-sampling shift when ``spec.parameterization`` is not ``"step"``."""
    if spec.parameterization == "step":
        return action_box(action_low, action_high, spec.horizon)
    spline = make_spline(spec.parameterization, spec.num_knots, spec.horizon)
    return action_box(action_low, action_high, spline.num_knots, spline.shift)


class Best(NamedTuple):
    """The best sequence [H, A] seen, its return [] and the non-finite returns seen []."""

    sequence: Array
    value: Array
    num_nonfinite: Array


def no_best(sequence: Array) -> Best:
    """Nothing seen yet: ``sequence`` [H, A] with return -inf and no non-finite count."""
    return Best(sequence, jnp.array(-jnp.inf), jnp.array(0))


def track_best(best: Best, samples: Array, returns: Array) -> tuple[Best, Array]:
    """Updates ``best`` with a scored population samples [N, H, A], returns [N].

    Non-finite returns count as -inf (``sanitize_returns``); the best of the population,
    i = argmax R, replaces ``best`` when R_i > best.value. Returns (best, sanitized R).
    """
    returns, bad = sanitize_returns(returns)
    i = jnp.argmax(returns)
    better = returns[i] > best.value
    best = Best(jnp.where(better, samples[i], best.sequence),
                jnp.maximum(best.value, returns[i]), best.num_nonfinite + bad)
    return best, returns


Score = Callable[[Array, PRNGKey], Array]  # (samples [N, H, A], key) -> returns [N]


class ProposalScore(NamedTuple):
    """A ``Score`` of an objective with policy proposals: ``score(samples, key)`` as
    usual, ``propose(shape, key) -> proposals [N, H, A]`` and the traced ``fraction``."""

    score: Score
    propose: Callable
    fraction: Array

    def __call__(self, samples: Array, key: PRNGKey) -> Array:
        return self.score(samples, key)


def scorer(objective, objective_params, obs) -> Score:
    """J with its first two arguments bound: (samples, key) -> returns [N]; a
    ``ProposalScore`` when J proposes candidates (it has ``propose``)."""
    bound = functools.partial(objective, objective_params, obs)
    propose = getattr(objective, "propose", None)
    if propose is None:
        return bound
    return ProposalScore(bound, functools.partial(propose, objective_params, obs),
                         objective_params.fraction)


PROPOSAL_STREAM = 0x50524F50  # fold_in tag of the proposals' key ("PROP")


def proposals_for(score: Score, shape: tuple[int, ...], key: PRNGKey) -> Array | None:
    """The policy proposals [*shape] of a ``ProposalScore`` for one ``plan`` call, keyed by
    fold_in(key, PROPOSAL_STREAM) (the planner's own draws are untouched); None for a
    plain score."""
    if not isinstance(score, ProposalScore):
        return None
    return score.propose(tuple(shape), jax.random.fold_in(key, PROPOSAL_STREAM))


def with_proposals(score: Score, samples: Array, proposals: Array | None) -> Array:
    """samples [N, H, A] with the last round(fraction N) rows replaced by proposals[:N]
    (``proposals.splice``); samples unchanged when ``proposals`` is None."""
    if proposals is None:
        return samples
    return splice(samples, proposals[:samples.shape[0]], score.fraction)


def proposing_sampler(score: Score, sample: Callable, carry: Any, key: PRNGKey) -> Callable:
    """``sample(carry, key)`` with the proposals of ``score`` (drawn once, here, for the
    shape sample returns) spliced into every population; ``sample`` itself for a plain
    score."""
    if not isinstance(score, ProposalScore):
        return sample
    proposals = proposals_for(score, jax.eval_shape(sample, carry, key).shape, key)
    return lambda carry, key: with_proposals(score, sample(carry, key), proposals)


def evaluate(score: Score, samples: Array, key: PRNGKey, best: Best) -> tuple[Best, Array]:
    """Scores samples [N, H, A] with J (``score``) and tracks them: (best, returns [N])."""
    return track_best(best, samples, score(samples, key))


def sampling_round(score: Score, sample: Callable, update: Callable, carry: Any,
                   best: Best, key: PRNGKey) -> tuple[Any, Best]:
    """One round: samples = sample(carry, k1) [N, H, A], R = J(samples; k2) (sanitized),
    carry = update(carry, samples, R), with (k1, k2) = split(key); policy proposals
    spliced in (``proposing_sampler``)."""
    sample = proposing_sampler(score, sample, carry, key)
    key_sample, key_score = jax.random.split(key)
    samples = sample(carry, key_sample)
    best, returns = evaluate(score, samples, key_score, best)
    return update(carry, samples, returns), best


def sampling_rounds(score: Score, sample: Callable, update: Callable, carry: Any,
                    best: Best, key: PRNGKey, iterations: int) -> tuple[Any, Best]:
    """``iterations`` rounds in a ``lax.scan``, round i keyed by split(key, iterations)[i];
    policy proposals drawn once for all rounds (``proposing_sampler``)."""
    sample = proposing_sampler(score, sample, carry, key)
    if isinstance(score, ProposalScore):
        score = score.score  # spliced above: the rounds score plainly

    def body(state, key):
        return sampling_round(score, sample, update, *state, key), None

    (carry, best), _ = jax.lax.scan(body, (carry, best), jax.random.split(key, iterations))
    return carry, best


def make_sequence_planner(spec, action_low, action_high, params: Any,
                          init: Callable[[ActionBox], Any], solve: Callable,
                          advance: Callable | None = None) -> Planner:
    """A ``Planner`` from a planner's own ``init`` and ``solve`` (module docstring).

    Args:
      spec: the planner's spec (``PlannerSpec``: its ``horizon``, ``default_params`` and
        ``check_params`` are used).
      action_low, action_high: bounds [A].
      params: the default tunable floats; None = ``spec.default_params()``.
      init: box -> the initial state (the warm start at the middle of the bounds).
      solve: (box, params, objective_params, state, obs, key) -> (solution [H, A], Best,
        next state, extra info dict).
      advance: (box, state, info, steps) -> state, the planner's ``advance`` (None:
        ``shift_box_sequences``, every [H, A] leaf shifted by ``box.shift``).
    """
    params = spec.default_params() if params is None else params
    spec.check_params(params)
    box = spec_box(spec, action_low, action_high)

    def plan(params, objective_params, state, obs, key):
        solution, best, state, extra = solve(box, params, objective_params, state, obs, key)
        info = {"plan": solution, "best_return": best.value,
                "num_nonfinite": best.num_nonfinite, **extra}
        return solution[0], state, info

    def advance_box(state, info, steps: int):
        if advance is None:
            return shift_box_sequences(box, state, steps)
        return advance(box, state, info, steps)

    return Planner(init=lambda key: init(box), plan=plan, default_params=params,
                   horizon=box.horizon, action_size=box.action_size, advance=advance_box)


def shift_box_sequences(box: ActionBox, state, steps: int):
    """Every leaf of ``state`` with trailing shape [box.horizon, box.action_size] moved on
    by ``steps`` (static) executed steps with ``box.shift``, its last step (or knot)
    repeated past the end; other leaves stay. For a per-step box this is
    ``mbjax.planners.base.shift_sequences``."""

    def leaf(x):
        if jnp.ndim(x) >= 2 and tuple(x.shape[-2:]) == (box.horizon, box.action_size):
            return box.shift(x, x[..., -1, :], steps)
        return x

    return jax.tree_util.tree_map(leaf, state)
