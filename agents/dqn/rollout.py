"""Pure pieces shared by the DQN training loops (JAX-native and gymnasium).

- `RunnerState`: everything a run needs to continue exactly.
- The n-step window (`NStepWindow`, `push_step`, `n_step_transitions`): turns the
  last `n` vectorized steps into replay transitions, cut at episode ends, with
  truncation bootstrapping from the true last observation.
- `make_core`: ``act`` / ``record`` / ``learn`` functions of a run, used inside
  the `lax.scan` of `agents.dqn.loops` and around the gymnasium steps of
  `agents.dqn.host`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from agents import losses
from agents.dqn import replay as replay_lib
from agents.dqn.agent import Agent, DQNState
from agents.dqn.config import DQNConfig
from agents.dqn.exploration import epsilon_schedule
from agents.dqn.replay import ReplayState, Transition
from agents.envs import Spec

Metrics = dict[str, jax.Array]


class NStepWindow(NamedTuple):
    """The last `n` vectorized steps, oldest first; every field `[n, N, ...]`.

    Attributes:
      obs: observation where the action was taken.
      action: action taken, int32.
      reward: reward, float32.
      terminated: the step ended the episode in a terminal state, bool.
      truncated: the step hit a time limit, bool.
      next_obs: true next observation (`info["final_obs"]`).
      fill: number of valid steps in the window, `[]` int32 (at most `n`).
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    next_obs: jax.Array
    fill: jax.Array


class RunnerState(NamedTuple):
    """Everything a training run needs to continue exactly (a pytree of arrays).

    Attributes:
      agent: the learner state (`DQNState`).
      replay: the replay buffer.
      env_state: the `N` environment states (a `[0]` placeholder on the
        gymnasium backend, whose environments live on the host).
      obs: current observations, `[N, *obs_shape]`.
      window: the last `n_step` steps, for n-step transitions.
      rng: random key of the run.
      env_steps: environment steps taken so far (all environments), `[]` int32.
      iteration: iterations done so far, `[]` int32.
    """

    agent: DQNState
    replay: ReplayState
    env_state: Any
    obs: jax.Array
    window: NStepWindow
    rng: jax.Array
    env_steps: jax.Array
    iteration: jax.Array


# ------------------------------------------------------------ n-step window


def empty_window(n: int, num_envs: int, obs_spec: Spec) -> NStepWindow:
    """A window of `n` zero steps of `num_envs` environments, `fill = 0`."""
    obs = jnp.zeros((n, num_envs, *obs_spec.shape), jnp.float32)
    flag = jnp.zeros((n, num_envs), jnp.bool_)
    return NStepWindow(
        obs=obs,
        action=jnp.zeros((n, num_envs), jnp.int32),
        reward=jnp.zeros((n, num_envs), jnp.float32),
        terminated=flag,
        truncated=flag,
        next_obs=obs,
        fill=jnp.zeros((), jnp.int32),
    )


def push_step(
    window: NStepWindow,
    obs: jax.Array,
    action: jax.Array,
    reward: jax.Array,
    terminated: jax.Array,
    truncated: jax.Array,
    next_obs: jax.Array,
) -> NStepWindow:
    """Appends one vectorized step (every argument `[N, ...]`), dropping the oldest."""
    new = (obs, action, reward, terminated, truncated, next_obs)
    fields = jax.tree.map(
        lambda old, x: jnp.concatenate([old[1:], x[None].astype(old.dtype)]),
        tuple(window[:6]),
        new,
    )
    n = window.reward.shape[0]
    return NStepWindow(*fields, fill=jnp.minimum(window.fill + 1, n))


def n_step_transitions(window: NStepWindow, discount: float) -> Transition:
    """The n-step transitions starting at the oldest step of a full window.

    For environment `i`, with `m` the first step of the window that ended the
    episode (terminated or truncated; `n - 1` if none did):
    ``reward = sum_{k <= m} discount**k r_k`` (via
    `agents.losses.n_step_transition`, which cuts rewards after an episode
    end), ``discount = discount**(m + 1) * (1 - terminated_m)`` and
    ``next_obs = next_obs_m``. So a truncated episode still bootstraps, from
    its true last observation, and a terminated one does not.

    Args:
      window: the last `n` steps (only meaningful when ``fill == n``).
      discount: gamma.

    Returns:
      `Transition` with `[N, ...]` fields.
    """
    n, num_envs = window.reward.shape
    done = window.terminated | window.truncated  # [n, N]
    step_discount = discount * (1.0 - done.astype(jnp.float32))  # [n, N]
    reward, _ = losses.n_step_transition(window.reward, step_discount)  # [N]
    # Steps up to and including the first episode end: m + 1 of them.
    ended_before = (jnp.cumsum(done, axis=0) - done) > 0  # [n, N]
    last = jnp.sum(~ended_before, axis=0) - 1  # [N], m
    envs = jnp.arange(num_envs)
    terminated = window.terminated[last, envs]  # [N]
    bootstrap = jnp.power(jnp.float32(discount), (last + 1).astype(jnp.float32))
    return Transition(
        obs=window.obs[0],
        action=window.action[0],
        reward=reward,
        discount=bootstrap * (1.0 - terminated.astype(jnp.float32)),
        next_obs=window.next_obs[last, envs],
    )


# ------------------------------------------------------------ shared core


class EpisodeStats(NamedTuple):
    """Sums over the episodes finished in one iteration, each `[]`."""

    return_sum: jax.Array
    length_sum: jax.Array
    count: jax.Array

    @classmethod
    def zeros(cls) -> EpisodeStats:
        return cls(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), _i32(0))

    def add(self, done: jax.Array, info: Mapping[str, jax.Array]) -> EpisodeStats:
        """Adds the episodes ending where `done` ([N] bool)."""
        ret = jnp.where(done, info["episode_return"], 0.0)
        length = jnp.where(done, info["episode_length"], 0)
        return EpisodeStats(
            self.return_sum + jnp.sum(ret, dtype=jnp.float32),
            self.length_sum + jnp.sum(length, dtype=jnp.float32),
            self.count + jnp.sum(done, dtype=jnp.int32),
        )

    def metrics(self) -> Metrics:
        """Mean return and length of the finished episodes (0 if none) and count."""
        count = jnp.maximum(self.count, 1).astype(jnp.float32)
        return {
            "episode_return": self.return_sum / count,
            "episode_length": self.length_sum / count,
            "episodes": self.count,
        }


class Core(NamedTuple):
    """Pure pieces shared by the JAX-native and the gymnasium loops.

    Attributes:
      act: ``(runner_state, key) -> (actions [N], epsilon [])``.
      record: ``(runner_state, actions, reward, terminated, truncated,
        final_obs, next_obs) -> runner_state``: pushes the step into the
        window, adds the n-step transitions to the replay once the window is
        full, moves to `next_obs` and counts the steps.
      learn: ``(runner_state) -> (runner_state, metrics)``: a learner phase
        (`gradient_steps` updates) if the replay is ready, else nothing.
      init: ``(key, obs [N, ...], env_state) -> RunnerState``.
    """

    act: Callable[..., tuple[jax.Array, jax.Array]]
    record: Callable[..., RunnerState]
    learn: Callable[[RunnerState], tuple[RunnerState, Metrics]]
    init: Callable[..., RunnerState]


def _i32(x: int) -> jax.Array:
    return jnp.asarray(x, jnp.int32)


def device_key(key: jax.Array, axis_name: str | None) -> jax.Array:
    """A key of this device's own (`key` itself when `axis_name` is None)."""
    if axis_name is None:
        return key
    return jax.random.fold_in(key, jax.lax.axis_index(axis_name))


def make_core(
    agent: Agent,
    config: DQNConfig,
    *,
    num_envs: int,
    obs_spec: Spec,
    axis_name: str | None = None,
    num_devices: int = 1,
) -> Core:
    """Builds the `Core` functions of `agent` under `config` (see `Core`).

    Data-parallel (`axis_name` set, `num_devices` > 1), the core is one
    device's: `num_envs` is its share of the environments, its replay shard
    holds ``capacity / D`` transitions and it samples ``batch_size / D`` of
    them with its own key; gradients are averaged over the devices. Every shard
    receives the same number of transitions, so `size` is the same on all
    devices, and learning starts once the shards together hold `min_size`.
    """
    epsilon_fn = epsilon_schedule(config.exploration)
    n = config.n_step
    gamma = config.discount
    capacity = config.replay.capacity // num_devices
    batch_size = config.replay.batch_size // num_devices
    min_size = max(config.replay.min_size, 1)
    gradient_steps = config.gradient_steps
    update_kwargs = {} if axis_name is None else {"axis_name": axis_name}
    if num_envs > capacity:
        raise ValueError(
            f"replay.capacity ({config.replay.capacity}) must be >= num_envs "
            f"({num_envs * num_devices})"
        )

    def init(key: jax.Array, obs: jax.Array, env_state: Any) -> RunnerState:
        agent_key, rng = jax.random.split(key)
        example = Transition(
            obs=jax.ShapeDtypeStruct(obs_spec.shape, jnp.float32),
            action=jax.ShapeDtypeStruct((), jnp.int32),
            reward=jax.ShapeDtypeStruct((), jnp.float32),
            discount=jax.ShapeDtypeStruct((), jnp.float32),
            next_obs=jax.ShapeDtypeStruct(obs_spec.shape, jnp.float32),
        )
        return RunnerState(
            agent=agent.init(agent_key, obs),
            replay=replay_lib.init(capacity, example),
            env_state=env_state,
            obs=jnp.asarray(obs, jnp.float32),
            window=empty_window(n, num_envs, obs_spec),
            rng=rng,
            env_steps=_i32(0),
            iteration=_i32(0),
        )

    def act(rs: RunnerState, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        epsilon = epsilon_fn(rs.env_steps)
        key = device_key(key, axis_name)
        return agent.act(rs.agent, key, rs.obs, epsilon), epsilon  # [N], []

    def record(
        rs: RunnerState,
        actions: jax.Array,
        reward: jax.Array,
        terminated: jax.Array,
        truncated: jax.Array,
        final_obs: jax.Array,
        next_obs: jax.Array,
    ) -> RunnerState:
        chex.assert_shape([actions, reward, terminated, truncated], (num_envs,))
        window = push_step(
            rs.window, rs.obs, actions, reward, terminated, truncated, final_obs
        )
        replay = replay_lib.add(
            rs.replay, n_step_transitions(window, gamma), mask=window.fill == n
        )
        return rs._replace(
            replay=replay,
            obs=jnp.asarray(next_obs, jnp.float32),
            window=window,
            env_steps=rs.env_steps + num_envs * num_devices,
        )

    def updates(
        agent_state: DQNState, replay: ReplayState, key: jax.Array
    ) -> tuple[DQNState, Metrics]:
        def one(state: DQNState, key: jax.Array) -> tuple[DQNState, Metrics]:
            batch = replay_lib.sample(replay, device_key(key, axis_name), batch_size)
            return agent.update(state, batch, **update_kwargs)

        keys = jax.random.split(key, gradient_steps)
        agent_state, metrics = jax.lax.scan(one, agent_state, keys)
        metrics = jax.tree.map(jnp.mean, metrics)
        return agent_state, {**metrics, "learning": jnp.ones((), jnp.float32)}

    def skip(
        agent_state: DQNState, replay: ReplayState, key: jax.Array
    ) -> tuple[DQNState, Metrics]:
        shapes = jax.eval_shape(updates, agent_state, replay, key)[1]
        return agent_state, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def learn(rs: RunnerState) -> tuple[RunnerState, Metrics]:
        rng, key = jax.random.split(rs.rng)
        ready = rs.replay.size * num_devices >= min_size  # same on all devices
        agent_state, metrics = jax.lax.cond(
            ready, updates, skip, rs.agent, rs.replay, key
        )
        return rs._replace(agent=agent_state, rng=rng), metrics

    return Core(act=act, record=record, learn=learn, init=init)


def iteration_metrics(
    rs: RunnerState, epsilon: jax.Array, stats: EpisodeStats, learn: Metrics
) -> Metrics:
    """The metrics of one iteration (see `make_train`)."""
    return {
        "env_steps": rs.env_steps,
        "updates": rs.agent.steps,
        "epsilon": jnp.asarray(epsilon, jnp.float32),
        **stats.metrics(),
        **learn,
    }


# ------------------------------------------------------------ helpers


def as_optimizer(
    optimizer: optax.GradientTransformation | Mapping[str, Any] | Any,
) -> optax.GradientTransformation:
    """An optax optimizer as is; an `OptimizerConfig` or dict via jaxlab.optim."""
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer
    from jaxlab.optim import make_optimizer

    return make_optimizer(optimizer)


def check_discrete(action_spec: Spec, name: str) -> int:
    """The number of actions of a discrete action spec (DQN needs one)."""
    if not action_spec.is_discrete or action_spec.shape != ():
        raise ValueError(
            f"DQN needs a scalar discrete action space; {name} has {action_spec}"
        )
    return int(action_spec.num_values)
