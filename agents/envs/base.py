"""Types of the functional environment API and the shared auto-reset logic.

A JAX-native environment is an `Environment`: a `NamedTuple` of two pure functions
(`reset`, `step`) plus static metadata (specs, name, time limit), in the style of
`optax.GradientTransformation`. Its state is a pytree passed in and returned, so
`reset`/`step` can be `jax.jit`-ed, `jax.vmap`-ed over a batch of environments and
`jax.lax.scan`-ned over time.

`step` auto-resets: when an episode ends (terminated or truncated) the returned
`obs`/`state` already belong to the next episode, and `info["final_obs"]` holds the
last observation of the finished episode. Learners build transitions as
`(obs_t, a_t, r_t, info["final_obs"], terminated_t)`, which never cross an episode
boundary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

Bound = float | tuple[Any, ...]


class Spec(NamedTuple):
    """Static description of an observation or action array (one environment).

    Attributes:
      shape: shape of one observation/action, without batch dimension.
      dtype: numpy dtype (`np.float32` observations, `np.int32` discrete actions).
      num_values: number of values of a discrete space (values `0 .. num_values-1`),
        `None` for boxes.
      minimum: lower bound of a box (a float if uniform, else nested tuples of the
        same shape), `None` for discrete spaces.
      maximum: upper bound, like `minimum`.
    """

    shape: tuple[int, ...]
    dtype: Any
    num_values: int | None = None
    minimum: Bound | None = None
    maximum: Bound | None = None

    @property
    def is_discrete(self) -> bool:
        """Whether the spec describes a discrete space."""
        return self.num_values is not None


def discrete_spec(num_values: int, *, dtype: Any = np.int32) -> Spec:
    """Spec of a scalar discrete value in `[0, num_values)`."""
    if num_values < 1:
        raise ValueError(f"num_values must be positive, got {num_values}.")
    return Spec(shape=(), dtype=np.dtype(dtype), num_values=int(num_values))


def _static_bound(value: Any, shape: tuple[int, ...]) -> Bound:
    """Turns a bound into a hashable value: a float if uniform, else nested tuples."""
    array = np.broadcast_to(np.asarray(value, dtype=np.float64), shape)
    if array.size == 0 or np.all(array == array.flat[0]):
        return float(array.flat[0]) if array.size else 0.0

    def to_tuple(x: Any) -> Any:
        return tuple(to_tuple(v) for v in x) if isinstance(x, list) else float(x)

    return to_tuple(array.tolist())


def box_spec(
    shape: tuple[int, ...],
    *,
    minimum: Any = -np.inf,
    maximum: Any = np.inf,
    dtype: Any = np.float32,
) -> Spec:
    """Spec of a bounded (or unbounded) real array.

    Args:
      shape: array shape, without batch dimension.
      minimum: lower bound, a scalar or an array broadcastable to `shape`.
      maximum: upper bound, like `minimum`.
      dtype: numpy dtype.
    """
    shape = tuple(int(d) for d in shape)
    return Spec(
        shape=shape,
        dtype=np.dtype(dtype),
        minimum=_static_bound(minimum, shape),
        maximum=_static_bound(maximum, shape),
    )


class TimeStep(NamedTuple):
    """Result of `Environment.step` (a tuple, so it unpacks in this order).

    Shapes are for one environment; a `jax.vmap` over `N` environments adds a
    leading `[N]` axis to every leaf.

    Attributes:
      obs: next observation, `observation_spec.shape`, float32; the first observation
        of a new episode when this step ended one.
      state: next environment state (of the new episode when this step ended one).
      reward: reward of this transition, [] float32.
      terminated: whether the episode reached a terminal state, [] bool.
      truncated: whether the episode hit its time limit, [] bool (as in gymnasium's
        `TimeLimit`, can be true together with `terminated`).
      info: dict with `"final_obs"` (the true next observation of this transition,
        equal to `obs` unless the episode ended), `"episode_return"` ([] float32,
        undiscounted return of the episode this step belongs to, up to and including
        this step: the finished episode's return on a done step) and
        `"episode_length"` ([] int32, steps of that episode including this one).
    """

    obs: jax.Array
    state: Any
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    info: dict[str, jax.Array]


class Environment(NamedTuple):
    """A functional, jittable, vmappable environment.

    Attributes:
      reset: `(key) -> (obs, state)`.
      step: `(key, state, action) -> TimeStep`, auto-resetting (see `TimeStep`).
      observation_spec: spec of one observation.
      action_spec: spec of one action.
      name: environment id, e.g. `"CartPole-v1"`.
      max_episode_steps: time limit after which `truncated` is set, or `None`.
      draw: `(key) -> drawn`, every random draw one `step` makes (a pytree; for
        the built-in environments the physics key and the next episode's
        `reset`), or `None`.
      step_drawn: `(drawn, state, action) -> TimeStep`, `step` with its draws
        given: ``step(key, s, a) == step_drawn(draw(key), s, a)``, or `None`.
        A training loop draws a whole rollout's worth in one batched call
        before its loop of steps (`drawn_step`): inside a compiled loop on a
        CPU, each random draw is several small kernels per step.
    """

    reset: Callable[[jax.Array], tuple[jax.Array, Any]]
    step: Callable[[jax.Array, Any, jax.Array], TimeStep]
    observation_spec: Spec
    action_spec: Spec
    name: str
    max_episode_steps: int | None = None
    draw: Callable[[jax.Array], Any] | None = None
    step_drawn: Callable[[Any, Any, jax.Array], TimeStep] | None = None


def drawn_step(
    env: Environment,
) -> tuple[Callable[[jax.Array], Any], Callable[[Any, Any, jax.Array], TimeStep]]:
    """``(draw, step_drawn)`` of `env`, or ``(identity, step)`` where it has none
    (the draws are then the keys themselves, and `step` makes them)."""
    if env.draw is None or env.step_drawn is None:
        return (lambda key: key), env.step
    return env.draw, env.step_drawn


class EnvState(NamedTuple):
    """State shared by the built-in environments.

    Attributes:
      physics: the environment-specific state (e.g. `CartPoleState`).
      time: steps taken in the current episode, [] int32.
      episode_return: undiscounted return of the current episode so far, [] float32.
    """

    physics: Any
    time: jax.Array
    episode_return: jax.Array


def initial_state(
    physics: Any, *, time: int = 0, episode_return: float = 0.0
) -> EnvState:
    """Wraps a physics state into an `EnvState` (e.g. to start from a given state)."""
    return EnvState(
        physics=physics,
        time=jnp.asarray(time, jnp.int32),
        episode_return=jnp.asarray(episode_return, jnp.float32),
    )


def auto_reset(
    done: jax.Array, reset_out: tuple[jax.Array, Any], step_out: tuple[jax.Array, Any]
) -> tuple[jax.Array, Any]:
    """Picks `(obs, state)` of a fresh episode where `done`, else of the step.

    Both branches are computed (no control flow), which keeps `step` vmappable.

    Args:
      done: whether the episode ended, [] bool.
      reset_out: `(obs, state)` from `reset`.
      step_out: `(obs, state)` after the step, with the same structure.
    """
    chex.assert_rank(done, 0)
    return jax.tree.map(lambda new, old: jnp.where(done, new, old), reset_out, step_out)


def split_draws(
    reset: Callable[[jax.Array], tuple[jax.Array, Any]],
    step_drawn: Callable[[Any, Any, jax.Array], TimeStep],
) -> tuple[Callable[[jax.Array], Any], Callable[[jax.Array, Any, jax.Array], TimeStep]]:
    """``(draw, step)`` of an auto-resetting environment whose step draws a physics
    key and the next episode's `reset`: ``draw(key) = (step_key, reset(reset_key))``
    from ``jax.random.split(key)``, and ``step = step_drawn(draw(key), ...)``."""

    def draw(key: jax.Array) -> tuple[jax.Array, tuple[jax.Array, Any]]:
        step_key, reset_key = jax.random.split(key)
        return step_key, reset(reset_key)

    def step(key: jax.Array, state: Any, action: jax.Array) -> TimeStep:
        return step_drawn(draw(key), state, action)

    return draw, step


def make_environment(
    *,
    name: str,
    observation_spec: Spec,
    action_spec: Spec,
    reset_physics: Callable[[jax.Array], Any],
    step_physics: Callable[[jax.Array, Any, jax.Array], tuple[Any, jax.Array, Any]],
    observe: Callable[[Any], jax.Array],
    max_episode_steps: int | None,
) -> Environment:
    """Builds an auto-resetting `Environment` from physics functions.

    Args:
      name: environment id.
      observation_spec: spec of one observation.
      action_spec: spec of one action; actions are checked against its rank and
        kind (integer for discrete, floating for boxes) at trace time.
      reset_physics: `(key) -> physics`, a new episode's physics state.
      step_physics: `(key, physics, action) -> (physics, reward [], terminated [])`.
      observe: `(physics) -> obs`, shaped like `observation_spec`.
      max_episode_steps: truncate episodes after this many steps (`None`: never).
    """
    if max_episode_steps is not None and max_episode_steps < 1:
        raise ValueError(
            f"max_episode_steps must be positive or None, got {max_episode_steps}."
        )
    action_kind = int if action_spec.is_discrete else float

    def reset(key: jax.Array) -> tuple[jax.Array, EnvState]:
        physics = reset_physics(key)
        return observe(physics), initial_state(physics)

    def step_drawn(
        drawn: tuple[jax.Array, tuple[jax.Array, EnvState]],
        state: EnvState,
        action: jax.Array,
    ) -> TimeStep:
        action = jnp.asarray(action)
        chex.assert_rank(action, len(action_spec.shape))
        chex.assert_type(action, action_kind)
        step_key, reset_out = drawn
        physics, reward, terminated = step_physics(step_key, state.physics, action)
        reward = jnp.asarray(reward, jnp.float32)
        terminated = jnp.asarray(terminated, jnp.bool_)
        time = state.time + 1
        if max_episode_steps is None:
            truncated = jnp.zeros((), jnp.bool_)
        else:
            truncated = time >= max_episode_steps
        episode_return = state.episode_return + reward
        final_obs = observe(physics)

        obs, state = auto_reset(
            terminated | truncated,
            reset_out,
            (final_obs, EnvState(physics, time, episode_return)),
        )
        info = {
            "final_obs": final_obs,
            "episode_return": episode_return,
            "episode_length": time,
        }
        return TimeStep(obs, state, reward, terminated, truncated, info)

    draw, step = split_draws(reset, step_drawn)
    return Environment(
        reset=reset,
        step=step,
        observation_spec=observation_spec,
        action_spec=action_spec,
        name=name,
        max_episode_steps=max_episode_steps,
        draw=draw,
        step_drawn=step_drawn,
    )
