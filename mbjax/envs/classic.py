"""Pure-JAX classic control tasks: pendulum swing-up and cart-pole swing-up.

Both are differentiable, jit/vmap-able, and expose their dynamics as a pure function
of a physical-parameter pytree (``dynamics(params, x, u)``), which is what system
identification and "the simulator as the model" build on.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from mbjax.envs.base import Env, State
from mbjax.types import Array, PRNGKey


def angle_normalize(theta: Array) -> Array:
    """Wraps an angle (rad) into [-pi, pi)."""
    return (theta + jnp.pi) % (2 * jnp.pi) - jnp.pi


class SimulatorEnv(Env):
    """A pure-JAX task whose simulator state is a vector x (``State.physics``).

    reset: x_0 = ``initial_state(key)``; step: x' = ``dynamics(params, x, a)``,
    r = ``transition_reward(x, a, x')``, obs = ``observe(x')``; never terminates.
    Subclasses implement those four and set ``params`` (the physical-parameter pytree)
    and ``timestep`` (dt, seconds per step).
    """

    @property
    def dt(self) -> float:
        return self.timestep

    def initial_state(self, key: PRNGKey) -> Array:
        """x_0 of a fresh episode."""
        raise NotImplementedError

    def dynamics(self, params, x: Array, action: Array) -> Array:
        """x' = f(x, a) under the physical parameters ``params``."""
        raise NotImplementedError

    def observe(self, x: Array) -> Array:
        """The observation of state x, shape [observation_size]."""
        raise NotImplementedError

    def transition_reward(self, x: Array, action: Array, next_x: Array) -> Array:
        """r(x, a, x') of one step, shape []."""
        raise NotImplementedError

    def _reset(self, key: PRNGKey) -> State:
        x = self.initial_state(key)
        zero = jnp.zeros(())
        return State(physics=x, obs=self.observe(x), reward=zero, done=zero)

    def _step(self, state: State, action: Array) -> State:
        x = state.physics
        new_x = self.dynamics(self.params, x, action)
        return state.replace(physics=new_x, obs=self.observe(new_x),
                             reward=self.transition_reward(x, action, new_x),
                             done=jnp.zeros(()))


# ----------------------------------------------------------------------------------------
# Pendulum (Gymnasium Pendulum-v1 dynamics and reward)
# ----------------------------------------------------------------------------------------


@struct.dataclass
class PendulumParams:
    """Physical parameters of the pendulum (SI units): point mass m at length l."""

    mass: float = 1.0  # kg
    length: float = 1.0  # m
    gravity: float = 10.0  # m/s^2
    damping: float = 0.0  # N m s / rad, viscous friction at the pivot


class Pendulum(SimulatorEnv):
    """Torque-limited pendulum swing-up, Gymnasium ``Pendulum-v1``.

    State x = [theta, theta_dot] (theta = 0 upright). Semi-implicit Euler with dt = 0.05 s:
    theta_dot' = clip(theta_dot + (3g/(2l) sin(theta) + 3/(m l^2) (u - b theta_dot)) dt, +-8),
    theta' = wrap(theta + theta_dot' dt), with u = clip(a, +-max_torque).
    Observation [cos(theta), sin(theta), theta_dot]; reward
    r = -(normalize(theta)^2 + 0.1 theta_dot^2 + 0.001 u^2) from the state before the step;
    never terminates (Gymnasium truncates at 200 steps, our ``default_episode_length``).
    """

    name = "pendulum"
    default_episode_length = 200

    def __init__(
        self,
        max_torque: float = 2.0,
        max_speed: float = 8.0,
        timestep: float = 0.05,
        params: PendulumParams | None = None,
        init_angle_range: float = jnp.pi,
        init_speed_range: float = 1.0,
    ):
        if max_torque <= 0 or max_speed <= 0 or timestep <= 0:
            raise ValueError("max_torque, max_speed and timestep must be > 0")
        self.max_torque = float(max_torque)
        self.max_speed = float(max_speed)
        self.timestep = float(timestep)
        self.params = params if params is not None else PendulumParams()
        self.init_angle_range = float(init_angle_range)
        self.init_speed_range = float(init_speed_range)

    observation_size = 3
    action_size = 1

    @property
    def action_low(self) -> Array:
        return jnp.full((1,), -self.max_torque)

    @property
    def action_high(self) -> Array:
        return jnp.full((1,), self.max_torque)

    def dynamics(self, params: PendulumParams, x: Array, action: Array) -> Array:
        """x' = f(x, a) for state x = [theta, theta_dot], action shape [1]."""
        theta, theta_dot = x[0], x[1]
        u = jnp.clip(action[0], -self.max_torque, self.max_torque)
        m, l, g = params.mass, params.length, params.gravity
        acc = 3.0 * g / (2.0 * l) * jnp.sin(theta) + 3.0 / (m * l**2) * (
            u - params.damping * theta_dot
        )
        new_theta_dot = jnp.clip(theta_dot + acc * self.timestep, -self.max_speed, self.max_speed)
        # Wrapping theta keeps float32 precision over long spins (sin/cos are periodic).
        new_theta = angle_normalize(theta + new_theta_dot * self.timestep)
        return jnp.stack([new_theta, new_theta_dot])

    def observe(self, x: Array) -> Array:
        return jnp.stack([jnp.cos(x[0]), jnp.sin(x[0]), x[1]])

    def initial_state(self, key: PRNGKey) -> Array:
        high = jnp.array([self.init_angle_range, self.init_speed_range])
        return jax.random.uniform(key, (2,), minval=-high, maxval=high)

    def reward(self, theta: Array, theta_dot: Array, action: Array) -> Array:
        """Gymnasium's r = -(normalize(theta)^2 + 0.1 theta_dot^2 + 0.001 u^2), u clipped."""
        u = jnp.clip(action[0], -self.max_torque, self.max_torque)
        return -(angle_normalize(theta) ** 2 + 0.1 * theta_dot**2 + 0.001 * u**2)

    def transition_reward(self, x: Array, action: Array, next_x: Array) -> Array:
        return self.reward(x[0], x[1], action)

    def reward_fn(self, obs: Array, action: Array, next_obs: Array) -> Array:
        return self.reward(jnp.arctan2(obs[1], obs[0]), obs[2], action)


# ----------------------------------------------------------------------------------------
# Cart-pole swing-up (PETS / PILCO style)
# ----------------------------------------------------------------------------------------


@struct.dataclass
class CartpoleParams:
    """Physical parameters of the cart-pole (SI units); the pole is a uniform rod."""

    cart_mass: float = 0.5  # kg        (PILCO cart-pole, Deisenroth & Rasmussen 2011)
    pole_mass: float = 0.5  # kg
    pole_length: float = 0.6  # m       (PETS' cartpole: pole length 0.6)
    cart_friction: float = 0.1  # N s / m
    gravity: float = 9.82  # m/s^2


class CartpoleSwingup(SimulatorEnv):
    """Continuous cart-pole swing-up: swing the pole up and hold it with the cart centred.

    State x = [x_cart, theta, x_dot, theta_dot], theta = 0 upright, theta = pi hanging.
    Force F = max_force * clip(a, -1, 1) on the cart; rigid-body equations of a cart with a
    uniform rod (Lagrangian), integrated with RK4 (``substeps`` per control step dt).
    Observation [x_cart, cos(theta), sin(theta), x_dot, theta_dot].
    Reward (PETS, Chua et al. 2018): with the pole tip
    p = (x_cart + l sin(theta), l cos(theta)) after the step,
    r = exp(-|p - (0, l)|^2 / l^2) - 0.01 |a|^2. Never terminates; 200 steps per episode.
    """

    name = "cartpole_swingup"
    default_episode_length = 200

    def __init__(
        self,
        max_force: float = 10.0,
        timestep: float = 0.05,
        substeps: int = 2,
        params: CartpoleParams | None = None,
        init_noise_std: float = 0.05,
    ):
        if max_force <= 0 or timestep <= 0 or substeps < 1:
            raise ValueError("max_force and timestep must be > 0 and substeps >= 1")
        self.max_force = float(max_force)
        self.timestep = float(timestep)
        self.substeps = int(substeps)
        self.params = params if params is not None else CartpoleParams()
        self.init_noise_std = float(init_noise_std)

    observation_size = 5
    action_size = 1

    @staticmethod
    def derivatives(params: CartpoleParams, x: Array, force: Array) -> Array:
        """dx/dt of the cart-pole for state x = [x, theta, x_dot, theta_dot], force in N.

        Solves M(theta) [x_dd, theta_dd] = rhs with (h = l/2, I = m_p l^2/12):
        [[m_c + m_p, m_p h cos], [m_p h cos, m_p h^2 + I]] and
        rhs = [F - b x_dot + m_p h sin theta_dot^2, m_p g h sin].
        """
        _, theta, x_dot, theta_dot = x
        mc, mp, l, b, g = (
            params.cart_mass,
            params.pole_mass,
            params.pole_length,
            params.cart_friction,
            params.gravity,
        )
        h = 0.5 * l
        inertia = mp * l**2 / 12.0
        sin, cos = jnp.sin(theta), jnp.cos(theta)
        m11, m12, m22 = mc + mp, mp * h * cos, mp * h**2 + inertia
        r1 = force - b * x_dot + mp * h * sin * theta_dot**2
        r2 = mp * g * h * sin
        det = m11 * m22 - m12**2
        x_dd = (m22 * r1 - m12 * r2) / det
        theta_dd = (m11 * r2 - m12 * r1) / det
        return jnp.stack([x_dot, theta_dot, x_dd, theta_dd])

    def dynamics(self, params: CartpoleParams, x: Array, action: Array) -> Array:
        """x' = f(x, a): ``substeps`` RK4 steps of dt / substeps, action shape [1]."""
        force = self.max_force * jnp.clip(action[0], -1.0, 1.0)
        h = self.timestep / self.substeps

        def rk4(x, _):
            k1 = self.derivatives(params, x, force)
            k2 = self.derivatives(params, x + 0.5 * h * k1, force)
            k3 = self.derivatives(params, x + 0.5 * h * k2, force)
            k4 = self.derivatives(params, x + h * k3, force)
            return x + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4), None

        x, _ = jax.lax.scan(rk4, x, None, length=self.substeps)
        return x

    def observe(self, x: Array) -> Array:
        return jnp.stack([x[0], jnp.cos(x[1]), jnp.sin(x[1]), x[2], x[3]])

    def initial_state(self, key: PRNGKey) -> Array:
        x = jnp.array([0.0, jnp.pi, 0.0, 0.0])
        return x + self.init_noise_std * jax.random.normal(key, (4,))

    def _tip_reward(self, x_cart, cos, sin, action) -> Array:
        l = self.params.pole_length
        dx = x_cart + l * sin
        dy = l * cos - l
        return jnp.exp(-(dx**2 + dy**2) / l**2) - 0.01 * jnp.sum(action**2)

    def transition_reward(self, x: Array, action: Array, next_x: Array) -> Array:
        return self._tip_reward(next_x[0], jnp.cos(next_x[1]), jnp.sin(next_x[1]), action)

    def reward_fn(self, obs: Array, action: Array, next_obs: Array) -> Array:
        return self._tip_reward(next_obs[0], next_obs[1], next_obs[2], action)
