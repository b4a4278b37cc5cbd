"""iCEM: improved CEM (Pinneri et al. 2020, "Sample-efficient CEM for real-time MPC").

Differences from CEM, all from the paper:
* colored noise: eps has power spectral density ~ 1/f^beta along time (beta = 0 white,
  beta = 2 brown/smooth), generated per sample and action dim by shaping white noise in
  the frequency domain (rfft) and normalising to unit variance;
* population decay: iteration i samples N_i = max(N gamma^-i, 2 K) sequences (static
  sizes, so the iterations are unrolled under jit);
* elites kept between iterations: a fraction xi of the previous iteration's elites joins
  the population; between calls, those elites shifted by one step (last step = the
  middle of the bounds) join the first iteration;
* the mean joins the last iteration's population, and the executed action is the first
  of the best sequence seen in the call (best-so-far execution).
The sampling distribution follows CEM: mu, sigma updated from the elites with momentum
alpha, samples clipped to the bounds, sigma reset to (ub - lb) / 4 * scale each call.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from mbjax.planners.base import (
    Objective,
    Planner,
    check_elite_sizes,
    check_range,
)
from mbjax.planners.registry import PlannerSpec, register_planner, spec_kind
from mbjax.planners.sampling import (
    evaluate,
    make_sequence_planner,
    no_best,
    proposals_for,
    scorer,
    with_proposals,
)


@struct.dataclass
class ICEMParams:
    noise_exponent: float = 2.0  # beta of the 1/f^beta noise (iCEM: 2.0-3.5 per task)
    alpha: float = 0.1  # momentum of mean/std updates
    init_std_scale: float = 1.0


def check_icem_params(params) -> None:
    """alpha in [0, 1), init_std_scale > 0 (an ``ICEMParams`` or a spec)."""
    check_range("alpha", params.alpha, 0.0, 1.0, include_high=False)
    check_range("init_std_scale", params.init_std_scale, 0, include_low=False)


@register_planner
@dataclasses.dataclass(frozen=True)
class ICEMConfig(PlannerSpec):
    """The iCEM spec. Defaults: iCEM paper's settings for its MuJoCo tasks (Table S2)."""

    horizon: int = 30
    population: int = 300
    num_elites: int = 10
    iterations: int = 3
    population_decay: float = 1.25  # gamma
    keep_elite_fraction: float = 0.3  # xi
    shift_elites: bool = True
    noise_exponent: float = ICEMParams.noise_exponent
    alpha: float = ICEMParams.alpha
    init_std_scale: float = ICEMParams.init_std_scale
    kind: str = spec_kind("icem")
    params_type = ICEMParams
    check_params = staticmethod(check_icem_params)

    def __post_init__(self):
        check_elite_sizes(self.population, self.num_elites, self.iterations)
        check_range("population_decay", self.population_decay, 1.0)
        check_range("keep_elite_fraction", self.keep_elite_fraction, 0.0, 1.0)
        super().__post_init__()

    @property
    def num_kept(self) -> int:
        return int(round(self.keep_elite_fraction * self.num_elites))

    def population_at(self, i: int) -> int:
        return max(int(self.population * self.population_decay ** (-i)), 2 * self.num_elites)

    def build_search(self, objective, action_low, action_high, params=None) -> Planner:
        return _search(objective, action_low, action_high, self, params)


@struct.dataclass
class ICEMState:
    mean: jax.Array  # [H, A]
    elites: jax.Array  # [num_kept, H, A] kept (shifted) elites of the last call


def colored_noise(key, exponent, num: int, horizon: int, action_size: int):
    """Unit-variance noise [num, H, A] with PSD ~ 1/f^exponent along H (per sample, dim)."""
    freqs = jnp.fft.rfftfreq(horizon)
    freqs = freqs.at[0].set(1.0 / horizon)  # lowest resolvable frequency for the DC term
    scale = freqs ** (-exponent / 2.0)
    k_re, k_im = jax.random.split(key)
    shape = (num, action_size, freqs.shape[0])
    re = jax.random.normal(k_re, shape)
    im = jax.random.normal(k_im, shape)
    im = im.at[..., 0].set(0.0)  # DC is real
    even = horizon % 2 == 0
    if even:
        im = im.at[..., -1].set(0.0)  # Nyquist is real
    x = jnp.fft.irfft(scale * (re + 1j * im), n=horizon)
    # Var(x_t) = (s_0^2 + 4 sum_mid s_k^2 (+ s_nyq^2)) / H^2 for the coefficients above.
    mid = scale[1:-1] if even else scale[1:]
    var = scale[0] ** 2 + 4 * jnp.sum(mid**2) + (scale[-1] ** 2 if even else 0.0)
    x = x / (jnp.sqrt(var) / horizon)
    return x.swapaxes(1, 2)


def _search(objective: Objective, action_low, action_high, config: ICEMConfig,
              params: ICEMParams | None = None) -> Planner:
    """The planner of ``config``'s search space (``ICEMConfig.build_search``)."""
    k, kept = config.num_elites, config.num_kept

    def solve(box, params: ICEMParams, objective_params, state: ICEMState, obs, key):
        low, high, h, a = box.low, box.high, box.horizon, box.action_size
        score = scorer(objective, objective_params, obs)
        mean = state.mean
        std = params.init_std_scale * (high - low) / 4.0 * jnp.ones((h, a))
        best = no_best(mean)
        prev_elites = state.elites if config.shift_elites else None
        largest = max(config.population_at(i) for i in range(config.iterations))
        proposals = proposals_for(score, (largest, h, a), key)
        for i in range(config.iterations):  # unrolled: each iteration has its own size
            key, key_n, key_obj = jax.random.split(key, 3)
            noise = colored_noise(key_n, params.noise_exponent, config.population_at(i), h, a)
            samples = with_proposals(score, jnp.clip(mean + std * noise, low, high), proposals)
            extra = [prev_elites[:kept]] if prev_elites is not None and kept > 0 else []
            if i == config.iterations - 1:
                extra.append(mean[None])
            if extra:
                samples = jnp.concatenate([samples] + extra, axis=0)
            best, returns = evaluate(score, samples, key_obj, best)
            _, idx = jax.lax.top_k(returns, k)
            elites = samples[idx]
            mean = params.alpha * mean + (1 - params.alpha) * elites.mean(0)
            std = params.alpha * std + (1 - params.alpha) * elites.std(0)
            prev_elites = elites
        next_state = ICEMState(mean=box.shift(mean, box.mid),
                               elites=box.shift(prev_elites[:kept], box.mid))
        return best.sequence, best, next_state, {"mean": mean}

    def init(box):
        return ICEMState(mean=box.middle(),
                         elites=jnp.broadcast_to(box.middle(), (kept,) + box.middle().shape))

    return make_sequence_planner(config, action_low, action_high, params, init, solve)


def make_icem(objective: Objective, action_low, action_high, config: ICEMConfig | None = None,
              params: ICEMParams | None = None) -> Planner:
    """iCEM over J; see the module docstring (``params=None``: ``config.default_params()``).

    Any action parameterisation of ``config`` applies (``ICEMConfig.build``)."""
    return (config or ICEMConfig()).build(objective, action_low, action_high, params)
