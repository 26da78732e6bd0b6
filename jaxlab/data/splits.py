"""Loading a dataset from a `DataConfig` and splitting it, deterministically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jaxlab.data.dataset import Dataset, Splits
from jaxlab.data.files import load_csv, load_digits, load_mnist_idx, load_npz
from jaxlab.errors import ConfigError, DataError

if TYPE_CHECKING:
    from jaxlab.config import DataConfig


def load_dataset(
    config: DataConfig, *, base_dir: str | os.PathLike = ".", seed: int = 0
) -> Splits:
    """Loads the dataset a `DataConfig` names and splits it (see `make_splits`).

    Args:
      config: the ``data`` section of an experiment config.
      base_dir: the folder a relative ``config.path`` is resolved against (the
        config file's folder).
      seed: seeds the split permutation.

    Returns:
      The train, validation and test splits.

    Raises:
      DataError: the files are missing or invalid.
      ConfigError: ``test_split`` is 0 but the dataset has no test set, or a
        split leaves no training examples.
    """
    test = None
    if config.dataset == "digits":
        train = load_digits(normalize=config.normalize)
    else:
        if config.path is None:
            raise ConfigError(f"data.path: required for dataset {config.dataset!r}")
        path = Path(config.path).expanduser()
        if not path.is_absolute():
            path = Path(base_dir) / path
        if config.dataset == "npz":
            train, test = load_npz(path)
        elif config.dataset == "mnist":
            train, test = load_mnist_idx(path, normalize=config.normalize)
        elif config.dataset == "csv":
            train = load_csv(path, label_column=config.label_column)
        else:
            raise ConfigError(f"data.dataset: unknown dataset {config.dataset!r}")
    return make_splits(
        train,
        test,
        validation_split=config.validation_split,
        test_split=config.test_split,
        seed=seed,
        name=config.dataset,
    )


def make_splits(
    train: Dataset,
    test: Dataset | None = None,
    *,
    validation_split: float,
    test_split: float,
    seed: int,
    name: str = "arrays",
) -> Splits:
    """Holds out test and validation examples from the training data.

    Both fractions are of the N examples in `train`. One permutation
    ``np.random.default_rng(seed).permutation(N)`` orders the examples: the
    first ``n_test`` form the test split (only when `test` is None; a given
    test set is used as is and `test_split` ignored), the next ``n_val`` the
    validation split, the rest the training split, each in permuted order. So
    the test split does not change with `validation_split`.

    Rounding: ``n = floor(fraction * N + 0.5)`` (half up), at least 1 when the
    fraction is positive; at least one training example must remain.

    Args:
      train: the dataset's training examples.
      test: the dataset's own test set, if it has one.
      validation_split: fraction of `train` held out for validation, in [0, 1).
      test_split: fraction of `train` held out for testing when `test` is None.
      seed: seeds the permutation; the same seed gives the same splits.
      name: the dataset's name, for error messages.

    Raises:
      ConfigError: invalid fractions, ``test_split == 0`` with no test set, or
        no training examples left.
    """
    for field, fraction in (
        ("validation_split", validation_split),
        ("test_split", test_split),
    ):
        if not 0 <= fraction < 1:
            raise ConfigError(f"data.{field}: must be in [0, 1), got {fraction}")
    n = train.num_examples
    n_test = 0
    if test is None:
        if test_split == 0:
            raise ConfigError(
                f"data.test_split: dataset {name!r} has no test set of its own, "
                "so test_split must be > 0"
            )
        n_test = _count(test_split, n)
    n_val = _count(validation_split, n)
    if n - n_test - n_val < 1:
        raise ConfigError(
            f"data.validation_split: holding out {n_test} test and {n_val} "
            f"validation examples leaves no training examples (dataset {name!r} "
            f"has {n})"
        )
    order = np.random.default_rng(seed).permutation(n)
    if test is None:
        test = _take(train, order[:n_test])
    validation = _take(train, order[n_test : n_test + n_val]) if n_val else None
    return Splits(
        train=_take(train, order[n_test + n_val :]), validation=validation, test=test
    )


def _count(fraction: float, n: int) -> int:
    if fraction == 0:
        return 0
    return max(1, int(np.floor(fraction * n + 0.5)))


def _take(dataset: Dataset, indices: np.ndarray) -> Dataset:
    if indices.size == 0:  # unreachable via make_splits; keeps Dataset non-empty
        raise DataError("a split would be empty")
    return Dataset(x=dataset.x[indices], y=dataset.y[indices])
