"""A pixel pendulum: the Gymnasium pendulum observed only through rendered images.

The lecture notes' case 3B ("learn a low-dimensional state representation first:
z = phi(o), then z' = g(z, a)") needs an environment whose observation is high-dimensional
and whose state is not directly visible. ``PixelPendulum`` simulates exactly the dynamics
and reward of :class:`mbjax.envs.classic.Pendulum` and renders the rod into a grayscale
image with a pure-JAX, jit/vmap-able and differentiable rasteriser.

Rendering. Pixel centres lie on a regular grid of the square [-1, 1]^2 (x to the right,
y up; image row 0 is the top). The rod runs from the pivot at the image centre to the tip
``rod_length * (-sin(theta), cos(theta))``: theta = 0 points straight up and positive
theta turns counter-clockwise, as in Gymnasium's renderer. A pixel's intensity is a
smoothstep of its distance d to that segment,

    t = clip(1/2 + (rod_radius - d) / pixel_size, 0, 1),   I = t^2 (3 - 2 t),

i.e. about 1 inside the rod, 0 outside, and a C^1 anti-aliased edge one pixel wide (t is
the usual "signed distance / pixel size" coverage estimate).

Frame stacking. One frame shows theta but not theta_dot, so an observation holds the
previous and the current frame: ``obs = concat(frame(theta_prev), frame(theta))``
flattened to [2 * H * W] (frame-major, then row-major; ``frames(obs)`` reshapes it to
[2, H, W]). Flat vectors feed MLP encoders directly. The simulator state is therefore
x = [theta, theta_dot, theta_prev]; on reset theta_prev = theta - theta_dot * dt, so the
first observation already shows the initial velocity.

Reward. r = -(normalize(theta)^2 + 0.1 theta_dot^2 + 0.001 u^2) from the true state
before the step, exactly as ``Pendulum``. It is not a simple function of the pixels, so
``has_reward_fn`` is False and ``reward_fn`` raises: plan with a model that learns the
reward (e.g. :mod:`mbjax.models.latent`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mbjax.envs.base import forwarded
from mbjax.envs.classic import Pendulum, SimulatorEnv, angle_normalize
from mbjax.envs.registry import signature_passing_options
from mbjax.types import Array, PRNGKey


def render_rod(theta: Array, image_size: int, rod_length: float = 0.8,
               rod_radius: float = 0.1) -> Array:
    """Renders a rod of angle ``theta`` (0 = up, counter-clockwise) from the image centre.

    Args:
      theta: angle in radians, shape [].
      image_size: S, the image is S x S pixels covering [-1, 1]^2.
      rod_length: rod length in image half-widths (1.0 reaches the border).
      rod_radius: half the rod thickness in image half-widths (ends are rounded).

    Returns:
      Intensities in [0, 1], shape [S, S], row 0 at the top (y = +1).
    """
    pixel = 2.0 / image_size
    centres = -1.0 + pixel * (jnp.arange(image_size) + 0.5)
    x = centres[None, :]  # columns, left to right
    y = centres[::-1][:, None]  # rows, top to bottom
    tip_x, tip_y = -rod_length * jnp.sin(theta), rod_length * jnp.cos(theta)
    # Distance from each pixel centre p to the segment [0, tip]: project p on the segment,
    # clamp the parameter to [0, 1], measure to that closest point.
    s = jnp.clip((x * tip_x + y * tip_y) / (rod_length**2), 0.0, 1.0)
    dist = jnp.sqrt((x - s * tip_x) ** 2 + (y - s * tip_y) ** 2 + 1e-12)
    t = jnp.clip(0.5 + (rod_radius - dist) / pixel, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


class PixelPendulum(SimulatorEnv):
    """Pendulum swing-up observed through two stacked grayscale frames.

    Dynamics and reward are those of :class:`~mbjax.envs.classic.Pendulum` (Gymnasium
    ``Pendulum-v1``: dt = 0.05 s, |u| <= 2, |theta_dot| <= 8, 200 steps per episode).
    State x = [theta, theta_dot, theta_prev]; observation
    [frame(theta_prev), frame(theta)] flattened to [2 * S * S] floats in [0, 1] (see the
    module docstring for the renderer). Never terminates.

    Args:
      image_size: S, side of the square images in pixels (32 by default, 64 also
        reasonable; any S >= 8 works).
      rod_length, rod_radius: rod geometry in image half-widths.
      **pendulum_options: keyword arguments of ``Pendulum`` (max_torque, max_speed,
        timestep, params, init_angle_range, init_speed_range; the initial state is
        uniform in +-range); the class signature lists them.
    """

    name = "pixel_pendulum"
    default_episode_length = 200
    has_reward_fn = False
    action_size = 1
    # The pendulum's settings and action bounds:
    max_torque = forwarded("pendulum.max_torque")
    params = forwarded("pendulum.params")
    timestep = forwarded("pendulum.timestep")
    action_low = forwarded("pendulum.action_low")
    action_high = forwarded("pendulum.action_high")

    def __init__(self, image_size: int = 32, rod_length: float = 0.8, rod_radius: float = 0.1,
                 **pendulum_options):
        if int(image_size) != image_size or image_size < 8:
            raise ValueError(f"image_size must be an integer >= 8, got {image_size}")
        if not 0.0 < rod_length <= 1.0:
            raise ValueError(f"rod_length must be in (0, 1], got {rod_length}")
        if not 0.0 < rod_radius < rod_length:
            raise ValueError(f"rod_radius must be in (0, rod_length), got {rod_radius}")
        self.image_size = int(image_size)
        self.rod_length = float(rod_length)
        self.rod_radius = float(rod_radius)
        self.pendulum = Pendulum(**pendulum_options)

    @property
    def observation_size(self) -> int:
        return 2 * self.image_size**2

    # -- rendering ----------------------------------------------------------------------
    def render(self, theta: Array) -> Array:
        """One frame of the rod at angle ``theta`` (shape []), shape [S, S]."""
        return render_rod(theta, self.image_size, self.rod_length, self.rod_radius)

    def observe(self, x: Array) -> Array:
        """Observation of state x = [theta, theta_dot, theta_prev], shape [2 S^2]."""
        frames = jax.vmap(self.render)(jnp.stack([x[2], x[0]]))
        return frames.reshape(-1)

    def frames(self, obs: Array) -> Array:
        """Reshapes observations [..., 2 S^2] to [..., 2, S, S] (previous, current)."""
        s = self.image_size
        return obs.reshape(obs.shape[:-1] + (2, s, s))

    # -- dynamics -----------------------------------------------------------------------
    def dynamics(self, params, x: Array, action: Array) -> Array:
        """x' = f(x, a) for x = [theta, theta_dot, theta_prev], action shape [1]."""
        new = self.pendulum.dynamics(params, x[:2], action)
        return jnp.concatenate([new, x[:1]])

    def initial_state(self, key: PRNGKey) -> Array:
        """[theta, theta_dot] as for ``Pendulum``, theta_prev = theta - theta_dot dt."""
        x = self.pendulum.initial_state(key)
        return jnp.concatenate([x, angle_normalize(x[:1] - x[1:] * self.dt)])

    def transition_reward(self, x: Array, action: Array, next_x: Array) -> Array:
        return self.pendulum.transition_reward(x[:2], action, next_x[:2])


PixelPendulum.__signature__ = signature_passing_options(PixelPendulum.__init__, Pendulum)
