"""Data parallelism over devices, on one host or many: replicate, shard, wrap a step.

The train step is written once with a named axis for its collectives
(`make_train_step(..., axis_name=AXIS)`); `data_parallel` runs it under `jax.pmap`
or under `jax.shard_map` over a 1-D device mesh (``parallel.backend``), with the
same results. Arrays are global `jax.Array`s placed with a `NamedSharding` over
that mesh, so replication and sharding are single placements, `unreplicate`
reads one local shard instead of gathering (the slow ``x[0]`` pattern), and the
same code runs when the devices span several processes (hosts):

```python
parallel.initialize()                       # jax.distributed when launched on N
devices = parallel.devices("auto")          # every device of every process
step = parallel.data_parallel(step, devices, backend="shard_map")
state = parallel.replicate(state, devices)
state, metrics = step(state, parallel.shard(global_batch, devices))
```

Multi-process runs: each process passes the same global host batch to `shard`,
which keeps only the rows of its own devices and assembles the global array with
`jax.make_array_from_process_local_data`; `is_main_process()` is the one that
logs and writes checkpoints, and `broadcast_from_main` hands restored state to
the others.
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

# Set by `jaxlab launch` for each process it starts.
COORDINATOR_ENV = "JAXLAB_COORDINATOR"
NUM_PROCESSES_ENV = "JAXLAB_NUM_PROCESSES"
PROCESS_ID_ENV = "JAXLAB_PROCESS_ID"
# "1" forces jax.distributed's cluster auto-detection, "0" turns it off.
DISTRIBUTED_ENV = "JAXLAB_DISTRIBUTED"

_initialized = False


# ------------------------------------------------------------- processes


def _detected_cluster() -> str | None:
    """The multi-process cluster this process was launched in, if any."""
    env = os.environ
    if env.get("SLURM_JOB_ID") and int(env.get("SLURM_NTASKS", "1") or 1) > 1:
        return "slurm"
    if env.get("OMPI_COMM_WORLD_SIZE") and int(env["OMPI_COMM_WORLD_SIZE"]) > 1:
        return "open-mpi"
    hosts = env.get("TPU_WORKER_HOSTNAMES") or env.get("CLOUD_TPU_TASK_ID")
    if hosts and ("," in hosts or "CLOUD_TPU_TASK_ID" in env):
        return "tpu-pod"
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return "jax-env"
    return None


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Starts `jax.distributed` when this process is one of several; else a no-op.

    The processes are found, in order, from the arguments, from the variables
    `jaxlab launch` sets (``JAXLAB_COORDINATOR``, ``JAXLAB_NUM_PROCESSES``,
    ``JAXLAB_PROCESS_ID``), or from a cluster JAX detects itself (SLURM, Open
    MPI, a Cloud TPU pod slice, ``JAX_COORDINATOR_ADDRESS``);
    ``JAXLAB_DISTRIBUTED=0`` turns detection off, ``=1`` forces it. Must run
    before anything else touches JAX's devices. On CPU the collectives go
    through gloo. Calling it again does nothing.

    Returns:
      True when this process is part of a multi-process run.
    """
    global _initialized
    env = os.environ
    coordinator = coordinator or env.get(COORDINATOR_ENV)
    if num_processes is None and env.get(NUM_PROCESSES_ENV):
        num_processes = _env_int(NUM_PROCESSES_ENV)
    if process_id is None and env.get(PROCESS_ID_ENV):
        process_id = _env_int(PROCESS_ID_ENV)
    if _initialized:
        return jax.process_count() > 1
    explicit = coordinator is not None or num_processes is not None
    flag = env.get(DISTRIBUTED_ENV, "")
    if flag == "0" or (not explicit and flag != "1" and _detected_cluster() is None):
        return False
    if explicit and (
        coordinator is None or num_processes is None or process_id is None
    ):
        raise ConfigError(
            "launch: a multi-process run needs the coordinator address, the number "
            f"of processes and this process's id ({COORDINATOR_ENV}, "
            f"{NUM_PROCESSES_ENV}, {PROCESS_ID_ENV}); got {coordinator!r}, "
            f"{num_processes!r}, {process_id!r}"
        )
    if explicit and num_processes == 1:
        return False
    # gloo: CPU collectives across processes (ignored on GPU/TPU backends).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit:
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=num_processes,
            process_id=process_id,
        )
    else:
        jax.distributed.initialize()
    _initialized = True
    return jax.process_count() > 1


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {value!r}") from None


def distributed_initialized() -> bool:
    """True once `initialize` started `jax.distributed` in this process."""
    return _initialized


def process_count() -> int:
    return jax.process_count()


def is_main_process() -> bool:
    """True on the process that writes logs and checkpoints (process 0)."""
    return jax.process_index() == 0


def broadcast_from_main(tree: PyTree) -> PyTree:
    """Process 0's value of `tree` on every process (identity on one process).

    Every process must call it with a tree of the same structure, shapes and
    dtypes. Typed PRNG keys are carried as their key data.
    """
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    impls = key_impls(tree)
    raw = multihost_utils.broadcast_one_to_all(jax.device_get(raw_keys(tree)))
    return typed_keys(jax.tree.map(np.asarray, raw), impls)


def sync(name: str) -> None:
    """A barrier across processes (no-op on one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def is_key(x: Any) -> bool:
    """True for a typed PRNG key array."""
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def key_impls(tree: PyTree) -> tuple[Any, ...]:
    """The PRNG implementation of each typed-key leaf (None for other leaves)."""
    return tuple(
        jax.random.key_impl(x) if is_key(x) else None for x in jax.tree.leaves(tree)
    )


def raw_keys(tree: PyTree) -> PyTree:
    """Typed-key leaves as their raw uint32 data, other leaves unchanged (works
    under `jit`; collectives and host transfers need raw data)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if is_key(x) else x, tree)


def typed_keys(tree: PyTree, impls: tuple[Any, ...]) -> PyTree:
    """The inverse of `raw_keys`, given the `key_impls` of the typed tree."""
    leaves, treedef = jax.tree.flatten(tree)
    return jax.tree.unflatten(
        treedef,
        [
            x if impl is None else jax.random.wrap_key_data(x, impl=impl)
            for x, impl in zip(leaves, impls, strict=True)
        ],
    )


def to_host(tree: PyTree) -> PyTree:
    """A (possibly sharded) state as host NumPy arrays with their global shapes.

    With several processes each global array is gathered to every host
    (`multihost_utils.process_allgather`), so every process gets the same full
    state; otherwise this is `jax.device_get`. Typed PRNG keys stay typed keys.
    """
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    impls = key_impls(tree)
    gathered = multihost_utils.process_allgather(raw_keys(tree), tiled=True)
    return typed_keys(gathered, impls)


# ---------------------------------------------------------------- devices


def local_devices(devices: int | str = "auto") -> list[jax.Device]:
    """This process's devices to use: all (``"auto"``) or the first `devices`."""
    available = jax.local_devices()
    if devices == "auto":
        return available
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
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


def devices(devices: int | str = "auto") -> list[jax.Device]:
    """The devices of a data-parallel run, over all processes.

    ``"auto"``: every device of every process; an int `n`: the first `n` devices
    of each process. Ordered by process, so each process's devices form one
    contiguous block of the mesh (and of the global batch). On one process this
    is `local_devices`.
    """
    mine = local_devices(devices)
    if jax.process_count() == 1:
        return mine
    per_process = len(mine)
    chosen: list[jax.Device] = []
    for p in range(jax.process_count()):
        theirs = sorted(
            (d for d in jax.devices() if d.process_index == p), key=lambda d: d.id
        )
        if len(theirs) < per_process:
            raise ConfigError(
                f"parallel.devices: process {p} has {len(theirs)} device(s), fewer "
                f"than the {per_process} this process uses; give every process the "
                "same number of devices"
            )
        chosen.extend(theirs[:per_process])
    return chosen


def mesh(devices: Sequence[jax.Device]) -> Mesh:
    """A 1-D mesh with axis `AXIS` over `devices`."""
    return Mesh(np.asarray(list(devices)), (AXIS,))


def _sharding(devices: Sequence[jax.Device]) -> NamedSharding:
    return NamedSharding(mesh(devices), PartitionSpec(AXIS))


def _local_rows(devices: Sequence[jax.Device]) -> slice | None:
    """The block of mesh positions that live on this process (None: all)."""
    me = jax.process_index()
    mine = [i for i, d in enumerate(devices) if d.process_index == me]
    if len(mine) == len(devices):
        return None
    if not mine or mine != list(range(mine[0], mine[-1] + 1)):
        raise ValueError(
            "parallel: each process's devices must form one contiguous block of the "
            "device list (use jaxlab.parallel.devices())"
        )
    return slice(mine[0], mine[-1] + 1)


def _place(stacked: PyTree, devices: Sequence[jax.Device]) -> PyTree:
    """Places ``[num_devices, ...]`` host leaves, one row per device."""
    sharding = _sharding(devices)
    rows = _local_rows(devices)
    if rows is None:
        return jax.device_put(stacked, sharding)

    def place(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(sharding, x[rows], x.shape)

    return jax.tree.map(place, stacked)


def _process_local(x: Any, local: Sequence[jax.Device]) -> Any:
    """This process's rows of a global array, as an array over `local` devices."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return x
    if is_key(x):
        data = _process_local(jax.random.key_data(x), local)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
    return jax.make_array_from_single_device_arrays(
        (len(shards) * shards[0].data.shape[0], *x.shape[1:]),
        _sharding(local),
        [s.data for s in shards],
    )


def replicate(tree: PyTree, devices: Sequence[jax.Device] | None = None) -> PyTree:
    """Adds a leading device axis and puts one copy of each leaf on each device.

    On several processes every process must pass the same `tree`.
    """
    devices = list(devices or jax.local_devices())
    n = len(devices)
    if _local_rows(devices) is None:
        stacked = jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *jnp.shape(x))), tree)
        return jax.device_put(stacked, _sharding(devices))
    impls = key_impls(tree)
    host = jax.tree.map(np.asarray, jax.device_get(raw_keys(tree)))
    stacked = jax.tree.map(lambda h: np.broadcast_to(h, (n, *h.shape)), host)
    return typed_keys(_place(stacked, devices), impls)


def unreplicate(tree: PyTree) -> PyTree:
    """Takes the copy on this process's first device of each replicated leaf
    (no gather)."""

    def first(x):
        if isinstance(x, jax.Array) and (
            len(x.addressable_shards) > 1 or not x.is_fully_addressable
        ):
            return x.addressable_shards[0].data[0]
        return x[0]

    return jax.tree.map(first, tree)


def shard(
    batch: PyTree, devices: Sequence[jax.Device] | None = None, *, axis: int = 0
) -> PyTree:
    """Splits the batch axis (`axis`, default the leading one) of each leaf
    evenly across `devices`.

    A global batch of size B becomes ``[num_devices, B // num_devices, ...]``;
    with ``axis=1`` a stack of batches ``[K, B, ...]`` becomes ``[num_devices,
    K, B // num_devices, ...]``. On several processes each passes the same
    global batch and keeps the rows of its own devices
    (`jax.make_array_from_process_local_data`).
    """
    devices = list(devices or jax.local_devices())
    n = len(devices)

    def split(x):
        x = np.asarray(x)
        size = x.shape[axis]
        if size % n:
            raise ConfigError(
                f"data.batch_size: a batch of {size} cannot be split evenly "
                f"across {n} devices; use a multiple of {n}"
            )
        x = x.reshape(*x.shape[:axis], n, size // n, *x.shape[axis + 1 :])
        return np.moveaxis(x, axis, 0) if axis else x

    return _place(jax.tree.map(split, batch), devices)


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
      devices: the devices to run on (from `devices()`; may span processes).
      backend: ``"pmap"`` (`jax.pmap`) or ``"shard_map"`` (`jax.shard_map` over a
        1-D `jax.sharding.Mesh`, jitted); both give the same results.
    """
    devices = list(devices)
    if backend == "pmap":
        stepped = jax.pmap(step, axis_name=AXIS, devices=devices)
        rows = _local_rows(devices)
        if rows is None:
            return stepped
        local = devices[rows]

        def multi_process(*args):
            # pmap over several processes takes process-local arrays.
            return stepped(*jax.tree.map(lambda x: _process_local(x, local), args))

        return multi_process
    if backend != "shard_map":
        raise ConfigError(
            f"parallel.backend: expected 'pmap' or 'shard_map', got {backend!r}"
        )
    spec = PartitionSpec(AXIS)

    def per_device(*args):
        # shard_map hands each device a block with a leading axis of size 1.
        out = step(*jax.tree.map(lambda x: x[0], args))
        return jax.tree.map(lambda x: x[None], out)

    return jax.jit(
        jax.shard_map(per_device, mesh=mesh(devices), in_specs=spec, out_specs=spec)
    )


def force_cpu_devices(n: int) -> None:
    """Asks XLA for `n` CPU devices (must run before JAX initialises its backend)."""
    flag = f"--xla_force_host_platform_device_count={n}"
    flags = [
        f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f
    ]
    os.environ["XLA_FLAGS"] = " ".join([*flags, flag])
