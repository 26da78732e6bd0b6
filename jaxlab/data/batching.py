"""Deterministic, resumable batching: the batch of any global step, on demand.

A `Batcher` holds no iterator state: ``batch(step)`` is a function of the
dataset, the seed and the step, so a run restored from a checkpoint at step
``s`` continues with exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator

import numpy as np

from jaxlab.data.dataset import Dataset
from jaxlab.errors import ConfigError


class Batcher:
    """Training batches of a fixed size, reshuffled each epoch, dropping the rest.

    Global step ``step`` is batch ``index`` of epoch ``epoch``, where
    ``epoch, index = divmod(step, steps_per_epoch)``. With `shuffle`, epoch ``e``
    visits the examples in the order ``np.random.default_rng([seed, e])
    .permutation(N)``; without, in dataset order. The last ``N % batch_size``
    examples of each epoch's order are not used in that epoch.

    Only the current epoch's permutation is cached, so consecutive steps are
    cheap and any step can be asked for in any order.

    Example:
      >>> batcher = Batcher(splits.train, batch_size=64, seed=0)
      >>> for step in range(start_step, num_steps):
      ...     state, metrics = train_step(state, batcher.batch(step))
    """

    def __init__(
        self, dataset: Dataset, *, batch_size: int, seed: int, shuffle: bool = True
    ) -> None:
        """Checks the arguments.

        Args:
          dataset: the training examples.
          batch_size: examples per batch, at most the dataset's size.
          seed: non-negative seed of the per-epoch permutations.
          shuffle: reshuffle every epoch; if False, every epoch is in order.

        Raises:
          ConfigError: `batch_size` is not positive or exceeds the dataset size.
          ValueError: `seed` is negative.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
            raise ConfigError(f"data.batch_size: expected an int, got {batch_size!r}")
        if batch_size <= 0:
            raise ConfigError(f"data.batch_size: must be > 0, got {batch_size}")
        n = dataset.num_examples
        if batch_size > n:
            raise ConfigError(
                f"data.batch_size: {batch_size} is larger than the dataset "
                f"({n} examples)"
            )
        if operator.index(seed) < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self._dataset = dataset
        self._batch_size = int(batch_size)
        self._seed = operator.index(seed)
        self._shuffle = bool(shuffle)
        self._steps_per_epoch = n // self._batch_size
        self._cached: tuple[int, np.ndarray] | None = None

    @property
    def dataset(self) -> Dataset:
        """The dataset batched."""
        return self._dataset

    @property
    def batch_size(self) -> int:
        """Examples per batch, B."""
        return self._batch_size

    @property
    def steps_per_epoch(self) -> int:
        """Full batches per epoch, ``N // batch_size`` (at least 1)."""
        return self._steps_per_epoch

    def position(self, step: int) -> dict[str, int]:
        """The ``{"epoch": e, "index": i}`` of global step `step`."""
        step = self._check_step(step)
        epoch, index = divmod(step, self._steps_per_epoch)
        return {"epoch": epoch, "index": index}

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The order, int64 ``[N]``, in which epoch `epoch` visits the examples."""
        epoch = operator.index(epoch)
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if self._cached is None or self._cached[0] != epoch:
            n = self._dataset.num_examples
            if self._shuffle:
                order = np.random.default_rng([self._seed, epoch]).permutation(n)
            else:
                order = np.arange(n)
            self._cached = (epoch, order)
        return self._cached[1]

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """The batch of global step `step`.

        Returns:
          ``{"x": x[B, ...], "y": y[B, ...]}``, fresh host arrays.
        """
        position = self.position(step)
        start = position["index"] * self._batch_size
        if self._shuffle:
            idx = self.epoch_order(position["epoch"])[start : start + self._batch_size]
            # Fancy indexing copies already.
            return {"x": self._dataset.x[idx], "y": self._dataset.y[idx]}
        # In order: slice, and copy so that callers may modify the batch in place
        # (e.g. augmentation) without touching the dataset.
        idx = slice(start, start + self._batch_size)
        return {"x": self._dataset.x[idx].copy(), "y": self._dataset.y[idx].copy()}

    def batches(self, start: int, count: int) -> dict[str, np.ndarray]:
        """The batches of steps ``start, ..., start + count - 1``, stacked: the
        input of a many-steps-per-call loop (`jaxlab.train.make_train_loop`).

        Returns:
          ``{"x": x[count, B, ...], "y": y[count, B, ...]}``, fresh host arrays;
          ``[i]`` equals ``batch(start + i)``.
        """
        start = self._check_step(start)
        count = operator.index(count)
        if count <= 0:
            raise ValueError(f"count must be > 0, got {count}")
        b = self._batch_size
        rows = []
        for step in range(start, start + count):
            epoch, index = divmod(step, self._steps_per_epoch)
            if self._shuffle:
                rows.append(self.epoch_order(epoch)[index * b : (index + 1) * b])
            else:
                rows.append(np.arange(index * b, (index + 1) * b))
        idx = np.concatenate(rows)
        x, y = self._dataset.x[idx], self._dataset.y[idx]  # copies
        return {
            "x": x.reshape(count, b, *x.shape[1:]),
            "y": y.reshape(count, b, *y.shape[1:]),
        }

    @staticmethod
    def _check_step(step: int) -> int:
        step = operator.index(step)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return step

    def __repr__(self) -> str:
        return (
            f"Batcher(num_examples={self._dataset.num_examples}, "
            f"batch_size={self._batch_size}, seed={self._seed}, "
            f"shuffle={self._shuffle})"
        )


def eval_batches(dataset: Dataset, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Every example once, in order, in batches of one shape (so jit compiles once).

    The last batch is padded with zeros to `batch_size`; ``mask`` tells real
    examples (1.0) from padding (0.0), so a metric weighted by ``mask`` counts each
    example exactly once.

    Args:
      dataset: the examples to evaluate.
      batch_size: examples per batch, B.

    Yields:
      ``{"x": x[B, ...], "y": y[B, ...], "mask": float32[B]}``.

    Raises:
      ConfigError: `batch_size` is not positive.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise ConfigError(f"data.eval_batch_size: expected an int, got {batch_size!r}")
    if batch_size <= 0:
        raise ConfigError(f"data.eval_batch_size: must be > 0, got {batch_size}")
    x, y = dataset
    n = x.shape[0]
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        real = stop - start
        batch = {"x": x[start:stop], "y": y[start:stop]}
        mask = np.ones(batch_size, dtype=np.float32)
        if real < batch_size:
            batch = {k: _pad(v, batch_size) for k, v in batch.items()}
            mask[real:] = 0.0
        else:
            batch = {k: v.copy() for k, v in batch.items()}
        batch["mask"] = mask
        yield batch


def _pad(a: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((size, *a.shape[1:]), dtype=a.dtype)
    out[: a.shape[0]] = a
    return out
