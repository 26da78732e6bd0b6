"""JAX-native environments as gymnasium environments.

`GymnasiumEnv` wraps one `Environment` (jitted `reset`/`step`) in the
`gymnasium.Env` API, so environments that exist only in JAX (Catch) also run on
the gymnasium backend. Importing `agents.envs` registers ``Catch`` and
``Catch-bsuite`` with gymnasium (unless those ids are taken).
"""

from __future__ import annotations

from typing import Any

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np

from agents.envs import base

GYMNASIUM_IDS = ("Catch", "Catch-bsuite")


def space_from_spec(spec: base.Spec) -> gymnasium.Space:
    """A gymnasium `Discrete` or `Box` space for a `Spec`."""
    if spec.is_discrete:
        return gymnasium.spaces.Discrete(spec.num_values)

    def bound(value: Any, default: float) -> np.ndarray:
        value = default if value is None else value
        return np.broadcast_to(np.asarray(value, np.float32), spec.shape).copy()

    low, high = bound(spec.minimum, -np.inf), bound(spec.maximum, np.inf)
    return gymnasium.spaces.Box(low, high, spec.shape, np.float32)


class GymnasiumEnv(gymnasium.Env):
    """One JAX-native environment behind the `gymnasium.Env` API.

    `step` returns the finished episode's true last observation when it ends (the
    wrapped environment has already auto-reset; gymnasium resets again).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, env_id: str = "Catch", **kwargs: Any) -> None:
        from agents.envs import make

        self._env = make(env_id, **kwargs)
        self.observation_space = space_from_spec(self._env.observation_spec)
        self.action_space = space_from_spec(self._env.action_spec)
        self._action_dtype = self._env.action_spec.dtype
        self._reset = jax.jit(self._env.reset)
        self._step = jax.jit(self._env.step)
        self._key = self._state = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        key = jax.random.key(int(self.np_random.integers(2**31 - 1)))
        self._key, reset_key = jax.random.split(key)
        obs, self._state = self._reset(reset_key)
        return np.asarray(obs), {}

    def step(self, action: Any):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        self._key, step_key = jax.random.split(self._key)
        action = jnp.asarray(action, self._action_dtype)
        ts = self._step(step_key, self._state, action)
        self._state = ts.state
        return (
            np.asarray(ts.info["final_obs"]),
            float(ts.reward),
            bool(ts.terminated),
            bool(ts.truncated),
            {},
        )


def register() -> None:
    """Registers the JAX-only environments with gymnasium (idempotent)."""
    for env_id in GYMNASIUM_IDS:
        if env_id not in gymnasium.registry:
            gymnasium.register(
                id=env_id,
                entry_point="agents.envs.gym_register:GymnasiumEnv",
                kwargs={"env_id": env_id},
            )
