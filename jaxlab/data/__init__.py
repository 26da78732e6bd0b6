"""Datasets on the host: loaders, deterministic splits and resumable batching.

Everything here is host NumPy (the impure shell's side): load a `Dataset`, split
it into `Splits`, then feed a jitted step with `Batcher.batch(step)` and
evaluate with `eval_batches` (fixed-shape batches with a ``mask``).

Modules: `dataset` (containers, validation), `files` (file formats), `splits`
(config-driven loading, splitting), `batching`.
"""

from jaxlab.data.batching import Batcher, eval_batches
from jaxlab.data.dataset import Dataset, Splits, make_dataset, num_classes
from jaxlab.data.files import (
    load_csv,
    load_digits,
    load_mnist_idx,
    load_npz,
    read_idx,
    write_idx,
)
from jaxlab.data.splits import load_dataset, make_splits

__all__ = [
    "Batcher",
    "Dataset",
    "Splits",
    "eval_batches",
    "load_csv",
    "load_dataset",
    "load_digits",
    "load_mnist_idx",
    "load_npz",
    "make_dataset",
    "make_splits",
    "num_classes",
    "read_idx",
    "write_idx",
]
