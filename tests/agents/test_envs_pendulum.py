"""Pendulum-v1 against gymnasium's own implementation."""

import chex
import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import envs

_ENV = envs.make("Pendulum-v1")
_STEP = jax.jit(_ENV.step)
_KEY = jax.random.PRNGKey(0)
_TOL = 1e-5


def _angle_gap(a: float, b: float) -> float:
    return abs((a - b + np.pi) % (2 * np.pi) - np.pi)


def _assert_physics_close(state: envs.EnvState, ref_state: np.ndarray) -> None:
    th, thdot = ref_state
    assert _angle_gap(float(state.physics.th), th) <= _TOL
    assert abs(float(state.physics.thdot) - thdot) <= _TOL
    assert abs(float(state.physics.th)) <= np.pi


def _random_torque(rng: np.random.Generator) -> np.ndarray:
    # Out of [-2, 2] half of the time, to exercise the clipping.
    return rng.uniform(-4.0, 4.0, size=(1,)).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_episode_matches_gymnasium_step_by_step(seed):
    """A whole 200-step episode, the JAX physics re-synchronised before each step.

    Float32 and float64 trajectories of the pendulum drift apart (up to ~5e-3 after
    200 steps of random torques), so each step starts from gymnasium's state; the step
    counter is not re-synchronised, so the 200-step `TimeLimit` is tested too.
    """
    ref = gymnasium.make("Pendulum-v1")
    ref.reset(seed=seed)
    state = envs.pendulum_state(ref.unwrapped.state)
    rng = np.random.default_rng(seed)
    for _ in range(300):
        action = _random_torque(rng)
        state = state._replace(physics=envs.pendulum_state(ref.unwrapped.state).physics)
        ref_obs, ref_reward, ref_term, ref_trunc, _ = ref.step(action)
        _, state, reward, term, trunc, info = _STEP(_KEY, state, jnp.asarray(action))
        np.testing.assert_allclose(info["final_obs"], ref_obs, atol=_TOL, rtol=0)
        assert abs(float(reward) - ref_reward) <= _TOL
        assert (bool(term), bool(trunc)) == (ref_term, ref_trunc)
        if ref_trunc:
            break
        _assert_physics_close(state, ref.unwrapped.state)
    assert (ref_term, ref_trunc) == (False, True)
    assert int(info["episode_length"]) == ref._elapsed_steps == 200
    assert int(state.time) == 0 and float(state.episode_return) == 0.0


@pytest.mark.parametrize("seed", [0, 5, 9])
def test_free_running_start_of_episode_matches_gymnasium(seed):
    ref = gymnasium.make("Pendulum-v1")
    ref_obs, _ = ref.reset(seed=seed)
    state = envs.pendulum_state(ref.unwrapped.state)
    rng = np.random.default_rng(seed)
    ref_return = 0.0
    for t in range(1, 21):
        action = _random_torque(rng)
        ref_obs, ref_reward, _, _, _ = ref.step(action)
        _, state, reward, _, _, info = _STEP(_KEY, state, jnp.asarray(action))
        ref_return += ref_reward
        np.testing.assert_allclose(info["final_obs"], ref_obs, atol=_TOL, rtol=0)
        assert abs(float(reward) - ref_reward) <= _TOL
        assert abs(float(info["episode_return"]) - ref_return) <= 1e-4
        assert int(info["episode_length"]) == t
        _assert_physics_close(state, ref.unwrapped.state)


def test_torque_is_clipped():
    state = envs.pendulum_state([0.3, -0.5])
    big = _STEP(_KEY, state, jnp.array([50.0], jnp.float32))
    max_torque = _STEP(_KEY, state, jnp.array([2.0], jnp.float32))
    chex.assert_trees_all_equal(big, max_torque)


def test_angle_is_wrapped_without_changing_the_dynamics():
    a = _STEP(_KEY, envs.pendulum_state([0.5, 1.0]), jnp.array([0.3], jnp.float32))
    b = _STEP(
        _KEY,
        envs.pendulum_state([0.5 + 4 * np.pi, 1.0]),
        jnp.array([0.3], jnp.float32),
    )
    chex.assert_trees_all_close(a, b, atol=1e-5)


def test_jit_and_no_jit_agree():
    state = envs.pendulum_state([3.0, 7.9])
    action = jnp.array([1.5], jnp.float32)
    chex.assert_trees_all_close(
        _STEP(_KEY, state, action), _ENV.step(_KEY, state, action), atol=1e-6
    )


def test_specs_and_reset():
    ref = gymnasium.make("Pendulum-v1")
    chex.assert_equal(_ENV.observation_spec.shape, (3,))
    chex.assert_equal(_ENV.action_spec.shape, (1,))
    chex.assert_equal(_ENV.action_spec.dtype, np.float32)
    assert _ENV.action_spec.minimum == -2.0 and _ENV.action_spec.maximum == 2.0
    np.testing.assert_allclose(
        _ENV.observation_spec.maximum, ref.observation_space.high
    )
    keys = jax.random.split(_KEY, 256)
    obs, state = jax.vmap(_ENV.reset)(keys)
    chex.assert_shape(obs, (256, 3))
    chex.assert_type(obs, jnp.float32)
    assert np.all(np.abs(state.physics.thdot) <= 1.0)
    assert np.all(np.abs(state.physics.th) <= np.pi)
    assert np.ptp(np.asarray(state.physics.th)) > 5.0  # Covers most of the circle.
    np.testing.assert_allclose(obs[:, 0] ** 2 + obs[:, 1] ** 2, 1.0, atol=1e-6)
