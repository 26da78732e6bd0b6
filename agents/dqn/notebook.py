"""The notebook one-liner: ``agent_state, metrics = agents.dqn.train(...)``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import optax

from agents import envs
from agents.dqn.agent import DQNState
from agents.dqn.config import as_dqn_config
from agents.dqn.host import HostTrainer
from agents.dqn.loops import make_train


def train(
    env: str | envs.Environment = "CartPole-v1",
    *,
    total_steps: int = 50_000,
    seed: int = 0,
    num_envs: int = 1,
    optimizer: optax.GradientTransformation | Mapping[str, Any] | None = None,
    backend: str = "jax",
    eval_episodes: int = 0,
    **overrides: Any,
) -> tuple[DQNState, dict[str, np.ndarray]]:
    """Trains a DQN agent in one call.

    ```python
    state, metrics = agents.dqn.train("CartPole-v1", total_steps=50_000, seed=0,
                                      hidden=[256, 256], train_freq=256)
    ```

    Args:
      env: a JAX-native environment or id (`agents.envs.make`) for
        ``backend="jax"``; a gymnasium id for ``backend="gymnasium"``.
      total_steps: environment steps (rounded up to whole iterations).
      seed: the one seed of the run.
      num_envs: parallel environments.
      optimizer: an optax optimizer or an optimizer config dict (default
        ``{"name": "adam", "learning_rate": 1e-3}``).
      backend: ``"jax"`` (one jitted program) or ``"gymnasium"`` (host loop).
      eval_episodes: if positive, ``metrics["eval_return"]`` is the mean greedy
        return of that many episodes after training.
      **overrides: `DQNConfig` fields (e.g. ``double=False``,
        ``replay={"capacity": 10_000}``).

    Returns:
      ``(agent_state, metrics)``: the trained `DQNState` and the per-iteration
      metrics (numpy arrays, see `make_train`).

    Raises:
      ConfigError: an override is invalid (the message names it).
    """
    config = as_dqn_config(None, prefix="", **overrides)
    if optimizer is None:
        optimizer = {"name": "adam", "learning_rate": 1e-3}
    key = jax.random.key(seed)
    train_key, eval_key = jax.random.split(key)
    if backend == "jax":
        environment = envs.make(env) if isinstance(env, str) else env
        trainer = make_train(
            environment,
            config,
            optimizer,
            num_envs=num_envs,
            total_env_steps=total_steps,
        )
        runner, metrics = jax.jit(trainer.train)(train_key)
        metrics = jax.device_get(metrics)
        if eval_episodes > 0:
            evaluate = jax.jit(trainer.evaluate, static_argnums=2)
            score = evaluate(runner.agent, eval_key, eval_episodes)
            metrics["eval_return"] = np.asarray(score)
        return runner.agent, metrics
    if backend == "gymnasium":
        if not isinstance(env, str):
            raise ValueError("backend='gymnasium' needs a gymnasium id string")
        with HostTrainer(
            env,
            config,
            optimizer,
            num_envs=num_envs,
            total_env_steps=total_steps,
        ) as host:
            runner, metrics = host.train(train_key)
            if eval_episodes > 0:
                score = host.evaluate(runner.agent, eval_key, eval_episodes)
                metrics["eval_return"] = np.asarray(score, np.float32)
        return runner.agent, metrics
    raise ValueError(f"backend: expected 'jax' or 'gymnasium', got {backend!r}")
