"""In-memory datasets: the `Dataset` and `Splits` containers and their validation.

Everything here is host NumPy. A `Dataset` is built by `make_dataset`, which every
loader calls, so all datasets obey the same rules: ``x`` is float32 with no NaN or
Inf, ``y`` is int32 class labels (when all values are integral) or float32
targets, and both have the same, non-zero, leading length.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxlab.errors import DataError

_INT32 = np.iinfo(np.int32)


class Dataset(NamedTuple):
    """Examples and their labels or targets, as host NumPy arrays.

    Build one with `make_dataset` (which validates and converts); the loaders do.
    Note that ``len(dataset)`` is 2 (it is a tuple): use `num_examples`.

    Attributes:
      x: float32 features ``[N, F]`` or images ``[N, H, W, C]`` (NHWC).
      y: int32 class labels ``[N]`` or float32 targets ``[N, ...]``.
    """

    x: np.ndarray
    y: np.ndarray

    @property
    def num_examples(self) -> int:
        """The number of examples, N."""
        return int(self.x.shape[0])


class Splits(NamedTuple):
    """A dataset split for training, model selection and the final evaluation.

    Attributes:
      train: the examples to train on.
      validation: held out from the training data; None when
        ``validation_split == 0``.
      test: the dataset's own test set, or a fraction held out of its training data.
    """

    train: Dataset
    validation: Dataset | None
    test: Dataset


def make_dataset(x: np.ndarray, y: np.ndarray, *, source: str = "arrays") -> Dataset:
    """Validates and converts arrays into a `Dataset`.

    ``x`` becomes float32. ``y`` becomes int32 when all its values are integral
    (booleans, integers, or floats such as ``1.0``) and fit in int32, else float32.

    Args:
      x: features, ``[N, ...]`` with at least 2 dimensions, any real numeric dtype.
      y: labels or targets, ``[N, ...]``, any real numeric dtype.
      source: what the arrays came from (a file path); starts every error message.

    Returns:
      The validated `Dataset`.

    Raises:
      DataError: non-numeric arrays, ``x`` of rank < 2, different or zero
        leading lengths, NaN or Inf values.
    """
    x = _numeric(x, "x", source)
    y = _numeric(y, "y", source)
    if x.ndim < 2:
        raise DataError(
            f"{source}: x must be [N, features...] with rank >= 2, got shape {x.shape}"
        )
    if y.ndim < 1:
        raise DataError(f"{source}: y must be [N, ...], got a scalar")
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"{source}: x has {x.shape[0]} examples but y has {y.shape[0]} "
            f"(shapes {x.shape} and {y.shape})"
        )
    if x.shape[0] == 0:
        raise DataError(f"{source}: the dataset is empty")
    x = x.astype(np.float32, copy=False)
    # Checked after the cast: float64 values beyond float32's range become Inf.
    if not np.isfinite(x).all():
        raise DataError(f"{source}: x contains NaN or Inf")
    return Dataset(x=x, y=_labels(y, source))


def num_classes(dataset: Dataset) -> int:
    """The number of classes, ``max(y) + 1``, of a classification dataset.

    Raises:
      DataError: ``y`` is not a vector of non-negative integer class labels.
    """
    y = dataset.y
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(
            f"labels must be integer class ids of shape [N], got {y.dtype} "
            f"labels of shape {y.shape} (a regression target?)"
        )
    if y.size == 0:
        raise DataError("the dataset is empty")
    if y.min() < 0:
        raise DataError(f"class labels must be >= 0, found {int(y.min())}")
    return int(y.max()) + 1


def _numeric(a: np.ndarray, name: str, source: str) -> np.ndarray:
    try:
        a = np.asarray(a)
    except (ValueError, TypeError) as e:  # ragged nested lists
        raise DataError(f"{source}: {name} is not a numeric array: {e}") from None
    if a.dtype.kind not in "biuf":
        raise DataError(
            f"{source}: {name} must be a real numeric array, got dtype {a.dtype}"
        )
    return a


def _labels(y: np.ndarray, source: str) -> np.ndarray:
    """int32 if every value is an integer that fits in int32, else float32."""
    if y.dtype.kind in "biu":
        if y.dtype.kind != "b" and (y.min() < _INT32.min or y.max() > _INT32.max):
            raise DataError(f"{source}: integer labels in y do not fit in int32")
        return y.astype(np.int32, copy=False)
    if not np.isfinite(y).all():
        raise DataError(f"{source}: y contains NaN or Inf")
    integral = (
        np.array_equal(y, np.round(y))
        and y.min() >= _INT32.min
        and y.max() <= _INT32.max
    )
    return y.astype(np.int32 if integral else np.float32)
