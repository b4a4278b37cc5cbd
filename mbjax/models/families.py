"""Model families beyond s' ~ f(s, a), all cut from windows of the replay buffer.

Every family of the notes is a conditional density p(y | x) whose conditioning x and
target y are slices of a window of L consecutive transitions of one episode (window
leaves [L, ...]: ``obs`` s_t..s_{t+L-1}, ``action`` a_t..a_{t+L-1}, ``next_obs``
s_{t+1}..s_{t+L}):

==========================  ==================  ===========================  =====
family                      inputs x            targets y                    L
==========================  ==================  ===========================  =====
``forward_model``           [s_t, a_t]          s_{t+1}                      1
``inverse_model``           [s_t, s_{t+1}]      a_t                          1
``multistep_inverse(n)``    [s_t, s_{t+n}]      a_{t:t+n}                    n
``future_prediction(n)``    s_t                 s_{t+1:t+n}                  n
``interpolation(n)``        [s_t, s_{t+n+1}]    s_{t+1:t+n}                  n + 1
``joint_model``             [(1 - m) z, m]      z = [s_t, a_t, s_{t+1}]      1
==========================  ==================  ===========================  =====

(a_{t:t+n} = a_t, ..., a_{t+n-1} and s_{t+1:t+n} = s_{t+1}, ..., s_{t+n}, flattened
time-major.) A :class:`ModelFamily` is that pair of slicing functions plus an optional
*offset* b(x) in target units, a fixed guess computed from the inputs that the network
corrects: y_hat = b(x) + f(x). Offsets carry the prior the dedicated models use
(``predict_delta``): the copy s_t for future states, the straight line between the two
ends for interpolation, the observed parts for the joint model.

One regressor serves all families: the ensemble of :mod:`mbjax.models.ensemble` and the
trainer of :mod:`mbjax.models.training`, unchanged. :class:`FamilyModel` feeds an
(inputs, targets) pair to them as a ``Transition`` with

    obs = b(x) [d_out],   action = x [d_in],   next_obs = y [d_out]

so that ``EnsembleModel`` (``predict_delta=True``, the default) sees the input
[b(x), x], regresses the residual y - b(x) (standardised; Gaussian NLL or MSE head,
members stacked, logvar bounds, weight decay) and ``predict`` adds b(x) back
(``predict_delta=False`` regresses y itself; b(x) is then only an extra input).
Families without an offset use b(x) = 0 (constant features, which the normaliser passes
through as zeros).
``make_model_trainer`` then supplies bootstrap resampling per member, holdout early
stopping, elites and the NaN guards; nothing of that is re-implemented here.

Data: :func:`family_dataset` cuts every valid window of the buffer once (a window never
crosses an episode end nor the ring's seam; fixed shapes [C * N, ...], the first
``num_valid`` rows valid, so a growing buffer never recompiles), or samples
``num_examples`` windows with ``buffer.sample_windows`` (with replacement) when given.

>>> family = inverse_model(obs_size=3, action_size=1)
>>> model = FamilyModel(family, EnsembleConfig(num_members=3, num_elites=2))
>>> trainer = make_family_trainer(model, buffer)
>>> state, metrics = jax.jit(trainer.train)(trainer.init(key), buffer_state, key)
>>> action = model.predict_mean(state, jnp.concatenate([obs, next_obs], -1))  # [B, 1]
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from mbjax.buffers.replay import ReplayBuffer, window_starts
from mbjax.buffers.state import BufferState
from mbjax.models.ensemble import EnsembleConfig, EnsembleModel, ModelState
from mbjax.models.training import ModelTrainConfig, make_model_trainer
from mbjax.types import Array, Metrics, PRNGKey, Transition

InputsFn = Callable[[Any, PRNGKey], Array]
TargetsFn = Callable[[Any], Array]
OffsetFn = Callable[[Array], Array]


def _check_size(value: Any, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: {name} must be an int >= 1, got {value!r}")
    return value


def _batched(fn: Callable[[Array], Array], x: Array) -> Array:
    """Applies a per-example ``fn`` [d] -> [k] to x [..., d] -> [..., k]."""
    flat = x.reshape((-1, x.shape[-1]))
    out = jax.vmap(fn)(flat)
    return out.reshape(x.shape[:-1] + out.shape[-1:])


# ---------------------------------------------------------------------------------------
# Families.


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    """A conditional model p(y | x) whose x and y are slices of one window.

    Attributes:
      name: for messages.
      window_length: L, the number of consecutive transitions one example needs.
      input_size: d_in = dim x.
      target_size: d_out = dim y.
      inputs_fn: ``inputs_fn(window, key) -> x [d_in]`` for ONE window (leaves [L, ...]);
        the key is used only by randomised families (the joint model's masks).
      targets_fn: ``targets_fn(window) -> y [d_out]`` for one window.
      offset_fn: ``offset_fn(x) -> b(x) [d_out]``, the fixed guess the network corrects
        (y_hat = b(x) + f(x)); None means b = 0. A function of x only, so that queries
        need nothing but the inputs.
    """

    name: str
    window_length: int
    input_size: int
    target_size: int
    inputs_fn: InputsFn
    targets_fn: TargetsFn
    offset_fn: OffsetFn | None = None

    def __post_init__(self):
        where = f"ModelFamily {self.name!r}"
        _check_size(self.window_length, "window_length", where)
        _check_size(self.input_size, "input_size", where)
        _check_size(self.target_size, "target_size", where)
        if not callable(self.inputs_fn) or not callable(self.targets_fn):
            raise ValueError(f"{where}: inputs_fn and targets_fn must be callable")
        if self.offset_fn is not None and not callable(self.offset_fn):
            raise ValueError(f"{where}: offset_fn must be callable or None")

    def offset(self, inputs: Array) -> Array:
        """b(x) for inputs [..., d_in] -> [..., d_out] (zeros without an offset_fn)."""
        self._check_inputs(inputs)
        if self.offset_fn is None:
            return jnp.zeros(inputs.shape[:-1] + (self.target_size,), inputs.dtype)
        return _batched(self.offset_fn, inputs)

    def examples(self, windows: Any, key: PRNGKey) -> tuple[Array, Array]:
        """(inputs [B, d_in], targets [B, d_out]) of windows with leaves [B, L', ...].

        Windows longer than L (L' > L) are cut to their first L steps; shorter ones raise.
        """
        length = windows.obs.shape[1] if windows.obs.ndim >= 3 else None
        if length is None or windows.action.shape[:2] != windows.obs.shape[:2]:
            raise ValueError(
                f"{self.name}: expected windows with leaves [batch, length, ...], got obs "
                f"{windows.obs.shape} and action {windows.action.shape}")
        if length < self.window_length:
            raise ValueError(
                f"{self.name} needs windows of at least {self.window_length} transitions, "
                f"got windows of {length}")
        try:
            inputs, targets = _examples(self, windows, key)
        except (TypeError, ValueError) as err:  # slices that do not fit these windows
            raise ValueError(
                f"{self.name} cannot slice windows with obs {windows.obs.shape[2:]} and "
                f"action {windows.action.shape[2:]}: check obs_size / action_size ({err})"
            ) from err
        if inputs.shape[-1] != self.input_size or targets.shape[-1] != self.target_size:
            raise ValueError(
                f"{self.name} was built for inputs [{self.input_size}] and targets "
                f"[{self.target_size}], but these windows give {inputs.shape[-1]} and "
                f"{targets.shape[-1]} (obs {windows.obs.shape[2:]}, action "
                f"{windows.action.shape[2:]}): check obs_size / action_size")
        return inputs, targets

    def _check_inputs(self, inputs: Array) -> None:
        if inputs.shape[-1] != self.input_size:
            raise ValueError(f"{self.name} takes inputs [..., {self.input_size}], got "
                             f"{inputs.shape}")


@functools.partial(jax.jit, static_argnums=0)
def _examples(family: ModelFamily, windows: Any, key: PRNGKey) -> tuple[Array, Array]:
    windows = jax.tree_util.tree_map(lambda x: x[:, : family.window_length], windows)
    keys = jax.random.split(key, windows.obs.shape[0])
    return jax.vmap(family.inputs_fn)(windows, keys), jax.vmap(family.targets_fn)(windows)


def _tile_first(obs_size: int, n: int) -> OffsetFn:
    return lambda x: jnp.tile(x[:obs_size], n)


def forward_model(obs_size: int, action_size: int) -> ModelFamily:
    """p(s_{t+1} | s_t, a_t): the usual dynamics model; x = [s_t, a_t], y = s_{t+1},
    b(x) = s_t (the ensemble regresses the delta s_{t+1} - s_t)."""
    o = _check_size(obs_size, "obs_size", "forward_model")
    a = _check_size(action_size, "action_size", "forward_model")
    return ModelFamily(
        name="forward_model", window_length=1, input_size=o + a, target_size=o,
        inputs_fn=lambda w, key: jnp.concatenate([w.obs[0], w.action[0]]),
        targets_fn=lambda w: w.next_obs[0],
        offset_fn=_tile_first(o, 1))


def inverse_model(obs_size: int, action_size: int) -> ModelFamily:
    """p(a_t | s_t, s_{t+1}); x = [s_t, s_{t+1}] [2 O], y = a_t [A], no offset."""
    o = _check_size(obs_size, "obs_size", "inverse_model")
    a = _check_size(action_size, "action_size", "inverse_model")
    return ModelFamily(
        name="inverse_model", window_length=1, input_size=2 * o, target_size=a,
        inputs_fn=lambda w, key: jnp.concatenate([w.obs[0], w.next_obs[0]]),
        targets_fn=lambda w: w.action[0])


def multistep_inverse(obs_size: int, action_size: int, n: int) -> ModelFamily:
    """p(a_{t:t+n} | s_t, s_{t+n}); x = [s_t, s_{t+n}] [2 O], y = [a_t, ..., a_{t+n-1}]
    [n A] (time-major), no offset; L = n (s_{t+n} is the window's last ``next_obs``)."""
    where = "multistep_inverse"
    o = _check_size(obs_size, "obs_size", where)
    a = _check_size(action_size, "action_size", where)
    n = _check_size(n, "n (the number of actions)", where)
    return ModelFamily(
        name=f"multistep_inverse(n={n})", window_length=n, input_size=2 * o,
        target_size=n * a,
        inputs_fn=lambda w, key: jnp.concatenate([w.obs[0], w.next_obs[n - 1]]),
        targets_fn=lambda w: w.action[:n].reshape(-1))


def future_prediction(obs_size: int, n: int) -> ModelFamily:
    """Action-free p(s_{t+1:t+n} | s_t) under the data's policy; x = s_t [O],
    y = [s_{t+1}, ..., s_{t+n}] [n O], b(x) = [s_t, ..., s_t] (the copy); L = n."""
    o = _check_size(obs_size, "obs_size", "future_prediction")
    n = _check_size(n, "n (the horizon)", "future_prediction")
    return ModelFamily(
        name=f"future_prediction(n={n})", window_length=n, input_size=o,
        target_size=n * o,
        inputs_fn=lambda w, key: w.obs[0],
        targets_fn=lambda w: w.next_obs[:n].reshape(-1),
        offset_fn=_tile_first(o, n))


def interpolation(obs_size: int, n: int) -> ModelFamily:
    """p(s_{t+1:t+n} | s_t, s_{t+n+1}): the n states between two given ones.

    x = [s_t, s_{t+n+1}] [2 O], y = [s_{t+1}, ..., s_{t+n}] [n O], L = n + 1 and the
    straight line as offset, b_k(x) = s_t + k / (n + 1) (s_{t+n+1} - s_t), k = 1..n.
    """
    o = _check_size(obs_size, "obs_size", "interpolation")
    n = _check_size(n, "n (the number of missing states)", "interpolation")
    frac = jnp.arange(1, n + 1, dtype=jnp.float32)[:, None] / (n + 1)

    def line(x):
        first, last = x[:o], x[o:]
        return (first + frac * (last - first)).reshape(-1)

    return ModelFamily(
        name=f"interpolation(n={n})", window_length=n + 1, input_size=2 * o,
        target_size=n * o,
        inputs_fn=lambda w, key: jnp.concatenate([w.obs[0], w.next_obs[n]]),
        targets_fn=lambda w: w.next_obs[:n].reshape(-1),
        offset_fn=line)


#: Block masks (obs, action, next_obs) the joint model trains on by default: every mask
#: that hides one or two of the three blocks (True = hidden, to be predicted).
ALL_JOINT_QUERIES: tuple[tuple[bool, bool, bool], ...] = tuple(
    m for m in itertools.product((False, True), repeat=3) if 0 < sum(m) < 3)


@dataclasses.dataclass(frozen=True)
class JointFamily(ModelFamily):
    """The joint model of z = [s_t, a_t, s_{t+1}] [D = 2 O + A]; see :func:`joint_model`."""

    obs_size: int = 0
    action_size: int = 0

    @property
    def joint_size(self) -> int:
        return 2 * self.obs_size + self.action_size

    def query_inputs(self, obs: Array | None = None, action: Array | None = None,
                     next_obs: Array | None = None) -> Array:
        """Inputs [B, 2 D] of the query "the missing parts given the rest".

        Give the known parts ([B, O], [B, A], [B, O]; None = missing, to be predicted).
        ``split(predict_mean(state, inputs))`` then answers, e.g. the forward query
        ``query_inputs(obs=s, action=a)`` or the inverse ``query_inputs(obs=s,
        next_obs=s2)``.
        """
        parts = (obs, action, next_obs)
        sizes = (self.obs_size, self.action_size, self.obs_size)
        given = [p for p in parts if p is not None]
        if not given:
            raise ValueError("joint query: give at least one of obs, action, next_obs")
        batch = jnp.shape(given[0])[:-1]
        values, masks = [], []
        for name, part, size in zip(("obs", "action", "next_obs"), parts, sizes):
            if part is None:
                values.append(jnp.zeros(batch + (size,)))
                masks.append(jnp.ones(batch + (size,)))
            else:
                part = jnp.asarray(part, jnp.float32)
                if part.shape != batch + (size,):
                    raise ValueError(f"joint query: {name} must have shape "
                                     f"{batch + (size,)}, got {part.shape}")
                values.append(part)
                masks.append(jnp.zeros(batch + (size,)))
        return jnp.concatenate(values + masks, axis=-1)

    def split(self, z: Array) -> tuple[Array, Array, Array]:
        """[..., D] -> (obs [..., O], action [..., A], next_obs [..., O])."""
        o, a = self.obs_size, self.action_size
        return z[..., :o], z[..., o:o + a], z[..., o + a:]


def joint_model(obs_size: int, action_size: int,
                queries: tuple[tuple[bool, bool, bool], ...] = ALL_JOINT_QUERIES
                ) -> JointFamily:
    """A masked joint model of z = [s_t, a_t, s_{t+1}] answering any block query.

    Training draws, per example, a block mask (hide_obs, hide_action, hide_next_obs)
    uniformly from ``queries`` and expands it to m in {0, 1}^D (1 = hidden). Then

        x = [(1 - m) * z, m] [2 D],   y = z [D],
        b(x) = the observed parts, a hidden state filled with the other state where that
               one is observed (s_{t+1} ~ s_t: the persistence guess), hidden actions 0,

    so the network predicts the hidden parts as corrections of b (the forward query
    regresses s_{t+1} - s_t like the dedicated model; observed parts have residual 0).
    One network answers forward p(s' | s, a), inverse p(a | s, s'), "where from"
    p(s | a, s') and the one-block-given queries; build their inputs with
    :meth:`JointFamily.query_inputs`.

    Use the deterministic head (``EnsembleConfig(probabilistic=False)``): the ensemble's
    loss averages over all D outputs, and with the Gaussian NLL the observed parts
    (residual exactly 0) drive their log-variances to the lower bound while hidden
    actions get a large variance and hence little weight on their mean; on the
    pendulum the inverse query then stays at R^2 ~ 0 (forward and "where from" still
    work). A loss restricted to the hidden parts would need a per-output weight in
    ``EnsembleModel.member_losses``.
    """
    o = _check_size(obs_size, "obs_size", "joint_model")
    a = _check_size(action_size, "action_size", "joint_model")
    d = 2 * o + a
    block_masks = jnp.asarray(queries, dtype=jnp.float32)
    if block_masks.ndim != 2 or block_masks.shape[1] != 3 or block_masks.shape[0] < 1:
        raise ValueError(f"joint_model: queries must be a non-empty tuple of (hide_obs, "
                         f"hide_action, hide_next_obs) triples, got {queries!r}")
    if bool(jnp.any(block_masks.sum(-1) == 0)):
        raise ValueError("joint_model: a query must hide at least one block")
    sizes = jnp.array([o, a, o])
    dim_masks = jnp.repeat(block_masks, sizes, axis=1, total_repeat_length=d)  # [K, D]

    def inputs_fn(w, key):
        z = jnp.concatenate([w.obs[0], w.action[0], w.next_obs[0]])
        m = dim_masks[jax.random.randint(key, (), 0, dim_masks.shape[0])]
        return jnp.concatenate([(1.0 - m) * z, m])

    def offset_fn(x):
        z, m = x[:d], x[d:]
        seen = 1.0 - m
        s, act, s2 = z[:o], z[o:o + a], z[o + a:]  # zero where hidden
        ms, ms2 = m[:o], m[o + a:]
        s_guess = seen[:o] * s + ms * seen[o + a:] * s2
        s2_guess = seen[o + a:] * s2 + ms2 * seen[:o] * s
        return jnp.concatenate([s_guess, seen[o:o + a] * act, s2_guess])

    return JointFamily(
        name="joint_model", window_length=1, input_size=2 * d, target_size=d,
        inputs_fn=inputs_fn,
        targets_fn=lambda w: jnp.concatenate([w.obs[0], w.action[0], w.next_obs[0]]),
        offset_fn=offset_fn, obs_size=o, action_size=a)


# ---------------------------------------------------------------------------------------
# Windowed datasets.


def all_windows(buffer: ReplayBuffer, buffer_state: BufferState, length: int
                ) -> tuple[Any, Array]:
    """Every valid window of ``length`` steps of the buffer, each once.

    The valid windows are those ``sample_windows`` draws from: consecutive steps of one
    env, inside the stored rows, no episode end but possibly at the last step.

    Returns:
      (windows with leaves [C * N, length, ...], num_valid int32 []): the first
      ``num_valid`` rows are the valid windows (per start time, then env); the others
      are placeholders (finite stored rows) to be masked out. Shapes depend only on the
      buffer's sizes, so this is jit-able and never recompiles as the buffer fills.
    """
    buffer.num_windows(buffer_state, length)  # validates the state, length and episodes
    return _all_windows_kernel(buffer_state, length)


@functools.partial(jax.jit, static_argnames=("length",))
def _all_windows_kernel(buffer_state: BufferState, length: int) -> tuple[Any, Array]:
    mask, oldest = window_starts(buffer_state, length)  # [C, N]
    C, N = mask.shape
    order = jnp.argsort(~mask.reshape(-1), stable=True)  # valid starts first
    start, env = order // N, order % N
    rows = (oldest + start[:, None] + jnp.arange(length)) % C  # [C * N, L]
    windows = jax.tree_util.tree_map(lambda d: d[rows, env[:, None]], buffer_state.data)
    return windows, jnp.sum(mask, dtype=jnp.int32)


# ---------------------------------------------------------------------------------------
# The regressor: an EnsembleModel on (b(x), x) -> y.


@struct.dataclass
class FamilyPrediction:
    """Per-member predictive distribution of y, [E, B, d_out] (std 0 if deterministic)."""

    mean: Array
    std: Array


class FamilyModel:
    """The ensemble regressor of a family (see the module docstring).

    ``ensemble`` is an ``EnsembleModel`` with obs_size = d_out (the offset slot) and
    action_size = d_in (the inputs); its ``ModelState`` is this model's state.
    """

    def __init__(self, family: ModelFamily, config: EnsembleConfig | None = None):
        if not isinstance(family, ModelFamily):
            raise TypeError(f"family must be a ModelFamily, got {type(family).__name__}")
        config = config or EnsembleConfig()
        if config.learn_reward or config.learn_termination:
            raise ValueError("FamilyModel regresses the family's targets only; use an "
                             "EnsembleConfig with learn_reward=False, learn_termination=False")
        self.family = family
        self.config = config
        self.ensemble = EnsembleModel(family.target_size, family.input_size, config)

    def as_transitions(self, inputs: Array, targets: Array) -> Transition:
        """Packs (x [B, d_in], y [B, d_out]) as the ensemble's Transition
        (obs = b(x), action = x, next_obs = y, reward = done = truncated = 0)."""
        zeros = jnp.zeros(inputs.shape[:-1])
        return Transition(obs=self.family.offset(inputs), action=inputs, reward=zeros,
                          next_obs=targets, done=zeros, truncated=zeros)

    def predict(self, state: ModelState, inputs: Array) -> FamilyPrediction:
        """Every member's prediction of y for inputs [B, d_in] (or [E, B, d_in]).

        Returns mean and std [E, B, d_out] in data units: b(x) + f_e(x).
        """
        pred = self.ensemble.predict(state, self.family.offset(inputs), inputs)
        return FamilyPrediction(mean=pred.next_obs_mean, std=pred.next_obs_std)

    def predict_mean(self, state: ModelState, inputs: Array) -> Array:
        """The elites' average prediction of y, [B, d_out]."""
        return self.predict(state, inputs).mean[state.elites].mean(0)


def family_dataset(model: FamilyModel, buffer: ReplayBuffer, buffer_state: BufferState,
                   key: PRNGKey, num_examples: int | None = None) -> tuple[Transition, Array]:
    """The training set of ``model``'s family from the buffer, in the trainer's format.

    Args:
      num_examples: None: every valid window once (:func:`all_windows`, [C * N] rows;
        the holdout split then never shares a window with the training rows). An int:
        that many windows drawn uniformly with replacement by ``buffer.sample_windows``
        (cheaper for large buffers; duplicates can land on both sides of the holdout).

    Returns:
      (data, num_valid): a ``Transition`` with leaves [rows, ...] (see
      ``FamilyModel.as_transitions``) whose first ``num_valid`` rows are valid; 0 when
      the buffer holds no window of the family's length yet.
    """
    family = model.family
    key_windows, key_examples = jax.random.split(key)
    if num_examples is None:
        windows, num_valid = all_windows(buffer, buffer_state, family.window_length)
    else:
        num_examples = _check_size(num_examples, "num_examples", "family_dataset")
        count = buffer.num_windows(buffer_state, family.window_length)
        windows = buffer.sample_windows(buffer_state, key_windows, num_examples,
                                        family.window_length)
        num_valid = jnp.where(count > 0, num_examples, 0).astype(jnp.int32)
    inputs, targets = family.examples(windows, key_examples)
    return model.as_transitions(inputs, targets), num_valid


class FamilyTrainer(NamedTuple):
    """``init(key) -> ModelState``; ``train(state, buffer_state, key) -> (state, metrics)``
    (a fresh dataset of the buffer, then ``make_model_trainer``'s ``train``)."""

    model: FamilyModel
    init: Callable[[PRNGKey], ModelState]
    train: Callable[[ModelState, BufferState, PRNGKey], tuple[ModelState, Metrics]]


def make_family_trainer(model: FamilyModel, buffer: ReplayBuffer,
                        config: ModelTrainConfig | None = None,
                        num_examples: int | None = None) -> FamilyTrainer:
    """Trains ``model`` on windows of ``buffer`` (see :func:`family_dataset`).

    ``train`` is jit-able (close over nothing traced; the buffer's sizes are static) and
    reports ``make_model_trainer``'s metrics; check them with
    ``mbjax.models.raise_if_failed``. Each call cuts a new dataset (new joint masks).
    """
    trainer = make_model_trainer(model.ensemble, config)

    def train(state: ModelState, buffer_state: BufferState, key: PRNGKey):
        key_data, key_train = jax.random.split(key)
        data, num_valid = family_dataset(model, buffer, buffer_state, key_data, num_examples)
        return trainer.train(state, data, num_valid, key_train)

    return FamilyTrainer(model=model, init=trainer.init, train=train)
