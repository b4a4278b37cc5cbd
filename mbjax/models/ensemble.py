"""Ensembles of MLP dynamics models: s' ~ f_e(s, a), e = 1..E.

Two heads (``EnsembleConfig.probabilistic``):

* deterministic (PDDM, Nagabandi et al. 2019): mean only, MSE on normalised targets;
* probabilistic Gaussian (PETS, Chua et al. 2018; MBPO, Janner et al. 2019): mean and
  log-variance with learned soft bounds
  logvar = max_lv - softplus(max_lv - raw), logvar = min_lv + softplus(logvar - min_lv),
  trained with the Gaussian NLL  mean((mu - y)^2 exp(-logvar) + logvar)
  + 0.01 (sum max_lv - sum min_lv) + sum_l wd_l ||W_l||^2 / 2.

Inputs [s, a] are standardised with statistics of the data; targets are the standardised
state delta s' - s (or s' itself), optionally followed by the reward and, as a logit
trained with binary cross-entropy, the termination flag (for envs whose reward or done is
not a function of the observation).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from mbjax.models.base import ModelSpec
from mbjax.networks.mlp import ACTIVATIONS, ensemble_mlp_apply, ensemble_mlp_init
from mbjax.networks.normalizer import Normalizer
from mbjax.types import Array, PRNGKey

# PETS HalfCheetah config (Chua et al. 2018): weight decay per layer (4 hidden + output).
PETS_WEIGHT_DECAY = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)


@dataclasses.dataclass(frozen=True)
class EnsembleConfig(ModelSpec):
    """Architecture of the ensemble (the built-in model, kind "ensemble"). Defaults:
    PETS/MBPO probabilistic ensemble."""

    kind: str = "ensemble"
    num_members: int = 7  # MBPO (Janner et al. 2019, App. C): 7 members ...
    num_elites: int = 5  # ... of which the 5 best on held-out data are used
    hidden_sizes: tuple[int, ...] = (200, 200, 200, 200)  # PETS & MBPO: 4 x 200
    activation: str = "silu"  # swish (PETS, MBPO)
    probabilistic: bool = True  # Gaussian NLL head (PETS/MBPO); False = PDDM's MSE head
    predict_delta: bool = True  # targets s' - s (all three papers)
    learn_reward: bool = False  # reward head (needed when reward_fn is unavailable)
    learn_termination: bool = False  # termination logit head
    init_max_logvar: float = 0.5  # PETS: max_logvar initialised at 0.5 ...
    init_min_logvar: float = -10.0  # ... and min_logvar at -10
    logvar_bound_penalty: float = 0.01  # PETS: 0.01 (sum max_lv - sum min_lv)
    weight_decay: tuple[float, ...] | None = None
    """Per-layer L2 weights (one per layer, or one for all); None = PETS' HalfCheetah
    schedule (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4) for 4 hidden layers, none otherwise."""

    @property
    def layer_weight_decay(self) -> tuple[float, ...]:
        """The weight decay in force (``weight_decay`` with its None default resolved)."""
        if self.weight_decay is not None:
            return tuple(self.weight_decay)
        return PETS_WEIGHT_DECAY if len(self.hidden_sizes) == 4 else ()

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.num_elites <= self.num_members:
            raise ValueError(f"num_elites must be in [1, num_members={self.num_members}], "
                             f"got {self.num_elites}")
        if any(h < 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive, got {self.hidden_sizes}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; valid: "
                             f"{', '.join(ACTIVATIONS)}")
        if not self.hidden_sizes:
            raise ValueError("model.hidden_sizes is empty (a linear model); give at least "
                             "one hidden layer, e.g. --model.hidden-sizes 64 64")
        if self.weight_decay and len(self.weight_decay) not in (1, len(self.hidden_sizes) + 1):
            raise ValueError(
                f"weight_decay needs 1 or {len(self.hidden_sizes) + 1} entries (one per "
                f"layer), got {len(self.weight_decay)}")
        if self.init_min_logvar >= self.init_max_logvar:
            raise ValueError("init_min_logvar must be < init_max_logvar")


def checked_sizes(obs_size: int, action_size: int) -> tuple[int, int]:
    """(obs_size, action_size) as ints, or ValueError unless both are >= 1."""
    if obs_size < 1 or action_size < 1:
        raise ValueError(f"obs_size and action_size must be >= 1, got {obs_size}, "
                         f"{action_size}")
    return int(obs_size), int(action_size)


def pddm_ensemble_config(hidden: int = 500) -> EnsembleConfig:
    """PDDM's model: 3 deterministic MLPs, 2 hidden layers of 500 ReLU units, MSE loss.

    The lecture notes' case study and the PDDM paper (Nagabandi et al. 2019, Sec. 5)
    use 2 x 500; PDDM's released code defaults to 2 x 250 (pass ``hidden=250``).
    """
    return EnsembleConfig(num_members=3, num_elites=3, hidden_sizes=(hidden, hidden),
                          activation="relu", probabilistic=False, weight_decay=())


@struct.dataclass
class Prediction:
    """One-step predictions of every member, all with a leading member axis [E, B, ...].

    ``next_obs_std`` is zero for deterministic models; ``reward_*`` and
    ``termination_prob`` are None unless the corresponding head is enabled.
    """

    next_obs_mean: Array
    next_obs_std: Array
    reward_mean: Array | None = None
    reward_std: Array | None = None
    termination_prob: Array | None = None


@struct.dataclass
class EnsembleParams:
    """Trainable parameters: MLP layers (stacked over members) and log-variance bounds."""

    layers: list
    max_logvar: Array  # [E, D_gauss]
    min_logvar: Array  # [E, D_gauss]


@struct.dataclass
class ModelState:
    """Everything a trained ensemble needs to predict, and to keep training."""

    params: EnsembleParams
    input_norm: Normalizer  # over [s, a]
    target_norm: Normalizer  # over the regression targets (delta [, reward])
    elites: Array  # [num_elites] int32 member indices, best first
    opt_state: Any
    holdout_loss: Array  # [E] latest held-out MSE per member (inf before training)


def bounded_logvar(raw: Array, max_logvar: Array, min_logvar: Array) -> Array:
    """PETS' soft bounds: lv = max - softplus(max - raw); lv = min + softplus(lv - min).

    raw: [E, B, D]; max_logvar, min_logvar: [E, D] (learned, per member).
    """
    max_lv, min_lv = max_logvar[:, None, :], min_logvar[:, None, :]
    logvar = max_lv - jax.nn.softplus(max_lv - raw)
    return min_lv + jax.nn.softplus(logvar - min_lv)


def bounded_std(raw: Array, max_logvar: Array, min_logvar: Array) -> Array:
    """exp(bounded_logvar / 2) with one exp instead of five transcendentals.

    With u = exp(max - raw): exp(lv1 - min) = exp(max - min) / (1 + u) for the first
    bound, and exp((min + log(1 + y)) / 2) = exp(min / 2) sqrt(1 + y), so

        std = exp(min / 2) sqrt(1 + exp(max - min) / (1 + u)).

    Exact algebra (float32 rounding aside); u = inf gives exp(min / 2), u = 0 gives
    ~exp(max / 2). The planners' rollouts call this once per particle and step, so the
    saving is a large part of the elementwise cost of a PETS plan on CPU.
    """
    max_lv, min_lv = max_logvar[:, None, :], min_logvar[:, None, :]
    u = jnp.exp(max_lv - raw)
    spread = jnp.exp(jnp.minimum(max_lv - min_lv, 80.0))
    return jnp.exp(0.5 * min_lv) * jnp.sqrt(1.0 + spread / (1.0 + u))


class EnsembleModel:
    """An ensemble dynamics model for observations of size ``obs_size`` and actions of size
    ``action_size``. Immutable; all methods are pure functions of their arguments."""

    def __init__(self, obs_size: int, action_size: int, config: EnsembleConfig | None = None):
        self.obs_size, self.action_size = checked_sizes(obs_size, action_size)
        self.config = config or EnsembleConfig()

    # Sizes ---------------------------------------------------------------------------------
    @property
    def num_members(self) -> int:
        return self.config.num_members

    @property
    def input_size(self) -> int:
        return self.obs_size + self.action_size

    @property
    def regression_size(self) -> int:
        """D: regression targets (obs delta, then reward if learned)."""
        return self.obs_size + int(self.config.learn_reward)

    @property
    def output_size(self) -> int:
        d = self.regression_size
        return (2 * d if self.config.probabilistic else d) + int(self.config.learn_termination)

    # Init ----------------------------------------------------------------------------------
    def init_params(self, key: PRNGKey) -> EnsembleParams:
        cfg = self.config
        sizes = (self.input_size, *cfg.hidden_sizes, self.output_size)
        layers = ensemble_mlp_init(key, cfg.num_members, sizes)
        shape = (cfg.num_members, self.regression_size)
        return EnsembleParams(
            layers=layers,
            max_logvar=jnp.full(shape, cfg.init_max_logvar, dtype=jnp.float32),
            min_logvar=jnp.full(shape, cfg.init_min_logvar, dtype=jnp.float32),
        )

    def init(self, key: PRNGKey, optimizer=None) -> ModelState:
        """Fresh state with identity normalisers; ``optimizer`` (optax) sets opt_state."""
        params = self.init_params(key)
        return ModelState(
            params=params,
            input_norm=Normalizer.identity(self.input_size),
            target_norm=Normalizer.identity(self.regression_size),
            elites=jnp.arange(self.config.num_elites, dtype=jnp.int32),
            opt_state=optimizer.init(params) if optimizer is not None else None,
            holdout_loss=jnp.full((self.config.num_members,), jnp.inf, dtype=jnp.float32),
        )

    # Forward -------------------------------------------------------------------------------
    def targets(self, obs: Array, action: Array, next_obs: Array,
                reward: Array | None = None) -> Array:
        """Regression targets in data units, [..., D]: s' - s (or s') [, r]."""
        y = next_obs - obs if self.config.predict_delta else next_obs
        if self.config.learn_reward:
            y = jnp.concatenate([y, reward[..., None]], axis=-1)
        return y

    def forward(self, params: EnsembleParams, input_norm: Normalizer, obs: Array,
                action: Array) -> tuple[Array, Array | None, Array | None]:
        """Raw heads in normalised target units.

        Args:
          obs: [B, O] shared by all members, or [E, B, O] one batch per member.
          action: [B, A] or [E, B, A], matching obs.

        Returns:
          (mean [E, B, D], logvar [E, B, D] or None, termination logit [E, B] or None).
        """
        mean, raw, term_logit = self._heads(params, input_norm, obs, action)
        logvar = None if raw is None else bounded_logvar(raw, params.max_logvar,
                                                         params.min_logvar)
        return mean, logvar, term_logit

    def _heads(self, params: EnsembleParams, input_norm: Normalizer, obs: Array,
               action: Array) -> tuple[Array, Array | None, Array | None]:
        """(mean, unbounded log-variance or None, termination logit or None)."""
        if obs.shape[-1] != self.obs_size or action.shape[-1] != self.action_size:
            raise ValueError(
                f"model expects obs [..., {self.obs_size}] and action [..., "
                f"{self.action_size}], got {obs.shape} and {action.shape}")
        x = input_norm.normalize(jnp.concatenate([obs, action], axis=-1))
        out = ensemble_mlp_apply(params.layers, x, self.config.activation)
        d = self.regression_size
        raw = out[..., d:2 * d] if self.config.probabilistic else None
        term_logit = out[..., -1] if self.config.learn_termination else None
        return out[..., :d], raw, term_logit

    def predict(self, state: ModelState, obs: Array, action: Array) -> Prediction:
        """Per-member predictive distribution of s' (and r, done) in data units.

        obs: [B, O] or [E, B, O]; action: [B, A] or [E, B, A]. Outputs are [E, B, ...].
        """
        mean, raw, term_logit = self._heads(state.params, state.input_norm, obs, action)
        mean = state.target_norm.denormalize(mean)
        if raw is None:
            std = jnp.zeros_like(mean)
        else:
            std = state.target_norm.denormalize_std(bounded_std(
                raw, state.params.max_logvar, state.params.min_logvar))
        o = self.obs_size
        obs_b = jnp.broadcast_to(obs, mean.shape[:-1] + (o,))
        next_mean = mean[..., :o] + obs_b if self.config.predict_delta else mean[..., :o]
        pred = Prediction(next_obs_mean=next_mean, next_obs_std=std[..., :o])
        if self.config.learn_reward:
            pred = pred.replace(reward_mean=mean[..., o], reward_std=std[..., o])
        if term_logit is not None:
            pred = pred.replace(termination_prob=jax.nn.sigmoid(term_logit))
        return pred

    # Loss ----------------------------------------------------------------------------------
    def member_losses(self, params: EnsembleParams, input_norm: Normalizer,
                      target_norm: Normalizer, obs: Array, action: Array, next_obs: Array,
                      reward: Array, done: Array, weight: Array) -> tuple[Array, Array]:
        """Training loss and MSE of each member on its own minibatch.

        Args:
          obs, action, next_obs: [E, B, ...] (one minibatch per member); reward, done,
            weight: [E, B]; ``weight`` masks padding rows (0) of a partial minibatch.

        Returns:
          (loss [E] incl. log-variance bound penalty, MSE [E] in normalised units).
          Weight decay is added by the trainer.
        """
        y = target_norm.normalize(self.targets(obs, action, next_obs, reward))
        mean, logvar, term_logit = self.forward(params, input_norm, obs, action)
        w = weight / jnp.maximum(weight.sum(axis=-1, keepdims=True), 1.0)  # [E, B]
        sq = (mean - y) ** 2
        mse = jnp.sum(w * sq.mean(-1), axis=-1)
        if logvar is None:
            loss = mse
        else:
            nll = (sq * jnp.exp(-logvar) + logvar).mean(-1)
            bound = jnp.sum(params.max_logvar, -1) - jnp.sum(params.min_logvar, -1)
            loss = jnp.sum(w * nll, axis=-1) + self.config.logvar_bound_penalty * bound
        if term_logit is not None:
            bce = optax.sigmoid_binary_cross_entropy(term_logit, done)
            loss = loss + jnp.sum(w * bce, axis=-1)
        return loss, mse

    def weight_decay_penalty(self, params: EnsembleParams) -> Array:
        """sum_l wd_l ||W_l||^2 / 2 per member, shape [E]."""
        wd = self.config.layer_weight_decay
        if not wd:
            return jnp.zeros(self.config.num_members)
        decays = wd if len(wd) > 1 else wd * len(params.layers)
        return sum(c * 0.5 * jnp.sum(layer["w"] ** 2, axis=(1, 2))
                   for c, layer in zip(decays, params.layers))



def model_metadata(model: EnsembleModel) -> dict:
    """What must match for a saved ``ModelState`` to load into ``model``."""
    return {"kind": "EnsembleModel", "obs_size": model.obs_size,
            "action_size": model.action_size,
            "config": json.loads(json.dumps(dataclasses.asdict(model.config)))}


def save_model(path, model: EnsembleModel, state: ModelState):
    """Saves params, normalisers, elites and optimizer state (orbax) with the config."""
    from mbjax import checkpoint

    return checkpoint.save(path, state, model_metadata(model))


def load_model(path, model: EnsembleModel, template: ModelState) -> ModelState:
    """Loads a ``ModelState`` saved by ``save_model`` for an identically configured model;
    ``template`` is e.g. ``trainer.init(key)``. A different config or shape raises
    ``mbjax.checkpoint.CheckpointError`` naming the differing fields."""
    from mbjax import checkpoint

    return checkpoint.load(path, template, model_metadata(model))
