"""Brax locomotion and manipulation tasks behind the mbjax ``Env`` API.

Each class wraps one brax ``PipelineEnv`` (brax 0.14.2; physics backend chosen with
``backend``: ``"mjx"`` (default), ``"generalized"``, ``"positional"`` or ``"spring"``).
``State.physics`` is brax's pipeline state, ``State.metrics`` brax's metrics (copied, so
brax's in-place ``metrics.update`` never aliases a caller's state), ``State.done`` is 1.0
on a terminal step. brax is imported when an env is constructed, not at module import.

Every task exports ``reward_fn(obs, action, next_obs)`` and ``termination_fn(obs, action,
next_obs)`` for ONE transition that reproduce the env's reward and done. Where brax's
observation lacks a quantity its reward or termination uses, the observation is
extended; extensions are always appended after brax's own entries, so brax's indices
keep their meaning:

=================  ====  ====  =====================================  =======================
name               brax  ours  appended entries                       why
=================  ====  ====  =====================================  =======================
halfcheetah        17    18    [17] v_x                               forward reward
hopper             11    18    [11] v_x; [12:18] unclipped qd         forward reward; health
                                                                      check (brax's obs
                                                                      clips qd to +-10)
walker2d           17    18    [17] v_x                               forward reward
ant                27    29    [27] v_x; [28] torso z as x.pos[0, 2]  forward reward; health
                                                                      check (mjx: x lags q)
reacher            11    13    [11:13] joint velocities qd[:2]        Markov state (tip
                                                                      velocity is singular
                                                                      for a straight arm)
pusher             23    25    [23:25] object velocity qd[7:9]        Markov state
inverted_pendulum  4     4     none                                   -
=================  ====  ====  =====================================  =======================

v_x is the torso's finite-difference x velocity over the control step,
``(x_torso(t+1) - x_torso(t)) / dt`` with x_torso = brax's ``x.pos[0, 0]``, exactly what
brax's forward reward uses; on the reset observation (no previous state) it is the
torso's instantaneous x velocity ``qd[0]``. Absolute x positions stay excluded (brax's
``exclude_current_positions_from_observation=True``).

Action bounds are the actuators' ``ctrlrange`` (all [-1, 1] here), except pusher and
inverted_pendulum, whose brax ``step`` rescales an action in [-1, 1] to the
``ctrlrange`` itself: their bounds are [-1, 1].

Constructors take ``backend``, then the task's ``options`` (a class attribute: name ->
default, each also an attribute of the env and a keyword argument of brax's env), then
``n_frames``; ``inspect.signature`` of a task class lists exactly these.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import jax.numpy as jnp
import numpy as np

from mbjax.envs.base import Env, State
from mbjax.envs.registry import register
from mbjax.types import Array, PRNGKey

#: Physics backends brax offers.
BACKENDS = ("mjx", "generalized", "positional", "spring")


def _f32(x) -> Array:
    return jnp.asarray(x, dtype=jnp.float32)


def safe_norm(x: Array) -> Array:
    """Euclidean norm of x with a finite (zero) gradient at x = 0; returns shape []."""
    sq = jnp.sum(jnp.square(x))
    nonzero = sq > 0.0
    return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sq, 1.0)), 0.0)


def _in_range(x: Array, bounds: tuple[float, float]) -> Array:
    """lo < x < hi (strict) elementwise for bounds = (lo, hi); a bool array of x's shape."""
    low, high = bounds
    return (low < x) & (x < high)


def _range(name: str, value) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair of numbers, got {value!r}") from None
    if not low < high:
        raise ValueError(f"{name} must satisfy low < high, got {value!r}")
    return low, high


def _option_value(name: str, value: Any, default: Any) -> Any:
    """``value`` of task option ``name`` in the type of its default.

    A (low, high) pair of floats with low < high for a tuple default (``ValueError``
    otherwise), a bool for a bool default, else a float.
    """
    if isinstance(default, tuple):
        return _range(name, value)
    if isinstance(default, bool):
        return bool(value)
    return float(value)


def _constructor_signature(options: dict[str, Any]) -> inspect.Signature:
    """``(backend="mjx", <options with their defaults>, n_frames=None)`` of a brax task."""
    param = inspect.Parameter
    kind = param.POSITIONAL_OR_KEYWORD
    option_params = [
        param(name, kind, default=default,
              annotation=tuple[float, float] if isinstance(default, tuple) else type(default))
        for name, default in options.items()
    ]
    return inspect.Signature(
        [param("backend", kind, default="mjx", annotation=str), *option_params,
         param("n_frames", kind, default=None, annotation=int | None)]
    )


class BraxEnv(Env):
    """Adapter from a brax ``PipelineEnv`` to ``Env``; subclasses define one task.

    Subclasses set ``name``, ``brax_name`` (brax's registry name), ``options``,
    ``extra_size`` and ``excluded_positions`` (or ``brax_observation_size``), and
    implement ``_extra_obs``, ``reward_fn`` and (if the task terminates)
    ``termination_fn``.

    Args:
      backend: physics backend, one of ``BACKENDS``.
      **options: the task's ``options`` (see the subclass), passed on to brax.
      n_frames: physics steps per control step (None: brax's default for the backend).

    Attributes:
      brax_env: the wrapped brax environment.
      backend: the physics backend.
    """

    brax_name: str = ""
    default_episode_length = 1000
    #: Task options, name -> default: constructor arguments (between ``backend`` and
    #: ``n_frames``), env attributes (converted like the default) and brax kwargs.
    options: dict[str, Any] = {}
    #: Number of entries appended to brax's observation (see ``_extra_obs``).
    extra_size: int = 0
    #: Leading entries of q (root x, y) brax leaves out of its observation.
    excluded_positions: int = 0
    #: True where brax's ``step`` maps an action in [-1, 1] onto ``ctrlrange`` itself.
    rescales_action: bool = False
    __signature__ = _constructor_signature({})

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.__signature__ = _constructor_signature(cls.options)

    def __init__(self, *args, **kwargs):
        arguments = self.__signature__.bind(*args, **kwargs)
        arguments.apply_defaults()
        values = dict(arguments.arguments)
        backend, n_frames = values.pop("backend"), values.pop("n_frames")
        for key, value in values.items():
            setattr(self, key, _option_value(key, value, self.options[key]))
        brax_kwargs = {key: getattr(self, key) for key in values}
        if backend not in BACKENDS:
            raise ValueError(
                f"{self.name}: unknown backend {backend!r}; valid backends: "
                f"{', '.join(BACKENDS)}"
            )
        if n_frames is not None:
            if int(n_frames) != n_frames or n_frames < 1:
                raise ValueError(f"{self.name}: n_frames must be an integer >= 1, got {n_frames}")
            brax_kwargs["n_frames"] = int(n_frames)
        from brax import envs as brax_envs

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Brax System", category=UserWarning)
            self.brax_env = brax_envs.get_environment(
                self.brax_name, backend=backend, **brax_kwargs
            )
        self.backend = backend
        sys = self.brax_env.sys
        self._q_size, self._qd_size = int(sys.q_size()), int(sys.qd_size())
        self._action_size = int(self.brax_env.action_size)
        self._dt = float(self.brax_env.dt)
        ctrl = np.asarray(sys.actuator.ctrl_range, dtype=np.float32)
        self._ctrl_low, self._ctrl_high = ctrl[:, 0], ctrl[:, 1]
        if self.rescales_action:
            low, high = -np.ones(self._action_size), np.ones(self._action_size)
        else:  # brax marks an actuator without ctrllimited by an infinite range
            low = np.where(np.isfinite(ctrl[:, 0]), ctrl[:, 0], -1.0)
            high = np.where(np.isfinite(ctrl[:, 1]), ctrl[:, 1], 1.0)
        self._low, self._high = low.astype(np.float32), high.astype(np.float32)

    # -- sizes and bounds ---------------------------------------------------------------
    @property
    def brax_observation_size(self) -> int:
        """Size of brax's own observation (the leading entries of ours): q without the
        ``excluded_positions``, then qd."""
        return self._q_size - self.excluded_positions + self._qd_size

    @property
    def observation_size(self) -> int:
        return self.brax_observation_size + self.extra_size

    @property
    def action_size(self) -> int:
        return self._action_size

    @property
    def action_low(self) -> Array:
        return jnp.asarray(self._low)

    @property
    def action_high(self) -> Array:
        return jnp.asarray(self._high)

    @property
    def dt(self) -> float:
        return self._dt

    # -- dynamics -----------------------------------------------------------------------
    def _extra_obs(self, prev, new, reset: bool) -> Array:
        """Entries appended to brax's observation, shape [extra_size].

        Args:
          prev: pipeline state before the step (``new`` itself on reset).
          new: pipeline state after the step.
          reset: True when called from ``reset`` (a static Python bool).
        """
        return jnp.zeros((0,), dtype=jnp.float32)

    def _to_state(self, prev, brax_state, reset: bool) -> State:
        ps = brax_state.pipeline_state
        obs = jnp.concatenate([brax_state.obs, self._extra_obs(prev, ps, reset)])
        metrics = {k: _f32(v) for k, v in brax_state.metrics.items()}
        # brax's inverted_pendulum copies ``done`` into info["time_out"]; it is not a time
        # limit (truncation is EpisodeWrapper's info["truncation"]), so it is dropped.
        info = {k: v for k, v in brax_state.info.items() if k != "time_out"}
        done = _f32(brax_state.done) if not reset else jnp.zeros((), jnp.float32)
        reward = _f32(brax_state.reward) if not reset else jnp.zeros((), jnp.float32)
        return State(physics=ps, obs=obs, reward=reward, done=done, metrics=metrics, info=info)

    def _reset(self, key: PRNGKey) -> State:
        brax_state = self.brax_env.reset(key)
        return self._to_state(brax_state.pipeline_state, brax_state, reset=True)

    def _step(self, state: State, action: Array) -> State:
        from brax.envs.base import State as BraxState

        zero = jnp.zeros((), jnp.float32)
        # Fresh dicts: brax's step updates ``metrics`` in place. reward/done enter as 0
        # because brax's never-terminating envs pass the incoming ``done`` through (which
        # would be 1.0 right after an EpisodeWrapper auto-reset).
        brax_in = BraxState(
            pipeline_state=state.physics,
            obs=state.obs[: self.brax_observation_size],
            reward=zero,
            done=zero,
            metrics=dict(state.metrics),
            info=dict(state.info),
        )
        brax_out = self.brax_env.step(brax_in, action)
        return self._to_state(state.physics, brax_out, reset=False)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, backend={self.backend!r}, "
            f"obs={self.observation_size}, action={self.action_size}, dt={self.dt:g})"
        )


# ----------------------------------------------------------------------------------------
# Locomotion: half-cheetah, hopper, walker2d, ant
# ----------------------------------------------------------------------------------------


class Locomotion(BraxEnv):
    """A brax locomotion task: move the torso in +x and, where it has one, stay healthy.

    Appends v_x = (x_torso' - x_torso) / dt (the torso's instantaneous x velocity qd[0]
    on reset) at index ``brax_observation_size``; subclasses may append more after it.

    Reward r = w_fwd v_x(s') + h(s') - w_ctrl |a|^2 with h = healthy_reward if
    ``terminate_when_unhealthy`` (done = 1 - healthy(s')), else
    healthy_reward healthy(s') (done = 0). Tasks without a health check (healthy_reward 0,
    never terminating) and tasks without ``forward_reward_weight`` (w_fwd = 1) keep the
    class defaults below.

    Args (each task takes ``backend``, the subset of these in its ``options``, with its
    defaults, then ``n_frames``):
      backend: physics backend, one of ``BACKENDS``.
      forward_reward_weight: w_fwd.
      ctrl_cost_weight: w_ctrl.
      healthy_reward: reward per healthy step.
      terminate_when_unhealthy: end the episode on the first unhealthy state.
      healthy_state_range: (s_lo, s_hi) for the health check's state entries.
      healthy_z_range: (z_lo, z_hi) for the torso height.
      healthy_angle_range: (a_lo, a_hi) for the torso pitch.
      reset_noise_scale: c, with q ~ q0 + U(-c, c) and qd ~ c N(0, 1) (halfcheetah, ant)
        or qd ~ U(-c, c) (hopper, walker2d) at reset.
      n_frames: physics steps per control step (None: brax's default for the backend).
    """

    extra_size = 1
    excluded_positions = 1
    forward_reward_weight: float = 1.0
    ctrl_cost_weight: float
    healthy_reward: float = 0.0
    terminate_when_unhealthy: bool = False

    def _extra_obs(self, prev, new, reset):
        """[v_x], shape [1]: finite difference of x_torso over dt (qd[0] on reset)."""
        if reset:
            return new.qd[:1]
        return ((new.x.pos[0, 0] - prev.x.pos[0, 0]) / self.brax_env.dt)[None]

    def is_healthy(self, obs: Array) -> Array:
        """brax's health check on one observation [observation_size]; bool, shape [].

        Always True here (a task without a health check); subclasses override it."""
        return jnp.ones((), dtype=bool)

    def reward_fn(self, obs: Array, action: Array, next_obs: Array) -> Array:
        """r = w_fwd v_x(s') + h(s') - w_ctrl |a|^2 for one transition; shape []."""
        forward = self.forward_reward_weight * next_obs[self.brax_observation_size]
        if self.terminate_when_unhealthy:
            healthy = self.healthy_reward
        else:
            healthy = self.healthy_reward * self.is_healthy(next_obs)
        return forward + healthy - self.ctrl_cost_weight * jnp.sum(jnp.square(action))

    def termination_fn(self, obs: Array, action: Array, next_obs: Array) -> Array:
        """1.0 if s' is unhealthy (and ``terminate_when_unhealthy``) else 0.0; shape []."""
        if not self.terminate_when_unhealthy:
            return super().termination_fn(obs, action, next_obs)
        return 1.0 - self.is_healthy(next_obs).astype(jnp.float32)


class HalfCheetah(Locomotion):
    """brax ``halfcheetah``: run forward in the plane; never terminates.

    Observation [18]: brax's [0:8] q[1:] (rootz, rooty, 6 joint angles), [8:17] qd (9);
    appended [17] v_x. Action [6] in [-1, 1]. Reward r = w_fwd v_x(s') - w_ctrl |a|^2.
    Options (see ``Locomotion``): forward_reward_weight, ctrl_cost_weight,
    reset_noise_scale.
    """

    name = brax_name = "halfcheetah"
    options = {"forward_reward_weight": 1.0, "ctrl_cost_weight": 0.1, "reset_noise_scale": 0.1}


class Hopper(Locomotion):
    """brax ``hopper``: hop forward in the plane; terminates when unhealthy.

    Observation [18]: brax's [0] torso height z, [1] torso pitch, [2:5] joint angles,
    [5:11] clip(qd, -10, 10); appended [11] v_x and [12:18] the unclipped qd, which
    brax's health check reads. Action [3] in [-1, 1].

    healthy(s) = all(s_lo < [q[2:], qd] < s_hi) and z_lo < z < z_hi and
    a_lo < pitch < a_hi (strict); reward and done as in ``Locomotion``, whose Args
    describe the options (all of them; the state entries are q[2:] and qd).
    """

    name = brax_name = "hopper"
    options = {
        "forward_reward_weight": 1.0, "ctrl_cost_weight": 1e-3, "healthy_reward": 1.0,
        "terminate_when_unhealthy": True, "healthy_state_range": (-100.0, 100.0),
        "healthy_z_range": (0.7, float("inf")), "healthy_angle_range": (-0.2, 0.2),
        "reset_noise_scale": 5e-3,
    }

    @property
    def extra_size(self) -> int:  # type: ignore[override]
        return 1 + self._qd_size

    def _extra_obs(self, prev, new, reset):
        return jnp.concatenate([super()._extra_obs(prev, new, reset), new.qd])

    def is_healthy(self, obs: Array) -> Array:
        """brax's health check on one observation [18]; returns a bool of shape []."""
        n = self.brax_observation_size
        state_vec = jnp.concatenate([obs[1 : self._q_size - 1], obs[n + 1 :]])
        return (
            jnp.all(_in_range(state_vec, self.healthy_state_range))
            & _in_range(obs[0], self.healthy_z_range)
            & _in_range(obs[1], self.healthy_angle_range)
        )


class Walker2d(Locomotion):
    """brax ``walker2d``: walk forward in the plane; terminates when unhealthy.

    Observation [18]: brax's [0] torso height z, [1] torso pitch, [2:8] joint angles,
    [8:17] clip(qd, -10, 10); appended [17] v_x. Action [6] in [-1, 1].

    healthy(s) = z_lo < z < z_hi and a_lo < pitch < a_hi (strict); reward and done as in
    ``Locomotion``, whose Args describe the options (all but healthy_state_range).
    """

    name = brax_name = "walker2d"
    options = {
        "forward_reward_weight": 1.0, "ctrl_cost_weight": 1e-3, "healthy_reward": 1.0,
        "terminate_when_unhealthy": True, "healthy_z_range": (0.8, 2.0),
        "healthy_angle_range": (-1.0, 1.0), "reset_noise_scale": 5e-3,
    }

    def is_healthy(self, obs: Array) -> Array:
        """brax's health check on one observation [18]; returns a bool of shape []."""
        return _in_range(obs[0], self.healthy_z_range) & _in_range(obs[1], self.healthy_angle_range)


class Ant(Locomotion):
    """brax ``ant``: quadruped running in +x; terminates when the torso height leaves a range.

    Observation [29]: brax's [0] torso height q[2], [1:5] torso quaternion (w, x, y, z),
    [5:13] joint angles, [13:27] qd (torso linear and angular velocity, joint
    velocities); appended [27] v_x and [28] z = the torso height brax's health check
    reads, ``x.pos[0, 2]`` (with the mjx backend ``x`` comes from the kinematics at the
    start of the last physics substep, so it lags q[2] by one substep; the two differ by
    up to ~0.02). Action [8] in [-1, 1].

    healthy(s) = not (z < z_lo) and not (z > z_hi); reward (w_fwd = 1) and done as in
    ``Locomotion``. brax's contact cost is always 0 (contact forces are not implemented),
    so its options are not exposed. Options (see ``Locomotion``): ctrl_cost_weight,
    healthy_reward, terminate_when_unhealthy, healthy_z_range, reset_noise_scale.
    """

    name = brax_name = "ant"
    extra_size = 2
    excluded_positions = 2
    options = {
        "ctrl_cost_weight": 0.5, "healthy_reward": 1.0, "terminate_when_unhealthy": True,
        "healthy_z_range": (0.2, 1.0), "reset_noise_scale": 0.1,
    }

    def _extra_obs(self, prev, new, reset):
        return jnp.concatenate([super()._extra_obs(prev, new, reset), new.x.pos[0, 2:3]])

    def is_healthy(self, obs: Array) -> Array:
        """brax's health check on one observation [29]; returns a bool of shape []."""
        z = obs[self.brax_observation_size + 1]
        z_lo, z_hi = self.healthy_z_range
        return ~((z < z_lo) | (z > z_hi))


# ----------------------------------------------------------------------------------------
# Reacher, pusher and inverted pendulum
# ----------------------------------------------------------------------------------------


class Reacher(BraxEnv):
    """brax ``reacher``: bring a 2-link arm's fingertip to a random target; never ends.

    Observation [13]: brax's [0:2] cos(theta), [2:4] sin(theta), [4:6] target (x, y),
    [6:8] fingertip velocity (x, y), [8:11] fingertip - target (x, y, 0); appended
    [11:13] joint angular velocities qd[:2] (the fingertip velocity does not determine
    them when the arm is straight, theta_1 = 0, where episodes start). Action [2] in
    [-1, 1].

    Reward r = -|p_tip(s') - p_target| - |a|^2 (from the next observation).

    Takes ``backend`` and ``n_frames`` only (see ``BraxEnv``).
    """

    name = brax_name = "reacher"
    brax_observation_size = 11
    extra_size = 2

    def _extra_obs(self, prev, new, reset):
        return new.qd[:2]

    def reward_fn(self, obs: Array, action: Array, next_obs: Array) -> Array:
        """r = -|next_obs[8:11]| - |a|^2; obs [13], action [2] -> shape []."""
        return -safe_norm(next_obs[8:11]) - jnp.sum(jnp.square(action))


class Pusher(BraxEnv):
    """brax ``pusher``: a 7-DoF arm pushes a cylinder to a fixed goal; never ends.

    Observation [25]: brax's [0:7] arm joint angles, [7:14] arm joint velocities,
    [14:17] fingertip, [17:20] object and [20:23] goal positions (centres of mass);
    appended [23:25] the object's planar velocity qd[7:9] (missing from brax's
    observation). Action [7] in [-1, 1]; brax maps it to torques
    u = lo + (a + 1) (hi - lo) / 2 with (lo, hi) the ``ctrlrange`` (-2, 2).

    Reward, from the observation BEFORE the step (as brax computes it):
    r = -|p_obj - p_goal| - 0.1 |u|^2 - 0.5 |p_obj - p_tip|.

    Takes ``backend`` and ``n_frames`` only (see ``BraxEnv``).
    """

    name = brax_name = "pusher"
    brax_observation_size = 23
    extra_size = 2
    rescales_action = True

    def _extra_obs(self, prev, new, reset):
        return new.qd[7:9]

    def reward_fn(self, obs: Array, action: Array, next_obs: Array) -> Array:
        """r = -|p_obj - p_goal| - 0.1 |u|^2 - 0.5 |p_obj - p_tip| at s; shape []."""
        lo, hi = jnp.asarray(self._ctrl_low), jnp.asarray(self._ctrl_high)
        u = (action + 1) * (hi - lo) * 0.5 + lo
        tip, obj, goal = obs[14:17], obs[17:20], obs[20:23]
        reward_near = -safe_norm(obj - tip)
        reward_dist = -safe_norm(obj - goal)
        reward_ctrl = -jnp.sum(jnp.square(u))
        return reward_dist + 0.1 * reward_ctrl + 0.5 * reward_near


class InvertedPendulum(BraxEnv):
    """brax ``inverted_pendulum``: balance a pole on a cart.

    Observation [4]: [cart x, pole angle, cart velocity, pole angular velocity] (brax's,
    a full state). Action [1] in [-1, 1]; brax maps it to the ``ctrlrange`` (-3, 3).

    Reward r = 1 every step (the terminal step included); terminates when
    |angle(s')| > 0.2 rad.

    Takes ``backend`` and ``n_frames`` only (see ``BraxEnv``).
    """

    name = brax_name = "inverted_pendulum"
    rescales_action = True

    def reward_fn(self, obs: Array, action: Array, next_obs: Array) -> Array:
        """r = 1; shape []."""
        return jnp.ones((), dtype=jnp.float32)

    def termination_fn(self, obs: Array, action: Array, next_obs: Array) -> Array:
        """1.0 if |next_obs[1]| > 0.2 else 0.0; shape []."""
        return (jnp.abs(next_obs[1]) > 0.2).astype(jnp.float32)


register("halfcheetah", HalfCheetah, "brax planar half-cheetah running in +x, never terminates")
register("hopper", Hopper, "brax planar one-legged hopper, terminates when unhealthy")
register("walker2d", Walker2d, "brax planar biped walker, terminates when unhealthy")
register("ant", Ant, "brax quadruped ant running in +x, terminates when unhealthy")
register("reacher", Reacher, "brax 2-link arm reaching a random target")
register("pusher", Pusher, "brax 7-DoF arm pushing a cylinder to a goal")
register(
    "inverted_pendulum", InvertedPendulum, "brax cart-pole balancing, ends when |angle| > 0.2"
)
