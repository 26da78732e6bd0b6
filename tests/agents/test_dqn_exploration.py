"""Tests for agents.dqn.exploration: epsilon schedules."""

import chex
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from agents.dqn import ExplorationConfig, epsilon_schedule
from agents.dqn.exploration import exponential_epsilon, linear_epsilon


class EpsilonScheduleTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(
        (0, 1.0), (250, 0.76), (500, 0.52), (1000, 0.04), (5000, 0.04)
    )
    def test_linear(self, step, expected):
        fn = self.variant(linear_epsilon(start=1.0, end=0.04, steps=1000))
        np.testing.assert_allclose(fn(jnp.int32(step)), expected, rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(
        (0, 0.8), (100, 0.4), (200, 0.2), (50, 0.8 * 0.5**0.5), (400, 0.1), (900, 0.1)
    )
    def test_exponential_with_floor(self, step, expected):
        fn = self.variant(
            exponential_epsilon(start=0.8, end=0.1, steps=100, decay_rate=0.5)
        )
        np.testing.assert_allclose(fn(jnp.int32(step)), expected, rtol=1e-5)

    def test_from_config(self):
        linear = epsilon_schedule(ExplorationConfig(start=0.5, end=0.1, steps=10))
        np.testing.assert_allclose(linear(5), 0.3, rtol=1e-6)
        exponential = epsilon_schedule(
            ExplorationConfig(
                schedule="exponential", start=1.0, end=0.0, steps=10, decay_rate=0.1
            )
        )
        np.testing.assert_allclose(exponential(20), 0.01, rtol=1e-5)
