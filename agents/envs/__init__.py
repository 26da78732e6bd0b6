"""Environments: pure JAX-native ones with auto-reset, and adapters.

```python
env = envs.make("CartPole-v1")
obs, state = env.reset(key)                                    # obs: [4]
obs, state, reward, terminated, truncated, info = env.step(key, state, action)
# Batches: jax.vmap(env.reset)(keys), jax.vmap(env.step)(keys, states, actions).
```
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agents.envs.base import (
    Environment,
    EnvState,
    Spec,
    TimeStep,
    auto_reset,
    box_spec,
    discrete_spec,
    drawn_step,
    initial_state,
    make_environment,
)
from agents.envs.cartpole import CartPoleState, cartpole_state, make_cartpole
from agents.envs.catch import CatchState, make_catch
from agents.envs.gym_adapter import (
    MAX_EVAL_ENVS,
    GymnasiumVecEnv,
    eval_env_count,
    evaluate_policy,
    from_gymnax,
    spec_from_space,
)
from agents.envs.pendulum import PendulumState, make_pendulum, pendulum_state

_REGISTRY: dict[str, Callable[..., Environment]] = {
    "CartPole-v1": make_cartpole,
    "Catch-bsuite": make_catch,
    "Catch": make_catch,
    "Pendulum-v1": make_pendulum,
}


def make(env_id: str, **kwargs: Any) -> Environment:
    """Builds a JAX-native environment by id.

    Args:
      env_id: `"CartPole-v1"`, `"Catch-bsuite"` (alias `"Catch"`) or
        `"Pendulum-v1"`.
      **kwargs: keyword arguments of the environment's factory (e.g.
        `max_episode_steps`, `g` for Pendulum, `rows`/`columns` for Catch).

    Raises:
      ValueError: for an unknown id, listing the known ones.
    """
    if env_id not in _REGISTRY:
        raise ValueError(
            f"Unknown JAX environment {env_id!r}; known ids: {sorted(_REGISTRY)}. "
            "Use GymnasiumVecEnv for gymnasium environments."
        )
    return _REGISTRY[env_id](**kwargs)


def registered_ids() -> tuple[str, ...]:
    """The ids `make` accepts, sorted."""
    return tuple(sorted(_REGISTRY))


__all__ = [
    "CartPoleState",
    "CatchState",
    "EnvState",
    "Environment",
    "GymnasiumVecEnv",
    "MAX_EVAL_ENVS",
    "eval_env_count",
    "evaluate_policy",
    "PendulumState",
    "Spec",
    "TimeStep",
    "auto_reset",
    "box_spec",
    "cartpole_state",
    "discrete_spec",
    "drawn_step",
    "from_gymnax",
    "initial_state",
    "make",
    "make_cartpole",
    "make_catch",
    "make_environment",
    "make_pendulum",
    "pendulum_state",
    "registered_ids",
    "spec_from_space",
]

from agents.envs import gym_register as _gym_register  # noqa: E402

_gym_register.register()
