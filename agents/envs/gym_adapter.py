"""Adapters giving foreign environments the output contract of `agents.envs`.

- `GymnasiumVecEnv` (host side, not jittable): any gymnasium id or constructor,
  vectorized by gymnasium (`sync` or `async`), with same-step auto-reset.
- `from_gymnax` (pure, jittable): a gymnax-style environment object, duck-typed
  (gymnax itself is not imported).

Both return, like the JAX-native environments, the next episode's first observation
for finished environments and the true last observation in `info["final_obs"]`,
plus `info["episode_return"]` and `info["episode_length"]`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import chex
import gymnasium
import jax
import jax.numpy as jnp
import numpy as np

from agents.envs import base

_VECTORIZATIONS = ("sync", "async")


def spec_from_space(space: Any, *, env_name: str = "environment") -> base.Spec:
    """Converts a gymnasium (or gymnax) `Discrete` or `Box` space into a `Spec`.

    Discrete spaces become `[]` int32 specs with `num_values = n` (values are
    `0 .. n-1`; a gymnasium `start` offset is added back by `GymnasiumVecEnv`);
    boxes become float32 specs with the space's bounds.

    Args:
      space: the space, matched by its class name (`Discrete` or `Box`).
      env_name: named in the error message.

    Raises:
      ValueError: for any other space (Dict, Tuple, MultiDiscrete, MultiBinary,
        Text, Graph, ...).
    """
    kind = type(space).__name__
    if kind == "Discrete":
        return base.discrete_spec(int(space.n))
    if kind == "Box":
        shape = tuple(int(d) for d in space.shape)
        return base.box_spec(
            shape,
            minimum=np.broadcast_to(np.asarray(space.low, np.float64), shape),
            maximum=np.broadcast_to(np.asarray(space.high, np.float64), shape),
        )
    raise ValueError(
        f"{env_name}: unsupported space {space!r}; only Discrete and Box spaces are "
        "supported (flatten or wrap Dict, Tuple, MultiDiscrete, MultiBinary, Text "
        "and other spaces first)."
    )


class GymnasiumVecEnv:
    """A batch of gymnasium environments with the `agents.envs` output contract.

    Uses gymnasium's `SAME_STEP` auto-reset (gymnasium 1.x defaults to `NEXT_STEP`,
    whose step after a done returns a reset observation with reward 0 that must not
    be learned from): a finished environment is reset within the same `step`, its
    last observation goes to `info["final_obs"]`, and every returned transition
    `(obs_t, a_t, r_t, info["final_obs"], terminated_t)` is a real one. Environment
    `i` is seeded with `seed + i`, as `gymnasium.vector` does.

    Observations of Box spaces are float32 (Discrete observation spaces give int32
    indices); rewards are float32, flags bool. Actions are `[N]` integers in
    `[0, n)` for Discrete action spaces, `[N, *shape]` floats for Box ones, and are
    cast to the space's dtype.

    Attributes:
      name: environment id.
      num_envs: number of environments `N`.
      observation_spec: spec of one observation.
      action_spec: spec of one action.
      envs: the underlying `gymnasium.vector.VectorEnv`.
    """

    def __init__(
        self,
        env_id: str | Callable[[], gymnasium.Env],
        num_envs: int,
        *,
        seed: int | None = 0,
        vectorization: str = "sync",
        async_context: str | None = "spawn",
        **make_kwargs: Any,
    ) -> None:
        """Creates the vectorized environment.

        Args:
          env_id: a registered gymnasium id, or a function returning a
            `gymnasium.Env` (e.g. a custom or wrapped environment).
          num_envs: number of environments, positive.
          seed: seed of the first `reset()` (environment `i` gets `seed + i`);
            `None` for unseeded.
          vectorization: `"sync"` (one process) or `"async"` (one subprocess per
            environment).
          async_context: `multiprocessing` start method of the `"async"` workers;
            `"spawn"` by default, since forking a process that runs JAX's threads
            can deadlock.
          **make_kwargs: keyword arguments of `gymnasium.make(env_id, ...)`.

        Raises:
          ValueError: for a bad `num_envs` or `vectorization`, or unsupported
            observation or action spaces.
        """
        if num_envs < 1:
            raise ValueError(f"num_envs must be positive, got {num_envs}.")
        if vectorization not in _VECTORIZATIONS:
            raise ValueError(
                f"vectorization must be one of {_VECTORIZATIONS}, "
                f"got {vectorization!r}."
            )
        if isinstance(env_id, str):
            self.name = env_id
            # A partial of `gymnasium.make` pickles by reference: async workers
            # then import only gymnasium, not this module (and JAX).
            env_fn = functools.partial(gymnasium.make, env_id, **make_kwargs)
        else:
            if make_kwargs:
                raise ValueError("make_kwargs are only used with a string env_id.")
            env_fn = env_id
            self.name = getattr(env_id, "__name__", type(env_id).__name__)

        self.num_envs = num_envs
        autoreset_mode = gymnasium.vector.AutoresetMode.SAME_STEP
        if vectorization == "sync":
            self.envs = gymnasium.vector.SyncVectorEnv(
                [env_fn] * num_envs, autoreset_mode=autoreset_mode
            )
        else:
            self.envs = gymnasium.vector.AsyncVectorEnv(
                [env_fn] * num_envs,
                autoreset_mode=autoreset_mode,
                context=async_context,
            )
        try:
            self._obs_space = self.envs.single_observation_space
            self._act_space = self.envs.single_action_space
            self.observation_spec = spec_from_space(self._obs_space, env_name=self.name)
            self.action_spec = spec_from_space(self._act_space, env_name=self.name)
        except ValueError:
            self.envs.close()
            raise
        self._seed = seed
        self._returns = np.zeros(num_envs, np.float64)
        self._lengths = np.zeros(num_envs, np.int32)

    def _convert_obs(self, obs: Any) -> np.ndarray:
        return np.asarray(obs, self.observation_spec.dtype)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Resets all environments.

        Args:
          seed: environment `i` is seeded `seed + i`; defaults to the constructor's
            seed on the first call and to no reseeding afterwards.

        Returns:
          First observations, [N, *observation_spec.shape].
        """
        if seed is None:
            seed, self._seed = self._seed, None
        obs, _ = self.envs.reset(seed=seed)
        self._returns[:] = 0.0
        self._lengths[:] = 0
        return self._convert_obs(obs)

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Steps all environments, resetting the finished ones in the same call.

        Args:
          actions: [N] ints for Discrete action spaces, [N, *shape] for Box ones.

        Returns:
          `(obs, reward, terminated, truncated, info)`: `obs` [N, ...] (the next
          episode's first observation where an episode ended), `reward` [N]
          float32, `terminated`/`truncated` [N] bool, and `info` with
          `"final_obs"` [N, ...] (the true next observation of this transition),
          `"episode_return"` [N] float32 and `"episode_length"` [N] int32 (of the
          episode each step belongs to, up to and including it).
        """
        actions = np.asarray(actions)
        if self.action_spec.is_discrete:
            chex.assert_shape(actions, (self.num_envs,))
            actions = actions.astype(self._act_space.dtype) + self._act_space.start
        else:
            chex.assert_shape(actions, (self.num_envs, *self.action_spec.shape))
            actions = actions.astype(self._act_space.dtype)
        obs, reward, terminated, truncated, env_info = self.envs.step(actions)
        obs = self._convert_obs(obs)
        terminated = np.asarray(terminated, np.bool_)
        truncated = np.asarray(truncated, np.bool_)
        done = terminated | truncated

        final_obs = obs.copy()
        if "final_obs" in env_info:
            for i in np.flatnonzero(env_info["_final_obs"]):
                final_obs[i] = self._convert_obs(env_info["final_obs"][i])

        self._returns += reward
        self._lengths += 1
        info = {
            "final_obs": final_obs,
            "episode_return": self._returns.astype(np.float32),
            "episode_length": self._lengths.copy(),
        }
        self._returns[done] = 0.0
        self._lengths[done] = 0
        return obs, np.asarray(reward, np.float32), terminated, truncated, info

    def close(self) -> None:
        """Closes the environments (and subprocesses with `"async"`)."""
        self.envs.close()

    def __enter__(self) -> GymnasiumVecEnv:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def from_gymnax(
    env: Any, params: Any = None, *, name: str | None = None
) -> base.Environment:
    """Wraps a gymnax-style environment into an `Environment` (no gymnax import).

    The object needs `reset_env(key, params) -> (obs, state)`, `step_env(key,
    state, action, params) -> (obs, state, reward, done, info)`,
    `observation_space(params)`, `action_space(params)` (Discrete or Box) and,
    when `params` is None, `default_params`. Auto-reset is done here rather than by
    gymnax's `step`, so that `info["final_obs"]` keeps the last observation.

    gymnax merges termination and time limits into `done`; a done step is reported
    as `truncated` when `params.max_steps_in_episode` steps have been taken in the
    episode, else as `terminated`.

    Args:
      env: the gymnax-style environment.
      params: its environment parameters (default: `env.default_params`).
      name: environment name (default: `env.name`, else the class name).

    Returns:
      An auto-resetting `Environment` with `EnvState(gymnax_state, ...)` states.
    """
    if params is None:
        params = env.default_params
    name = name or getattr(env, "name", type(env).__name__)
    max_steps = getattr(params, "max_steps_in_episode", None)
    max_steps = None if max_steps is None else int(max_steps)
    action_spec = spec_from_space(env.action_space(params), env_name=name)
    observation_spec = spec_from_space(env.observation_space(params), env_name=name)
    action_kind = int if action_spec.is_discrete else float

    def reset(key: jax.Array) -> tuple[jax.Array, base.EnvState]:
        obs, state = env.reset_env(key, params)
        return jnp.asarray(obs, jnp.float32), base.initial_state(state)

    def step_drawn(
        drawn: tuple[jax.Array, tuple[jax.Array, base.EnvState]],
        state: base.EnvState,
        action: jax.Array,
    ) -> base.TimeStep:
        action = jnp.asarray(action)
        chex.assert_rank(action, len(action_spec.shape))
        chex.assert_type(action, action_kind)
        step_key, reset_out = drawn
        final_obs, physics, reward, done, _ = env.step_env(
            step_key, state.physics, action, params
        )
        final_obs = jnp.asarray(final_obs, jnp.float32)
        reward = jnp.asarray(reward, jnp.float32)
        done = jnp.asarray(done, jnp.bool_)
        time = state.time + 1
        if max_steps is None:
            truncated = jnp.zeros((), jnp.bool_)
        else:
            truncated = done & (time >= max_steps)
        terminated = done & ~truncated
        episode_return = state.episode_return + reward
        obs, new_state = base.auto_reset(
            done,
            reset_out,
            (final_obs, base.EnvState(physics, time, episode_return)),
        )
        info = {
            "final_obs": final_obs,
            "episode_return": episode_return,
            "episode_length": time,
        }
        return base.TimeStep(obs, new_state, reward, terminated, truncated, info)

    draw, step = base.split_draws(reset, step_drawn)
    return base.Environment(
        reset=reset,
        step=step,
        observation_spec=observation_spec,
        action_spec=action_spec,
        name=name,
        max_episode_steps=max_steps,
        draw=draw,
        step_drawn=step_drawn,
    )


# Evaluation environments a host trainer makes: one per episode up to this
# many, so that a usual evaluation (10-20 episodes) plays in one round of
# vectorized steps instead of several (each round is as long as its longest
# episode, one jitted act per vectorized step).
MAX_EVAL_ENVS = 32


def eval_env_count(num_episodes: int) -> int:
    """How many environments to evaluate `num_episodes` episodes on."""
    return max(1, min(num_episodes, MAX_EVAL_ENVS))


def evaluate_policy(
    env: GymnasiumVecEnv,
    policy: Callable[[np.ndarray], Any],
    *,
    seed: int,
    num_episodes: int,
    max_steps: int = 100_000,
) -> float:
    """Mean undiscounted return of `policy` on a gymnasium vector environment.

    Resets `env` with `seed`; each of its `N` sub-environments plays
    ``ceil(num_episodes / N)`` whole episodes (so short episodes are not
    over-represented), and the first `num_episodes` of them, in environment
    order, are averaged.

    Args:
      env: the environments (reset here).
      policy: ``obs [N, ...] -> actions [N, ...]`` (e.g. a jitted greedy act).
      seed: gymnasium seed of the reset.
      num_episodes: episodes to average.
      max_steps: vectorized steps after which unfinished episodes count their
        partial return.
    """
    per_env = -(-num_episodes // env.num_envs)
    returns: list[list[float]] = [[] for _ in range(env.num_envs)]
    obs = env.reset(seed=seed)
    info: dict[str, np.ndarray] = {"episode_return": np.zeros(env.num_envs)}
    for _ in range(max_steps):
        obs, _, terminated, truncated, info = env.step(np.asarray(policy(obs)))
        for i in np.flatnonzero(terminated | truncated):
            if len(returns[i]) < per_env:
                returns[i].append(float(info["episode_return"][i]))
        if all(len(r) >= per_env for r in returns):
            break
    else:  # Unfinished episodes count their partial return.
        for i, r in enumerate(returns):
            if len(r) < per_env:
                r.append(float(info["episode_return"][i]))
    flat = [ret for env_returns in returns for ret in env_returns[:per_env]]
    return float(np.mean(flat[:num_episodes]))
