"""DQN training on gymnasium environments: Python loops around jitted pieces.

`HostTrainer` has the shape of the JAX-native `Trainer` (`init`, `run`,
`train`, `evaluate`, same `RunnerState` and metrics), but the environments live
in a `GymnasiumVecEnv` on the host. Each vectorized step is one gymnasium step
plus one jitted call (record the step into the window and the replay, then pick
the next actions); each learner phase is one jitted call (the same `lax.scan`
of updates as the JAX-native loop).

Resuming: a `RunnerState` carries no gymnasium state. When `run` receives a state
other than the one it last returned (e.g. restored from a checkpoint), it resets
the environments: episodes in progress are dropped and the n-step window starts
empty; agent, replay, counters and random key continue exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import optax

from agents.dqn.agent import Agent, DQNState, dqn
from agents.dqn.config import DQNConfig, as_dqn_config
from agents.dqn.networks import q_network
from agents.dqn.rollout import (
    EpisodeStats,
    RunnerState,
    as_optimizer,
    check_discrete,
    iteration_metrics,
    make_core,
)
from agents.envs import GymnasiumVecEnv, eval_env_count, evaluate_policy

EnvId = str | Callable[[], gymnasium.Env]


def _seed_from(key: jax.Array) -> int:
    """A gymnasium seed derived from a JAX key."""
    return int(jax.random.randint(key, (), 0, 2**31 - 1))


def evaluate_host(
    env: GymnasiumVecEnv,
    agent: Agent,
    agent_state: DQNState,
    key: jax.Array,
    *,
    num_episodes: int,
    max_steps: int = 100_000,
) -> float:
    """Mean undiscounted return of greedy episodes on gymnasium environments.

    Resets `env` (seeded from `key`) and takes from environment `i` its first
    ``ceil(num_episodes / N)`` episodes, then averages the first `num_episodes`
    of those in environment order (so short episodes are not favoured).

    Args:
      env: the vectorized environments (reset here).
      agent: the agent's functions.
      agent_state: its state (only `params` are used).
      key: random key (environment seeds).
      num_episodes: episodes to average.
      max_steps: vectorized steps after which unfinished episodes count their
        partial return.

    Returns:
      The mean return.
    """
    act = jax.jit(agent.act)
    return evaluate_policy(
        env,
        lambda obs: act(agent_state, key, jnp.asarray(obs), 0.0),
        seed=_seed_from(key),
        num_episodes=num_episodes,
        max_steps=max_steps,
    )


class HostTrainer:
    """DQN on gymnasium environments, with the `Trainer` interface.

    Attributes:
      env: the training environments (`GymnasiumVecEnv`).
      config: the validated `DQNConfig`.
      agent: the agent's pure functions.
      num_iterations: iterations in `total_env_steps`.
      steps_per_iteration: environment steps per iteration.
    """

    def __init__(
        self,
        env_id: EnvId,
        config: DQNConfig | Mapping[str, Any],
        optimizer: optax.GradientTransformation | Mapping[str, Any] | Any,
        *,
        num_envs: int,
        total_env_steps: int,
        network: Any = None,
        vectorization: str = "sync",
        **make_kwargs: Any,
    ) -> None:
        """Creates the environments and the jitted pieces.

        Args:
          env_id: a gymnasium id, or a function returning a `gymnasium.Env`.
          config: a `DQNConfig` (or a dict validated into one).
          optimizer: an optax optimizer, or an `OptimizerConfig`/dict.
          num_envs: parallel environments `N`.
          total_env_steps: environment steps of `train` (rounded up to whole
            iterations).
          network: ``init``/``apply`` Q-network; default `q_network` from
            `config`.
          vectorization: ``"sync"`` or ``"async"`` (see `GymnasiumVecEnv`).
          **make_kwargs: keyword arguments of `gymnasium.make`.
        """
        if not isinstance(config, DQNConfig):
            config = as_dqn_config(config)
        if total_env_steps < 1:
            raise ValueError(f"total_env_steps must be positive, got {total_env_steps}")
        self._env_args = (env_id, vectorization, make_kwargs)
        self.env = GymnasiumVecEnv(
            env_id, num_envs, seed=None, vectorization=vectorization, **make_kwargs
        )
        self.config = config
        try:
            num_actions = check_discrete(self.env.action_spec, self.env.name)
            if network is None:
                network = q_network(
                    num_actions,
                    hidden=config.hidden,
                    activation=config.activation,
                    dueling=config.dueling,
                )
            self.agent = dqn(network, as_optimizer(optimizer), config)
            self.num_envs = num_envs
            self.steps_per_iteration = num_envs * config.train_freq
            self.num_iterations = math.ceil(total_env_steps / self.steps_per_iteration)
            core = make_core(
                self.agent,
                config,
                num_envs=num_envs,
                obs_spec=self.env.observation_spec,
            )
        except Exception:
            self.env.close()
            raise

        def act(rs: RunnerState) -> tuple[RunnerState, jax.Array, jax.Array]:
            rng, key = jax.random.split(rs.rng)
            rs = rs._replace(rng=rng)
            actions, epsilon = core.act(rs, key)
            return rs, actions, epsilon

        def record_and_act(rs: RunnerState, *step: jax.Array) -> tuple:
            return act(core.record(rs, *step))

        self._init = jax.jit(core.init)
        self._act = jax.jit(act)
        self._record = jax.jit(core.record, donate_argnums=0)
        self._record_and_act = jax.jit(record_and_act, donate_argnums=0)
        self._learn = jax.jit(core.learn, donate_argnums=0)
        self._eval_env: GymnasiumVecEnv | None = None
        self._last: RunnerState | None = None

    def _reset_envs(self, key: jax.Array) -> np.ndarray:
        return self.env.reset(seed=_seed_from(key))

    def init(self, key: jax.Array) -> RunnerState:
        """Resets the environments (seeded from `key`) and builds the state."""
        env_key, core_key = jax.random.split(key)
        obs = self._reset_envs(env_key)
        placeholder = jnp.zeros((0,), jnp.int32)  # gymnasium keeps the env state
        rs = self._init(core_key, jnp.asarray(obs), placeholder)
        self._last = rs
        return rs

    def run(
        self, rs: RunnerState, num_iterations: int
    ) -> tuple[RunnerState, dict[str, np.ndarray]]:
        """Runs `num_iterations` iterations; metrics as in `make_train`, numpy.

        A state other than the last one returned resets the environments (see
        the module docstring).
        """
        if num_iterations < 1:
            raise ValueError(f"num_iterations must be positive, got {num_iterations}")
        if rs is not self._last:
            rng, env_key = jax.random.split(rs.rng)
            obs = self._reset_envs(env_key)
            window = jax.tree.map(jnp.zeros_like, rs.window)
            rs = rs._replace(rng=rng, obs=jnp.asarray(obs), window=window)
        # The jitted steps donate their input state: keep the caller's intact.
        rs = jax.tree.map(jnp.copy, rs)
        history: list[dict[str, np.ndarray]] = []
        for _ in range(num_iterations):
            return_sum, length_sum, count = 0.0, 0.0, 0
            rs, actions, epsilon = self._act(rs)
            for step in range(self.config.train_freq):
                next_obs, reward, terminated, truncated, info = self.env.step(
                    np.asarray(actions)
                )
                done = terminated | truncated
                return_sum += float(np.sum(info["episode_return"][done]))
                length_sum += float(np.sum(info["episode_length"][done]))
                count += int(np.sum(done))
                step_data = (
                    actions,
                    reward,
                    terminated,
                    truncated,
                    info["final_obs"],
                    next_obs,
                )
                if step + 1 < self.config.train_freq:
                    rs, actions, epsilon = self._record_and_act(rs, *step_data)
                else:  # The policy changes in the learner phase: act after it.
                    rs = self._record(rs, *step_data)
            rs, learn_metrics = self._learn(rs)
            rs = rs._replace(iteration=rs.iteration + 1)
            stats = EpisodeStats(
                jnp.float32(return_sum), jnp.float32(length_sum), jnp.int32(count)
            )
            metrics = iteration_metrics(rs, epsilon, stats, learn_metrics)
            history.append(jax.device_get(metrics))
        self._last = rs
        stacked = {k: np.stack([h[k] for h in history]) for k in history[0]}
        return rs, stacked

    def train(self, key: jax.Array) -> tuple[RunnerState, dict[str, np.ndarray]]:
        """`init` then `run` for the whole budget."""
        return self.run(self.init(key), self.num_iterations)

    def evaluate(
        self, agent_state: DQNState, key: jax.Array, num_episodes: int
    ) -> float:
        """Mean greedy return on separate evaluation environments (see
        `evaluate_host`); the training environments are not touched."""
        if self._eval_env is None:
            env_id, vectorization, make_kwargs = self._env_args
            self._eval_env = GymnasiumVecEnv(
                env_id,
                eval_env_count(num_episodes),
                seed=None,
                vectorization=vectorization,
                **make_kwargs,
            )
        return evaluate_host(
            self._eval_env, self.agent, agent_state, key, num_episodes=num_episodes
        )

    def close(self) -> None:
        """Closes the environments."""
        self.env.close()
        if self._eval_env is not None:
            self._eval_env.close()

    def __enter__(self) -> HostTrainer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
