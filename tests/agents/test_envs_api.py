"""The functional environment API: registry, specs, auto-reset, batching."""

from typing import NamedTuple

import chex
import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import envs

_NUM_ENVS = 8
_NUM_STEPS = 20
# Short Pendulum episodes, so that truncations happen within the rollout.
_CASES = {
    "CartPole-v1": {},
    "Catch": {},
    "Pendulum-v1": {"max_episode_steps": 7},
}


def _random_actions(env: envs.Environment, key: jax.Array, shape: tuple[int, ...]):
    spec = env.action_spec
    if spec.is_discrete:
        return jax.random.randint(key, shape, 0, spec.num_values, jnp.int32)
    return jax.random.uniform(
        key, (*shape, *spec.shape), jnp.float32, minval=-3.0, maxval=3.0
    )


def _rollout(env, keys, actions, *, jit):
    """Steps a batch of envs: keys [T+1, N, 2], actions [T, N, ...]."""
    reset = jax.vmap(env.reset)
    step = jax.vmap(env.step)
    if jit:

        def run(keys, actions):
            _, state = reset(keys[0])

            def body(state, inputs):
                key_t, action_t = inputs
                result = step(key_t, state, action_t)
                return result.state, result

            return jax.lax.scan(body, state, (keys[1:], actions))[1]

        return jax.jit(run)(keys, actions)
    _, state = reset(keys[0])
    results = []
    for t in range(actions.shape[0]):
        result = step(keys[t + 1], state, actions[t])
        results.append(result)
        state = result.state
    return jax.tree.map(lambda *xs: jnp.stack(xs), *results)


@pytest.mark.parametrize("env_id", sorted(_CASES))
def test_auto_reset_batched_jit_equals_no_jit(env_id):
    env = envs.make(env_id, **_CASES[env_id])
    key_r, key_a = jax.random.split(jax.random.PRNGKey(42))
    keys = jax.random.split(key_r, (_NUM_STEPS + 1) * _NUM_ENVS).reshape(
        _NUM_STEPS + 1, _NUM_ENVS, -1
    )
    actions = _random_actions(env, key_a, (_NUM_STEPS, _NUM_ENVS))
    traj = _rollout(env, keys, actions, jit=True)
    chex.assert_trees_all_close(
        traj, _rollout(env, keys, actions, jit=False), atol=1e-5
    )

    obs_shape = (_NUM_STEPS, _NUM_ENVS, *env.observation_spec.shape)
    chex.assert_shape([traj.obs, traj.info["final_obs"]], obs_shape)
    chex.assert_type([traj.obs, traj.reward], jnp.float32)
    chex.assert_type([traj.terminated, traj.truncated], jnp.bool_)
    chex.assert_type(traj.info["episode_length"], jnp.int32)
    chex.assert_shape(traj.reward, (_NUM_STEPS, _NUM_ENVS))

    done = np.asarray(traj.terminated | traj.truncated)
    assert done.any(), "the rollout should finish some episodes"
    obs, final_obs = np.asarray(traj.obs), np.asarray(traj.info["final_obs"])
    np.testing.assert_array_equal(obs[~done], final_obs[~done])
    assert np.any(obs[done] != final_obs[done])
    # Fresh episodes after done steps.
    np.testing.assert_array_equal(np.asarray(traj.state.time)[done], 0)
    np.testing.assert_array_equal(np.asarray(traj.state.episode_return)[done], 0)
    # Episode statistics recomputed from the rewards.
    returns = np.zeros(_NUM_ENVS)
    lengths = np.zeros(_NUM_ENVS, np.int64)
    for t in range(_NUM_STEPS):
        returns += np.asarray(traj.reward[t])
        lengths += 1
        np.testing.assert_allclose(traj.info["episode_return"][t], returns, rtol=1e-5)
        np.testing.assert_array_equal(traj.info["episode_length"][t], lengths)
        returns[done[t]] = 0.0
        lengths[done[t]] = 0


def test_make_registry():
    assert envs.registered_ids() == (
        "CartPole-v1",
        "Catch",
        "Catch-bsuite",
        "Pendulum-v1",
    )
    assert envs.make("CartPole-v1").name == "CartPole-v1"
    assert envs.make("Catch").name == "Catch-bsuite"
    assert envs.make("Pendulum-v1").max_episode_steps == 200
    assert envs.make("CartPole-v1", max_episode_steps=200).max_episode_steps == 200
    with pytest.raises(ValueError, match=r"'Breakout'.*CartPole-v1"):
        envs.make("Breakout")
    with pytest.raises(ValueError, match="positive"):
        envs.make("CartPole-v1", max_episode_steps=0)


def test_specs_are_hashable_static_values():
    spec = envs.make("Pendulum-v1").observation_spec
    assert spec == envs.box_spec((3,), minimum=[-1, -1, -8], maximum=[1, 1, 8])
    assert spec.minimum == (-1.0, -1.0, -8.0)
    assert hash(spec) == hash(envs.make("Pendulum-v1").observation_spec)
    assert not spec.is_discrete and envs.discrete_spec(4).is_discrete
    assert envs.box_spec((2, 2), minimum=0, maximum=1).maximum == 1.0
    with pytest.raises(ValueError, match="num_values"):
        envs.discrete_spec(0)


def test_action_checks_at_trace_time():
    cartpole, pendulum = envs.make("CartPole-v1"), envs.make("Pendulum-v1")
    key = jax.random.PRNGKey(0)
    _, state = cartpole.reset(key)
    with pytest.raises(AssertionError):
        cartpole.step(key, state, jnp.float32(1.0))
    with pytest.raises(AssertionError):
        cartpole.step(key, state, jnp.array([1], jnp.int32))
    _, state = pendulum.reset(key)
    with pytest.raises(AssertionError):
        pendulum.step(key, state, jnp.float32(1.0))  # Needs shape [1].


# A minimal gymnax-style environment: a position moved by actions in {0, 1}.
class _CounterParams(NamedTuple):
    goal: int = 3
    max_steps_in_episode: int = 5


class _CounterState(NamedTuple):
    position: jax.Array
    time: jax.Array


class _CounterEnv:
    name = "Counter-gymnax"
    default_params = _CounterParams()

    def reset_env(self, key, params):
        state = _CounterState(jax.random.randint(key, (), 0, 2), jnp.int32(0))
        return self._obs(state), state

    def step_env(self, key, state, action, params):
        del key
        state = _CounterState(state.position + action, state.time + 1)
        done = (state.position >= params.goal) | (
            state.time >= params.max_steps_in_episode
        )
        return self._obs(state), state, jnp.float32(action), done, {}

    def _obs(self, state):
        return jnp.stack([state.position, state.time]).astype(jnp.float32)

    def observation_space(self, params):
        return gymnasium.spaces.Box(0.0, 10.0, (2,))

    def action_space(self, params):
        return gymnasium.spaces.Discrete(2)


def test_from_gymnax_keeps_final_obs_and_splits_done():
    env = envs.from_gymnax(_CounterEnv())
    assert env.name == "Counter-gymnax" and env.max_episode_steps == 5
    chex.assert_equal(env.action_spec, envs.discrete_spec(2))
    step = jax.jit(env.step)
    key = jax.random.PRNGKey(1)
    _, state = env.reset(key)
    start = int(state.physics.position)
    # Never moving: truncated by the time limit after 5 steps.
    for _ in range(5):
        result = step(key, state, jnp.int32(0))
        state = result.state
    assert bool(result.truncated) and not bool(result.terminated)
    np.testing.assert_array_equal(result.info["final_obs"], [start, 5.0])
    assert int(result.info["episode_length"]) == 5
    assert int(state.time) == 0 and float(result.obs[1]) == 0.0
    # Always moving: terminated at the goal.
    start = int(state.physics.position)
    for _ in range(3 - start):
        result = step(key, state, jnp.int32(1))
        state = result.state
    assert bool(result.terminated) and not bool(result.truncated)
    np.testing.assert_array_equal(result.info["final_obs"], [3.0, 3 - start])
    assert float(result.info["episode_return"]) == 3 - start
    # Batched.
    keys = jax.random.split(key, 4)
    obs, states = jax.vmap(env.reset)(keys)
    chex.assert_shape(obs, (4, 2))
    result = jax.vmap(env.step)(keys, states, jnp.ones(4, jnp.int32))
    chex.assert_shape(result.info["final_obs"], (4, 2))
