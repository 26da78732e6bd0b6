"""Data parallelism over local devices: replicate, shard, and wrap a step.

The train step is written once with a named axis for its collectives
(`make_train_step(..., axis_name=AXIS)`); `data_parallel` runs it under `jax.pmap`
over the local devices. Arrays are placed with a `NamedSharding` over a 1-D
device mesh, so replication and sharding are single `device_put`s and
`unreplicate` reads one shard instead of gathering (the slow ``x[0]`` pattern).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxlab.errors import ConfigError

AXIS = "batch"
PyTree = Any


def local_devices(devices: int | str = "auto") -> list[jax.Device]:
    """The local devices to use: all (``"auto"``) or the first `devices` of them."""
    available = jax.local_devices()
    if devices == "auto":
        return available
    if not isinstance(devices, int) or devices < 1:
        raise ConfigError(
            f"parallel.devices: expected 'auto' or a positive int, got {devices!r}"
        )
    if devices > len(available):
        raise ConfigError(
            f"parallel.devices: {devices} requested but only {len(available)} local "
            "device(s) are visible (on CPU, set "
            "XLA_FLAGS=--xla_force_host_platform_device_count=N)"
        )
    return available[:devices]


def _sharding(devices: Sequence[jax.Device]) -> NamedSharding:
    mesh = Mesh(np.asarray(devices), (AXIS,))
    return NamedSharding(mesh, PartitionSpec(AXIS))


def replicate(tree: PyTree, devices: Sequence[jax.Device] | None = None) -> PyTree:
    """Adds a leading device axis and puts one copy of each leaf on each device."""
    devices = list(devices or jax.local_devices())
    n = len(devices)
    stacked = jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *jnp.shape(x))), tree)
    return jax.device_put(stacked, _sharding(devices))


def unreplicate(tree: PyTree) -> PyTree:
    """Takes the copy on the first device of each replicated leaf (no gather)."""

    def first(x):
        if isinstance(x, jax.Array) and len(x.addressable_shards) > 1:
            return x.addressable_shards[0].data[0]
        return x[0]

    return jax.tree.map(first, tree)


def shard(batch: PyTree, devices: Sequence[jax.Device] | None = None) -> PyTree:
    """Splits the leading (batch) axis of each leaf evenly across `devices`.

    A global batch of size B becomes ``[num_devices, B // num_devices, ...]``.
    """
    devices = list(devices or jax.local_devices())
    n = len(devices)

    def split(x):
        x = np.asarray(x)
        if x.shape[0] % n:
            raise ConfigError(
                f"data.batch_size: a batch of {x.shape[0]} cannot be split evenly "
                f"across {n} devices; use a multiple of {n}"
            )
        return x.reshape(n, x.shape[0] // n, *x.shape[1:])

    return jax.device_put(jax.tree.map(split, batch), _sharding(devices))


def data_parallel(
    step: Callable[..., Any],
    devices: Sequence[jax.Device],
    *,
    backend: str = "pmap",
) -> Callable[..., Any]:
    """Runs `step` (written with ``axis_name=AXIS``) on each of `devices`.

    Inputs and outputs carry a leading device axis (see `replicate`, `shard`).

    Args:
      step: a function whose collectives use the axis name `AXIS`.
      devices: the local devices to run on.
      backend: ``"pmap"`` (`jax.pmap`) or ``"shard_map"`` (`jax.shard_map` over a
        1-D `jax.sharding.Mesh`, jitted); both give the same results.
    """
    devices = list(devices)
    if backend == "pmap":
        return jax.pmap(step, axis_name=AXIS, devices=devices)
    if backend != "shard_map":
        raise ConfigError(
            f"parallel.backend: expected 'pmap' or 'shard_map', got {backend!r}"
        )
    mesh = Mesh(np.asarray(devices), (AXIS,))
    spec = PartitionSpec(AXIS)

    def per_device(*args):
        # shard_map hands each device a block with a leading axis of size 1.
        out = step(*jax.tree.map(lambda x: x[0], args))
        return jax.tree.map(lambda x: x[None], out)

    return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=spec, out_specs=spec))


def process_count() -> int:
    return jax.process_count()


def is_main_process() -> bool:
    """True on the process that writes logs (process 0)."""
    return jax.process_index() == 0


def force_cpu_devices(n: int) -> None:
    """Asks XLA for `n` CPU devices (must run before JAX initialises its backend)."""
    flag = f"--xla_force_host_platform_device_count={n}"
    flags = [
        f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f
    ]
    os.environ["XLA_FLAGS"] = " ".join([*flags, flag])
