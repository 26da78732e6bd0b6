"""Tests for agents.dqn.host: DQN on gymnasium environments (host loop)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agents.dqn import HostTrainer

_CONFIG = {
    "hidden": [8],
    "replay": {"capacity": 200, "batch_size": 8, "min_size": 40},
    "train_freq": 10,
    "gradient_steps": 2,
    "target_update_period": 4,
    "exploration": {"start": 1.0, "end": 0.1, "steps": 100},
}


@pytest.fixture(scope="module")
def host():
    with HostTrainer(
        "CartPole-v1", _CONFIG, optax.adam(1e-3), num_envs=2, total_env_steps=200
    ) as trainer:
        yield trainer


def test_gymnasium_smoke_run(host):
    assert host.num_iterations == 10 and host.steps_per_iteration == 20
    runner, metrics = host.train(jax.random.key(0))
    assert set(metrics) == {
        "env_steps", "updates", "epsilon", "episodes", "episode_return",
        "episode_length", "loss", "q_mean", "td_abs", "grad_norm", "learning",
    }  # fmt: skip
    for value in metrics.values():
        assert value.shape == (10,)
    np.testing.assert_array_equal(metrics["env_steps"], np.arange(20, 201, 20))
    np.testing.assert_array_equal(metrics["learning"], [0] + [1] * 9)  # min_size 40
    assert int(runner.agent.steps) == 18
    assert int(runner.replay.size) == 200
    # Random CartPole episodes last ~20 steps: several ended, with sane stats.
    assert metrics["episodes"].sum() >= 4
    finished = metrics["episodes"] > 0
    np.testing.assert_allclose(
        metrics["episode_return"][finished], metrics["episode_length"][finished]
    )
    assert np.all(metrics["episode_return"][finished] >= 8)
    assert np.isfinite(metrics["loss"]).all()
    score = host.evaluate(runner.agent, jax.random.key(1), 2)
    assert isinstance(score, float) and 8 <= score <= 500


def test_resume_resets_envs_and_keeps_callers_state(host):
    runner = host.init(jax.random.key(0))
    first, _ = host.run(runner, 2)
    # A state restored from a checkpoint is a different object: envs reset.
    restored = jax.tree.map(jnp.copy, first)
    resumed, metrics = host.run(restored, 2)
    np.testing.assert_array_equal(metrics["env_steps"], [60, 80])
    assert int(resumed.iteration) == 4
    assert int(resumed.window.fill) == 1  # refilled after the reset
    # The caller's states were not donated away.
    assert int(first.env_steps) == 40 and int(runner.env_steps) == 0
    assert np.isfinite(np.asarray(restored.obs)).all()
