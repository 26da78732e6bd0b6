"""Tests for agents.dqn.loops and agents.dqn.rollout: training on JAX-native envs."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import agents.dqn
from agents import envs
from agents.dqn import (
    Agent,
    NStepWindow,
    as_dqn_config,
    dqn,
    evaluate,
    make_train,
    n_step_transitions,
    q_network,
)
from agents.dqn.rollout import make_core

_CONFIG = {
    "hidden": [8],
    "replay": {"capacity": 64, "batch_size": 4, "min_size": 8},
    "train_freq": 3,
    "gradient_steps": 2,
    "target_update_period": 3,
    "exploration": {"start": 1.0, "end": 0.1, "steps": 20},
}
_ITERATIONS = 4  # 2 envs x 3 steps x 4 iterations = 24 steps


@pytest.fixture(scope="module")
def trainer():
    return make_train(
        envs.make("CartPole-v1"),
        _CONFIG,
        optax.adam(1e-3),
        num_envs=2,
        total_env_steps=24,
    )


@pytest.fixture(scope="module")
def train(trainer):
    return jax.jit(trainer.train)


def _assert_trees_close(a, b):
    chex.assert_trees_all_close(a, b, rtol=1e-5, atol=1e-6)


def test_train_metrics_and_state(trainer, train):
    assert trainer.num_iterations == _ITERATIONS
    assert trainer.steps_per_iteration == 6
    runner, metrics = train(jax.random.key(0))
    expected = {
        "env_steps", "updates", "epsilon", "episodes", "episode_return",
        "episode_length", "loss", "q_mean", "td_abs", "grad_norm", "learning",
    }  # fmt: skip
    assert set(metrics) == expected
    for value in metrics.values():
        chex.assert_shape(value, (_ITERATIONS,))
    np.testing.assert_array_equal(metrics["env_steps"], [6, 12, 18, 24])
    # The replay holds 6, 12, ... transitions: learning starts at 8.
    np.testing.assert_array_equal(metrics["learning"], [0, 1, 1, 1])
    np.testing.assert_array_equal(metrics["updates"], [0, 2, 4, 6])
    assert float(metrics["loss"][0]) == 0.0 and float(metrics["loss"][1]) > 0.0
    # Epsilon of each iteration's last act, taken after 4, 10, 16, 22 steps.
    last_act = np.arange(6, 25, 6) - 2
    expected_epsilon = 1.0 - 0.9 * np.minimum(last_act, 20) / 20
    np.testing.assert_allclose(metrics["epsilon"], expected_epsilon, rtol=1e-5)
    assert int(runner.replay.size) == 24 and int(runner.env_steps) == 24
    assert int(runner.iteration) == _ITERATIONS
    # A checkpointable pytree: arrays only.
    for leaf in jax.tree.leaves(runner):
        assert isinstance(leaf, jax.Array)


def test_vmap_over_seeds_equals_single_runs(train, trainer):
    keys = jax.random.split(jax.random.key(1), 2)
    batched_runner, batched_metrics = jax.jit(jax.vmap(trainer.train))(keys)
    singles = [train(key) for key in keys]
    for i, (runner, metrics) in enumerate(singles):
        _assert_trees_close(jax.tree.map(lambda x, i=i: x[i], batched_metrics), metrics)
        _assert_trees_close(
            jax.tree.map(lambda x, i=i: x[i], batched_runner.agent), runner.agent
        )
    # Two seeds, two different runs.
    p0, p1 = (jax.tree.leaves(runner.agent.params)[0] for runner, _ in singles)
    assert not np.allclose(p0, p1)


def test_run_in_chunks_equals_one_run(train, trainer):
    key = jax.random.key(2)
    run = jax.jit(trainer.run, static_argnums=1)
    runner, first = run(jax.jit(trainer.init)(key), 2)
    runner, second = run(runner, 2)
    whole_runner, whole = train(key)
    chunks = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), first, second)
    chex.assert_trees_all_equal(chunks, whole)
    chex.assert_trees_all_equal(
        jax.tree.map(jax.random.key_data, runner.rng),
        jax.tree.map(jax.random.key_data, whole_runner.rng),
    )
    chex.assert_trees_all_equal(runner._replace(rng=0), whole_runner._replace(rng=0))


def test_runner_state_checkpoint_round_trip(train, trainer, tmp_path):
    from jaxlab.checkpoint import Checkpointer, tree_equal

    runner, _ = train(jax.random.key(0))
    with Checkpointer(tmp_path) as checkpointer:
        checkpointer.save(4, runner)
        template = jax.jit(trainer.init)(jax.random.key(9))
        restored, _ = checkpointer.restore(template)
    assert tree_equal(restored, runner)


def _window(terminated, truncated, n=3):
    """A window of one environment with rewards 1, 2, 4 and next_obs = k."""
    return NStepWindow(
        obs=jnp.full((n, 1, 1), -1.0),
        action=jnp.array([[2], [0], [1]][:n], jnp.int32),
        reward=jnp.array([[1.0], [2.0], [4.0]][:n]),
        terminated=jnp.array(terminated)[:, None],
        truncated=jnp.array(truncated)[:, None],
        next_obs=jnp.arange(n, dtype=jnp.float32).reshape(n, 1, 1),
        fill=jnp.int32(n),
    )


class NStepTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        # (terminated, truncated): reward, discount, index of next_obs.
        ("no_end", [0, 0, 0], [0, 0, 0], 1 + 0.5 * 2 + 0.25 * 4, 0.125, 2),
        ("terminated_first", [1, 0, 0], [0, 0, 0], 1.0, 0.0, 0),
        ("terminated_mid", [0, 1, 0], [0, 0, 0], 2.0, 0.0, 1),
        # Truncation is not termination: bootstrap from the true last obs.
        ("truncated_first", [0, 0, 0], [1, 0, 0], 1.0, 0.5, 0),
        ("truncated_mid", [0, 0, 0], [0, 1, 0], 2.0, 0.25, 1),
        ("truncated_last", [0, 0, 0], [0, 0, 1], 3.0, 0.125, 2),
        ("both", [0, 1, 0], [0, 1, 0], 2.0, 0.0, 1),
        ("after_end_ignored", [0, 1, 1], [0, 0, 1], 2.0, 0.0, 1),
    )
    def test_hand_computed(self, terminated, truncated, reward, discount, last):
        window = _window(np.array(terminated, bool), np.array(truncated, bool))
        out = self.variant(n_step_transitions, static_argnums=1)(window, 0.5)
        np.testing.assert_allclose(out.reward, [reward])
        np.testing.assert_allclose(out.discount, [discount])
        np.testing.assert_allclose(out.next_obs, [[float(last)]])
        np.testing.assert_array_equal(out.action, [2])
        np.testing.assert_allclose(out.obs, [[-1.0]])

    def test_one_step(self):
        window = _window(np.array([1]), np.array([0]), n=1)
        out = n_step_transitions(window, 0.9)
        np.testing.assert_allclose(out.discount, [0.0])
        window = _window(np.array([0]), np.array([1]), n=1)
        np.testing.assert_allclose(n_step_transitions(window, 0.9).discount, [0.9])


def _collect(env, num_steps, **overrides):
    """Runs the shared `Core` (act, env step, record) without learning."""
    config = as_dqn_config(None, hidden=[4], replay={"capacity": 64, "min_size": 64},
                           **overrides)  # fmt: skip
    agent = dqn(
        q_network(env.action_spec.num_values, hidden=[4]), optax.sgd(0.1), config
    )
    core = make_core(agent, config, num_envs=2, obs_spec=env.observation_spec)

    @jax.jit
    def steps(key):
        obs, env_state = jax.vmap(env.reset)(jax.random.split(key, 2))
        runner = core.init(key, obs, env_state)

        def one(runner, key):
            actions, _ = core.act(runner, key)
            ts = jax.vmap(env.step)(jax.random.split(key, 2), runner.env_state, actions)
            runner = core.record(
                runner._replace(env_state=ts.state), actions, ts.reward,
                ts.terminated, ts.truncated, ts.info["final_obs"], ts.obs,
            )  # fmt: skip
            return runner, (ts.terminated, ts.truncated)

        return jax.lax.scan(one, runner, jax.random.split(key, num_steps))

    runner, flags = steps(jax.random.key(0))
    data = jax.device_get(runner.replay.data)
    return jax.tree.map(lambda x: x[: int(runner.replay.size)], data), flags


def _successors(env, obs, action):
    """The true next observations of CartPole (obs, action) pairs, [B, 4]."""

    @jax.jit
    def fn(obs, action):
        states = jax.vmap(envs.cartpole_state)(obs)
        step = jax.vmap(env.step, in_axes=(None, 0, 0))
        return step(jax.random.key(0), states, action).info["final_obs"]

    return fn(obs, action)


def test_truncation_bootstraps_from_final_obs():
    # Episodes of 3 steps: CartPole cannot fall that fast, so every episode ends
    # by truncation (time limit), never by termination.
    env = envs.make("CartPole-v1", max_episode_steps=3)
    data, (terminated, truncated) = _collect(env, 9, discount=0.5)
    assert not terminated.any() and int(truncated.sum()) == 6
    assert data.action.shape == (18,)
    # Truncated steps keep the discount and bootstrap from the true last
    # observation: next_obs is the physics successor of obs, not a reset obs.
    np.testing.assert_allclose(data.discount, 0.5)
    np.testing.assert_allclose(data.reward, 1.0)
    successors = _successors(env, data.obs, data.action)
    np.testing.assert_allclose(data.next_obs, successors, atol=1e-6)
    # Consecutive transitions chain, except across the 3-step time limit.
    follows = np.isclose(data.next_obs[:-2], data.obs[2:], atol=1e-6).all(-1)
    np.testing.assert_array_equal(follows, np.tile([1, 1, 1, 1, 0, 0], 3)[:-2])


def test_n_step_truncation_bootstraps_from_final_obs():
    env = envs.make("CartPole-v1", max_episode_steps=3)
    data, _ = _collect(env, 9, discount=0.5, n_step=2)
    assert data.action.shape == (16,)  # the window fills after 2 steps
    # Windows cut by the time limit: one reward, discount gamma, true last obs.
    cut = np.isclose(data.discount, 0.5)
    # Window starts t = 0..7 (x 2 envs); the time limit ends steps 2, 5, 8: a
    # window [2, 3] or [5, 6] is cut after one step, [1, 2] keeps both.
    np.testing.assert_array_equal(cut, np.repeat([0, 0, 1, 0, 0, 1, 0, 0], 2))
    np.testing.assert_allclose(data.discount[~cut], 0.25)
    np.testing.assert_allclose(data.reward, np.where(cut, 1.0, 1.5))
    successors = _successors(env, data.obs, data.action)
    np.testing.assert_allclose(data.next_obs[cut], successors[cut], atol=1e-6)


def test_termination_zeroes_the_discount():
    # Catch with 3 rows: every episode terminates after 2 steps.
    data, (terminated, truncated) = _collect(envs.make("Catch", rows=3, columns=3), 4)
    assert not truncated.any()
    ended = np.asarray(terminated).reshape(-1)  # [steps * envs], as stored
    np.testing.assert_array_equal(ended, np.tile([0, 0, 1, 1], 2).astype(bool))
    np.testing.assert_allclose(data.discount, np.where(ended, 0.0, 0.99))
    np.testing.assert_array_equal(data.reward != 0, ended)


def _constant_agent(action: int) -> Agent:
    def act(state, key, obs, epsilon):
        return jnp.full((obs.shape[0],), action, jnp.int32)

    return Agent(init=None, act=act, update=None)


def test_evaluate_catch_matches_reference():
    env = envs.make("Catch")
    fn = lambda key: evaluate(env, _constant_agent(1), None, key, num_episodes=16)
    key = jax.random.key(3)
    score = jax.jit(fn)(key)
    # Reference: staying put catches exactly the balls dropped in column 2.
    reset_key, _ = jax.random.split(key)
    _, states = jax.vmap(env.reset)(jax.random.split(reset_key, 16))
    expected = np.mean(np.where(states.physics.ball_column == 2, 1.0, -1.0))
    np.testing.assert_allclose(score, expected)


def test_evaluate_counts_time_limit_and_partial_returns():
    env = envs.make("CartPole-v1", max_episode_steps=5)
    score = evaluate(env, _constant_agent(0), None, jax.random.key(0), num_episodes=3)
    np.testing.assert_allclose(score, 5.0)
    score = evaluate(
        env, _constant_agent(0), None, jax.random.key(0), num_episodes=3, max_steps=2
    )
    np.testing.assert_allclose(score, 2.0)


def test_notebook_one_liner():
    state, metrics = agents.dqn.train(
        "Catch",
        total_steps=40,
        seed=0,
        num_envs=2,
        hidden=[8],
        replay={"capacity": 40, "batch_size": 4, "min_size": 10},
        train_freq=2,
    )
    assert int(state.steps) > 0
    assert metrics["env_steps"][-1] == 40
    with pytest.raises(Exception, match="replay.capacity"):
        agents.dqn.train("Catch", total_steps=10, replay={"capacity": 0})


def test_rejects_continuous_actions():
    with pytest.raises(ValueError, match="discrete"):
        make_train(envs.make("Pendulum-v1"), {}, optax.sgd(0.1), num_envs=1,
                   total_env_steps=10)  # fmt: skip
