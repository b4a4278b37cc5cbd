"""The dexterous-hand tasks: a 24-DoF five-fingered hand in MJX (PDDM's case study).

The hand (``hand.xml``, written for mbjax; see the comment at its top for masses, gains,
damping, friction and solver settings) has 24 hinge joints, each driven by a position
servo. An action ``a`` in [-1, 1]^24 (clipped) sets the servo targets
``ctrl = mid + a * half`` with ``mid``/``half`` the centre and half-width of each joint's
range, so a = 0 is the middle of every range (a half-closed, cupped hand). One control
step is ``substeps`` (default 8) MJX physics steps of 5 ms = 40 ms, run in a
``lax.fori_loop``; everything is pure JAX (``mujoco.mjx``), so reset/step jit and vmap.

Tasks (registered as ``hand_track``, ``hand_baoding``, ``hand_cube``):

=============  ====  ==================================================================
name           obs   reward r(s, a, s') (s' = next observation); ends when dropped
=============  ====  ==================================================================
hand_track     59    -w_d |p_ball - g(phi')| - P drop(s'); g on a circle or figure-eight
hand_baoding   68    -5 |p_1 - g_1(phi')| - 5 |p_2 - g_2(phi')| - 500 drop(s')
                     - 10 |q_wrist(s')|;  g_1, g_2 opposite points of a rotating circle
                     (PDDM's; option reward="turn": paid per radian the pair turns)
hand_cube      65    -w_o angle(q_cube', q_target) - P drop(s')
=============  ====  ==================================================================

Observation layout (all tasks start with the hand; positions in metres, world frame):

* ``[0:24]`` hand joint angles (actuator order: WRJ2 WRJ1, THJ5..THJ1, FFJ4..FFJ1,
  MFJ4..MFJ1, RFJ4..RFJ1, LFJ5..LFJ1), ``[24:48]`` their velocities;
* balls (track: 1, Baoding: 2), 9 each: position (3), linear velocity (3), angular
  velocity in the world frame (3) (a sphere's orientation never matters, so it is left
  out);
* cube: position (3), quaternion (w, x, y, z) (4), linear velocity (3), angular
  velocity in the world frame (3), then the target quaternion (4);
* track / Baoding: (cos phi, sin phi) of the target phase phi last: the targets are a
  fixed function of phi and phi advances by ``2 pi / period`` per second, so
  ``reward_fn`` computes them from the observation.

Success measures per episode (``episode_measures``, logged by the agents as
``task/<name>``): ball tasks ``rotation`` (turns), ``half_turns``, ``on_target``,
``dropped``; the cube ``success``, ``final_error``, ``start_error``, ``dropped``.

``drop(s')`` = 1 when any object's centre is below ``drop_height`` (default 0.15 m; the
palm's top is at 0.211 m, a resting ball's centre at 0.231 m, 0.226 m for Baoding's
smaller balls); then the episode ends
(``termination_fn``). The env computes its reward and done with the same
``reward_fn``/``termination_fn`` on (obs, action, next_obs), so they agree exactly.

The target lives in the observation only (the next phase is computed from the previous
observation's (cos phi, sin phi), the cube's target is copied forward), never in
``State.info``: ``EpisodeWrapper``'s auto-reset restores ``obs`` and ``physics``, not a
task's info. ``State.physics`` is the ``mjx.Data``; ``State.metrics`` holds the
distance terms, ``dropped`` and ``active_contacts`` (contacts with penetration, of the
``max_contacts`` candidate slots MJX evaluates every physics step).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mbjax.envs.base import Env, State
from mbjax.envs.brax_envs import safe_norm
from mbjax.types import Array, PRNGKey

ASSET_DIR = Path(__file__).parent
#: Joint names in actuator (= action) order.
JOINTS = (
    "WRJ2", "WRJ1",
    "THJ5", "THJ4", "THJ3", "THJ2", "THJ1",
    "FFJ4", "FFJ3", "FFJ2", "FFJ1",
    "MFJ4", "MFJ3", "MFJ2", "MFJ1",
    "RFJ4", "RFJ3", "RFJ2", "RFJ1",
    "LFJ5", "LFJ4", "LFJ3", "LFJ2", "LFJ1",
)
NUM_JOINTS = 24
#: Joint ranges (rad) as in hand.xml; each servo's ctrlrange equals its joint's range.
#: ShadowHand-like, except the wrist, which is symmetric here (WRJ2 +-20 deg, WRJ1 +-29 deg)
#: so that a = 0 is the neutral wrist the Baoding reward asks for.
JOINT_RANGES = {
    "WRJ2": (-0.35, 0.35), "WRJ1": (-0.5, 0.5),
    "THJ5": (-1.047, 1.047), "THJ4": (0.0, 1.222), "THJ3": (-0.209, 0.209),
    "THJ2": (-0.698, 0.698), "THJ1": (-0.262, 1.571),
    **{f"{f}J4": (-0.349, 0.349) for f in ("FF", "MF", "RF", "LF")},
    **{f"{f}J3": (-0.262, 1.571) for f in ("FF", "MF", "RF", "LF")},
    **{f"{f}J{j}": (0.0, 1.571) for f in ("FF", "MF", "RF", "LF") for j in (1, 2)},
    "LFJ5": (0.0, 0.785),
}
#: Height of the palm's top surface and of a resting ball's centre (hand_track's ball,
#: radius 0.02; the Baoding balls have radius ``BAODING_BALL_RADIUS``).
PALM_TOP_Z = 0.211
BALL_RADIUS = 0.02
BALL_REST_Z = PALM_TOP_Z + BALL_RADIUS
BAODING_BALL_RADIUS = 0.015
BAODING_REST_Z = PALM_TOP_Z + BAODING_BALL_RADIUS
CUBE_HALF = 0.0225


def load_mj_model(scene: str = "hand"):
    """The native ``mujoco.MjModel`` of ``hand.xml`` or a task scene (track, baoding, cube)."""
    import mujoco

    path = ASSET_DIR / f"{scene}.xml"
    if not path.exists():
        valid = sorted(p.stem for p in ASSET_DIR.glob("*.xml"))
        raise ValueError(f"unknown hand scene {scene!r}; valid scenes: {', '.join(valid)}")
    return mujoco.MjModel.from_xml_path(str(path))


# -- quaternions (w, x, y, z) ---------------------------------------------------------------
def quat_mul(a: Array, b: Array) -> Array:
    """Hamilton product a * b of quaternions [4]."""
    w1, x1, y1, z1 = a[0], a[1], a[2], a[3]
    w2, x2, y2, z2 = b[0], b[1], b[2], b[3]
    return jnp.stack([
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ])


def quat_conj(q: Array) -> Array:
    return q * jnp.array([1.0, -1.0, -1.0, -1.0])


def quat_rotate(q: Array, v: Array) -> Array:
    """Rotates the vector v [3] by the unit quaternion q [4]."""
    w, u = q[0], q[1:]
    return v + 2.0 * jnp.cross(u, jnp.cross(u, v) + w * v)


def quat_from_axis_angle(axis: Array, angle: Array) -> Array:
    axis = axis / jnp.linalg.norm(axis)
    return jnp.concatenate([jnp.cos(angle / 2)[None], jnp.sin(angle / 2) * axis])


def orientation_distance(q: Array, q_target: Array) -> Array:
    """Rotation angle (rad, in [0, pi]) between two orientations; q and -q are equal."""
    q = q / safe_norm(q)
    rel = quat_mul(quat_conj(q_target), q)
    return 2.0 * jnp.arctan2(safe_norm(rel[1:]), jnp.abs(rel[0]))


# -- the hand environment -------------------------------------------------------------------
class HandEnv(Env):
    """Base of the hand tasks: the MJX model, action mapping, stepping and observations.

    Subclasses set ``name``, ``scene``, ``objects`` (free-joint body names) and
    ``task_obs_size``, and implement ``_init_task`` (object poses and the task's
    observation entries, e.g. the target, from a key), ``next_task_obs`` (those entries
    one control step later, from the previous observation) and ``reward_fn``. An
    observation is [hand (48), object_stride per object, task entries (task_obs_size)].

    Args:
      substeps: physics steps (5 ms each) per control step.
      drop_height: an object whose centre is below this height (m) counts as dropped.
      drop_penalty: reward subtracted on the step an object is dropped.
      reset_noise: half-width of the uniform noise (as a fraction of each joint's
        half-range) on the hand's initial joint angles.
    """

    scene: str = "hand"
    objects: tuple[str, ...] = ()
    #: Whether an object's observation includes its quaternion (the cube's, not a ball's).
    keep_quat: bool = False
    #: Number of task entries at the end of the observation (phase, target).
    task_obs_size: int = 0
    default_episode_length = 100

    def __init__(self, substeps: int = 8, drop_height: float = 0.15,
                 drop_penalty: float = 500.0, reset_noise: float = 0.1):
        from mujoco import mjx

        if int(substeps) != substeps or substeps < 1:
            raise ValueError(f"{self.name}: substeps must be an integer >= 1, got {substeps}")
        if not 0.0 < drop_height < PALM_TOP_Z:
            raise ValueError(f"{self.name}: drop_height must be in (0, {PALM_TOP_Z}) m (the "
                             f"palm's top), got {drop_height}")
        if drop_penalty < 0 or reset_noise < 0:
            raise ValueError(f"{self.name}: drop_penalty and reset_noise must be >= 0")
        self.substeps = int(substeps)
        self.drop_height = float(drop_height)
        self.drop_penalty = float(drop_penalty)
        self.reset_noise = float(reset_noise)
        self.mj_model = load_mj_model(self.scene)
        self.mjx_model = mjx.put_model(self.mj_model)
        m = self.mj_model
        names = tuple(m.joint(int(m.actuator_trnid[i, 0])).name for i in range(m.nu))
        if names != JOINTS:
            raise RuntimeError(f"{self.scene}.xml: actuator joints {names} != {JOINTS}")
        lo, hi = np.asarray(m.actuator_ctrlrange, np.float32).T
        self.ctrl_mid, self.ctrl_half = (lo + hi) / 2, (hi - lo) / 2
        self._obj_qpos = [int(m.jnt_qposadr[m.body(b).jntadr[0]]) for b in self.objects]
        self._obj_qvel = [int(m.jnt_dofadr[m.body(b).jntadr[0]]) for b in self.objects]
        self._dt = float(m.opt.timestep) * self.substeps

    # -- sizes --------------------------------------------------------------------------
    @property
    def object_stride(self) -> int:
        """Observation entries per object: 13 with its quaternion, else 9."""
        return 13 if self.keep_quat else 9

    @property
    def observation_size(self) -> int:
        return 2 * NUM_JOINTS + len(self.objects) * self.object_stride + self.task_obs_size

    @property
    def action_size(self) -> int:
        return NUM_JOINTS

    @property
    def dt(self) -> float:
        return self._dt

    @property
    def max_contacts(self) -> int:
        """Contact slots MJX evaluates every physics step (all candidate pairs)."""
        from mujoco import mjx

        d = jax.eval_shape(mjx.make_data, self.mjx_model)
        return int(d._impl.contact.dist.shape[0]) if hasattr(d, "_impl") else 0

    def with_solver_iterations(self, iterations: int) -> HandEnv:
        """A copy of this task whose MJX constraint solver runs at most ``iterations``
        Newton iterations per physics step (the scene option: 2, 4 for the cube).

        ``iterations=1`` makes ``step`` reverse-mode differentiable: MJX then runs its one
        iteration without the ``lax.while_loop`` that ``jax.grad`` cannot go through
        (forward mode, ``jax.jvp``/``jacfwd``, works either way). Gradient planners use it
        as a surrogate of the task; score their plans on the original env."""
        import copy

        if int(iterations) != iterations or iterations < 1:
            raise ValueError(f"{self.name}: solver iterations must be an integer >= 1, got "
                             f"{iterations}")
        out = copy.copy(self)
        out.mjx_model = self.mjx_model.replace(
            opt=self.mjx_model.opt.replace(iterations=int(iterations)))
        return out

    def action_to_ctrl(self, action: Array) -> Array:
        """Servo targets (joint angles, rad) for an action in [-1, 1]^24 (clipped)."""
        return self.ctrl_mid + self.ctrl_half * jnp.clip(action, -1.0, 1.0)

    # -- physics ------------------------------------------------------------------------
    def physics_step(self, data, ctrl: Array):
        """``substeps`` MJX steps with the servo targets ``ctrl``; returns mjx.Data."""
        from mujoco import mjx

        data = data.replace(ctrl=ctrl)
        return jax.lax.fori_loop(0, self.substeps,
                                 lambda _, d: mjx.step(self.mjx_model, d), data)

    def _initial_data(self, key: PRNGKey, object_qpos: list[Array]):
        from mujoco import mjx

        noise = jax.random.uniform(key, (NUM_JOINTS,), minval=-1.0, maxval=1.0)
        hand_q = self.ctrl_mid + self.reset_noise * self.ctrl_half * noise
        qpos = jnp.asarray(self.mj_model.qpos0, jnp.float32).at[:NUM_JOINTS].set(hand_q)
        for adr, q in zip(self._obj_qpos, object_qpos):
            qpos = qpos.at[adr:adr + q.shape[0]].set(q)
        data = mjx.make_data(self.mjx_model)
        return data.replace(qpos=qpos, ctrl=hand_q)

    def _object_obs(self, data) -> list[Array]:
        """Per object: position, [quaternion if ``keep_quat``], lin. vel., world ang. vel."""
        out = []
        for adr, vadr in zip(self._obj_qpos, self._obj_qvel):
            pos, quat = data.qpos[adr:adr + 3], data.qpos[adr + 3:adr + 7]
            lin, ang_local = data.qvel[vadr:vadr + 3], data.qvel[vadr + 3:vadr + 6]
            ang = quat_rotate(quat, ang_local)  # MuJoCo's free-joint angular velocity is local
            parts = [pos, quat] if self.keep_quat else [pos]
            out.append(jnp.concatenate(parts + [lin, ang]))
        return out

    def observation(self, data, task_obs: Array) -> Array:
        """The observation [observation_size] of physics ``data`` (anything with the
        ``qpos`` [nq] and ``qvel`` [nv] of an ``mjx.Data``) and the task entries."""
        hand = [data.qpos[:NUM_JOINTS], data.qvel[:NUM_JOINTS]]
        return jnp.concatenate(hand + self._object_obs(data) + [task_obs])

    @staticmethod
    def active_contacts(data) -> Array:
        """Number of contacts with penetration (dist < 0) in an mjx.Data; shape []."""
        impl = getattr(data, "_impl", data)
        return jnp.sum(impl.contact.dist < 0).astype(jnp.float32)

    # -- Env API ------------------------------------------------------------------------
    def _reset(self, key: PRNGKey) -> State:
        key_hand, key_task = jax.random.split(key)
        object_qpos, task_obs = self._init_task(key_task)
        data = self._initial_data(key_hand, object_qpos)
        obs = self.observation(data, task_obs)
        zero = jnp.zeros((), jnp.float32)
        metrics = self._metrics(obs, obs, data)
        return State(physics=data, obs=obs, reward=zero, done=zero, metrics=metrics)

    def _step(self, state: State, action: Array) -> State:
        data = self.physics_step(state.physics, self.action_to_ctrl(action))
        obs = self.observation(data, self.next_task_obs(state.obs))
        reward = self.reward_fn(state.obs, action, obs)
        done = self.termination_fn(state.obs, action, obs)
        return state.replace(physics=data, obs=obs, reward=reward, done=done,
                             metrics=self._metrics(state.obs, obs, data))

    def _metrics(self, obs, next_obs, data) -> dict[str, Array]:
        m = dict(self.reward_terms(next_obs))
        m["dropped"] = self.dropped(next_obs)
        m["active_contacts"] = self.active_contacts(data)
        return m

    # -- observation-space functions ----------------------------------------------------
    def object_positions(self, obs: Array) -> Array:
        """Object centres [num_objects, 3] from one observation."""
        stride = self.object_stride
        return jnp.stack([obs[48 + i * stride: 48 + i * stride + 3]
                          for i in range(len(self.objects))])

    def dropped(self, obs: Array) -> Array:
        """1.0 if any object's centre is below ``drop_height``; shape []."""
        return jnp.any(self.object_positions(obs)[:, 2] < self.drop_height).astype(jnp.float32)

    def termination_fn(self, obs: Array, action: Array, next_obs: Array) -> Array:
        """1.0 when an object is dropped in s'; shape []."""
        return self.dropped(next_obs)

    def reward_terms(self, obs: Array) -> dict[str, Array]:
        return {}

    def episode_measures(self, obs: Array, action: Array, next_obs: Array,
                         alive: Array) -> dict[str, Array]:
        """``dropped``: 1.0 if an object fell in the episode; obs/next_obs [T, obs_size],
        alive [T] (``Env.episode_measures``). Tasks add their own measures."""
        drops = jax.vmap(self.dropped)(next_obs)
        return {"dropped": jnp.max(alive * drops)}

    # -- task hooks ---------------------------------------------------------------------
    def _init_task(self, key: PRNGKey) -> tuple[list[Array], Array]:
        """(object qpos list, task observation entries) of a fresh episode."""
        raise NotImplementedError

    def next_task_obs(self, obs: Array) -> Array:
        """The task's observation entries one control step after ``obs``."""
        raise NotImplementedError

    def known_next_obs(self, obs: Array, next_obs: Array) -> Array:
        """``next_obs`` with its last ``task_obs_size`` entries (the goal clock, the
        target) set to ``next_task_obs(obs)``, exactly as ``step`` sets them."""
        if not self.task_obs_size:
            return next_obs
        return next_obs.at[-self.task_obs_size:].set(self.next_task_obs(obs))


def _ball_qpos(xy: Array, z: float) -> Array:
    return jnp.concatenate([xy, jnp.array([z, 1.0, 0.0, 0.0, 0.0])])


class _PhaseTask(HandEnv):
    """Balls that follow targets g_i(phi) moving with a phase phi, advanced by omega dt
    each step; phi starts uniformly at random, ball i within ``start_noise`` of
    g_i(phi_0) (uniform in a square), resting at height ``rest_z``.

    Subclasses implement ``targets``. Args: radius (m), period (seconds per lap),
    direction (1 counter-clockwise seen from above, -1 clockwise), distance_weight,
    start_noise (m), then those of ``HandEnv``.
    """

    task_obs_size = 2
    #: Height of a resting ball's centre (m).
    rest_z: float = BALL_REST_Z

    def __init__(self, radius: float, period: float, direction: int, distance_weight: float,
                 start_noise: float, *hand_args):
        if radius <= 0 or period <= 0:
            raise ValueError(f"{self.name}: radius and period must be > 0")
        if direction not in (1, -1):
            raise ValueError(f"{self.name}: direction must be 1 (counter-clockwise seen from "
                             f"above) or -1, got {direction}")
        self.radius = float(radius)
        self.period = float(period)
        self.direction = int(direction)
        self.omega = self.direction * 2.0 * np.pi / self.period
        self.distance_weight = float(distance_weight)
        self.start_noise = float(start_noise)
        super().__init__(*hand_args)

    def targets(self, cos_phi: Array, sin_phi: Array) -> Array:
        """The balls' targets g_i(phi), shape [num_objects, 3]."""
        raise NotImplementedError

    def _init_task(self, key):
        k1, k2 = jax.random.split(key)
        phase = jax.random.uniform(k1, (), minval=-np.pi, maxval=np.pi)
        g = self.targets(jnp.cos(phase), jnp.sin(phase))
        shape = (len(self.objects), 2)
        xy = g[:, :2] + jax.random.uniform(k2, shape, minval=-1, maxval=1) * self.start_noise
        return [_ball_qpos(p, self.rest_z + 5e-4) for p in xy], self._phase_obs(phase)

    @property
    def phase_step(self) -> float:
        """Change of phi per control step (rad)."""
        return self.omega * self.dt

    @staticmethod
    def _phase_obs(phase: Array) -> Array:
        return jnp.stack([jnp.cos(phase), jnp.sin(phase)])

    def next_task_obs(self, obs):
        cos_phi, sin_phi = self.phase_of(obs)
        return self._phase_obs(jnp.arctan2(sin_phi, cos_phi) + self.phase_step)

    @staticmethod
    def phase_of(obs: Array) -> tuple[Array, Array]:
        """(cos phi, sin phi) from the last two observation entries."""
        return obs[-2], obs[-1]

    #: Distance (m) within which an object counts as on its target (``on_target``).
    success_distance: float = 0.01

    def rotation_angle(self, obs: Array) -> Array:
        """Angle (rad, seen from above) whose progress counts turns: the ball's bearing
        about the palm centre; Baoding overrides it with the ball pair's bearing."""
        p = self.object_positions(obs)[0]
        return jnp.arctan2(p[1], p[0])

    def episode_measures(self, obs, action, next_obs, alive):
        """Per episode (``Env.episode_measures``; obs/next_obs [T, obs_size], alive [T]):

        * ``rotation``: net turning of ``rotation_angle`` in the task's direction, in
          turns: direction * sum_t alive_t wrap(angle(s'_t) - angle(s_t)) / (2 pi), with
          wrap into [-pi, pi) (one control step turns far less than pi);
        * ``half_turns``: completed half-turns, floor(max(0, 2 rotation) + 1e-4) (the
          1e-4 half-turn, 0.02 deg, absorbs float32 rounding of an exact half-turn);
        * ``on_target``: fraction of the episode's steps with every object within
          ``success_distance`` (1 cm) of its target at s';
        * ``dropped``: 1.0 if an object fell (the episode then ends).
        """
        out = super().episode_measures(obs, action, next_obs, alive)
        before = jax.vmap(self.rotation_angle)(obs)
        after = jax.vmap(self.rotation_angle)(next_obs)
        step = jnp.mod(after - before + jnp.pi, 2 * jnp.pi) - jnp.pi
        turns = self.direction * jnp.sum(alive * step) / (2 * jnp.pi)

        def on_target(o):
            g = self.targets(*self.phase_of(o))
            d = jnp.linalg.norm(self.object_positions(o) - g, axis=-1)
            return jnp.all(d < self.success_distance).astype(jnp.float32)

        hits = jax.vmap(on_target)(next_obs)
        out.update(rotation=turns, half_turns=jnp.floor(jnp.maximum(0.0, 2 * turns) + 1e-4),
                   on_target=jnp.sum(alive * hits) / jnp.maximum(jnp.sum(alive), 1.0))
        return out


class HandTrack(_PhaseTask):
    """Object trajectory tracking: move one ball (r = 20 mm) along a moving target.

    The target g(phi) moves on a circle of ``radius`` around the palm centre (0, 0) at
    the resting ball height, or on a figure-eight (``path="figure8"``:
    x = R sin phi, y = R sin phi cos phi), one lap per ``period`` seconds; phi starts
    uniformly at random, the ball at a random point within ``start_noise`` of g(phi_0).

    Observation [59]: hand [0:48], ball position [48:51], linear velocity [51:54],
    angular velocity [54:57], (cos phi, sin phi) [57:59].
    Reward r = -w_d |p_ball(s') - g(phi')| - P drop(s'); done = drop(s').

    Args:
      path: "circle" or "figure8".
      radius: R (m).
      period: seconds per lap.
      direction: 1 counter-clockwise (seen from above), -1 clockwise.
      distance_weight: w_d.
      start_noise: ball start offset from the target (m, uniform in a square).
      substeps, drop_height, drop_penalty (P), reset_noise: see ``HandEnv``.
    """

    name = "hand_track"
    scene = "track"
    objects = ("ball0",)

    def __init__(self, path: str = "circle", radius: float = 0.02, period: float = 4.0,
                 direction: int = 1, distance_weight: float = 5.0, start_noise: float = 0.005,
                 substeps: int = 8, drop_height: float = 0.15, drop_penalty: float = 500.0,
                 reset_noise: float = 0.1):
        if path not in ("circle", "figure8"):
            raise ValueError(f"hand_track: path must be 'circle' or 'figure8', got {path!r}")
        self.path = path
        super().__init__(radius, period, direction, distance_weight, start_noise,
                         substeps, drop_height, drop_penalty, reset_noise)

    def target(self, cos_phi: Array, sin_phi: Array) -> Array:
        """g(phi) [3]."""
        r = self.radius
        if self.path == "circle":
            xy = jnp.stack([r * cos_phi, r * sin_phi])
        else:
            xy = jnp.stack([r * sin_phi, r * sin_phi * cos_phi])
        return jnp.concatenate([xy, jnp.full((1,), self.rest_z)])

    def targets(self, cos_phi: Array, sin_phi: Array) -> Array:
        """[1, 3]: g(phi)."""
        return self.target(cos_phi, sin_phi)[None]

    def reward_terms(self, obs):
        return {"distance": safe_norm(obs[48:51] - self.target(*self.phase_of(obs)))}

    def reward_fn(self, obs: Array, action: Array, next_obs: Array) -> Array:
        """-w_d |ball - g(phi)| - P drop at s'; obs [59], action [24] -> shape []."""
        d = self.reward_terms(next_obs)["distance"]
        return -self.distance_weight * d - self.drop_penalty * self.dropped(next_obs)


#: The rewards of ``hand_baoding`` (``HandBaoding``'s docstring).
BAODING_REWARDS = ("track", "turn")


class HandBaoding(_PhaseTask):
    """PDDM's Baoding balls: rotate two balls (r = 15 mm) around each other in the palm.

    Targets g_1(phi), g_2(phi) = g_1(phi + pi) are opposite points of a circle of
    ``radius`` around the palm centre at the resting ball height, turning once per
    ``period`` seconds; the balls start at their targets (+- ``start_noise``).

    Observation [68]: hand [0:48], ball 1 [48:57] and ball 2 [57:66] (position, linear
    velocity, angular velocity), (cos phi, sin phi) [66:68].

    Rewards (``reward``), with |q_wrist| the Euclidean norm of the two wrist angles (rad)
    from neutral, all terms at s' unless marked; done = drop(s'):

    * ``"track"`` (PDDM): r = -5 |p_1 - g_1| - 5 |p_2 - g_2| - 500 drop - 10 |q_wrist|:
      follow targets that turn at a fixed speed, whatever the balls do.
    * ``"turn"``: r = 10 dir wrap(b(s') - b(s)) - 5 |c| - 500 drop - w |q_wrist|, with b the
      pair's bearing (``rotation_angle``: ball 1 seen from ball 2) and c the pair's
      midpoint in the palm plane (m): reward for every radian the pair turns in the task
      direction, at any speed, kept centred. Added because no planner tried on the
      simulator turned the pair under "track" (experiments/pddm_hand/README.md, Baoding);
      the same planners turn it under "turn".

    The weights are options (``distance_weight`` 5, ``wrist_weight`` w, 10 by default,
    ``turn_weight`` 10, ``centre_weight`` 5).

    Args:
      radius: circle radius (m); 0.025 leaves 20 mm between the two balls.
      period: seconds per turn.
      direction: 1 counter-clockwise (seen from above), -1 clockwise.
      distance_weight, wrist_weight: the 5 and 10 above.
      start_noise: ball start offset from the targets (m).
      substeps, drop_height, drop_penalty (500), reset_noise: see ``HandEnv``.
      reward: "track" or "turn".
      turn_weight, centre_weight: the 10 and 5 of "turn".
    """

    name = "hand_baoding"
    scene = "baoding"
    objects = ("ball0", "ball1")
    rest_z = BAODING_REST_Z

    def __init__(self, radius: float = 0.025, period: float = 4.0, direction: int = 1,
                 distance_weight: float = 5.0, wrist_weight: float = 10.0,
                 start_noise: float = 0.003, substeps: int = 8, drop_height: float = 0.15,
                 drop_penalty: float = 500.0, reset_noise: float = 0.1,
                 reward: str = "track", turn_weight: float = 10.0,
                 centre_weight: float = 5.0):
        if reward not in BAODING_REWARDS:
            raise ValueError(f"hand_baoding: reward must be one of {', '.join(BAODING_REWARDS)}"
                             f", got {reward!r}")
        self.wrist_weight = float(wrist_weight)
        self.reward = reward
        self.turn_weight, self.centre_weight = float(turn_weight), float(centre_weight)
        super().__init__(radius, period, direction, distance_weight, start_noise,
                         substeps, drop_height, drop_penalty, reset_noise)

    def targets(self, cos_phi: Array, sin_phi: Array) -> Array:
        """[2, 3]: g_1(phi) and g_2(phi) = g_1(phi + pi)."""
        xy = self.radius * jnp.stack([cos_phi, sin_phi])
        z = jnp.full((1,), self.rest_z)
        return jnp.stack([jnp.concatenate([xy, z]), jnp.concatenate([-xy, z])])

    def rotation_angle(self, obs: Array) -> Array:
        """Bearing (rad, seen from above) of ball 1 from ball 2: turns once per lap of
        the pair about each other, wherever the pair sits in the palm."""
        p = self.object_positions(obs)
        return jnp.arctan2(p[0, 1] - p[1, 1], p[0, 0] - p[1, 0])

    def reward_terms(self, obs):
        g = self.targets(*self.phase_of(obs))
        return {"distance_1": safe_norm(obs[48:51] - g[0]),
                "distance_2": safe_norm(obs[57:60] - g[1]),
                "wrist_deviation": safe_norm(obs[0:2])}

    def reward_fn(self, obs: Array, action: Array, next_obs: Array) -> Array:
        """The Baoding reward (``reward``: "track", PDDM's, or "turn"); obs [68],
        action [24], next_obs [68] -> shape []."""
        t = self.reward_terms(next_obs)
        penalties = (self.drop_penalty * self.dropped(next_obs)
                     + self.wrist_weight * t["wrist_deviation"])
        if self.reward == "turn":
            turned = jnp.mod(self.rotation_angle(next_obs) - self.rotation_angle(obs)
                             + jnp.pi, 2 * jnp.pi) - jnp.pi
            p = self.object_positions(next_obs)
            centre = safe_norm(0.5 * (p[0, :2] + p[1, :2]))
            return (self.turn_weight * self.direction * turned
                    - self.centre_weight * centre - penalties)
        return -self.distance_weight * (t["distance_1"] + t["distance_2"]) - penalties


class HandCube(HandEnv):
    """In-hand cube reorientation: turn a 45 mm cube on the palm to a target orientation.

    The cube starts flat on the palm centre with a random yaw in +-``start_yaw``; the
    target is the start orientation turned by an angle U(``min_angle``, ``max_angle``)
    about a random axis (``axes="xyz"``: uniform on the sphere; ``"z"``: vertical only).

    Observation [65]: hand [0:48], cube position [48:51], quaternion (w, x, y, z)
    [51:55], linear velocity [55:58], angular velocity [58:61], target quaternion
    [61:65].
    Reward r = -w_o angle(q_cube(s'), q_target) - P drop(s') with the rotation angle in
    [0, pi] rad; done = drop(s').

    Args:
      axes: "xyz" or "z".
      min_angle, max_angle: range of the target's rotation from the start (rad).
      start_yaw: initial yaw noise (rad).
      orientation_weight: w_o.
      substeps, drop_height, drop_penalty (P), reset_noise: see ``HandEnv``.
    """

    name = "hand_cube"
    scene = "cube"
    objects = ("cube",)
    keep_quat = True
    task_obs_size = 4

    def __init__(self, axes: str = "xyz", min_angle: float = np.pi / 4,
                 max_angle: float = np.pi / 2, start_yaw: float = 0.2,
                 orientation_weight: float = 1.0, substeps: int = 8,
                 drop_height: float = 0.15, drop_penalty: float = 500.0,
                 reset_noise: float = 0.1):
        if axes not in ("xyz", "z"):
            raise ValueError(f"hand_cube: axes must be 'xyz' or 'z', got {axes!r}")
        if not 0 <= min_angle <= max_angle <= np.pi:
            raise ValueError("hand_cube: need 0 <= min_angle <= max_angle <= pi")
        self.axes = axes
        self.min_angle, self.max_angle = float(min_angle), float(max_angle)
        self.start_yaw = float(start_yaw)
        self.orientation_weight = float(orientation_weight)
        super().__init__(substeps, drop_height, drop_penalty, reset_noise)

    def _init_task(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        yaw = jax.random.uniform(k1, (), minval=-self.start_yaw, maxval=self.start_yaw)
        q0 = quat_from_axis_angle(jnp.array([0.0, 0.0, 1.0]), yaw)
        if self.axes == "z":
            axis = jnp.array([0.0, 0.0, 1.0]) * jnp.sign(jax.random.normal(k2) + 1e-6)
        else:
            axis = jax.random.normal(k2, (3,))
        angle = jax.random.uniform(k3, (), minval=self.min_angle, maxval=self.max_angle)
        target = quat_mul(quat_from_axis_angle(axis, angle), q0)
        qpos = jnp.concatenate([jnp.array([0.0, 0.0, PALM_TOP_Z + CUBE_HALF + 5e-4]), q0])
        return [qpos], target

    def next_task_obs(self, obs):
        return obs[61:65]

    def reward_terms(self, obs):
        return {"orientation_distance": orientation_distance(obs[51:55], obs[61:65])}

    #: Final orientation error (rad) below which an episode counts as a success (~17 deg).
    success_angle: float = 0.3

    def episode_measures(self, obs, action, next_obs, alive):
        """Per episode (``Env.episode_measures``): ``final_error``, the rotation angle (rad)
        from the target at the episode's last state; ``success``, 1.0 if that is below
        ``success_angle`` (0.3 rad) without a drop; ``start_error`` (the same at s_0, for
        reference) and ``dropped``."""
        out = super().episode_measures(obs, action, next_obs, alive)
        last = jnp.maximum(jnp.sum(alive).astype(jnp.int32) - 1, 0)
        error = self.reward_terms(next_obs[last])["orientation_distance"]
        out.update(final_error=error,
                   start_error=self.reward_terms(obs[0])["orientation_distance"],
                   success=(error < self.success_angle).astype(jnp.float32)
                   * (1.0 - out["dropped"]))
        return out

    def reward_fn(self, obs: Array, action: Array, next_obs: Array) -> Array:
        """-w_o angle(q, q_target) - P drop at s'; obs [65], action [24] -> shape []."""
        d = self.reward_terms(next_obs)["orientation_distance"]
        return -self.orientation_weight * d - self.drop_penalty * self.dropped(next_obs)
