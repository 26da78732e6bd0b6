"""CartPole-v1 against gymnasium's own implementation."""

import chex
import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import envs

_ENV = envs.make("CartPole-v1")
_STEP = jax.jit(_ENV.step)
_KEY = jax.random.PRNGKey(0)
_TOL = 1e-5


def _physics(state: envs.EnvState) -> np.ndarray:
    return np.asarray(state.physics.values)


def _balance(state: np.ndarray) -> int:
    """Pushes towards where the pole is falling: balances for 500 steps."""
    _, _, theta, theta_dot = state
    return int(theta + 0.5 * theta_dot > 0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_random_episodes_match_gymnasium(seed):
    """Free-running whole episodes (random actions) from gymnasium's reset state."""
    ref = gymnasium.make("CartPole-v1")
    ref.reset(seed=seed)
    state = envs.cartpole_state(ref.unwrapped.state)
    rng = np.random.default_rng(seed)
    for t in range(1, 501):
        action = int(rng.integers(2))
        ref_obs, ref_reward, ref_term, ref_trunc, _ = ref.step(action)
        obs, state, reward, term, trunc, info = _STEP(_KEY, state, jnp.int32(action))
        np.testing.assert_allclose(
            info["final_obs"], ref.unwrapped.state, atol=_TOL, rtol=0
        )
        np.testing.assert_allclose(info["final_obs"], ref_obs, atol=_TOL, rtol=0)
        assert float(reward) == ref_reward == 1.0
        assert (bool(term), bool(trunc)) == (ref_term, ref_trunc)
        assert int(info["episode_length"]) == t
        assert float(info["episode_return"]) == t
        if ref_term or ref_trunc:
            break
        np.testing.assert_allclose(_physics(state), ref.unwrapped.state, atol=_TOL)
    assert ref_term, "a random policy should drop the pole"
    # Auto-reset: a fresh episode starts in [-0.05, 0.05]^4.
    assert int(state.time) == 0 and float(state.episode_return) == 0.0
    assert np.all(np.abs(obs) <= 0.05)
    np.testing.assert_array_equal(obs, _physics(state))


@pytest.mark.parametrize("seed", [0, 7])
def test_balanced_episode_is_truncated_at_500_steps(seed):
    """A whole 500-step episode, compared one step at a time.

    Free-running float32 and float64 trajectories of the (unstable) cart-pole
    separate after ~150 balanced steps, so before each step the JAX physics is
    re-synchronised to gymnasium's state; the step counter and return are not, so
    the JAX `TimeLimit` is tested over the whole episode.
    """
    ref = gymnasium.make("CartPole-v1")
    ref.reset(seed=seed)
    state = envs.cartpole_state(ref.unwrapped.state)
    for _ in range(600):
        action = _balance(ref.unwrapped.state)
        state = state._replace(physics=envs.cartpole_state(ref.unwrapped.state).physics)
        _, ref_reward, ref_term, ref_trunc, _ = ref.step(action)
        _, state, reward, term, trunc, info = _STEP(_KEY, state, jnp.int32(action))
        np.testing.assert_allclose(
            info["final_obs"], ref.unwrapped.state, atol=_TOL, rtol=0
        )
        assert float(reward) == ref_reward
        assert (bool(term), bool(trunc)) == (ref_term, ref_trunc)
        if ref_term or ref_trunc:
            break
    assert (ref_term, ref_trunc) == (False, True)
    assert int(info["episode_length"]) == ref._elapsed_steps == 500
    assert float(info["episode_return"]) == 500.0
    assert int(state.time) == 0


def test_time_limit_from_a_given_state():
    state = envs.cartpole_state([0.0, 0.0, 0.0, 0.0], time=498, episode_return=498.0)
    _, state, _, term, trunc, info = _STEP(_KEY, state, jnp.int32(1))
    assert not bool(term) and not bool(trunc) and int(state.time) == 499
    _, state, _, term, trunc, info = _STEP(_KEY, state, jnp.int32(0))
    assert not bool(term) and bool(trunc)
    assert int(info["episode_length"]) == 500 and float(info["episode_return"]) == 500
    assert int(state.time) == 0


def test_terminating_step_is_both_terminated_and_truncated_at_the_limit():
    """As gymnasium's TimeLimit: the limit truncates whatever the termination."""
    env = envs.make("CartPole-v1", max_episode_steps=3)
    state = envs.cartpole_state([2.399, 1.0, 0.0, 0.0], time=2)
    _, _, _, term, trunc, _ = jax.jit(env.step)(_KEY, state, jnp.int32(1))
    assert bool(term) and bool(trunc)


def test_jit_and_no_jit_agree():
    state = envs.cartpole_state([0.1, -0.2, 0.05, 0.3])
    for action in (0, 1):
        jitted = _STEP(_KEY, state, jnp.int32(action))
        plain = _ENV.step(_KEY, state, jnp.int32(action))
        chex.assert_trees_all_close(jitted, plain, atol=1e-7)


def test_specs():
    chex.assert_equal(_ENV.observation_spec.shape, (4,))
    chex.assert_equal(_ENV.observation_spec.dtype, np.float32)
    chex.assert_equal(_ENV.action_spec, envs.discrete_spec(2))
    high = gymnasium.make("CartPole-v1").observation_space.high
    np.testing.assert_allclose(_ENV.observation_spec.maximum, high)
    obs, state = _ENV.reset(_KEY)
    chex.assert_shape(obs, (4,))
    chex.assert_type(obs, jnp.float32)
    assert np.all(np.abs(obs) <= 0.05)
    with pytest.raises(ValueError, match="shape"):
        envs.cartpole_state([0.0, 0.0])
