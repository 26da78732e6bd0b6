"""Tests for jaxlab.data: loaders, splits and batching (host NumPy, fast)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxlab.config import DataConfig
from jaxlab.data import (
    Batcher,
    Dataset,
    eval_batches,
    load_csv,
    load_dataset,
    load_digits,
    load_mnist_idx,
    load_npz,
    make_dataset,
    make_splits,
    num_classes,
    read_idx,
    write_idx,
)
from jaxlab.errors import ConfigError, DataError


def _toy(n: int = 23, features: int = 3) -> Dataset:
    # x[i, 0] == i identifies each example after shuffling.
    x = np.arange(n, dtype=np.float32)[:, None] * np.ones(features, np.float32)
    return make_dataset(x, np.arange(n) % 4)


def _ids(dataset: Dataset) -> np.ndarray:
    return dataset.x[:, 0].astype(np.int64)


# ----------------------------------------------------------------- datasets


def test_make_dataset_converts_and_validates():
    ds = make_dataset(np.ones((3, 2), np.float64), np.array([0.0, 1.0, 2.0]))
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int32
    assert ds.num_examples == 3
    targets = make_dataset(np.ones((2, 2)), [0.5, 1.0]).y
    assert targets.dtype == np.float32
    with pytest.raises(DataError, match="3 examples but y has 2"):
        make_dataset(np.ones((3, 2)), np.zeros(2))
    with pytest.raises(DataError, match="empty"):
        make_dataset(np.ones((0, 2)), np.zeros(0))
    with pytest.raises(DataError, match="NaN"):
        make_dataset(np.array([[1.0, np.nan]]), [0])
    with pytest.raises(DataError, match="dtype"):
        make_dataset(np.array([["a"]]), [0])


def test_num_classes():
    assert num_classes(make_dataset(np.ones((3, 1)), [0, 4, 1])) == 5
    with pytest.raises(DataError, match="integer"):
        num_classes(make_dataset(np.ones((2, 1)), [0.5, 1.0]))
    with pytest.raises(DataError, match=">= 0"):
        num_classes(make_dataset(np.ones((2, 1)), [-1, 1]))


def test_load_digits():
    ds = load_digits()
    assert ds.x.shape == (1797, 8, 8, 1) and ds.x.dtype == np.float32
    assert ds.y.shape == (1797,) and ds.y.dtype == np.int32
    assert ds.x.min() == 0.0 and ds.x.max() == 1.0
    assert num_classes(ds) == 10
    raw = load_digits(normalize=False)
    assert raw.x.max() == 16.0
    np.testing.assert_allclose(raw.x / 16, ds.x)


def test_load_digits_without_sklearn(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(DataError, match=r"pip install 'jaxlab\[data\]'"):
        load_digits()


# ----------------------------------------------------------------- npz


@pytest.mark.parametrize("with_test", [False, True])
@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_round_trip(tmp_path, with_test, save):
    rng = np.random.default_rng(0)
    arrays = {"x": rng.normal(size=(10, 4, 4, 1)), "y": rng.integers(0, 3, 10)}
    if with_test:
        arrays |= {"x_test": rng.normal(size=(5, 4, 4, 1)), "y_test": np.arange(5)}
    path = tmp_path / "d.npz"
    save(path, **arrays)
    train, test = load_npz(path)
    np.testing.assert_allclose(train.x, arrays["x"].astype(np.float32))
    np.testing.assert_array_equal(train.y, arrays["y"])
    assert train.x.dtype == np.float32 and train.y.dtype == np.int32
    if with_test:
        np.testing.assert_allclose(test.x, arrays["x_test"].astype(np.float32))
        np.testing.assert_array_equal(test.y, arrays["y_test"])
    else:
        assert test is None


@pytest.mark.parametrize(
    ("arrays", "missing"),
    [
        ({"x": np.ones((2, 1))}, "'y'"),
        ({"x": np.ones((2, 1)), "y": [0, 1], "x_test": np.ones((1, 1))}, "'y_test'"),
    ],
)
def test_npz_missing_key(tmp_path, arrays, missing):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=rf"d\.npz: missing array {missing}"):
        load_npz(path)


def test_npz_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2))
    with pytest.raises(DataError, match="evil.npz.*unpickle"):
        load_npz(path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "not found"),
        (b"not a zip", "not an .npz archive"),
        (b"\x93NUMPY", "single .npy"),
        (b"PK\x03\x04abc", "cannot read"),
    ],
)
def test_npz_bad_files(tmp_path, content, match):
    path = tmp_path / "bad.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=rf"bad\.npz.*{match}"):
        load_npz(path)


def test_npz_truncated(tmp_path):
    path = tmp_path / "t.npz"
    np.savez(path, x=np.ones((100, 10)), y=np.zeros(100))
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match=r"t\.npz"):
        load_npz(path)


def test_npz_shape_mismatch(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, x=np.ones((3, 2)), y=np.zeros(4))
    with pytest.raises(DataError, match=r"m\.npz: x has 3 examples but y has 4"):
        load_npz(path)


# ----------------------------------------------------------------- IDX


def _write_mnist(directory, n_train=12, n_test=5, gz=False, hw=(4, 3)):
    rng = np.random.default_rng(1)
    suffix = ".gz" if gz else ""
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        if n is None:
            continue
        images = rng.integers(0, 256, (n, *hw), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        arrays[prefix] = (images, labels)
    return arrays


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(7, dtype=np.uint8),
        np.arange(60, dtype=np.uint8).reshape(3, 4, 5),
        np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3),
        np.arange(-3, 3, dtype=np.int32),
    ],
)
def test_idx_round_trip(tmp_path, name, array):
    write_idx(tmp_path / name, array)
    back = read_idx(tmp_path / name)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_idx_header_is_mnist_format(tmp_path):
    write_idx(tmp_path / "i", np.zeros((2, 28, 28), np.uint8))
    header = (tmp_path / "i").read_bytes()[:16]
    assert header == bytes.fromhex("00000803 00000002 0000001c 0000001c")
    write_idx(tmp_path / "l", np.zeros(2, np.uint8))
    assert (tmp_path / "l").read_bytes() == bytes.fromhex("00000801 00000002 0000")


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_idx(tmp_path, gz):
    arrays = _write_mnist(tmp_path, gz=gz)
    train, test = load_mnist_idx(tmp_path)
    for ds, (images, labels) in ((train, arrays["train"]), (test, arrays["t10k"])):
        assert ds.x.shape == (*images.shape, 1) and ds.x.dtype == np.float32
        np.testing.assert_allclose(ds.x[..., 0], images / 255, rtol=1e-6)
        np.testing.assert_array_equal(ds.y, labels)
        assert ds.y.dtype == np.int32
    raw, _ = load_mnist_idx(tmp_path, normalize=False)
    np.testing.assert_array_equal(raw.x[..., 0], arrays["train"][0])


def test_load_mnist_idx_without_test_files(tmp_path):
    _write_mnist(tmp_path, n_test=None)
    train, test = load_mnist_idx(tmp_path)
    assert train.num_examples == 12 and test is None


def test_idx_truncated(tmp_path):
    _write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="train-images-idx3-ubyte: truncated"):
        load_mnist_idx(tmp_path)
    path.write_bytes(path.read_bytes()[:10])  # inside the header
    with pytest.raises(DataError, match="train-images-idx3-ubyte: truncated"):
        read_idx(path)


def test_idx_bad_sizes(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(bytes.fromhex("00000803 ffffffff ffffffff ffffffff") + bytes(8))
    with pytest.raises(DataError, match=r"x\.idx: truncated"):
        read_idx(path)
    write_idx(path, np.zeros(3, np.uint8))
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(DataError, match=r"x\.idx: 1 unexpected bytes after the data"):
        read_idx(path)


def test_idx_truncated_gzip(tmp_path):
    _write_mnist(tmp_path, gz=True, hw=(28, 28))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz"):
        load_mnist_idx(tmp_path)


def test_idx_wrong_magic(tmp_path):
    _write_mnist(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte"
    labels = tmp_path / "train-labels-idx1-ubyte"
    # A labels file where the images should be: valid IDX, wrong magic.
    images.write_bytes(labels.read_bytes())
    with pytest.raises(
        DataError, match="train-images-idx3-ubyte: magic number 0x00000801, expected"
    ):
        load_mnist_idx(tmp_path)
    images.write_bytes(b"\x1f\x8b\x08\x00" + bytes(40))
    with pytest.raises(DataError, match="train-images-idx3-ubyte: bad magic"):
        load_mnist_idx(tmp_path)


def test_idx_count_mismatch(tmp_path):
    _write_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: 5 images but"):
        load_mnist_idx(tmp_path)


def test_idx_missing_files(tmp_path):
    with pytest.raises(DataError, match="directory not found"):
        load_mnist_idx(tmp_path / "nope")
    _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte: file not found"):
        load_mnist_idx(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="train-labels-idx1-ubyte: file not found"):
        load_mnist_idx(tmp_path)
    with pytest.raises(DataError, match="x: file not found"):
        read_idx(tmp_path / "x")


def test_write_idx_rejects_unsupported():
    with pytest.raises(ValueError, match="dtype"):
        write_idx("unused", np.zeros(2, np.int64))


# ----------------------------------------------------------------- CSV


def test_csv_without_header(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("1,2,0\n3.5,4,1\n\n5,6e-1,2\n")
    ds = load_csv(path)
    np.testing.assert_allclose(ds.x, [[1, 2], [3.5, 4], [5, 0.6]])
    np.testing.assert_array_equal(ds.y, [0, 1, 2])
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int32
    first = load_csv(path, label_column=0)
    np.testing.assert_allclose(first.y, [1, 3.5, 5])
    assert first.y.dtype == np.float32
    np.testing.assert_allclose(first.x, [[2, 0], [4, 1], [0.6, 2]])


@pytest.mark.parametrize("label_column", ["label", 1, -2])
def test_csv_with_header(tmp_path, label_column):
    path = tmp_path / "h.csv"
    path.write_text("\ufeffa, label ,b\n1,0,2\n3,1,4\n")
    ds = load_csv(path, label_column=label_column)
    np.testing.assert_allclose(ds.x, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(ds.y, [0, 1])


@pytest.mark.parametrize(
    ("text", "kwargs", "match"),
    [
        ("a,b,y\n1,2,0\n3,x,1\n", {}, r"line 3, column 2 \('b'\): 'x' is not a num"),
        ("1,2,0\n3,,1\n", {}, "line 2, column 2: '' is not a number"),
        ("1,2,0\n3,4\n", {}, "line 2 has 2 cells, expected 3"),
        ("1,foo,0\n", {}, "header row must hold no numbers"),
        ("a,b\n1,2\n", {"label_column": "c"}, "'c' is not a column"),
        ("1,2\n", {"label_column": "a"}, "no header row"),
        ("1,2\n", {"label_column": 2}, "out of range"),
        ("a,b\n", {}, "no data rows"),
        ("", {}, "no rows"),
        ("1,nan,0\n", {}, "x contains NaN"),
    ],
)
def test_csv_errors(tmp_path, text, kwargs, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=rf"bad\.csv: .*{match}"):
        load_csv(path, **kwargs)


def test_csv_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"none\.csv: file not found"):
        load_csv(tmp_path / "none.csv")


# ----------------------------------------------------------------- splits


@pytest.mark.parametrize(("val", "test"), [(0.0, 0.2), (0.25, 0.2), (0.3, 0.01)])
def test_splits_partition_the_data(val, test):
    ds = _toy(101)
    splits = make_splits(ds, validation_split=val, test_split=test, seed=3)
    parts = [splits.train, splits.test] + (
        [splits.validation] if splits.validation else []
    )
    ids = np.concatenate([_ids(p) for p in parts])
    np.testing.assert_array_equal(np.sort(ids), np.arange(101))  # disjoint, covers
    assert splits.test.num_examples == int(np.floor(test * 101 + 0.5))
    assert (splits.validation is None) == (val == 0)
    for part in parts:  # labels travel with their examples
        np.testing.assert_array_equal(part.y, _ids(part) % 4)


def test_splits_deterministic_in_seed():
    ds = _toy(50)

    def split(seed):
        s = make_splits(ds, validation_split=0.2, test_split=0.2, seed=seed)
        return [_ids(s.train), _ids(s.validation), _ids(s.test)]

    for a, b in zip(split(7), split(7), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not all(
        np.array_equal(np.sort(a), np.sort(b))
        for a, b in zip(split(7), split(8), strict=True)
    )


def test_splits_test_set_independent_of_validation_split():
    ds = _toy(60)
    a = make_splits(ds, validation_split=0.0, test_split=0.2, seed=1)
    b = make_splits(ds, validation_split=0.3, test_split=0.2, seed=1)
    np.testing.assert_array_equal(_ids(a.test), _ids(b.test))


def test_splits_with_given_test_set():
    train, test = _toy(20), _toy(5)
    splits = make_splits(train, test, validation_split=0.25, test_split=0.5, seed=0)
    assert splits.test is test
    assert splits.validation.num_examples == 5 and splits.train.num_examples == 15


def test_splits_errors():
    with pytest.raises(ConfigError, match="data.test_split: .* has no test set"):
        make_splits(_toy(10), validation_split=0.1, test_split=0.0, seed=0)
    with pytest.raises(ConfigError, match="leaves no training examples"):
        make_splits(_toy(2), validation_split=0.1, test_split=0.1, seed=0)


def test_load_dataset_digits():
    config = DataConfig(dataset="digits", validation_split=0.1, test_split=0.2)
    splits = load_dataset(config, seed=0)
    assert splits.test.num_examples == 359  # floor(0.2 * 1797 + 0.5)
    assert splits.validation.num_examples == 180
    assert splits.train.num_examples == 1797 - 359 - 180
    assert splits.train.x.shape[1:] == (8, 8, 1)


def test_load_dataset_resolves_relative_paths(tmp_path):
    (tmp_path / "data").mkdir()
    _write_mnist(tmp_path / "data", n_train=20, n_test=6)
    config = DataConfig(dataset="mnist", path="data", validation_split=0.25)
    splits = load_dataset(config, base_dir=tmp_path, seed=1)
    assert splits.test.num_examples == 6  # the given test set; test_split ignored
    assert splits.validation.num_examples == 5 and splits.train.num_examples == 15
    (tmp_path / "t.csv").write_text(
        "f,y\n" + "".join(f"{i},{i % 2}\n" for i in range(10))
    )
    csv_config = DataConfig(dataset="csv", path="t.csv", label_column="y")
    assert load_dataset(csv_config, base_dir=tmp_path).test.num_examples == 2
    np.savez(tmp_path / "d.npz", x=np.ones((10, 2)), y=np.zeros(10))
    npz_config = DataConfig(dataset="npz", path=str(tmp_path / "d.npz"))
    assert load_dataset(npz_config, base_dir="/elsewhere").train.num_examples == 8


# ----------------------------------------------------------------- batching


@pytest.mark.parametrize("shuffle", [True, False])
def test_batcher_epochs_are_permutations(shuffle):
    ds = _toy(24)
    batcher = Batcher(ds, batch_size=6, seed=0, shuffle=shuffle)
    assert batcher.steps_per_epoch == 4
    epochs = []
    for epoch in range(3):
        batches = [batcher.batch(epoch * 4 + i) for i in range(4)]
        for b in batches:
            assert b["x"].shape == (6, 3) and b["y"].shape == (6,)
            np.testing.assert_array_equal(b["y"], _ids(Dataset(b["x"], b["y"])) % 4)
        ids = np.concatenate([b["x"][:, 0] for b in batches]).astype(int)
        np.testing.assert_array_equal(np.sort(ids), np.arange(24))
        epochs.append(ids)
    if shuffle:
        assert not np.array_equal(epochs[0], epochs[1])
        assert not np.array_equal(epochs[1], epochs[2])
        np.testing.assert_array_equal(epochs[0], batcher.epoch_order(0))
    else:
        for ids in epochs:
            np.testing.assert_array_equal(ids, np.arange(24))


def test_batcher_is_resumable():
    ds = _toy(23)
    batcher = Batcher(ds, batch_size=5, seed=11)
    assert batcher.steps_per_epoch == 4  # drop remainder
    sequential = [batcher.batch(s) for s in range(13)]
    for step in (0, 3, 4, 9, 12, 7):  # any order, each from a fresh Batcher
        fresh = Batcher(ds, batch_size=5, seed=11).batch(step)
        np.testing.assert_array_equal(fresh["x"], sequential[step]["x"])
        np.testing.assert_array_equal(fresh["y"], sequential[step]["y"])
        np.testing.assert_array_equal(batcher.batch(step)["x"], fresh["x"])
    assert batcher.position(9) == {"epoch": 2, "index": 1}
    other_seed = Batcher(ds, batch_size=5, seed=12).batch(0)
    assert not np.array_equal(other_seed["x"], sequential[0]["x"])


def test_batcher_matches_documented_order():
    ds = _toy(10)
    batch = Batcher(ds, batch_size=3, seed=4).batch(5)  # epoch 1, index 2
    order = np.random.default_rng([4, 1]).permutation(10)
    np.testing.assert_array_equal(_ids(Dataset(batch["x"], batch["y"])), order[6:9])


def test_batcher_batches_do_not_alias_the_dataset():
    ds = _toy(6)
    batch = Batcher(ds, batch_size=3, seed=0, shuffle=False).batch(0)
    batch["x"][:] = -1
    assert ds.x.min() == 0


@pytest.mark.parametrize("shuffle", [True, False])
def test_batcher_batches_stacks_consecutive_steps(shuffle):
    ds = _toy(23)
    batcher = Batcher(ds, batch_size=5, seed=3, shuffle=shuffle)
    stacked = Batcher(ds, batch_size=5, seed=3, shuffle=shuffle).batches(2, 7)
    assert stacked["x"].shape == (7, 5, 3) and stacked["y"].shape == (7, 5)
    for i in range(7):  # crosses the epoch boundary at step 4
        one = batcher.batch(2 + i)
        np.testing.assert_array_equal(stacked["x"][i], one["x"])
        np.testing.assert_array_equal(stacked["y"][i], one["y"])
    stacked["x"][:] = -1
    assert ds.x.min() == 0
    with pytest.raises(ValueError, match="count"):
        batcher.batches(0, 0)
    with pytest.raises(ValueError, match="step"):
        batcher.batches(-1, 2)


def test_batcher_errors():
    ds = _toy(10)
    with pytest.raises(ConfigError, match=r"data.batch_size: 11 .*\(10 examples\)"):
        Batcher(ds, batch_size=11, seed=0)
    with pytest.raises(ConfigError, match="data.batch_size"):
        Batcher(ds, batch_size=0, seed=0)
    with pytest.raises(ValueError, match="step"):
        Batcher(ds, batch_size=2, seed=0).batch(-1)


@pytest.mark.parametrize(("n", "batch_size"), [(10, 3), (9, 3), (2, 5), (1, 1)])
def test_eval_batches_cover_each_example_once(n, batch_size):
    ds = _toy(n)
    batches = list(eval_batches(ds, batch_size))
    assert len(batches) == -(-n // batch_size)
    for b in batches:
        assert b["x"].shape == (batch_size, 3) and b["y"].shape == (batch_size,)
        assert b["mask"].dtype == np.float32 and b["mask"].shape == (batch_size,)
        assert b["x"].dtype == np.float32 and b["y"].dtype == np.int32
    mask = np.concatenate([b["mask"] for b in batches])
    ids = np.concatenate([b["x"][:, 0] for b in batches])[mask == 1]
    np.testing.assert_array_equal(ids, np.arange(n))  # in order, each once
    assert mask.sum() == n
    np.testing.assert_array_equal(mask, np.arange(mask.size) < n)  # padding last
