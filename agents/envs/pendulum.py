"""Pendulum-v1 in JAX, with gymnasium's dynamics.

Follows `gymnasium.envs.classic_control.pendulum.PendulumEnv`: a frictionless
pendulum of mass `m = 1` and length `l = 1` under gravity `g` (10.0 by default),
torque clipped to `[-2, 2]`, angular velocity clipped to `[-8, 8]`, time step
`dt = 0.05` (semi-implicit Euler: the new velocity moves the angle), cost
`angle_normalize(th)^2 + 0.1 thdot^2 + 0.001 u^2` of the state before the step,
reset `th ~ U(-pi, pi)`, `thdot ~ U(-1, 1)`, and the `TimeLimit` of 200 steps of the
`Pendulum-v1` registration. Episodes never terminate, they are only truncated.

Gymnasium lets `th` grow without bound; here it is wrapped back into `[-pi, pi)`
whenever it leaves `[-pi, pi]`. Every quantity depends on `th` only through `sin`,
`cos` and `angle_normalize`, which are 2 pi-periodic, so the dynamics are the same,
and the float32 angle keeps its precision however many turns the pendulum makes.

Float32 and gymnasium's float64 agree per step to about 1e-7; along a whole episode
the difference grows (to 1e-5 .. 5e-3 in the state after 200 steps of random
torques) because the pendulum's unstable upright position amplifies rounding.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from agents.envs import base

MAX_SPEED = 8.0
MAX_TORQUE = 2.0
DT = 0.05
MASS = 1.0
LENGTH = 1.0


class PendulumState(NamedTuple):
    """Physical state: angle `th` (0 is upright) and angular velocity, [] float32."""

    th: jax.Array
    thdot: jax.Array


def angle_normalize(x: jax.Array) -> jax.Array:
    """Wraps an angle to `[-pi, pi)`, as gymnasium's `angle_normalize`."""
    return ((x + jnp.pi) % (2 * jnp.pi)) - jnp.pi


def _wrap(th: jax.Array) -> jax.Array:
    # Only wraps angles out of [-pi, pi]: `angle_normalize` itself rounds in float32.
    return jnp.where(jnp.abs(th) > jnp.pi, angle_normalize(th), th)


def pendulum_state(
    physics: jax.Array | np.ndarray | tuple[float, float],
    *,
    time: int = 0,
    episode_return: float = 0.0,
) -> base.EnvState:
    """An environment state starting from given physics, e.g. gymnasium's state.

    Args:
      physics: `(th, thdot)`, [2] (e.g. `env.unwrapped.state`); `th` is wrapped
        into `[-pi, pi)` if outside `[-pi, pi]`.
      time: steps already taken in the episode (counts towards the time limit).
      episode_return: return accumulated so far in the episode.

    Returns:
      An `EnvState` for `make_pendulum()`'s `step`.
    """
    physics = jnp.asarray(physics, jnp.float32)
    if physics.shape != (2,):
        raise ValueError(f"Pendulum physics must have shape (2,), got {physics.shape}.")
    state = PendulumState(_wrap(physics[0]), physics[1])
    return base.initial_state(state, time=time, episode_return=episode_return)


def _reset_physics(key: jax.Array) -> PendulumState:
    high = jnp.array([jnp.pi, 1.0], jnp.float32)
    th, thdot = jax.random.uniform(key, (2,), jnp.float32, minval=-high, maxval=high)
    return PendulumState(th, thdot)


def _observe(state: PendulumState) -> jax.Array:
    return jnp.stack([jnp.cos(state.th), jnp.sin(state.th), state.thdot])  # [3]


def make_pendulum(
    *, g: float = 10.0, max_episode_steps: int | None = 200
) -> base.Environment:
    """Pendulum-v1: swing a pendulum up and keep it upright with a bounded torque.

    Observation: `[cos(th), sin(th), thdot]`, [3] float32. Action: torque, [1]
    float32, clipped to `[-2, 2]`. Reward: minus the cost above, in
    `[-16.27, 0]`. Never terminated; truncated after `max_episode_steps`.

    Args:
      g: gravity (gymnasium's `g` keyword).
      max_episode_steps: time limit (200 for v1; `None`: no limit).

    Returns:
      An auto-resetting `Environment`; its state is `EnvState(PendulumState, ...)`.
    """

    def step_physics(
        key: jax.Array, state: PendulumState, action: jax.Array
    ) -> tuple[PendulumState, jax.Array, jax.Array]:
        del key  # Deterministic dynamics.
        th, thdot = state
        u = jnp.clip(action.astype(jnp.float32), -MAX_TORQUE, MAX_TORQUE)[0]
        costs = _wrap(th) ** 2 + 0.1 * thdot**2 + 0.001 * (u**2)
        newthdot = (
            thdot
            + (3 * g / (2 * LENGTH) * jnp.sin(th) + 3.0 / (MASS * LENGTH**2) * u) * DT
        )
        newthdot = jnp.clip(newthdot, -MAX_SPEED, MAX_SPEED)
        newth = _wrap(th + newthdot * DT)
        return PendulumState(newth, newthdot), -costs, jnp.zeros((), jnp.bool_)

    high = np.array([1.0, 1.0, MAX_SPEED], dtype=np.float32)
    return base.make_environment(
        name="Pendulum-v1",
        observation_spec=base.box_spec((3,), minimum=-high, maximum=high),
        action_spec=base.box_spec((1,), minimum=-MAX_TORQUE, maximum=MAX_TORQUE),
        reset_physics=_reset_physics,
        step_physics=step_physics,
        observe=_observe,
        max_episode_steps=max_episode_steps,
    )
