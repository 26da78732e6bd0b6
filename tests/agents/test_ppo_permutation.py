"""`agents.ppo.agent.permutation`: PPO's minibatch shuffle."""

import collections

import jax
import numpy as np
import pytest

from agents.ppo.agent import permutation


@pytest.mark.parametrize("n", [1, 2, 3, 7, 128, 512, 1000, 4096])
def test_is_a_permutation(n):
    p = np.asarray(permutation(jax.random.PRNGKey(n), n))
    assert p.dtype == np.int32
    np.testing.assert_array_equal(np.sort(p), np.arange(n))


def test_depends_on_the_key_only():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    a = np.asarray(permutation(k1, 512))
    np.testing.assert_array_equal(
        a, np.asarray(jax.jit(permutation, static_argnums=1)(k1, 512))
    )
    assert not np.array_equal(a, np.asarray(permutation(k2, 512)))


def test_uniform_over_small_permutations():
    # 24 permutations of 4 elements, 4800 draws: 200 expected each (sd ~14).
    keys = jax.random.split(jax.random.PRNGKey(1), 4800)
    perms = np.asarray(jax.vmap(lambda k: permutation(k, 4))(keys))
    counts = collections.Counter(map(tuple, perms.tolist()))
    assert len(counts) == 24
    assert min(counts.values()) > 140 and max(counts.values()) < 260


def test_positions_are_uniform():
    # Each element lands at each position equally often (mean position ~255.5).
    keys = jax.random.split(jax.random.PRNGKey(2), 400)
    perms = np.asarray(jax.vmap(lambda k: permutation(k, 512))(keys))
    where = np.argsort(perms, axis=1)  # where[i, e]: position of element e
    assert abs(where.mean(axis=0)[[0, 255, 511]] - 255.5).max() < 30
