"""GymnasiumVecEnv: same-step auto-reset transitions against single gymnasium envs."""

import chex
import gymnasium
import numpy as np
import pytest

from agents import envs


def _check_against_single_envs(env_id, num_envs, seed, num_steps, actions_fn, **kw):
    """Every transition of the vector env equals the matching single-env one."""
    vec = envs.GymnasiumVecEnv(env_id, num_envs, seed=seed, **kw)
    refs = [gymnasium.make(env_id, **kw) for _ in range(num_envs)]
    obs = vec.reset()
    ref_obs = np.stack([r.reset(seed=seed + i)[0] for i, r in enumerate(refs)])
    np.testing.assert_array_equal(obs, ref_obs)
    rng = np.random.default_rng(seed)
    returns, lengths, num_done = np.zeros(num_envs), np.zeros(num_envs), 0
    for _ in range(num_steps):
        actions = actions_fn(rng, num_envs)
        next_obs, reward, term, trunc, info = vec.step(actions)
        chex.assert_shape([reward, term, trunc], (num_envs,))
        chex.assert_equal_shape([next_obs, info["final_obs"], obs])
        for i, ref in enumerate(refs):
            # The transition (obs, a, r, final_obs, term, trunc) of env i.
            action = np.asarray(actions[i]).astype(ref.action_space.dtype)
            r_next, r_reward, r_term, r_trunc, _ = ref.step(action)
            np.testing.assert_array_equal(info["final_obs"][i], r_next)
            assert reward[i] == np.float32(r_reward)
            assert (term[i], trunc[i]) == (r_term, r_trunc)
            returns[i] += r_reward
            lengths[i] += 1
            assert info["episode_return"][i] == np.float32(returns[i])
            assert info["episode_length"][i] == lengths[i]
            if r_term or r_trunc:
                # Same step: obs is already the next episode's first one.
                np.testing.assert_array_equal(next_obs[i], ref.reset()[0])
                returns[i], lengths[i] = 0.0, 0
                num_done += 1
            else:
                np.testing.assert_array_equal(next_obs[i], r_next)
        obs = next_obs
    vec.close()
    return num_done


def _discrete(rng, n):
    return rng.integers(0, 2, size=n)


def test_cartpole_transitions_never_cross_episodes():
    num_done = _check_against_single_envs("CartPole-v1", 4, 3, 300, _discrete)
    assert num_done >= 20  # Random CartPole episodes last ~20 steps.


def test_time_limit_truncation():
    num_done = _check_against_single_envs(
        "CartPole-v1", 2, 0, 12, lambda rng, n: np.zeros(n, int), max_episode_steps=4
    )
    assert num_done >= 4


def test_pendulum_box_actions_and_specs():
    def torques(rng, n):
        return rng.uniform(-3, 3, size=(n, 1))  # float64, cast to the space dtype.

    assert _check_against_single_envs("Pendulum-v1", 2, 1, 210, torques) == 2
    with envs.GymnasiumVecEnv("Pendulum-v1", 3, seed=0) as vec:
        chex.assert_equal(vec.action_spec, envs.make("Pendulum-v1").action_spec)
        chex.assert_equal(
            vec.observation_spec, envs.make("Pendulum-v1").observation_spec
        )
        obs = vec.reset()
        chex.assert_shape(obs, (3, 3))
        chex.assert_type(obs, np.float32)
        with pytest.raises(AssertionError):
            vec.step(np.zeros(3))  # Needs [3, 1].


def test_specs_match_the_jax_cartpole():
    with envs.GymnasiumVecEnv("CartPole-v1", 2, seed=0) as vec:
        jax_env = envs.make("CartPole-v1")
        assert vec.name == "CartPole-v1" and vec.num_envs == 2
        chex.assert_equal(vec.observation_spec, jax_env.observation_spec)
        chex.assert_equal(vec.action_spec, jax_env.action_spec)
        vec.reset()
        obs, reward, term, trunc, info = vec.step(np.array([0, 1], np.int32))
        chex.assert_type([obs, reward, info["final_obs"]], np.float32)
        chex.assert_type([term, trunc], np.bool_)
        chex.assert_type(info["episode_length"], np.int32)


def test_discrete_observations():
    with envs.GymnasiumVecEnv("FrozenLake-v1", 2, seed=0) as vec:
        chex.assert_equal(vec.observation_spec, envs.discrete_spec(16))
        obs = vec.reset()
        chex.assert_shape(obs, (2,))
        chex.assert_type(obs, np.int32)


def test_async_equals_sync():
    actions = np.random.default_rng(0).integers(0, 2, size=(40, 2))
    outputs = []
    for vectorization in ("sync", "async"):
        with envs.GymnasiumVecEnv(
            "CartPole-v1", 2, seed=5, vectorization=vectorization
        ) as vec:
            outputs.append([vec.reset()] + [vec.step(a) for a in actions])
    chex.assert_trees_all_equal(*outputs)


class _DictObsEnv(gymnasium.Env):
    observation_space = gymnasium.spaces.Dict(
        {"position": gymnasium.spaces.Box(-1.0, 1.0, (2,))}
    )
    action_space = gymnasium.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return {"position": np.zeros(2, np.float32)}, {}

    def step(self, action):
        return {"position": np.zeros(2, np.float32)}, 0.0, False, False, {}


class _MultiDiscreteActionEnv(gymnasium.Env):
    observation_space = gymnasium.spaces.Box(-1.0, 1.0, (2,))
    action_space = gymnasium.spaces.MultiDiscrete([2, 3])


def test_unsupported_spaces_are_named_in_the_error():
    with pytest.raises(ValueError, match=r"_DictObsEnv: unsupported space Dict"):
        envs.GymnasiumVecEnv(_DictObsEnv, 2)
    with pytest.raises(ValueError, match=r"_MultiDiscreteActionEnv.*MultiDiscrete"):
        envs.GymnasiumVecEnv(_MultiDiscreteActionEnv, 1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_envs"):
        envs.GymnasiumVecEnv("CartPole-v1", 0)
    with pytest.raises(ValueError, match="vectorization"):
        envs.GymnasiumVecEnv("CartPole-v1", 2, vectorization="vector_entry_point")


def test_evaluation_plays_one_environment_per_episode():
    assert [envs.eval_env_count(n) for n in (1, 10, 32, 100)] == [1, 10, 32, 32]
    assert envs.eval_env_count(100) == envs.MAX_EVAL_ENVS
    with envs.GymnasiumVecEnv("CartPole-v1", envs.eval_env_count(4)) as env:
        # Four episodes in one round: each environment plays one.
        mean = envs.evaluate_policy(
            env, lambda obs: np.zeros(len(obs), np.int32), seed=0, num_episodes=4
        )
    assert 8 <= mean <= 12  # always pushing left ends CartPole in ~10 steps
