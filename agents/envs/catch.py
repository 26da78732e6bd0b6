"""Catch (bsuite, Osband et al. 2020, "Behaviour Suite for Reinforcement Learning").

Follows `bsuite.environments.catch.Catch`: a ball starts in the top row at a random
column and falls one row per step; the agent moves a paddle in the bottom row left
(action 0), not at all (1) or right (2), clipped at the edges. When the ball reaches
the bottom row the episode terminates with reward +1 if the paddle is under the
ball, else -1; every other step gives 0. With `rows` rows an episode lasts exactly
`rows - 1` steps (9 by default), so there is no time limit.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from agents.envs import base


class CatchState(NamedTuple):
    """Positions on the board, each [] int32 (row 0 is the top)."""

    ball_row: jax.Array
    ball_column: jax.Array
    paddle_column: jax.Array


def make_catch(*, rows: int = 10, columns: int = 5) -> base.Environment:
    """Catch: move a paddle to catch a falling ball.

    Observation: the board, [rows, columns] float32, 1.0 at the ball and at the
    paddle (bottom row), 0.0 elsewhere (flatten it for an MLP). Action: [] int32 in
    `{0: left, 1: stay, 2: right}`. Reward: +1 or -1 on the last step, else 0.

    Args:
      rows: board height (the episode length is `rows - 1`).
      columns: board width; the paddle starts in column `columns // 2`.

    Returns:
      An auto-resetting `Environment`; its state is `EnvState(CatchState, ...)`.
    """
    if rows < 2 or columns < 1:
        raise ValueError(
            f"Catch needs rows >= 2 and columns >= 1, got {rows}x{columns}."
        )
    paddle_row = rows - 1

    def reset_physics(key: jax.Array) -> CatchState:
        ball_column = jax.random.randint(key, (), 0, columns, jnp.int32)
        return CatchState(
            ball_row=jnp.zeros((), jnp.int32),
            ball_column=ball_column,
            paddle_column=jnp.asarray(columns // 2, jnp.int32),
        )

    def step_physics(
        key: jax.Array, state: CatchState, action: jax.Array
    ) -> tuple[CatchState, jax.Array, jax.Array]:
        del key  # Deterministic dynamics.
        paddle = jnp.clip(
            state.paddle_column + action.astype(jnp.int32) - 1, 0, columns - 1
        )
        ball_row = state.ball_row + 1
        terminated = ball_row == paddle_row
        caught = paddle == state.ball_column
        reward = jnp.where(terminated, jnp.where(caught, 1.0, -1.0), 0.0)
        return CatchState(ball_row, state.ball_column, paddle), reward, terminated

    def observe(state: CatchState) -> jax.Array:
        board = jnp.zeros((rows, columns), jnp.float32)
        board = board.at[state.ball_row, state.ball_column].set(1.0)
        return board.at[paddle_row, state.paddle_column].set(1.0)  # [rows, columns]

    return base.make_environment(
        name="Catch-bsuite",
        observation_spec=base.box_spec((rows, columns), minimum=0.0, maximum=1.0),
        action_spec=base.discrete_spec(3),
        reset_physics=reset_physics,
        step_physics=step_physics,
        observe=observe,
        max_episode_steps=None,
    )
