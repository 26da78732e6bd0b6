"""Tests for agents.dqn.agent and agents.dqn.networks."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import parameterized

from agents.dqn import Transition, as_dqn_config, dqn, epsilon_greedy, q_network

_OBS_DIM, _ACTIONS, _B = 3, 4, 16


def _batch(seed: int = 0, batch: int = _B) -> Transition:
    rng = np.random.default_rng(seed)
    return Transition(
        obs=rng.normal(size=(batch, _OBS_DIM)).astype(np.float32),
        action=rng.integers(0, _ACTIONS, batch).astype(np.int32),
        reward=rng.normal(size=batch).astype(np.float32),
        discount=np.where(rng.random(batch) < 0.2, 0.0, 0.9).astype(np.float32),
        next_obs=rng.normal(size=(batch, _OBS_DIM)).astype(np.float32),
    )


def _agent(optimizer=None, **overrides):
    config = as_dqn_config(None, hidden=[16], **overrides)
    network = q_network(_ACTIONS, hidden=config.hidden, dueling=config.dueling)
    agent = dqn(network, optimizer or optax.adam(1e-2), config)
    state = agent.init(jax.random.key(0), jnp.zeros((1, _OBS_DIM)))
    return agent, network, state


class NetworkTest(chex.TestCase):
    @parameterized.parameters(False, True)
    def test_shapes_and_dueling_identity(self, dueling):
        net = q_network(3, hidden=[8, 8], dueling=dueling)
        obs = jnp.ones((5, 2, 2))  # flattened to [5, 4]
        params = net.init(jax.random.key(0), obs)
        q = net.apply(params, obs)
        chex.assert_shape(q, (5, 3))
        chex.assert_type(q, jnp.float32)
        if dueling:
            # q = v + a - mean(a), so mean_a q = v.
            value_w = params["q_network/value"]
            x = obs.reshape(5, -1)
            for i in range(2):
                layer = params[f"q_network/linear_{i}"]
                x = jax.nn.relu(x @ layer["w"] + layer["b"])
            v = x @ value_w["w"] + value_w["b"]
            np.testing.assert_allclose(q.mean(-1, keepdims=True), v, rtol=1e-5)

    def test_initializers(self):
        obs = jnp.ones((1, 16))
        params = q_network(2, hidden=[64]).init(jax.random.key(0), obs)
        for name, fan_in in (("linear_0", 16), ("q", 64)):
            for leaf in params[f"q_network/{name}"].values():  # w and b
                bound = 1 / np.sqrt(fan_in)
                self.assertLessEqual(float(jnp.max(jnp.abs(leaf))), bound)
                self.assertGreater(float(jnp.std(leaf)), 0.4 * bound)
        params = q_network(2, hidden=[64], init="haiku").init(jax.random.key(0), obs)
        np.testing.assert_array_equal(params["q_network/linear_0"]["b"], 0.0)
        with self.assertRaises(ValueError):
            q_network(2, init="glorot")

    def test_linear_q_function_and_bad_args(self):
        net = q_network(2, hidden=[])
        params = net.init(jax.random.key(0), jnp.ones((1, 3)))
        self.assertEqual(set(params), {"q_network/q"})
        for kwargs in ({"num_actions": 0}, {"num_actions": 2, "hidden": [0]}):
            with self.assertRaises(ValueError):
                q_network(**kwargs)
        with self.assertRaises(ValueError):
            q_network(2, activation="nope")


class ActTest(chex.TestCase):
    def test_greedy_and_jit_agree_with_no_jit(self):
        agent, network, state = _agent()
        obs = jnp.asarray(_batch(batch=64).obs)
        jitted = jax.jit(agent.act)
        q = network.apply(state.params, obs)
        for epsilon in (0.0, 0.3):
            key = jax.random.key(7)
            actions = agent.act(state, key, obs, epsilon)
            chex.assert_shape(actions, (64,))
            chex.assert_type(actions, jnp.int32)
            np.testing.assert_array_equal(actions, jitted(state, key, obs, epsilon))
            greedy = np.asarray(actions) == np.asarray(jnp.argmax(q, -1))
            self.assertEqual(greedy.all(), epsilon == 0.0)

    def test_epsilon_one_is_uniform(self):
        q = jnp.tile(jnp.arange(_ACTIONS, dtype=jnp.float32), (4000, 1))
        actions = epsilon_greedy(jax.random.key(0), q, 1.0)
        counts = np.bincount(np.asarray(actions), minlength=_ACTIONS) / 4000
        np.testing.assert_allclose(counts, 1 / _ACTIONS, atol=0.03)
        # epsilon 0.2: greedy (action 3) with probability 0.8 + 0.2 / 4.
        actions = epsilon_greedy(jax.random.key(1), q, 0.2)
        self.assertAlmostEqual(float(jnp.mean(actions == 3)), 0.85, delta=0.03)


class UpdateTest(chex.TestCase):
    @parameterized.product(double=(True, False), loss=("huber", "l2"))
    def test_update_reduces_loss_on_fixed_batch(self, double, loss):
        agent, _, state = _agent(double=double, loss=loss, target_update_period=1000)
        batch = jax.tree.map(jnp.asarray, _batch())

        def repeat(state, _):
            return agent.update(state, batch)

        state, metrics = jax.jit(lambda s: jax.lax.scan(repeat, s, None, length=30))(
            state
        )
        self.assertLess(float(metrics["loss"][-1]), 0.5 * float(metrics["loss"][0]))
        self.assertEqual(int(state.steps), 30)
        self.assertEqual(set(metrics), {"loss", "q_mean", "td_abs", "grad_norm"})

    def test_loss_matches_hand_computed_double_q(self):
        # One transition; the online net picks the next action, the target
        # net evaluates it.
        agent, network, state = _agent(double=True, loss="l2")
        state = state._replace(
            target_params=jax.tree.map(lambda p: p * 0.5, state.params)
        )
        batch = jax.tree.map(jnp.asarray, _batch(batch=1))
        _, metrics = jax.jit(agent.update)(state, batch)
        q_tm1 = network.apply(state.params, batch.obs)[0]
        q_sel = network.apply(state.params, batch.next_obs)[0]
        q_val = network.apply(state.target_params, batch.next_obs)[0]
        target = batch.reward[0] + batch.discount[0] * q_val[jnp.argmax(q_sel)]
        td = target - q_tm1[batch.action[0]]
        np.testing.assert_allclose(metrics["loss"], 0.5 * td**2, rtol=1e-5)

    def test_periodic_target_update(self):
        agent, _, state = _agent(target_update_period=3)
        initial = state.params
        batch = jax.tree.map(jnp.asarray, _batch())
        update = jax.jit(agent.update)
        for step in range(1, 7):
            state, _ = update(state, batch)
            if step % 3 == 0:
                chex.assert_trees_all_equal(state.target_params, state.params)
                copied = state.params
            elif step < 3:
                chex.assert_trees_all_equal(state.target_params, initial)
            else:
                chex.assert_trees_all_equal(state.target_params, copied)

    @parameterized.parameters((1, 0.25), (2, 0.5))
    def test_polyak_target_update(self, period, tau):
        agent, _, state = _agent(target_update_period=period, target_tau=tau)
        batch = jax.tree.map(jnp.asarray, _batch())
        target = state.target_params
        update = jax.jit(agent.update)
        for step in range(1, 5):
            state, _ = update(state, batch)
            if step % period == 0:
                target = jax.tree.map(
                    lambda p, t: tau * p + (1 - tau) * t, state.params, target
                )
            chex.assert_trees_all_close(state.target_params, target, rtol=1e-6)
