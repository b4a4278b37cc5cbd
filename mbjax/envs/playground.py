"""MuJoCo Playground adapter: ``make("playground/<EnvName>", **config_overrides)``.

Needs the optional extra ``playground`` (``pip install "mbjax[playground]"``, which
installs the PyPI package ``playground`` providing the ``mujoco_playground`` module).

Only environments whose assets ship inside the ``playground`` wheel are offered: the
DeepMind Control Suite ports (``CartpoleSwingup``, ``CheetahRun``, ``ReacherEasy``, ...).
The locomotion and manipulation environments load their robots from
``mujoco_menagerie``, which playground ``git clone``s on first use; this adapter never
triggers that download and accepts those names only when the menagerie is already on disk.

Physics always runs on MJX's pure-JAX backend (``impl="jax"``): playground's configs
default to ``impl="warp"`` (MuJoCo Warp, CUDA only), which this adapter overrides. The
warp-only config fields (``impl``, ``naconmax``, ``njmax``) and the warp-rendered vision
options (``vision``, ``vision_config``) are therefore not offered as overrides.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from mbjax.envs.base import Env, RewardFnUnavailableError, State
from mbjax.types import Array, PRNGKey

_INSTALL_HINT = 'pip install "mbjax[playground]"'

#: Config fields we never forward: the backend is pinned to MJX-JAX, and these only
#: matter for MuJoCo Warp (buffer sizes) or its batch renderer (vision).
_PINNED_CONFIG = {"impl": "jax"}
_HIDDEN_CONFIG_KEYS = frozenset(
    {"impl", "naconmax", "naccdmax", "njmax", "nvmax", "vision", "vision_config"}
)


def _import_playground():
    try:
        import mujoco_playground
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "MuJoCo Playground environments need the optional dependency "
            f"'playground' (module mujoco_playground): {_INSTALL_HINT}"
        ) from err
    return mujoco_playground


# ----------------------------------------------------------------------------------------
# Names
# ----------------------------------------------------------------------------------------


def _menagerie_present() -> bool:
    from mujoco_playground._src import mjx_env  # playground's own path constant

    return mjx_env.MENAGERIE_PATH.exists()


def available_names() -> list[str]:
    """Playground env names that load offline here (usable as ``playground/<name>``).

    The DM Control Suite ports always; the locomotion and manipulation envs only when
    playground's ``mujoco_menagerie`` checkout already exists (we never download it).
    """
    mp = _import_playground()
    names = list(mp.dm_control_suite.ALL_ENVS)
    if _menagerie_present():
        names += list(mp.locomotion.ALL_ENVS) + list(mp.manipulation.ALL_ENVS)
    return sorted(names)


def _check_name(env_name: str) -> None:
    mp = _import_playground()
    available = available_names()
    if env_name in available:
        return
    if env_name in mp.registry.ALL_ENVS:
        raise KeyError(
            f"playground env {env_name!r} loads its robot from mujoco_menagerie, which "
            "is not on disk; mbjax does not let playground download it at run time "
            "(git clone). Available offline: " + ", ".join(available)
        )
    close = difflib.get_close_matches(env_name, available, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise KeyError(
        f"unknown playground env {env_name!r}.{hint} Available: " + ", ".join(available)
    )


# ----------------------------------------------------------------------------------------
# Config overrides
# ----------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """ConfigDict -> nested dict (for signature defaults), anything else unchanged."""
    to_dict = getattr(value, "to_dict", None)
    return to_dict() if callable(to_dict) else value


def _default_config(env_name: str):
    return _import_playground().registry.get_default_config(env_name)


def config_defaults(env_name: str) -> dict[str, Any]:
    """The overridable config fields of playground env ``env_name`` and their defaults."""
    _check_name(env_name)
    cfg = _default_config(env_name)
    return {k: _plain(v) for k, v in sorted(cfg.items()) if k not in _HIDDEN_CONFIG_KEYS}


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)
    else:
        out[prefix] = value


# ----------------------------------------------------------------------------------------
# The adapter
# ----------------------------------------------------------------------------------------


class PlaygroundEnv(Env):
    """An ``Env`` over a MuJoCo Playground environment (``mujoco_playground.MjxEnv``).

    ``reset``/``step`` delegate to the playground env. ``state.physics`` is the whole
    playground ``State`` (its ``.data`` is the ``mjx.Data``; its ``.info`` and
    ``.metrics`` carry the env's per-episode data such as RNG keys), so wrappers that
    reset ``physics`` (``EpisodeWrapper``) reset everything the playground env keeps.
    ``state.obs``/``reward``/``done`` are the playground ones (``done`` as float32),
    ``state.metrics`` a copy of the playground metrics; ``state.info`` starts empty and
    belongs to mbjax's wrappers. ``dt`` is ``ctrl_dt * action_repeat``; actions are in
    [-1, 1] per dimension, as playground's actuators expect.

    **No reward function of observations.** Playground computes rewards (and the
    terminal flag) from the full simulator state (``mjx.Data``: body poses, contacts,
    mocap targets, sensor readings), not from the observation, so ``has_reward_fn`` is
    False and ``reward_fn``/``termination_fn`` raise ``RewardFnUnavailableError``.
    Planning (MPC, CEM, MBPO rollouts) on these envs needs a dynamics model with learned
    reward and termination heads.

    Playground quirks worth knowing:

    * Playground envs do not time out or auto-reset by themselves (``done`` is only set
      on NaNs or a task failure); playground's own ``wrap_for_brax_training`` adds
      brax's episode and auto-reset wrappers. Here use ``mbjax.envs.wrap_for_training``
      / ``EpisodeWrapper`` with ``default_episode_length`` (the config's
      ``episode_length``, in control steps, divided by ``action_repeat``).
    * The config's ``action_repeat`` is only read by playground's training wrappers;
      this adapter applies it itself (the action is held for ``action_repeat`` control
      steps and the rewards summed; ``done`` if any inner step was done). Do not
      combine it with mbjax's ``ActionRepeat`` unless you want both.
    * Playground's ``step`` writes reward components into ``state.metrics`` in place;
      the adapter hands it shallow copies, so the caller's state is never mutated.
    * ``ctrl_dt`` must be a whole multiple of ``sim_dt`` (playground would silently
      round the number of substeps).
    """

    has_reward_fn = False

    def __init__(
        self,
        pg_env: Any,
        name: str = "playground",
        action_repeat: int = 1,
        episode_length: int = 1000,
    ):
        if int(action_repeat) < 1:
            raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
        self.pg_env = pg_env
        self.name = name
        self.action_repeat = int(action_repeat)
        self.default_episode_length = max(1, math.ceil(int(episode_length) / action_repeat))
        abstract = jax.eval_shape(pg_env.reset, jax.random.PRNGKey(0))
        if isinstance(abstract.obs, Mapping):
            keys = ", ".join(f"{k!r}: {tuple(v.shape)}" for k, v in abstract.obs.items())
            raise ValueError(
                f"{name}: the playground env returns a dict observation ({{{keys}}}); "
                "mbjax envs need one flat observation vector. Dict observations "
                "(pixels, actor/critic 'state'/'privileged_state' splits) are not "
                "supported by this adapter."
            )
        if abstract.obs.ndim != 1:
            raise ValueError(
                f"{name}: expected a flat observation vector, got shape {abstract.obs.shape}"
            )
        self._observation_size = int(abstract.obs.shape[0])
        self._action_size = int(pg_env.action_size)

    # -- sizes ----------------------------------------------------------------------------
    @property
    def observation_size(self) -> int:
        return self._observation_size

    @property
    def action_size(self) -> int:
        return self._action_size

    @property
    def dt(self) -> float:
        return float(self.pg_env.dt) * self.action_repeat

    # -- dynamics -------------------------------------------------------------------------
    def _wrap(self, pg_state: Any) -> State:
        return State(
            physics=pg_state,
            obs=pg_state.obs,
            reward=jnp.asarray(pg_state.reward, jnp.float32),
            done=jnp.asarray(pg_state.done, jnp.float32),
            metrics=dict(pg_state.metrics),
        )

    def _pg_step(self, pg_state: Any, action: Array) -> Any:
        # Shallow copies: playground's step assigns into state.metrics / state.info.
        pg_state = pg_state.replace(metrics=dict(pg_state.metrics), info=dict(pg_state.info))
        return self.pg_env.step(pg_state, action)

    def _reset(self, key: PRNGKey) -> State:
        return self._wrap(self.pg_env.reset(key))

    def _step(self, state: State, action: Array) -> State:
        if self.action_repeat == 1:
            out = self._wrap(self._pg_step(state.physics, action))
            return out.replace(info=state.info)

        def body(carry, _):
            pg, total, done = carry
            pg = self._pg_step(pg, action)
            total = total + jnp.asarray(pg.reward, jnp.float32) * (1.0 - done)
            done = jnp.maximum(done, jnp.asarray(pg.done, jnp.float32))
            return (pg, total, done), None

        zero = jnp.zeros((), jnp.float32)
        (pg, total, done), _ = jax.lax.scan(
            body, (state.physics, zero, zero), None, length=self.action_repeat
        )
        return self._wrap(pg).replace(reward=total, done=done, info=state.info)

    # -- no reward / termination function of observations ---------------------------------
    def _unavailable(self, what: str) -> RewardFnUnavailableError:
        return RewardFnUnavailableError(
            f"{self.name}: MuJoCo Playground computes the {what} from the full simulator "
            "state (mjx.Data), not from observations, so there is no "
            f"{what} function of (obs, action, next_obs). Planning on this env needs a "
            "dynamics model with learned reward and termination heads."
        )

    def reward_fn(self, obs: Array, action: Array, next_obs: Array) -> Array:
        raise self._unavailable("reward")

    def termination_fn(self, obs: Array, action: Array, next_obs: Array) -> Array:
        raise self._unavailable("termination flag")


# ----------------------------------------------------------------------------------------
# Factory (what the registry calls for "playground/<EnvName>")
# ----------------------------------------------------------------------------------------


def _build(env_name: str, defaults: dict[str, Any], overrides: dict[str, Any]) -> PlaygroundEnv:
    bad = sorted(k for k in overrides if k not in defaults)
    if bad:
        raise TypeError(
            f"playground env {env_name!r} has no option(s) {', '.join(map(repr, bad))}; "
            f"valid options: {', '.join(defaults)}"
        )
    flat: dict[str, Any] = dict(_PINNED_CONFIG)
    for key, value in overrides.items():
        if isinstance(defaults[key], Mapping):
            if not isinstance(value, Mapping):
                raise TypeError(
                    f"playground option {key!r} is a nested config; pass a dict of the "
                    f"fields to change (defaults: {defaults[key]})"
                )
            _flatten(key, value, flat)
        else:
            flat[key] = value

    cfg = {**defaults, **overrides}
    if int(cfg.get("action_repeat", 1)) < 1:
        raise ValueError(f"action_repeat must be >= 1, got {cfg['action_repeat']}")
    ctrl_dt, sim_dt = cfg.get("ctrl_dt"), cfg.get("sim_dt")
    if ctrl_dt is not None and sim_dt is not None:
        if sim_dt <= 0 or ctrl_dt <= 0:
            raise ValueError(f"ctrl_dt and sim_dt must be > 0, got {ctrl_dt}, {sim_dt}")
        ratio = ctrl_dt / sim_dt
        if round(ratio) < 1 or abs(ratio - round(ratio)) > 1e-6 * max(1.0, ratio):
            raise ValueError(
                f"{env_name}: ctrl_dt={ctrl_dt} must be a whole multiple of sim_dt={sim_dt}"
            )

    mp = _import_playground()
    try:
        pg_env = mp.registry.load(env_name, config_overrides=flat)
    except (KeyError, AttributeError) as err:  # unknown nested field
        raise TypeError(
            f"playground env {env_name!r}: bad config override {overrides}: {err}"
        ) from err
    return PlaygroundEnv(
        pg_env,
        name=f"playground/{env_name}",
        action_repeat=int(cfg.get("action_repeat", 1)),
        episode_length=int(cfg.get("episode_length", 1000)),
    )


def make_playground_factory(env_name: str) -> Callable[..., PlaygroundEnv]:
    """Returns ``factory(**overrides) -> PlaygroundEnv`` for playground env ``env_name``.

    The overrides are the env's config fields (playground's ``default_config()``, e.g.
    ``ctrl_dt``, ``sim_dt``, ``episode_length``, ``action_repeat``), keyword-only, with
    the playground defaults; nested configs take a dict of the fields to change. The
    factory's ``__signature__`` lists them, so ``mbjax.envs.make`` and
    ``override_keys`` validate and report them. Raises ``ImportError`` without the
    ``playground`` extra and ``KeyError`` (listing the available names) for an unknown
    or not-offline ``env_name``. Building the factory compiles nothing.
    """
    defaults = config_defaults(env_name)

    def factory(**overrides: Any) -> PlaygroundEnv:
        return _build(env_name, defaults, overrides)

    factory.__signature__ = inspect.Signature(
        [
            inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v)
            for k, v in defaults.items()
        ],
        return_annotation=PlaygroundEnv,
    )
    factory.__name__ = f"playground_{env_name}"
    factory.__qualname__ = factory.__name__
    factory.__doc__ = f"MuJoCo Playground env {env_name!r}; options: {', '.join(defaults)}."
    return factory
