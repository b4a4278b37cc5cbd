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
    check_bounds,
    check_positive,
    sanitize_returns,
    shift,
)


@dataclasses.dataclass(frozen=True)
class ICEMConfig:
    """Static sizes. Defaults: iCEM paper's settings for its MuJoCo tasks (Table S2)."""

    horizon: int = 30
    population: int = 300
    num_elites: int = 10
    iterations: int = 3
    population_decay: float = 1.25  # gamma
    keep_elite_fraction: float = 0.3  # xi
    shift_elites: bool = True

    def __post_init__(self):
        check_positive(horizon=self.horizon, population=self.population,
                       num_elites=self.num_elites, iterations=self.iterations)
        if self.num_elites > self.population:
            raise ValueError(f"num_elites ({self.num_elites}) must be <= population "
                             f"({self.population})")
        if self.population_decay < 1.0:
            raise ValueError(f"population_decay must be >= 1, got {self.population_decay}")
        if not 0.0 <= self.keep_elite_fraction <= 1.0:
            raise ValueError("keep_elite_fraction must be in [0, 1], got "
                             f"{self.keep_elite_fraction}")

    @property
    def num_kept(self) -> int:
        return int(round(self.keep_elite_fraction * self.num_elites))

    def population_at(self, i: int) -> int:
        return max(int(self.population * self.population_decay ** (-i)), 2 * self.num_elites)


@struct.dataclass
class ICEMParams:
    noise_exponent: float = 2.0  # beta of the 1/f^beta noise (iCEM: 2.0-3.5 per task)
    alpha: float = 0.1  # momentum of mean/std updates
    init_std_scale: float = 1.0


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


def make_icem(objective: Objective, action_low, action_high, config: ICEMConfig | None = None,
              params: ICEMParams | None = None) -> Planner:
    config = config or ICEMConfig()
    params = params or ICEMParams()
    if float(params.init_std_scale) <= 0 or not 0 <= float(params.alpha) < 1:
        raise ValueError("iCEM needs init_std_scale > 0 and alpha in [0, 1)")
    low, high = check_bounds(action_low, action_high)
    mid = (low + high) / 2.0
    h, a, k = config.horizon, low.shape[0], config.num_elites
    kept = config.num_kept

    def init(key):
        del key
        mean = jnp.broadcast_to(mid, (h, a))
        return ICEMState(mean=mean, elites=jnp.broadcast_to(mean, (kept, h, a)))

    def plan(params: ICEMParams, objective_params, state: ICEMState, obs, key):
        mean = state.mean
        std = params.init_std_scale * (high - low) / 4.0 * jnp.ones((h, a))
        best_seq, best_ret, nbad = mean, jnp.array(-jnp.inf), jnp.array(0)
        prev_elites = state.elites if config.shift_elites else None
        for i in range(config.iterations):  # unrolled: each iteration has its own size
            key, key_n, key_obj = jax.random.split(key, 3)
            n = config.population_at(i)
            noise = colored_noise(key_n, params.noise_exponent, n, h, a)
            samples = jnp.clip(mean + std * noise, low, high)
            extra = [prev_elites[:kept]] if prev_elites is not None and kept > 0 else []
            if i == config.iterations - 1:
                extra.append(mean[None])
            if extra:
                samples = jnp.concatenate([samples] + extra, axis=0)
            returns, bad = sanitize_returns(objective(objective_params, obs, samples, key_obj))
            nbad = nbad + bad
            top, idx = jax.lax.top_k(returns, k)
            elites = samples[idx]
            mean = params.alpha * mean + (1 - params.alpha) * elites.mean(0)
            std = params.alpha * std + (1 - params.alpha) * elites.std(0)
            better = top[0] > best_ret
            best_seq = jnp.where(better, elites[0], best_seq)
            best_ret = jnp.maximum(best_ret, top[0])
            prev_elites = elites
        shifted = jax.vmap(lambda e: shift(e, mid))(prev_elites[:kept])
        info = {"plan": best_seq, "mean": mean, "best_return": best_ret,
                "num_nonfinite": nbad}
        return best_seq[0], ICEMState(mean=shift(mean, mid), elites=shifted), info

    return Planner(init=init, plan=plan, default_params=params, horizon=h, action_size=a)
