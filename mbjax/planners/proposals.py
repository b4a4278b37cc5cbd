"""Policy proposals: a learned policy supplies a fraction of a sampling planner's candidates.

TD-MPC2 (Hansen et al. 2024, ``tdmpc2.TDMPC2._plan``: ``num_pi_trajs`` of the MPPI
population are rollouts of the policy through the latent model) and Generative Predictive
Control (Kurtz & Burdick 2024) seed the sampler with a policy's own plans: where the policy
is good, the planner starts next to the answer; where it is bad, the sampled candidates
outvote it. Here, for any objective J and any sampling planner:

    J'(ProposalInputs(objective, policy, fraction), obs, actions, key)
        = J(objective, obs, actions, key)

is J with a ``propose`` attached. In every sampling round (``mbjax.planners.sampling``)
the last round(fraction N) of the N candidates [N, H, A] are replaced by policy rollouts

    a_t^(i) = clip(pi(policy, x_t^(i)) + noise_scale (high - low) / 2 eps_t^(i), low, high),
    x_{t+1}^(i) = f(objective, x_t^(i), a_t^(i)),     x_0^(i) = obs,

drawn once per ``plan`` call (TD-MPC2 too reuses its policy trajectories over the
iterations), the last one noise-free (eps = 0): the policy's own plan is always a
candidate when fraction N >= 1. ``fraction`` is traced (a sweep vmaps it); fraction = 0 is
exactly the plain planner, same key, same numbers. The planner's warm start (its shifted
previous solution) is unchanged, as in TD-MPC2.

f is the rollout model of the proposals: ``model_mean_step`` (the ensemble's mean
prediction) for a learned model, ``env_step`` for the true simulator. Gradient planners
(``gradient``) have no candidate population and ignore proposals; the agents reject
``proposal_fraction > 0`` for them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from mbjax.planners.base import Objective, check_bounds
from mbjax.types import Array, PRNGKey


@struct.dataclass
class ProposalInputs:
    """J''s objective_params: the wrapped J's own (``objective``), the policy's params
    (``policy``) and the traced fraction of candidates the policy proposes, in [0, 1]."""

    objective: Any
    policy: Any
    fraction: Any = 0.0


def check_proposals(fraction: float, noise: float, planner_spec) -> None:
    """Raises ``ValueError`` for a fraction outside [0, 1], a negative noise, or a
    fraction > 0 with a planner that has no candidate population to propose into."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"proposal_fraction must be in [0, 1], got {fraction}")
    if not noise >= 0.0:
        raise ValueError(f"proposal_noise must be >= 0, got {noise}")
    if fraction > 0 and not type(planner_spec).takes_proposals:
        raise ValueError(f"planner {planner_spec.kind!r} draws no candidate population, so "
                         "policy proposals have nothing to join: set proposal_fraction=0 "
                         "or use a sampling planner (cem, mppi, icem, random_shooting, "
                         "cem_gradient, ...)")


def splice(samples: Array, proposals: Array, fraction) -> Array:
    """samples [N, ...] with their last round(fraction N) rows replaced by proposals [N, ...]
    (row i is a proposal iff i >= N - round(fraction N); traced fraction)."""
    n = samples.shape[0]
    take = jnp.arange(n) >= n - jnp.round(jnp.clip(fraction, 0.0, 1.0) * n)
    return jnp.where(take.reshape((n,) + (1,) * (samples.ndim - 1)), proposals, samples)


def make_proposal_objective(objective: Objective, step_fn: Callable, policy_fn: Callable,
                            action_low, action_high, noise_scale: float = 0.1,
                            observe: Callable = lambda x: x) -> Objective:
    """J' of the module docstring, with ``J'.propose(inputs, obs, shape, key) -> [N, H, A]``.

    Args:
      objective: J(objective_params, obs, actions [N, H, A], key) -> [N].
      step_fn: f(objective_params, x, action [A]) -> x' (one unbatched step; x starts at
        J's ``obs``: an observation for a model, an env ``State`` for the simulator).
      policy_fn: pi(policy_params, observation) -> action [A] (deterministic: the student
        or SAC's actor mean).
      action_low, action_high: bounds [A] (proposals are clipped to them).
      noise_scale: std of the proposals' Gaussian noise in half-ranges of the bounds
        (static); the last proposal is noise-free.
      observe: x -> the policy's input (``lambda s: s.obs`` for env states).
    """
    low, high = check_bounds(action_low, action_high)
    if not noise_scale >= 0.0:
        raise ValueError(f"proposal noise_scale must be >= 0, got {noise_scale}")
    half = (high - low) / 2.0

    def rollout(objective_params, policy_params, obs, noise):
        def body(x, eps):
            action = jnp.clip(policy_fn(policy_params, observe(x)) + noise_scale * half * eps,
                              low, high)
            return step_fn(objective_params, x, action), action

        return jax.lax.scan(body, obs, noise)[1]

    def propose(inputs: ProposalInputs, obs, shape, key: PRNGKey) -> Array:
        noise = jax.random.normal(key, tuple(shape)).at[-1].set(0.0)  # [N, H, A]
        return jax.vmap(rollout, in_axes=(None, None, None, 0))(
            inputs.objective, inputs.policy, obs, noise)

    def proposal_objective(inputs: ProposalInputs, obs, actions: Array, key: PRNGKey):
        return objective(inputs.objective, obs, actions, key)

    proposal_objective.propose = propose
    return proposal_objective


def project_proposals(objective: Objective, interpolation, action_low,
                      action_high) -> Callable | None:
    """``objective.propose`` for a planner over K spline knots: the H-step proposals
    fitted by least squares, knots = pinv(W) @ actions (W [H, K]), clipped to the bounds.
    None when ``objective`` has no ``propose``."""
    propose = getattr(objective, "propose", None)
    if propose is None:
        return None
    fit = jnp.asarray(jnp.linalg.pinv(jnp.asarray(interpolation)))  # [K, H]
    low, high = check_bounds(action_low, action_high)
    horizon = fit.shape[1]

    def knot_propose(inputs, obs, shape, key):
        actions = propose(inputs, obs, (shape[0], horizon) + tuple(shape[2:]), key)
        return jnp.clip(jnp.einsum("kh,nha->nka", fit, actions), low, high)

    return knot_propose


def model_mean_step(model) -> Callable:
    """f(objective_params, obs [O], action [A]) -> the mean over members of the ensemble's
    predicted mean next observation, where objective_params[0] is the ``ModelState`` (the
    objectives of ``mbjax.agents``: (model_state, hparams, value_params))."""

    def step(objective_params, obs, action):
        prediction = model.predict(objective_params[0], obs[None], action[None])
        return prediction.next_obs_mean.mean(0)[0]

    return step


def env_step(env) -> Callable:
    """f(objective_params, state, action) = env.step(state, action) (the true simulator;
    objective_params unused). Use with ``observe=lambda s: s.obs``."""
    return lambda objective_params, state, action: env.step(state, action)
