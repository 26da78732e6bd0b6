"""A2C and REINFORCE: smoke runs and loss decrease on fixed data."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pydantic
import pytest

from agents import a2c, envs, reinforce
from agents.ppo import Trajectory
from jaxlab.errors import ConfigError


def _rollout(env, agent, state, T=10, B=4, seed=0):
    """A real rollout of the initial policy, time-major [T, B] (one jitted scan)."""

    def step(carry, key):
        obs, env_state = carry
        k1, k2 = jax.random.split(key)
        action, log_prob, value = agent.act(state, k1, obs)
        ts = jax.vmap(env.step)(jax.random.split(k2, B), env_state, action)
        final_obs = ts.info["final_obs"]
        return (ts.obs, ts.state), Trajectory(
            obs,
            action,
            log_prob,
            value,
            ts.reward,
            ts.terminated,
            ts.truncated,
            final_obs,
        )

    @jax.jit
    def rollout(key):
        reset_key, key = jax.random.split(key)
        carry = jax.vmap(env.reset)(jax.random.split(reset_key, B))
        return jax.lax.scan(step, carry, jax.random.split(key, T))[1]

    return rollout(jax.random.PRNGKey(seed))


def test_a2c_repeated_updates_on_fixed_data_reduce_the_losses():
    env = envs.make("Pendulum-v1")  # A Gaussian policy; CartPole's runs below.
    config = a2c.A2CConfig(
        hidden=(16,), gamma=0.9, reward_scale=0.1, normalize_advantages=True
    )
    agent = a2c.a2c(config, env.observation_spec, env.action_spec, optax.adam(1e-2))
    state = agent.init(
        jax.random.PRNGKey(0), jnp.zeros((1, *env.observation_spec.shape))
    )
    trajectory = _rollout(env, agent, state)
    update = jax.jit(agent.update)
    history = []
    for i in range(20):
        state, metrics = update(state, trajectory, jax.random.PRNGKey(i))
        history.append(metrics)
    # Metrics are measured before each step: history[k] is after k steps.
    assert history[-1]["policy_loss"] < history[0]["policy_loss"]
    assert history[-1]["value_loss"] < history[0]["value_loss"]
    assert int(state.update_count) == 20
    assert np.isnan(history[0]["learning_rate"])  # plain optax: no stored rate


def test_a2c_trains_with_the_shared_loop():
    trainer = a2c.make_train(
        "CartPole-v1",
        {"name": "a2c", "num_steps": 5, "hidden": [8], "anneal_lr": True},
        {"name": "rmsprop", "learning_rate": 7e-4, "decay": 0.99, "eps": 1e-5},
        num_envs=4,
        total_env_steps=400,
    )
    state, metrics = trainer.train(jax.random.PRNGKey(0))
    assert trainer.num_updates == 20 and metrics["loss"].shape == (20,)
    assert int(state.env_steps) == 400
    np.testing.assert_allclose(
        metrics["learning_rate"], 7e-4 * (1 - np.arange(20) / 20), rtol=1e-5
    )
    assert np.all(np.isfinite(metrics["loss"]))


def test_a2c_config_errors_name_the_field():
    with pytest.raises(pydantic.ValidationError, match="num_steps"):
        a2c.A2CConfig(num_steps=0)
    with pytest.raises(ConfigError, match=r"agent\.gae_lambda"):
        a2c.make_train(
            "CartPole-v1", {"gae_lambda": 2.0}, {}, num_envs=2, total_env_steps=100
        )


def test_reinforce_updates_on_fixed_episodes_reduce_the_loss():
    env = envs.make("CartPole-v1", max_episode_steps=20)
    config = reinforce.ReinforceConfig(hidden=(16,))
    agent = reinforce.reinforce(
        config, env.observation_spec, env.action_spec, optax.adam(1e-2)
    )
    state = jax.jit(agent.init)(jax.random.PRNGKey(0), jnp.zeros((1, 4)))
    trajectory = _rollout(env, agent, state, T=20)
    # One padded episode per environment: mask the steps after the first end.
    done = trajectory.terminated | trajectory.truncated
    ended_before = jnp.cumsum(done, axis=0) - done
    mask = (ended_before == 0).astype(jnp.float32)
    episodes = reinforce.Episodes(
        trajectory.obs, trajectory.action, trajectory.reward * mask, mask
    )
    update = jax.jit(agent.update)
    losses = []
    for i in range(10):
        state, metrics = update(state, episodes, jax.random.PRNGKey(i))
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0] - 0.01


def test_reinforce_trains_on_whole_episodes():
    env = envs.make("CartPole-v1", max_episode_steps=50)
    trainer = reinforce.make_train(
        env,
        reinforce.ReinforceConfig(hidden=(8,)),
        {"name": "adam", "learning_rate": 1e-2},
        num_envs=4,
        total_env_steps=800,
    )
    state, metrics = trainer.train(jax.random.PRNGKey(0))
    assert trainer.num_updates == 4
    # Every update finishes one episode per environment.
    np.testing.assert_array_equal(metrics["episodes"], 4)
    np.testing.assert_array_equal(
        np.diff(metrics["env_steps"], prepend=0), 4 * metrics["episode_length"]
    )
    assert np.all(metrics["episode_return"] == metrics["episode_length"])


def test_reinforce_rejects_continuous_actions():
    env = envs.make("Pendulum-v1")
    with pytest.raises(ValueError, match="discrete"):
        reinforce.reinforce(
            reinforce.ReinforceConfig(),
            env.observation_spec,
            env.action_spec,
            optax.adam(1e-3),
        )
