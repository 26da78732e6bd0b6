"""Pre-drawn randomness: a rollout's random draws made before its loop of steps.

`ActionDist.draw` / `sample_drawn`, `Agent.draw` / `act_drawn` and
`Environment.draw` / `step_drawn` split each random function into its draws and
the rest; the on-policy training loop makes a rollout's draws in one batched call
each (`agents.ppo.training.make_on_policy_train`). These tests pin the contract:
the split functions give exactly what the whole ones give, and a run with the
draws made up front is the run made step by step.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

from agents import envs, ppo
from agents.ppo import training
from agents.ppo.agent import make_act_drawn
from agents.ppo.networks import actor_critic, categorical, gaussian
from agents.ppo.training import drawn_bytes, make_on_policy_train
from tests.agents.test_envs_api import _CounterEnv, _random_actions

_ROWS = 6


def _keys(typed: bool) -> jax.Array:
    keys = jax.random.split(jax.random.key(0), _ROWS)
    return keys if typed else jax.random.key_data(keys)


class DrawnSamplingTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(True, False)
    def test_categorical_drawn_equals_per_row_keys(self, typed):
        dist = categorical(3)
        logits = jax.random.normal(jax.random.key(1), (_ROWS, 3))
        keys = _keys(typed)

        @self.variant
        def both(keys, logits):
            noise = jax.vmap(dist.draw)(keys)
            return dist.sample(keys, logits), dist.sample_drawn(logits, noise), noise

        sampled, drawn, noise = both(keys, logits)
        chex.assert_shape(noise, (_ROWS, 3))
        chex.assert_type([sampled, drawn], jnp.int32)
        chex.assert_trees_all_equal(sampled, drawn)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(True, False)
    def test_gaussian_drawn_equals_per_row_keys(self, typed):
        dist = gaussian(2)
        out = (jax.random.normal(jax.random.key(2), (_ROWS, 2)), jnp.array([0.3, -1.0]))
        keys = _keys(typed)

        @self.variant
        def both(keys, mean, log_std):
            noise = jax.vmap(dist.draw)(keys)
            return dist.sample(keys, (mean, log_std)), dist.sample_drawn(
                (mean, log_std), noise
            )

        sampled, drawn = both(keys, *out)
        chex.assert_shape(drawn, (_ROWS, 2))
        chex.assert_type(drawn, jnp.float32)
        chex.assert_trees_all_equal(sampled, drawn)

    def test_a_dist_of_unknown_size_has_no_draw(self):
        assert categorical().draw is None and gaussian().draw is None
        networks = actor_critic(
            envs.box_spec((4,)), envs.discrete_spec(2), hidden=(8,)
        )._replace(dist=categorical())
        assert make_act_drawn(networks) == {"draw": None, "act_drawn": None}


@pytest.mark.parametrize(
    "env_id, kwargs", [("CartPole-v1", {}), ("Pendulum-v1", {"max_episode_steps": 3})]
)
def test_agent_act_drawn_equals_act(env_id, kwargs):
    env = envs.make(env_id, **kwargs)
    config = ppo.PPOConfig(hidden=(16, 16))
    agent = ppo.ppo(
        config, env.observation_spec, env.action_spec, optax_adam(), num_updates=1
    )
    obs = jax.random.normal(jax.random.key(3), (_ROWS, *env.observation_spec.shape))
    state = agent.init(jax.random.key(4), obs)
    keys = _keys(typed=False)

    @jax.jit
    def both(state, keys, obs):
        return agent.act(state, keys, obs), agent.act_drawn(
            state, agent.draw(keys), obs
        )

    acted, drawn = both(state, keys, obs)
    chex.assert_shape(drawn[1:], [(_ROWS,), (_ROWS,)])
    chex.assert_trees_all_equal(acted, drawn)


def optax_adam():
    return optax.adam(1e-3)


_ENVS = {
    "CartPole-v1": lambda: envs.make("CartPole-v1", max_episode_steps=4),
    "Catch": lambda: envs.make("Catch"),
    "Pendulum-v1": lambda: envs.make("Pendulum-v1", max_episode_steps=4),
    "gymnax": lambda: envs.from_gymnax(_CounterEnv()),
}


class EnvDrawnTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*sorted(_ENVS))
    def test_step_drawn_of_draw_equals_step(self, env_id):
        env = _ENVS[env_id]()
        n, steps = 5, 12  # Long enough for episodes to end and reset.
        keys = jax.random.split(jax.random.key(5), (steps + 1, n))
        actions = _random_actions(env, jax.random.key(6), (steps, n))

        @self.variant
        def rollouts(keys, actions):
            _, state = jax.vmap(env.reset)(keys[0])

            def body(states, inputs):
                key, action = inputs
                whole = jax.vmap(env.step)(key, states[0], action)
                split = jax.vmap(env.step_drawn)(
                    jax.vmap(env.draw)(key), states[1], action
                )
                return (whole.state, split.state), (whole, split)

            return jax.lax.scan(body, (state, state), (keys[1:], actions))[1]

        whole, split = rollouts(keys, actions)
        assert bool(jnp.any(whole.terminated | whole.truncated))
        chex.assert_trees_all_equal(whole, split)

    def test_drawn_step_of_an_env_without_draws_is_its_step(self):
        env = envs.make("CartPole-v1")._replace(draw=None, step_drawn=None)
        draw, step = envs.drawn_step(env)
        key = jax.random.key(7)
        assert draw(key) is key and step is env.step
        assert envs.drawn_step(envs.make("Catch"))[0] is not None

    def test_drawn_bytes_counts_every_leaf(self):
        env = envs.make("CartPole-v1")
        # step key [2] uint32, reset obs [4] f32, physics [4] f32, time,
        # episode return: 8 + 16 + 16 + 4 + 4 bytes.
        assert drawn_bytes(env.draw, 10) == 10 * 48
        assert drawn_bytes(lambda key: key, 3) == 3 * 8


def _trainer(env, agent, num_updates=3):
    return make_on_policy_train(
        env, agent, num_envs=4, num_steps=16, num_updates=num_updates
    )


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_training_with_predrawn_randomness_is_the_step_by_step_run(env_id):
    env = envs.make(env_id, max_episode_steps=20)  # Resets within the rollouts.
    config = ppo.PPOConfig(num_steps=16, num_minibatches=2, hidden=(16, 16))
    agent = ppo.ppo(
        config, env.observation_spec, env.action_spec, optax_adam(), num_updates=3
    )
    key = jax.random.key(8)
    predrawn = _trainer(env, agent)
    stepwise = _trainer(env._replace(draw=None), agent._replace(draw=None))
    state_a, metrics_a = predrawn.train(key)
    state_b, metrics_b = stepwise.train(key)
    assert int(metrics_a["episodes"].sum()) > 0
    # Same keys and actions; only the compiled programs differ (rounding of the
    # float physics can differ in the last bit between two programs).
    chex.assert_trees_all_equal(state_a.rng, state_b.rng)
    chex.assert_trees_all_equal(metrics_a["episodes"], metrics_b["episodes"])
    chex.assert_trees_all_close(state_a, state_b, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(metrics_a, metrics_b, rtol=1e-5, atol=1e-6)


def test_environment_draws_above_the_size_cap_are_made_step_by_step(monkeypatch):
    env = envs.make("CartPole-v1", max_episode_steps=20)
    config = ppo.PPOConfig(num_steps=16, num_minibatches=2, hidden=(16, 16))
    agent = ppo.ppo(
        config, env.observation_spec, env.action_spec, optax_adam(), num_updates=2
    )
    key = jax.random.key(9)
    state_a, _ = _trainer(env, agent, 2).train(key)
    monkeypatch.setattr(training, "MAX_DRAWN_BYTES", 0)
    calls = []
    counted = env._replace(draw=lambda k: calls.append(1) or env.draw(k))
    trainer = _trainer(counted, agent, 2)
    calls.clear()  # `drawn_bytes` traced it once, for the shapes
    state_b, _ = trainer.train(key)
    assert not calls  # the environment's own `step` made its draws
    np.testing.assert_allclose(
        np.asarray(state_a.obs), np.asarray(state_b.obs), rtol=1e-5, atol=1e-6
    )
    chex.assert_trees_all_equal(state_a.rng, state_b.rng)
