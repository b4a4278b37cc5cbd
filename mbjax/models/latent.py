"""A latent dynamics model for pixel observations: z = phi(o), z' = g(z, a), r = r(z, a).

The lecture notes' case 3B: when observations o are images, learn a low-dimensional state
first and the dynamics in that state. Four small MLPs (single networks from
:mod:`mbjax.networks.mlp`) are trained jointly:

* encoder        z_t = phi(o_t)                       [O] -> [L]
* transition     z_{t+1} = z_t + g(z_t, a_t)          residual, [L + A] -> [L]
* decoder        o_hat = psi(z)                       [L] -> [O] (logits if BCE)
* reward head    r_hat_t = rho(z_t, a_t)              [L + A] -> [] (standardised)

on windows of K consecutive transitions (o_t, a_t, r_t, ..., o_{t+K}) cut from whole
episodes. With z_k = phi(o_{t+k}) the encoded latents and the open-loop rollout
zhat_0 = z_0, zhat_{k+1} = zhat_k + g(zhat_k, a_{t+k}), the loss of a window is

    L = w_rec  * 1/(K+1) sum_{k=0..K} l(psi(z_k), o_{t+k})            reconstruction
      + w_pred * 1/K     sum_{k=1..K} l(psi(zhat_k), o_{t+k})         predicted frames
      + w_cons * 1/K     sum_{k=1..K} |zhat_k - sg(z_k)|^2 / (L sg(v)) latent consistency
      + w_rew  * 1/K     sum_{k=0..K-1} (rho(zhat_k, a_{t+k}) - rn_{t+k})^2   reward

where l is the per-pixel binary cross-entropy with logits (intensities in [0, 1] read as
probabilities; ``recon_loss="mse"`` uses squared error on a linear decoder instead),
sg is stop-gradient, v the mean per-dimension variance of the encoded latents in the
batch and rn the standardised reward (mean and std fitted on the data at each ``train``
call). The stop-gradient target removes the incentive to shrink the latent space that an
|zhat - z|^2 loss otherwise has (a smaller z is easier to match), and dividing by v makes
``w_cons`` independent of the latent scale; the reconstruction terms fix the scale and
keep z informative. The reward head is trained on the *predicted* latents, which is
where planning queries it.

``LatentModel.train`` runs ``num_steps`` Adam steps in one ``lax.scan``; ``predict``
rolls a latent state forward under an action sequence; ``make_latent_objective`` turns
the model into a planner objective, so every planner of :mod:`mbjax.planners` (CEM,
MPPI, iCEM, gradient) and the ``mpc`` loop plan in latent space unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from mbjax.models.ensemble import checked_sizes
from mbjax.networks.mlp import ACTIVATIONS, ensemble_mlp_init
from mbjax.networks.normalizer import Normalizer, fit_normalizer
from mbjax.types import Array, PRNGKey, Transition


def _mlp(layers: list[dict[str, Array]], x: Array, activation: str) -> Array:
    """A single MLP in ``ensemble_mlp_init``'s layout (E = 1) on x [..., d_in].

    The same maths as ``mbjax.networks.mlp.mlp_apply`` with plain matmuls: for E = 1 the
    batched einsum's backward pass is ~1.6x slower on CPU, and the pixel encoder and
    decoder dominate the cost of training.
    """
    act = ACTIVATIONS[activation]
    for i, layer in enumerate(layers):
        x = x @ layer["w"][0] + layer["b"][0, 0]
        if i < len(layers) - 1:
            x = act(x)
    return x


@dataclasses.dataclass(frozen=True)
class LatentConfig:
    """Architecture, loss weights and optimisation of a ``LatentModel``.

    Defaults fit the 32 x 32 pixel pendulum (2 stacked frames, O = 2048) on a CPU.
    """

    latent_size: int = 8  # L; the pendulum needs >= 3 (cos, sin, theta_dot)
    encoder_sizes: tuple[int, ...] = (256, 256)
    decoder_sizes: tuple[int, ...] = (256, 256)
    transition_sizes: tuple[int, ...] = (128, 128)
    reward_sizes: tuple[int, ...] = (128, 128)
    activation: str = "silu"
    horizon: int = 8  # K: steps per training window
    recon_weight: float = 1.0
    pred_weight: float = 1.0
    consistency_weight: float = 0.1
    reward_weight: float = 1.0
    symlog_rewards: bool = True  # regress symlog(r): finer resolution of small rewards
    learning_rate: float = 3e-3  # Adam; cosine-decayed within each ``train`` call ...
    final_lr_fraction: float = 0.1  # ... to this fraction of it at the last step
    max_grad_norm: float = 100.0  # global-norm gradient clipping (inf disables)
    batch_size: int = 32  # windows per Adam step
    num_steps: int = 1000  # Adam steps per ``train`` call

    def __post_init__(self):
        if self.latent_size < 1 or self.horizon < 1:
            raise ValueError(f"latent_size and horizon must be >= 1, got "
                             f"{self.latent_size}, {self.horizon}")
        for name in ("encoder_sizes", "decoder_sizes", "transition_sizes", "reward_sizes"):
            if any(h < 1 for h in getattr(self, name)):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; valid: "
                             f"{', '.join(ACTIVATIONS)}")
        weights = (self.recon_weight, self.pred_weight, self.consistency_weight,
                   self.reward_weight)
        if min(weights) < 0 or self.recon_weight + self.pred_weight <= 0:
            raise ValueError("loss weights must be >= 0 and recon_weight + pred_weight > 0 "
                             "(without a reconstruction term the latent space can collapse)")
        if self.learning_rate <= 0 or self.max_grad_norm <= 0:
            raise ValueError("learning_rate and max_grad_norm must be > 0")
        if not 0.0 <= self.final_lr_fraction <= 1.0:
            raise ValueError(f"final_lr_fraction must be in [0, 1], got "
                             f"{self.final_lr_fraction}")
        if self.batch_size < 1 or self.num_steps < 1:
            raise ValueError("batch_size and num_steps must be >= 1")


@struct.dataclass
class Episodes:
    """Whole episodes without resets inside, batch-major.

    Attributes:
      obs: [N, T + 1, O], obs[:, t] = o_t (obs[:, T] the last next observation).
      action: [N, T, A].
      reward: [N, T], r_t of the transition (o_t, a_t) -> o_{t+1}.
      valid: [N], 1.0 for real episodes, 0.0 for padding (a fixed-capacity store never
        recompiles ``train`` as it fills).
    """

    obs: Array
    action: Array
    reward: Array
    valid: Array

    @property
    def num_steps(self) -> int:
        return self.action.shape[1]


def episodes_from_transitions(tr: Transition) -> Episodes:
    """Episodes from transitions with leading axes [N, T] (e.g. ``jax.vmap`` over
    ``mbjax.envs.rollout`` of an env without auto-reset). Uses ``next_obs`` for o_{t+1};
    episodes must not end before T (the pixel pendulum never terminates)."""
    obs = jnp.concatenate([tr.obs[:, :1], tr.next_obs], axis=1)
    return Episodes(obs=obs, action=tr.action, reward=tr.reward,
                    valid=jnp.ones(tr.reward.shape[0], jnp.float32))


def split_episodes(episodes: Episodes, length: int) -> Episodes:
    """Cuts episodes of T steps into T // length consecutive pieces of ``length`` steps
    (neighbouring pieces share their boundary frame; a remainder is dropped), so that
    episodes of different lengths can be stored together: [N, T] -> [N * (T // L), L]."""
    n, t = episodes.reward.shape
    if not 1 <= length <= t:
        raise ValueError(f"length must be in [1, {t}], got {length}")
    m = t // length
    starts = jnp.arange(m) * length

    def cut(x, size):
        idx = starts[:, None] + jnp.arange(size)  # [m, size]
        y = x[:, idx]  # [N, m, size, ...]
        return y.reshape((n * m, size) + x.shape[2:])

    return Episodes(obs=cut(episodes.obs, length + 1), action=cut(episodes.action, length),
                    reward=cut(episodes.reward, length),
                    valid=jnp.repeat(episodes.valid, m))


def concat_episodes(*episodes: Episodes) -> Episodes:
    """Stacks episode sets of equal length T along the episode axis."""
    return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs, axis=0), *episodes)


def symlog(x: Array) -> Array:
    """sign(x) log(1 + |x|): the identity near 0, logarithmic for large |x|."""
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(x: Array) -> Array:
    """The inverse of ``symlog``: sign(x) (exp(|x|) - 1)."""
    return jnp.sign(x) * jnp.expm1(jnp.abs(x))


def fit_normalizers(data: Episodes, symlog_rewards: bool = True
                    ) -> tuple[Normalizer, Normalizer]:
    """Observation and reward standardisation fitted on the valid episodes.

    Observations: the per-pixel mean frame and ONE shared std (the RMS deviation from
    the mean frame over all pixels), so that rarely lit pixels are not blown up and the
    normalised reconstruction error is the pixel MSE divided by a constant. Rewards:
    mean and std (of symlog(r) if ``symlog_rewards``).
    """
    reward = symlog(data.reward) if symlog_rewards else data.reward
    n, t1, o = data.obs.shape
    frame_mask = jnp.broadcast_to(data.valid[:, None], (n, t1)).reshape(-1)
    pixels = fit_normalizer(data.obs.reshape(-1, o), frame_mask, min_std=0.0)
    shared = jnp.sqrt(jnp.mean(pixels.std**2))
    obs_norm = Normalizer(mean=pixels.mean,
                          std=jnp.full((o,), jnp.where(shared > 1e-6, shared, 1.0)))
    step_mask = jnp.broadcast_to(data.valid[:, None], data.reward.shape).reshape(-1)
    reward_norm = fit_normalizer(reward.reshape(-1, 1), step_mask)
    return obs_norm, reward_norm


@struct.dataclass
class LatentState:
    """Parameters, optimiser state and reward standardisation of a latent model.

    ``params`` = {"encoder", "transition", "decoder", "reward"}: MLP layer lists with a
    leading member axis of size 1 (``ensemble_mlp_init`` layout).
    """

    params: dict
    opt_state: Any
    obs_norm: Normalizer  # over [O]: per-pixel mean, one shared std
    reward_norm: Normalizer  # over [1]: rewards in data units
    step: Array  # Adam steps taken so far, int32 []


class LatentModel:
    """Latent dynamics model for observations [O] and actions [A]; see the module doc.

    Immutable; every method is a pure function of its arguments (``jax.jit`` them, the
    model itself is static).
    """

    def __init__(self, obs_size: int, action_size: int, config: LatentConfig | None = None):
        self.obs_size, self.action_size = checked_sizes(obs_size, action_size)
        self.config = config or LatentConfig()
        cfg = self.config
        # Adam without its learning rate: ``train`` scales the step by lr(i) itself.
        self.optimizer = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm),
                                     optax.scale_by_adam())

    # Init ----------------------------------------------------------------------------------
    def init_params(self, key: PRNGKey) -> dict:
        cfg = self.config
        o, a, z = self.obs_size, self.action_size, cfg.latent_size
        k_enc, k_tr, k_dec, k_rew = jax.random.split(key, 4)
        return {
            "encoder": ensemble_mlp_init(k_enc, 1, (o, *cfg.encoder_sizes, z)),
            "transition": ensemble_mlp_init(k_tr, 1, (z + a, *cfg.transition_sizes, z)),
            "decoder": ensemble_mlp_init(k_dec, 1, (z, *cfg.decoder_sizes, o)),
            "reward": ensemble_mlp_init(k_rew, 1, (z + a, *cfg.reward_sizes, 1)),
        }

    def init(self, key: PRNGKey) -> LatentState:
        """Fresh parameters, Adam state and identity normalisers (``train`` fits them)."""
        params = self.init_params(key)
        return LatentState(params=params, opt_state=self.optimizer.init(params),
                           obs_norm=Normalizer.identity(self.obs_size),
                           reward_norm=Normalizer.identity(1),
                           step=jnp.zeros((), jnp.int32))

    # Networks (raw params; observations standardised) ------------------------------------
    def _encode(self, params: dict, obs_n: Array) -> Array:
        return _mlp(params["encoder"], obs_n, self.config.activation)

    def _decode(self, params: dict, z: Array) -> Array:
        return _mlp(params["decoder"], z, self.config.activation)

    def _step(self, params: dict, z: Array, action: Array) -> Array:
        za = jnp.concatenate([z, action], axis=-1)
        return z + _mlp(params["transition"], za, self.config.activation)

    def _reward(self, params: dict, z: Array, action: Array) -> Array:
        za = jnp.concatenate([z, action], axis=-1)
        return _mlp(params["reward"], za, self.config.activation)[..., 0]

    def _rollout(self, params: dict, z: Array, actions: Array) -> tuple[Array, Array]:
        """zhat_1..H [..., H, L] and standardised rewards of zhat_0..H-1 [..., H]."""

        def body(z, a):
            return self._step(params, z, a), (z, a)

        z_last, (z_prev, a_seq) = jax.lax.scan(body, z, jnp.moveaxis(actions, -2, 0))
        z_next = jnp.concatenate([z_prev[1:], z_last[None]], axis=0)
        rewards = self._reward(params, z_prev, a_seq)
        return jnp.moveaxis(z_next, 0, -2), jnp.moveaxis(rewards, 0, -1)

    # Public forward ------------------------------------------------------------------------
    def encode(self, state: LatentState, obs: Array) -> Array:
        """z = phi(o): obs [..., O] -> latents [..., L]."""
        if obs.shape[-1] != self.obs_size:
            raise ValueError(f"encode expects obs [..., {self.obs_size}], got {obs.shape}")
        return self._encode(state.params, state.obs_norm.normalize(obs))

    def decode(self, state: LatentState, z: Array) -> Array:
        """o_hat = psi(z): latents [..., L] -> observations [..., O] in data units."""
        return state.obs_norm.denormalize(self._decode(state.params, z))

    def step(self, state: LatentState, z: Array, action: Array) -> Array:
        """z' = z + g(z, a): latents [..., L], actions [..., A] -> [..., L]."""
        return self._step(state.params, z, action)

    def reward(self, state: LatentState, z: Array, action: Array) -> Array:
        """Predicted reward r(z, a) in data units, [...]."""
        return self._reward_out(state.reward_norm, self._reward(state.params, z, action))

    def predict(self, state: LatentState, z: Array, actions: Array) -> tuple[Array, Array]:
        """Open-loop latent rollout for planning.

        Args:
          z: start latents [..., L] (e.g. ``encode(state, obs)``).
          actions: [..., H, A] (batch axes matching z's).

        Returns:
          (z_seq [..., H, L] = z_1..z_H, rewards [..., H] = r(z_{k-1}, a_{k-1}) in data
          units).
        """
        if actions.shape[-1] != self.action_size or z.shape[-1] != self.config.latent_size:
            raise ValueError(f"predict expects z [..., {self.config.latent_size}] and "
                             f"actions [..., H, {self.action_size}], got {z.shape}, "
                             f"{actions.shape}")
        z_seq, rn = self._rollout(state.params, z, actions)
        return z_seq, self._reward_out(state.reward_norm, rn)

    def _reward_target(self, reward_norm: Normalizer, reward: Array) -> Array:
        """Rewards [...] in data units -> the reward head's regression target [...]."""
        r = symlog(reward) if self.config.symlog_rewards else reward
        return reward_norm.normalize(r[..., None])[..., 0]

    def _reward_out(self, reward_norm: Normalizer, raw: Array) -> Array:
        """The reward head's output [...] -> rewards in data units (inverse of the above)."""
        r = reward_norm.denormalize(raw[..., None])[..., 0]
        return symexp(r) if self.config.symlog_rewards else r

    # Loss ----------------------------------------------------------------------------------
    def window_losses(self, params: dict, obs_norm: Normalizer, reward_norm: Normalizer,
                      obs: Array, action: Array, reward: Array
                      ) -> tuple[Array, dict[str, Array]]:
        """Loss of a batch of windows (see the module docstring).

        Args:
          params: the four networks; obs_norm, reward_norm: standardisation.
          obs: [B, K + 1, O]; action: [B, K, A]; reward: [B, K], all in data units.

        Returns:
          (total loss [], metrics): ``recon_mse`` / ``pred_mse`` pixel MSE (data units)
          of reconstructed / predicted frames, ``consistency`` the normalised latent
          error, ``reward_mse`` in standardised units, ``loss`` the total.
        """
        cfg = self.config
        obs_n = obs_norm.normalize(obs)
        z = self._encode(params, obs_n)  # [B, K+1, L]
        rec = jnp.mean((self._decode(params, z) - obs_n) ** 2)
        z_hat, r_hat = self._rollout(params, z[:, 0], action)  # [B, K, L], [B, K]
        pred = jnp.mean((self._decode(params, z_hat) - obs_n[:, 1:]) ** 2)
        var = jax.lax.stop_gradient(jnp.var(z.reshape(-1, z.shape[-1]), axis=0).mean())
        target = jax.lax.stop_gradient(z[:, 1:])
        consistency = jnp.mean((z_hat - target) ** 2) / (var + 1e-6)
        reward_mse = jnp.mean((r_hat - self._reward_target(reward_norm, reward)) ** 2)
        total = (cfg.recon_weight * rec + cfg.pred_weight * pred
                 + cfg.consistency_weight * consistency + cfg.reward_weight * reward_mse)
        pixel_var = jnp.mean(obs_norm.std**2)  # normalised -> data units (shared std)
        metrics = {"loss": total, "recon_mse": rec * pixel_var, "pred_mse": pred * pixel_var,
                   "consistency": consistency, "reward_mse": reward_mse}
        return total, metrics

    # Data ----------------------------------------------------------------------------------
    def sample_windows(self, data: Episodes, num: int, key: PRNGKey,
                       horizon: int | None = None) -> tuple[Array, Array, Array]:
        """``num`` random windows of ``horizon`` (default K) steps from valid episodes.

        Returns (obs [num, K + 1, O], action [num, K, A], reward [num, K]).
        """
        k = self.config.horizon if horizon is None else int(horizon)
        if data.num_steps < k:
            raise ValueError(f"episodes of {data.num_steps} steps are shorter than the "
                             f"window horizon {k}")
        key_ep, key_t = jax.random.split(key)
        logits = jnp.where(data.valid > 0, 0.0, -jnp.inf)
        ep = jax.random.categorical(key_ep, logits, shape=(num,))
        start = jax.random.randint(key_t, (num,), 0, data.num_steps - k + 1)

        def cut(e, t):
            # One slice [1, n, ...] at (e, t): gathers only the window, not the episode.
            def sl(x, n):
                start = (e, t) + (0,) * (x.ndim - 2)
                return jax.lax.dynamic_slice(x, start, (1, n) + x.shape[2:])[0]

            return sl(data.obs, k + 1), sl(data.action, k), sl(data.reward, k)

        return jax.vmap(cut)(ep, start)

    # Training ------------------------------------------------------------------------------
    def train(self, state: LatentState, data: Episodes, key: PRNGKey
              ) -> tuple[LatentState, dict[str, Array]]:
        """``num_steps`` Adam steps on random windows of ``data`` in one ``lax.scan``.

        Refits the reward standardisation on the valid episodes first. Steps with a
        non-finite loss are not applied.

        Args:
          state: from ``init`` or a previous ``train``.
          data: ``Episodes`` [N, T + 1, ...] with T >= K.
          key: PRNG key (window sampling).

        Returns:
          (state, metrics): per-step histories [num_steps] of ``latent/loss``,
          ``latent/recon_mse``, ``latent/pred_mse``, ``latent/consistency``,
          ``latent/reward_mse`` and ``latent/loss_nonfinite`` (bool).
        """
        cfg = self.config
        obs_norm, reward_norm = fit_normalizers(data, cfg.symlog_rewards)
        grad_fn = jax.value_and_grad(self.window_losses, has_aux=True)

        def learning_rate(i):
            cos = 0.5 * (1.0 + jnp.cos(jnp.pi * i / cfg.num_steps))
            frac = cfg.final_lr_fraction
            return cfg.learning_rate * (frac + (1.0 - frac) * cos)

        def body(carry, xs):
            params, opt_state = carry
            key, i = xs
            obs, action, reward = self.sample_windows(data, cfg.batch_size, key)
            (total, metrics), grads = grad_fn(params, obs_norm, reward_norm, obs, action,
                                                 reward)
            updates, new_opt = self.optimizer.update(grads, opt_state, params)
            updates = jax.tree_util.tree_map(lambda u: -learning_rate(i) * u, updates)
            new_params = optax.apply_updates(params, updates)
            finite = jnp.isfinite(total)
            keep = lambda new, old: jax.tree_util.tree_map(
                lambda a, b: jnp.where(finite, a, b), new, old)
            metrics = dict(metrics, loss_nonfinite=~finite)
            return (keep(new_params, params), keep(new_opt, opt_state)), metrics

        keys = jax.random.split(key, cfg.num_steps)
        (params, opt_state), history = jax.lax.scan(
            body, (state.params, state.opt_state), (keys, jnp.arange(cfg.num_steps)))
        state = state.replace(params=params, opt_state=opt_state, obs_norm=obs_norm,
                              reward_norm=reward_norm,
                              step=state.step + cfg.num_steps)
        return state, {f"latent/{k}": v for k, v in history.items()}

    def evaluate(self, state: LatentState, data: Episodes, key: PRNGKey,
                 num_windows: int = 256, horizon: int | None = None) -> dict[str, Array]:
        """Open-loop prediction quality on ``num_windows`` random windows of ``data``.

        Returns per-step errors over k = 1..H (H = ``horizon``, default K):
        ``pred_mse`` [H] pixel MSE of psi(zhat_k) vs o_{t+k}; ``latent_error`` [H]
        mean |zhat_k - phi(o_{t+k})|^2 / (L v) (v as in the loss); ``reward_mae`` [H] in
        data units; and scalars ``recon_mse`` (psi(phi(o)) vs o) and ``mean_image_mse``
        (the error of always predicting the data's mean frame, a yardstick).
        """
        obs, action, reward = self.sample_windows(data, num_windows, key, horizon)
        z = self.encode(state, obs)
        z_hat, r_hat = self.predict(state, z[:, 0], action)
        var = jnp.var(z.reshape(-1, z.shape[-1]), axis=0).mean()
        return {
            "pred_mse": ((self.decode(state, z_hat) - obs[:, 1:]) ** 2).mean((0, 2)),
            "latent_error": ((z_hat - z[:, 1:]) ** 2).mean((0, 2)) / (var + 1e-6),
            "reward_mae": jnp.abs(r_hat - reward).mean(0),
            "recon_mse": ((self.decode(state, z) - obs) ** 2).mean(),
            "mean_image_mse": jnp.var(obs.reshape(-1, obs.shape[-1]), axis=0).mean(),
        }


# ----------------------------------------------------------------------------------------
# Planning in latent space with the project's planners
# ----------------------------------------------------------------------------------------


def make_latent_objective(model: LatentModel, discount: float = 1.0):
    """J(latent_state, obs [O], actions [N, H, A], key) -> returns [N] for any planner.

    Encodes the observation once, z_0 = phi(o), rolls every candidate forward in latent
    space and sums the reward head's predictions: J = sum_{t<H} gamma^t r(zhat_t, a_t).
    ``objective_params`` of the planner is the ``LatentState``, so a retrained model is
    planned with without recompiling.
    """

    def objective(state: LatentState, obs: Array, actions: Array, key: PRNGKey) -> Array:
        del key
        z = model.encode(state, obs)
        z = jnp.broadcast_to(z, actions.shape[:1] + z.shape)
        _, rewards = model.predict(state, z, actions)
        gammas = discount ** jnp.arange(actions.shape[-2])
        return jnp.sum(gammas * rewards, axis=-1)

    return objective
