"""Training loop of the on-policy agents on gymnasium environments (host side).

`HostTrainer` has the shape of the jitted `Trainer` (`init`, `run`, `evaluate`)
but steps a `GymnasiumVecEnv` in a Python loop around two jitted functions: one
`act` per environment step and one `update` per rollout. Its `HostRunnerState`
holds only arrays (agent state, rng, counters), so it can be checkpointed; the
environments themselves live in the trainer and cannot be. Hence:

- `run(state, k)` then `run(state, m)` on the state the trainer last returned
  continues the same episodes and equals `run(state, k + m)`;
- any other runner state (one restored from a checkpoint, in this process or a
  new one) *resets the environments* first, seeded from the state's rng: the
  learning continues from the checkpoint, but the episodes in progress when it
  was written are lost, so unlike the jitted `Trainer` a resumed run does not
  reproduce an uninterrupted one bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from agents.envs import GymnasiumVecEnv, evaluate_policy
from agents.ppo.agent import Agent, Trajectory, ppo
from agents.ppo.config import PPOConfig
from agents.ppo.training import (
    OptimizerLike,
    as_config,
    as_optimizer,
    check_minibatches,
    key_data,
    num_updates_for,
)


class HostRunnerState(NamedTuple):
    """The checkpointable state of a `HostTrainer` run (arrays only).

    Attributes:
      agent: the agent's state.
      rng: PRNG key data, [2] uint32.
      update: updates done, [] int32.
      env_steps: environment steps done, [] int32.
      episode_return: return of each environment's last finished episode, [N]
        float32 (NaN before the first one).
    """

    agent: Any
    rng: jax.Array
    update: jax.Array
    env_steps: jax.Array
    episode_return: jax.Array


def _seed_from(key: jax.Array) -> int:
    return int(jax.random.randint(key, (), 0, 2**31 - 1))


def evaluate_host(
    env: GymnasiumVecEnv,
    agent: Agent,
    agent_state: Any,
    key: jax.Array,
    *,
    num_episodes: int = 10,
    max_steps: int = 100_000,
) -> float:
    """Mean return of the deterministic policy on a gymnasium vector environment.

    Resets `env` (seeded from `key`); each of its `N` sub-environments plays
    ``ceil(num_episodes / N)`` whole episodes (so short episodes are not
    over-represented), and the first `num_episodes` of them in environment order
    are averaged.

    Args:
      env: the evaluation environments (not those being trained on).
      agent: the agent (its `act` is jitted here, with ``deterministic=True``).
      agent_state: the agent's state.
      key: PRNG key (environment seeds).
      num_episodes: episodes to average.
      max_steps: vectorized steps after which unfinished episodes count their
        partial return.

    Returns:
      The mean undiscounted return.
    """
    key = key_data(key)
    greedy = jax.jit(lambda s, o: agent.act(s, key, o, deterministic=True)[0])
    return evaluate_policy(
        env,
        lambda obs: greedy(agent_state, obs),
        seed=_seed_from(key),
        num_episodes=num_episodes,
        max_steps=max_steps,
    )


class HostTrainer:
    """A training run of an on-policy agent on a `GymnasiumVecEnv`.

    Same contract as `Trainer` (`init`, `run`, `evaluate`); see the module
    docstring for what resuming means here. Call `close` (or use it as a context
    manager) to close the environments it created.
    """

    def __init__(
        self,
        env: GymnasiumVecEnv,
        agent: Agent,
        *,
        num_steps: int,
        num_updates: int,
        eval_env: GymnasiumVecEnv | None = None,
    ) -> None:
        """Creates the trainer.

        Args:
          env: the training environments (`N = env.num_envs`).
          agent: an agent with the `agents.ppo.Agent` contract.
          num_steps: rollout length per environment and update.
          num_updates: updates in the whole budget.
          eval_env: environments for `evaluate`; by default a
            `GymnasiumVecEnv(env.name, 8)` made on first use.
        """
        self.env = env
        self.agent = agent
        self.num_steps = num_steps
        self.num_updates = num_updates
        self.steps_per_update = num_steps * env.num_envs
        self._eval_env = eval_env
        self._own_eval_env = False
        self._obs: np.ndarray | None = None
        # The runner state matching the environments' current episodes.
        self._live: HostRunnerState | None = None

        def act(agent_state, rng, obs):
            rng, key = jax.random.split(rng)
            action, log_prob, value = agent.act(agent_state, key, obs)
            return rng, action, log_prob, value

        def update(rs: HostRunnerState, trajectory: Trajectory):
            rng, key = jax.random.split(rs.rng)
            agent_state, metrics = agent.update(rs.agent, trajectory, key)
            env_steps = rs.env_steps + self.steps_per_update
            rs = rs._replace(
                agent=agent_state, rng=rng, update=rs.update + 1, env_steps=env_steps
            )
            return rs, {**metrics, "env_steps": env_steps}

        self._init = jax.jit(agent.init)
        self._act = jax.jit(act)
        self._update = jax.jit(update)

    def init(self, key: jax.Array) -> HostRunnerState:
        """Resets the environments (seeded from `key`) and initialises the agent."""
        key = key_data(key)
        key, env_key, agent_key = jax.random.split(key, 3)
        self._obs = self.env.reset(seed=_seed_from(env_key))
        self._live = HostRunnerState(
            agent=self._init(agent_key, jnp.asarray(self._obs)),
            rng=key,
            update=jnp.zeros((), jnp.int32),
            env_steps=jnp.zeros((), jnp.int32),
            episode_return=jnp.full((self.env.num_envs,), jnp.nan, jnp.float32),
        )
        return self._live

    def run(
        self, runner_state: HostRunnerState, num_updates: int
    ) -> tuple[HostRunnerState, dict[str, np.ndarray]]:
        """Runs `num_updates` updates; metrics are NumPy arrays [num_updates].

        The metrics are those of the jitted `Trainer.run`. A `runner_state`
        other than the one this trainer last returned resets the environments.
        """
        if num_updates < 1:
            raise ValueError(f"num_updates: expected a positive int, got {num_updates}")
        rs = runner_state
        if rs is not self._live or self._obs is None:  # Resumed: fresh episodes.
            rng, env_key = jax.random.split(rs.rng)
            rs = rs._replace(rng=rng)
            self._obs = self.env.reset(seed=_seed_from(env_key))
        last_return = np.array(rs.episode_return)
        history = []
        for _ in range(num_updates):
            steps = []
            rng = rs.rng
            for _ in range(self.num_steps):
                obs = self._obs
                rng, action, log_prob, value = self._act(rs.agent, rng, obs)
                action = np.asarray(action)
                self._obs, reward, terminated, truncated, info = self.env.step(action)
                steps.append(
                    (obs, action, log_prob, value, reward, terminated, truncated, info)
                )
            obs, action, log_prob, value, reward, term, trunc, info = zip(
                *steps, strict=True
            )
            trajectory = Trajectory(
                obs=np.stack(obs),
                action=np.stack(action),
                log_prob=jnp.stack(log_prob),
                value=jnp.stack(value),
                reward=np.stack(reward),
                terminated=np.stack(term),
                truncated=np.stack(trunc),
                final_obs=np.stack([i["final_obs"] for i in info]),
            )
            done = trajectory.terminated | trajectory.truncated
            returns = np.stack([i["episode_return"] for i in info])
            lengths = np.stack([i["episode_length"] for i in info])
            for t in range(self.num_steps):
                last_return = np.where(done[t], returns[t], last_return)
            rs, metrics = self._update(rs._replace(rng=rng), trajectory)
            metrics = jax.device_get(metrics)
            metrics.update(_episode_metrics(done, returns, lengths))
            history.append(metrics)
        rs = rs._replace(episode_return=jnp.asarray(last_return, jnp.float32))
        self._live = rs
        stacked = {k: np.stack([m[k] for m in history]) for k in history[0]}
        return rs, stacked

    def evaluate(
        self, agent_state: Any, key: jax.Array, *, num_episodes: int = 10
    ) -> float:
        """Mean deterministic return over `num_episodes` (see `evaluate_host`)."""
        if self._eval_env is None:
            self._eval_env = GymnasiumVecEnv(self.env.name, min(num_episodes, 8))
            self._own_eval_env = True
        return evaluate_host(
            self._eval_env,
            self.agent,
            agent_state,
            key,
            num_episodes=num_episodes,
        )

    def close(self) -> None:
        """Closes the training environments and an evaluation env it created."""
        self.env.close()
        if self._own_eval_env and self._eval_env is not None:
            self._eval_env.close()

    def __enter__(self) -> HostTrainer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _episode_metrics(
    done: np.ndarray, returns: np.ndarray, lengths: np.ndarray
) -> dict[str, np.ndarray]:
    count = int(done.sum())
    nan = np.float32(np.nan)
    return {
        "episode_return": np.float32(returns[done].mean()) if count else nan,
        "episode_length": np.float32(lengths[done].mean()) if count else nan,
        "episodes": np.int32(count),
    }


def make_host_train(
    env: GymnasiumVecEnv | str,
    config: PPOConfig | Mapping[str, Any],
    optimizer: OptimizerLike,
    *,
    total_env_steps: float,
    num_envs: int | None = None,
    eval_env: GymnasiumVecEnv | None = None,
) -> HostTrainer:
    """A PPO training run on gymnasium environments.

    Args:
      env: a `GymnasiumVecEnv`, or a gymnasium id (then `num_envs` is required
        and the trainer owns the environments it creates).
      config: PPO hyperparameters (or a dict of them).
      optimizer: an optimizer config (dict) or an optax optimizer.
      total_env_steps: budget (whole updates of ``num_envs * num_steps``).
      num_envs: environments, when `env` is an id.
      eval_env: environments for `evaluate` (default: made on first use).

    Returns:
      A `HostTrainer`.
    """
    if isinstance(env, str):
        if num_envs is None:
            raise ValueError("num_envs: required when env is a gymnasium id")
        env = GymnasiumVecEnv(env, num_envs)
    config = as_config(PPOConfig, config)
    check_minibatches(config, env.num_envs)
    num_updates = num_updates_for(total_env_steps, env.num_envs * config.num_steps)
    agent = ppo(
        config,
        env.observation_spec,
        env.action_spec,
        as_optimizer(optimizer),
        num_updates=num_updates,
    )
    return HostTrainer(
        env,
        agent,
        num_steps=config.num_steps,
        num_updates=num_updates,
        eval_env=eval_env,
    )
