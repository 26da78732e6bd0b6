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

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from agents.envs import GymnasiumVecEnv, eval_env_count, evaluate_policy
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


@functools.partial(jax.jit, static_argnums=0)
def _greedy_action(agent: Agent, agent_state: Any, key: jax.Array, obs: jax.Array):
    """The deterministic action; compiled once per agent (a jit of a fresh
    closure per evaluation compiled it again every time: ~0.1 s each)."""
    return agent.act(agent_state, key, obs, deterministic=True)[0]


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
    return evaluate_policy(
        env,
        lambda obs: _greedy_action(agent, agent_state, key, obs),
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
            `GymnasiumVecEnv(env.name, eval_env_count(num_episodes))` made on
            first use (one per episode, at most `MAX_EVAL_ENVS`).
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

        networks = agent.networks

        def act(params, rng, obs):
            # The action alone: log pi(a|s) and v(s) of the whole rollout are
            # computed in `update`, as one batch, from the same params (the
            # critic does not run per step, and one buffer comes back).
            rng, key = jax.random.split(rng)
            return rng, networks.dist.sample(key, networks.policy(params, obs))

        def update(rs: HostRunnerState, rollout: dict[str, jax.Array]):
            params = rs.agent.params
            obs, action = rollout["obs"], rollout["action"]
            flat = obs.reshape(-1, *obs.shape[2:])
            out = networks.policy(params, flat)
            log_prob = networks.dist.log_prob(
                out, action.reshape(-1, *action.shape[2:])
            )
            value = networks.value(params, flat)
            trajectory = Trajectory(
                log_prob=log_prob.reshape(action.shape[:2]),
                value=value.reshape(action.shape[:2]),
                **rollout,
            )
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
            # Fresh each update: the last update may still read the previous
            # ones (a CPU device_put may alias NumPy memory).
            buffers = _RolloutBuffers(self.num_steps, self.env)
            rng = rs.rng
            params = rs.agent.params
            for t in range(self.num_steps):
                buffers.obs[t] = self._obs
                rng, action = self._act(params, rng, self._obs)
                action = buffers.action[t] = np.asarray(action)
                self._obs, reward, terminated, truncated, info = self.env.step(action)
                buffers.record(t, reward, terminated, truncated, info)
            done = buffers.terminated | buffers.truncated
            # Each environment's last finished episode in this rollout, if any.
            ended = done.any(axis=0)
            last_t = self.num_steps - 1 - np.argmax(done[::-1], axis=0)
            last_return = np.where(
                ended, buffers.returns[last_t, np.arange(done.shape[1])], last_return
            )
            rs, metrics = self._update(rs._replace(rng=rng), buffers.rollout())
            # Stays on the device until the run ends: no sync per update beyond
            # the one the next rollout's first action makes.
            history.append(
                (metrics, _episode_metrics(done, buffers.returns, buffers.lengths))
            )
        rs = rs._replace(episode_return=jnp.asarray(last_return, jnp.float32))
        self._live = rs
        device, host = zip(*history, strict=True)
        rows = [{**d, **h} for d, h in zip(jax.device_get(device), host, strict=True)]
        return rs, {k: np.stack([r[k] for r in rows]) for k in rows[0]}

    def evaluate(
        self, agent_state: Any, key: jax.Array, *, num_episodes: int = 10
    ) -> float:
        """Mean deterministic return over `num_episodes` (see `evaluate_host`)."""
        if self._eval_env is None:
            self._eval_env = GymnasiumVecEnv(
                self.env.name, eval_env_count(num_episodes)
            )
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


class _RolloutBuffers:
    """Preallocated [T, N, ...] NumPy arrays that one rollout is written into."""

    def __init__(self, num_steps: int, env: GymnasiumVecEnv) -> None:
        n = env.num_envs
        obs_spec, action_spec = env.observation_spec, env.action_spec
        shape = (num_steps, n)
        self.obs = np.zeros((*shape, *obs_spec.shape), obs_spec.dtype)
        self.final_obs = np.zeros_like(self.obs)
        self.action = np.zeros((*shape, *action_spec.shape), action_spec.dtype)
        self.reward = np.zeros(shape, np.float32)
        self.terminated = np.zeros(shape, bool)
        self.truncated = np.zeros(shape, bool)
        self.returns = np.zeros(shape, np.float32)
        self.lengths = np.zeros(shape, np.int32)

    def record(self, t, reward, terminated, truncated, info) -> None:
        self.reward[t] = reward
        self.terminated[t] = terminated
        self.truncated[t] = truncated
        self.final_obs[t] = info["final_obs"]
        self.returns[t] = info["episode_return"]
        self.lengths[t] = info["episode_length"]

    def rollout(self) -> dict[str, np.ndarray]:
        """The `Trajectory` fields other than ``log_prob`` and ``value``."""
        return {
            "obs": self.obs,
            "action": self.action,
            "reward": self.reward,
            "terminated": self.terminated,
            "truncated": self.truncated,
            "final_obs": self.final_obs,
        }


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
