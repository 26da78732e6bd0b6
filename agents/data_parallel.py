"""Anakin-style data parallelism for the jitted RL loops (PureJaxRL, Stoix).

Each device steps its own slice of the environments and runs the same learner
on a replicated agent; the agent's `update` averages gradients over the named
axis `AXIS` (`jaxlab.parallel.AXIS`). A training loop writes its per-device
program once, ``run_local(state, num_updates) -> (state, metrics)``, where
environment leaves hold the device's slice and the rest is replicated, and
`parallelize` turns it into a `run` on the **canonical global** state:
environment leaves ``[num_envs, ...]`` and everything else unreplicated,
whatever the backend and the device count, so checkpoints move freely between
device counts.

- ``backend="shard_map"``: ``jax.jit(jax.shard_map(run_local))`` over a 1-D
  `Mesh`; environment leaves are sharded with ``PartitionSpec(AXIS)`` (on their
  environment axis), the rest replicated with ``PartitionSpec()``.
- ``backend="pmap"``: ``jax.pmap(run_local, axis_name=AXIS)``; `run` converts at
  its boundary with two small jitted shard_maps that only move each device's
  block of the global state to its row of a stacked ``[D, ...]`` array and back
  (no communication, no host copy); with several processes pmap gets each
  process's ``[n_local, ...]`` rows.

Several processes (`jax.distributed`): pass ``devices=jax.devices()``. `init`
builds the state with jit ``out_shardings`` (global `jax.Array`s), `run` takes
and returns global arrays (host NumPy leaves, e.g. a restored checkpoint that
every process read, are placed with `jax.make_array_from_callback`), pmap gets
each process's local blocks, and `to_host` gathers a state to every host
(`multihost_utils.process_allgather`) for checkpointing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxlab.parallel import AXIS
from jaxlab.parallel import is_key as _is_key
from jaxlab.parallel import key_impls as _key_impls
from jaxlab.parallel import raw_keys as _raw
from jaxlab.parallel import to_host as to_host  # re-exported for the trainers
from jaxlab.parallel import typed_keys as _typed

PyTree = Any
# A pytree prefix of a state: for each subtree, the axis of its leaves that is
# split across devices (the environment or replay axis), or None: replicated.
Axes = Any
BACKENDS = ("pmap", "shard_map")
_REPLICATED = "replicated"  # `None` of an `Axes` tree, as a pytree leaf


def resolve_devices(
    devices: Sequence[jax.Device] | None, backend: str
) -> tuple[jax.Device, ...] | None:
    """The devices to train on, or None for a plain single-device program.

    Raises:
      ValueError: naming the field, for an unknown backend or repeated devices.
    """
    if backend not in BACKENDS:
        raise ValueError(
            f"parallel.backend: expected 'pmap' or 'shard_map', got {backend!r}"
        )
    if devices is None:
        return None
    devices = tuple(devices)
    if len(set(devices)) != len(devices):
        raise ValueError(f"parallel.devices: repeated devices in {devices}")
    return devices if len(devices) > 1 else None


def split_evenly(total: int, num_devices: int, field: str, what: str) -> int:
    """``total // num_devices``, or a `ValueError` naming `field` if it does not
    divide (``env.num_envs: 6 environments cannot be split evenly across 4
    devices``)."""
    if total % num_devices:
        raise ValueError(
            f"{field}: {total} {what} cannot be split evenly across {num_devices} "
            f"devices; use a multiple of {num_devices}"
        )
    return total // num_devices


def local_slice(
    x: jax.Array, axis_name: str | None, size: int, axis: int = 0
) -> jax.Array:
    """This device's block of `size` along `axis` of a global array (`x` itself
    when `axis_name` is None). Device ``i`` holds block ``i``, as the sharding of
    the environment leaves."""
    if axis_name is None:
        return x
    start = jax.lax.axis_index(axis_name) * size
    return jax.lax.dynamic_slice_in_dim(x, start, size, axis)


def global_mean(x: jax.Array, axis_name: str | None) -> jax.Array:
    """Mean of all elements of `x` over all devices (equal shares per device)."""
    mean = jnp.mean(x)
    return mean if axis_name is None else jax.lax.pmean(mean, axis_name)


def _leaf_axes(axes: Axes, tree: PyTree) -> list[int | str]:
    """The split axis of each leaf of `tree` (or `_REPLICATED`), in leaf order."""
    full = jax.tree.map(
        lambda ax, sub: jax.tree.map(lambda _: _REPLICATED if ax is None else ax, sub),
        axes,
        tree,
        is_leaf=lambda x: x is None,
    )
    return jax.tree.leaves(full)


def _spec(axis: int | str) -> PartitionSpec:
    if axis == _REPLICATED:
        return PartitionSpec()
    return PartitionSpec(*([None] * axis), AXIS)


def _is_traced(tree: PyTree) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


def parallelize(
    init: Callable[[jax.Array], PyTree],
    run_local: Callable[[PyTree, int], tuple[PyTree, PyTree]],
    *,
    devices: Sequence[jax.Device],
    backend: str,
    axes: Axes,
) -> tuple[Callable[[jax.Array], PyTree], Callable[[PyTree, int], Any]]:
    """Data-parallel `init` and `run` on the canonical global state.

    Args:
      init: ``(key) -> state``: the global initial state (jittable).
      run_local: ``(state, num_updates) -> (state, metrics)``: the program of one
        device, whose collectives use `AXIS`; its split leaves hold the device's
        block, and its metrics must be identical on all devices.
      devices: two or more devices, possibly of several processes.
      backend: ``"pmap"`` or ``"shard_map"``.
      axes: a pytree prefix of the state giving each subtree's split axis (None:
        replicated), e.g. ``RunnerState(agent=None, obs=0, ...)``.

    Returns:
      ``(init, run)``: ``init(key) -> state`` and ``run(state, num_updates) ->
      (state, metrics)`` (`num_updates` static), on global states whose split
      leaves are sharded over the devices and the rest replicated (each device
      holding its own copy); `run` also takes host NumPy arrays or arrays on
      any device, and works under an outer `jax.jit` (one process). Typed PRNG
      keys in the state cross the boundaries as raw key data.
    """
    devices = list(devices)
    num_devices = len(devices)
    mesh = Mesh(np.asarray(devices), (AXIS,))
    me = jax.process_index()
    local_devices = [d for d in devices if d.process_index == me]
    local_mesh = Mesh(np.asarray(local_devices), (AXIS,))

    def specs_of(tree: PyTree, tree_axes: Axes) -> PyTree:
        treedef = jax.tree.structure(tree)
        return jax.tree.unflatten(treedef, map(_spec, _leaf_axes(tree_axes, tree)))

    def shardings(tree: PyTree) -> PyTree:
        spec = lambda s: NamedSharding(mesh, s)
        return jax.tree.map(
            spec, specs_of(tree, axes), is_leaf=lambda x: isinstance(x, PartitionSpec)
        )

    def place(state: PyTree) -> PyTree:
        """Every (raw) leaf as a global array laid out on the mesh."""

        def put(x: Any, target: NamedSharding) -> jax.Array:
            if isinstance(x, jax.Array):
                if x.sharding.is_equivalent_to(target, x.ndim):
                    return x
                if jax.process_count() == 1 or not x.is_fully_addressable:
                    return jax.device_put(x, target)
            host = np.asarray(x)  # the same on every process (e.g. a checkpoint)
            return jax.make_array_from_callback(host.shape, target, lambda i: host[i])

        return jax.tree.map(put, state, shardings(state))

    @functools.cache
    def jit_init(shape: tuple[int, ...], dtype: Any, impl: str | None) -> Any:
        out_impls = []

        def raw_init(key: jax.Array) -> PyTree:
            if impl is not None:
                key = jax.random.wrap_key_data(key, impl=impl)
            state = init(key)
            out_impls[:] = [_key_impls(state)]
            return _raw(state)

        out = jax.eval_shape(raw_init, jax.ShapeDtypeStruct(shape, dtype))
        return jax.jit(raw_init, out_shardings=shardings(out)), out_impls[0]

    def init_fn(key: jax.Array) -> PyTree:
        impl = jax.random.key_impl(key) if _is_key(key) else None
        data = _raw(key)
        if jax.process_count() > 1 and not _is_traced(data):
            data = np.asarray(data)  # one replicated input for all processes
        program, impls = jit_init(tuple(data.shape), np.dtype(data.dtype), impl)
        return _typed(program(data), impls)

    def local_program(
        num_updates: int, impls: tuple[str | None, ...]
    ) -> Callable[[PyTree], tuple[PyTree, PyTree]]:
        def program(raw_state: PyTree) -> tuple[PyTree, PyTree]:
            state, metrics = run_local(_typed(raw_state, impls), num_updates)
            return _raw(state), metrics

        return program

    if backend == "shard_map":

        @functools.partial(jax.jit, static_argnums=(1, 2))
        def sharded(raw_state: PyTree, num_updates: int, impls: tuple) -> Any:
            specs = specs_of(raw_state, axes)
            # check_vma=False: the agent code is written pmap-style (local
            # gradients, explicit `pmean`); with vma typing, gradients of
            # replicated parameters would already be summed over devices.
            return jax.shard_map(
                local_program(num_updates, impls),
                mesh=mesh,
                in_specs=(specs,),
                out_specs=(specs, PartitionSpec()),
                check_vma=False,
            )(raw_state)

        def run(state: PyTree, num_updates: int) -> tuple[PyTree, PyTree]:
            impls, raw = _key_impls(state), _raw(state)
            out, metrics = sharded(
                raw if _is_traced(raw) else place(raw), num_updates, impls
            )
            return _typed(out, impls), metrics

        return init_fn, run

    @functools.cache
    def pmapped(num_updates: int, impls: tuple) -> Callable[..., Any]:
        return jax.pmap(
            local_program(num_updates, impls), axis_name=AXIS, devices=devices
        )

    @jax.jit
    def stack(state: PyTree) -> PyTree:
        # Each device's block of a global leaf becomes its [1, ...] row of a
        # [D, ...] array: a local reshape, no communication.
        return jax.shard_map(
            lambda s: jax.tree.map(lambda x: x[None], s),
            mesh=mesh,
            in_specs=(specs_of(state, axes),),
            out_specs=PartitionSpec(AXIS),
            check_vma=False,
        )(state)

    @functools.partial(jax.jit, static_argnums=1)
    def unstack(stacked: PyTree, replicated: bool) -> PyTree:
        # The inverse; each device keeps its own copy of the replicated leaves.
        return jax.shard_map(
            lambda s: jax.tree.map(lambda x: x[0], s),
            mesh=mesh,
            in_specs=(PartitionSpec(AXIS),),
            out_specs=specs_of(stacked, None if replicated else axes),
            check_vma=False,
        )(stacked)

    def process_local(stacked: PyTree) -> PyTree:
        """Global [D, ...] -> this process's [n_local, ...] (pmap's inputs)."""
        sharding = NamedSharding(local_mesh, PartitionSpec(AXIS))

        def local(x: jax.Array) -> jax.Array:
            data = {s.device: s.data for s in x.addressable_shards}
            blocks = [data[d] for d in local_devices]
            shape = (len(local_devices), *x.shape[1:])
            return jax.make_array_from_single_device_arrays(shape, sharding, blocks)

        return jax.tree.map(local, stacked)

    def process_global(stacked: PyTree) -> PyTree:
        """pmap's [n_local, ...] outputs -> global [D, ...] arrays."""
        sharding = NamedSharding(mesh, PartitionSpec(AXIS))

        def to_global(y: jax.Array) -> jax.Array:
            shape = (num_devices, *y.shape[1:])
            data = {s.device: s.data for s in y.addressable_shards}
            blocks = [data[d] for d in sharding.addressable_devices_indices_map(shape)]
            return jax.make_array_from_single_device_arrays(shape, sharding, blocks)

        return jax.tree.map(to_global, stacked)

    def run(state: PyTree, num_updates: int) -> tuple[PyTree, PyTree]:
        impls, raw = _key_impls(state), _raw(state)
        traced = _is_traced(raw)
        multi_process = jax.process_count() > 1
        if traced and multi_process:
            raise ValueError(
                "parallel.backend: with pmap across processes, call run "
                "directly (it is compiled already), not under jax.jit"
            )
        stacked = stack(raw if traced else place(raw))
        if multi_process:
            stacked = process_local(stacked)
        out, metrics = pmapped(num_updates, impls)(stacked)
        if multi_process:
            out, metrics = process_global(out), process_global(metrics)
        return _typed(unstack(out, False), impls), unstack(metrics, True)

    return init_fn, run
