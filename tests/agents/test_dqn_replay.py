"""Tests for agents.dqn.replay: a jittable circular buffer."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from agents.dqn import replay
from agents.dqn.replay import Transition


def _example(obs_dim: int = 3) -> Transition:
    return Transition(
        obs=jnp.zeros((obs_dim,), jnp.float32),
        action=jnp.zeros((), jnp.int32),
        reward=jnp.zeros((), jnp.float32),
        discount=jnp.zeros((), jnp.float32),
        next_obs=jnp.zeros((obs_dim,), jnp.float32),
    )


def _items(values, obs_dim: int = 3) -> Transition:
    """Items whose every field encodes `values` ([N] ints)."""
    v = np.asarray(values)
    return Transition(
        obs=np.repeat(v[:, None], obs_dim, 1).astype(np.float32),
        action=v.astype(np.int32),
        reward=v.astype(np.float32),
        discount=(v / 100).astype(np.float32),
        next_obs=np.repeat(v[:, None], obs_dim, 1).astype(np.float32) + 0.5,
    )


class ReplayTest(chex.TestCase):
    def test_init_shapes_and_dtypes(self):
        state = replay.init(7, _example())
        chex.assert_shape(state.data.obs, (7, 3))
        chex.assert_shape(state.data.action, (7,))
        chex.assert_type(
            [state.data.obs, state.data.action, state.data.reward, state.insert_pos],
            [jnp.float32, jnp.int32, jnp.float32, jnp.int32],
        )
        self.assertEqual(int(state.size), 0)
        self.assertEqual(replay.capacity(state), 7)

    def test_init_accepts_shape_dtype_structs(self):
        example = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _example()
        )
        chex.assert_trees_all_equal(replay.init(4, example), replay.init(4, _example()))

    @chex.variants(with_jit=True, without_jit=True)
    def test_add_wraps_around(self):
        add = self.variant(replay.add)
        state = replay.init(5, _example())
        state = add(state, _items([1, 2, 3]))
        self.assertEqual((int(state.insert_pos), int(state.size)), (3, 3))
        state = add(state, _items([4, 5, 6, 7]))
        # 6 and 7 overwrote the two oldest items (1, 2).
        np.testing.assert_array_equal(state.data.action, [6, 7, 3, 4, 5])
        np.testing.assert_array_equal(state.data.obs[:, 0], [6, 7, 3, 4, 5])
        np.testing.assert_allclose(state.data.next_obs[:, 2], [6.5, 7.5, 3.5, 4.5, 5.5])
        self.assertEqual((int(state.insert_pos), int(state.size)), (2, 5))

    @chex.variants(with_jit=True, without_jit=True)
    def test_masked_add_stores_selected_items_contiguously(self):
        add = self.variant(replay.add)
        state = replay.init(4, _example())
        state = add(state, _items([1, 2, 3]), jnp.array([True, False, True]))
        np.testing.assert_array_equal(state.data.action, [1, 3, 0, 0])
        self.assertEqual((int(state.insert_pos), int(state.size)), (2, 2))
        state = add(state, _items([4, 5, 6]), jnp.array([True, True, True]))
        np.testing.assert_array_equal(state.data.action, [6, 3, 4, 5])
        self.assertEqual((int(state.insert_pos), int(state.size)), (1, 4))
        state = add(state, _items([8, 9, 10]), False)  # scalar mask: nothing
        np.testing.assert_array_equal(state.data.action, [6, 3, 4, 5])
        self.assertEqual((int(state.insert_pos), int(state.size)), (1, 4))

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(1, 3, 10)
    def test_sample_only_filled_entries(self, filled):
        state = replay.init(10, _example())
        state = replay.add(state, _items(np.arange(1, filled + 1)))
        batch = self.variant(replay.sample, static_argnums=2)(
            state, jax.random.key(0), 500
        )
        chex.assert_shape(batch.obs, (500, 3))
        chex.assert_shape(batch.action, (500,))
        chex.assert_type([batch.obs, batch.action], [jnp.float32, jnp.int32])
        # Uniform over exactly the filled entries (never the zero padding).
        self.assertEqual(
            set(np.asarray(batch.action).tolist()), set(range(1, filled + 1))
        )
        # Fields of one item stay together.
        np.testing.assert_allclose(batch.reward, batch.action.astype(np.float32))
        np.testing.assert_allclose(batch.next_obs[:, 0], batch.obs[:, 0] + 0.5)

    def test_rejects_bad_shapes(self):
        state = replay.init(4, _example())
        with self.assertRaises(ValueError):
            replay.add(state, _items(np.arange(5)))  # more than the capacity
        with self.assertRaises(AssertionError):
            replay.add(state, _items(np.arange(2), obs_dim=2))
        with self.assertRaises(ValueError):
            replay.init(0, _example())
