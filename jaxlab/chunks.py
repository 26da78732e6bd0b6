"""How the supervised trainer cuts a run into compiled calls.

One call runs a chunk of steps as one compiled loop
(`jaxlab.train.make_train_loop`); each chunk ends where the host has work (log,
evaluation, checkpoint, the end, a test's kill step) and holds at most
`CHUNK_BYTES` of stacked batches. On a CPU, a program holding an XLA
convolution op runs one step per call (`loops_are_slow`); `nets`' convolutions
lower to patches and a matmul there and keep their loops. The first non-finite
step of the run is folded on the device, call by call (`note_first_bad`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxlab import config as config_lib
from jaxlab import data as data_lib
from jaxlab.train import LossFn, TrainState

# Host memory for one chunk of stacked batches (see `chunk_limit`).
CHUNK_BYTES = 64 << 20


def chunk_limit(
    tc: config_lib.TrainConfig, train: data_lib.Dataset, batch_size: int
) -> int:
    """Most steps one compiled call runs: the shortest logging, evaluation or
    checkpoint interval, within `CHUNK_BYTES` of stacked batches."""
    example_bytes = train.x[:1].nbytes + train.y[:1].nbytes
    fits = max(1, CHUNK_BYTES // max(1, example_bytes * batch_size))
    return max(1, min(tc.log_every, tc.eval_every, tc.checkpoint_every, fits))


def loops_are_slow(
    loss_fn: LossFn,
    state: TrainState,
    batch: Mapping[str, Any],
    devices: Sequence[jax.Device],
) -> bool:
    """Whether to run one step per call: XLA:CPU runs a convolution inside a
    compiled loop (`fori_loop`, `scan`) 15-25x slower than outside one (LeNet
    on the digits, batch 64: ~90 ms per step called one by one, ~2 s per step
    inside either loop), so on a CPU a program that still holds a convolution
    op gets no loop. `nets`' convolutions lower to patches and a matmul on a
    CPU (`nets.conv`) and keep their loops; `hk.Conv2D` and
    ``lowering: xla`` do not. `batch`: an example batch (shapes only)."""
    platform = devices[0].platform
    if platform != "cpu":
        return False
    traced = jax.jit(loss_fn).trace(state.params, state.net_state, batch, state.rng)
    lowered = traced.lower(lowering_platforms=(platform,))
    return "stablehlo.convolution" in lowered.as_text()


def next_stop(
    step: int,
    num_steps: int,
    tc: config_lib.TrainConfig,
    kill_at: int | None,
    max_chunk: int,
) -> int:
    """The step the chunk starting at `step` runs to: the first step after it
    at which the host logs, evaluates, checkpoints or stops, at most
    `max_chunk` steps on."""
    stops = [num_steps, step + max_chunk]
    stops += [
        (step // n + 1) * n for n in (tc.log_every, tc.eval_every, tc.checkpoint_every)
    ]
    if kill_at is not None and kill_at > step:
        stops.append(kill_at)
    return min(stops)


@jax.jit
def note_first_bad(first_bad: jax.Array, i: jax.Array, base: jax.Array) -> jax.Array:
    """The first non-finite step so far (-1: none): `first_bad`, else step
    ``base + i`` where a chunk starting at step `base` reports index `i` >= 0
    (one small program per chunk instead of a handful of eager ops)."""
    return jnp.where((first_bad < 0) & (i >= 0), base + i, first_bad)
