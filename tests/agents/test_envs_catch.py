"""Catch, checked by hand against its definition (bsuite's `Catch`)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import envs

_ENV = envs.make("Catch")
_KEY = jax.random.PRNGKey(0)
LEFT, STAY, RIGHT = 0, 1, 2


def _state(ball_column: int, paddle_column: int = 2, ball_row: int = 0):
    return envs.initial_state(
        envs.CatchState(
            ball_row=jnp.int32(ball_row),
            ball_column=jnp.int32(ball_column),
            paddle_column=jnp.int32(paddle_column),
        )
    )


def _board(ball, paddle_column):
    board = np.zeros((10, 5), np.float32)
    board[ball] = 1.0
    board[9, paddle_column] = 1.0
    return board


def _play(step, state, actions):
    results = []
    for action in actions:
        result = step(_KEY, state, jnp.int32(action))
        results.append(result)
        state = result.state
    return results


@pytest.mark.parametrize("jit", [True, False])
def test_caught_ball(jit):
    # Ball falls in column 0; the paddle goes 2 -> 1 -> 0, then waits.
    # The ball moves rows 0 -> 9 in exactly 9 steps, the last one terminal.
    step = jax.jit(_ENV.step) if jit else _ENV.step
    actions = [LEFT, LEFT] + [STAY] * 7
    results = _play(step, _state(ball_column=0), actions)
    paddle = [1, 0, 0, 0, 0, 0, 0, 0, 0]
    for t, (result, paddle_column) in enumerate(zip(results, paddle, strict=True)):
        expected = _board((t + 1, 0), paddle_column)
        np.testing.assert_array_equal(result.info["final_obs"], expected)
        assert int(result.info["episode_length"]) == t + 1
        last = t == 8
        assert bool(result.terminated) == last and not bool(result.truncated)
        assert float(result.reward) == (1.0 if last else 0.0)
        if not last:
            np.testing.assert_array_equal(result.obs, expected)
    final = results[-1]
    # Ball and paddle share the bottom-left cell: a single 1 on the final board.
    assert float(final.info["final_obs"].sum()) == 1.0
    assert float(final.info["episode_return"]) == 1.0
    # Auto-reset: the ball is back in row 0 and the paddle in the middle.
    obs = np.asarray(final.obs)
    assert obs[0].sum() == 1.0 and obs[9, 2] == 1.0 and obs.sum() == 2.0
    assert int(final.state.time) == 0


def test_missed_ball_and_clipping_at_the_edge():
    # Ball in column 4; the paddle runs left into the wall at column 0 and stays.
    results = _play(jax.jit(_ENV.step), _state(ball_column=4), [LEFT] * 9)
    paddle = [int(r.state.physics.paddle_column) for r in results[:-1]]
    assert paddle == [1, 0, 0, 0, 0, 0, 0, 0]
    np.testing.assert_array_equal(results[-1].info["final_obs"], _board((9, 4), 0))
    assert [float(r.reward) for r in results] == [0.0] * 8 + [-1.0]
    assert bool(results[-1].terminated)
    assert float(results[-1].info["episode_return"]) == -1.0
    assert int(results[-1].info["episode_length"]) == 9


def test_right_edge_clipping():
    results = _play(jax.jit(_ENV.step), _state(ball_column=4), [RIGHT] * 9)
    assert [int(r.info["final_obs"][9].argmax()) for r in results] == [3] + [4] * 8
    assert float(results[-1].reward) == 1.0


def test_reset_and_specs():
    chex.assert_equal(_ENV.observation_spec.shape, (10, 5))
    chex.assert_equal(_ENV.observation_spec.dtype, np.float32)
    chex.assert_equal(_ENV.action_spec, envs.discrete_spec(3))
    assert envs.make("Catch-bsuite").observation_spec == _ENV.observation_spec
    obs, state = jax.vmap(_ENV.reset)(jax.random.split(_KEY, 200))
    chex.assert_shape(obs, (200, 10, 5))
    chex.assert_type(obs, jnp.float32)
    assert set(np.asarray(state.physics.ball_column).tolist()) == {0, 1, 2, 3, 4}
    np.testing.assert_array_equal(obs[:, 0].sum(axis=1), 1.0)
    np.testing.assert_array_equal(obs[:, 9, 2], 1.0)
    np.testing.assert_array_equal(obs.sum(axis=(1, 2)), 2.0)


def test_custom_board_size():
    env = envs.make("Catch", rows=4, columns=3)
    obs, state = env.reset(_KEY)
    chex.assert_shape(obs, (4, 3))
    step = jax.jit(env.step)
    terminated = []
    for _ in range(3):
        result = step(_KEY, state, jnp.int32(STAY))
        terminated.append(bool(result.terminated))
        state = result.state
    assert terminated == [False, False, True]
    with pytest.raises(ValueError, match="rows"):
        envs.make("Catch", rows=1)
