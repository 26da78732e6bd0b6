"""A jittable circular replay buffer with uniform sampling.

Pure functions on a `ReplayState` (a `NamedTuple` of arrays with static shapes):
``init(capacity, example) -> state``, ``add(state, batch) -> state`` (a batch of
`N` items at once, optionally masked) and ``sample(state, key, batch_size) ->
batch``. Items may be any pytree of arrays; DQN stores `Transition`s.

Items are written in order at ``insert_pos`` (wrapping around), so the filled
entries are always ``data[:size]``, and `sample` draws uniformly from them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp

PyTree = Any


class Transition(NamedTuple):
    """One (n-step) transition; a batch adds a leading `[B]` axis to each field.

    Attributes:
      obs: observation where `action` was taken, `[*obs_shape]` float32.
      action: action taken, `[]` int32.
      reward: (n-step discounted) reward, `[]` float32.
      discount: bootstrap discount ``gamma**k * (1 - terminated)``, `[]` float32,
        where `k` is the number of steps to `next_obs` (`n`, or fewer if the
        episode ended in between). Truncation (a time limit) is not termination:
        a truncated step keeps ``gamma**k`` and bootstraps from the true last
        observation (`info["final_obs"]`).
      next_obs: observation to bootstrap from, `[*obs_shape]` float32.
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    discount: jax.Array
    next_obs: jax.Array


class ReplayState(NamedTuple):
    """State of a replay buffer.

    Attributes:
      data: the stored items, every leaf `[capacity, ...]`.
      insert_pos: index of the next write, `[]` int32.
      size: number of filled entries, `[]` int32 (at most `capacity`).
    """

    data: PyTree
    insert_pos: jax.Array
    size: jax.Array


def init(capacity: int, example: PyTree) -> ReplayState:
    """An empty buffer for items shaped like `example` (ONE item, no batch axis).

    Args:
      capacity: number of items kept, positive.
      example: a pytree of arrays (or `jax.ShapeDtypeStruct`s) giving each
        leaf's shape and dtype.

    Returns:
      A `ReplayState` of zeros with `size = 0`.
    """
    if capacity < 1:
        raise ValueError(f"capacity must be positive, got {capacity}")
    data = jax.tree.map(lambda x: jnp.zeros((capacity, *x.shape), x.dtype), example)
    zero = jnp.zeros((), jnp.int32)
    return ReplayState(data=data, insert_pos=zero, size=zero)


def capacity(state: ReplayState) -> int:
    """Static capacity of the buffer."""
    return jax.tree.leaves(state.data)[0].shape[0]


def add(
    state: ReplayState, batch: PyTree, mask: jax.Array | None = None
) -> ReplayState:
    """Appends `N` items, overwriting the oldest ones when full.

    Args:
      state: the buffer.
      batch: items with the buffer's structure, every leaf `[N, ...]` with
        ``N <= capacity``.
      mask: optional `[N]` bool (or a scalar, for all items): only items where
        it is true are stored, in order, contiguously.

    Returns:
      The new state.
    """
    cap = capacity(state)
    leaves = jax.tree.leaves(batch)
    n = leaves[0].shape[0]
    if n > cap:
        raise ValueError(f"cannot add {n} items at once to a buffer of {cap}")
    chex.assert_trees_all_equal_structs(state.data, batch)
    for leaf, stored in zip(leaves, jax.tree.leaves(state.data), strict=True):
        chex.assert_shape(leaf, (n, *stored.shape[1:]))
    if mask is None:
        offsets = jnp.arange(n, dtype=jnp.int32)
        count = jnp.asarray(n, jnp.int32)
        indices = (state.insert_pos + offsets) % cap  # [N]
    else:
        mask = jnp.broadcast_to(jnp.asarray(mask, jnp.bool_), (n,))
        offsets = jnp.cumsum(mask, dtype=jnp.int32) - 1
        count = jnp.sum(mask, dtype=jnp.int32)
        # Masked-out items get an out-of-range index and are dropped.
        indices = jnp.where(mask, (state.insert_pos + offsets) % cap, cap)  # [N]

    data = jax.tree.map(
        lambda stored, new: stored.at[indices].set(
            new.astype(stored.dtype), mode="drop", unique_indices=mask is None
        ),
        state.data,
        batch,
    )
    return ReplayState(
        data=data,
        insert_pos=(state.insert_pos + count) % cap,
        size=jnp.minimum(state.size + count, cap),
    )


def sample(state: ReplayState, key: jax.Array, batch_size: int) -> PyTree:
    """Draws `batch_size` items uniformly (with replacement) from the filled ones.

    On an empty buffer it returns items of the zero-filled storage; callers
    check `state.size` first.

    Args:
      state: the buffer.
      key: a JAX random key.
      batch_size: number of items, static.

    Returns:
      Items with every leaf `[batch_size, ...]`.
    """
    # Modulo bias is at most size / 2**32 (< 1e-4 for 1e5 items), and one
    # draw of random bits compiles and runs faster than `randint`.
    bits = jax.random.bits(key, (batch_size,), jnp.uint32)
    indices = (bits % jnp.maximum(state.size, 1).astype(jnp.uint32)).astype(jnp.int32)
    return jax.tree.map(lambda stored: stored[indices], state.data)
