"""Dataset loaders: scikit-learn digits, ``.npz`` archives, MNIST IDX files, CSV.

Each loader returns validated `Dataset`s (see `make_dataset`) and raises
`DataError`, with the file's path first in the message, for a missing, unreadable
or truncated file, a wrong magic number, mismatched shapes, empty data or NaN/Inf
features. Nothing here unpickles: ``.npz`` files are read with
``allow_pickle=False``.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from jaxlab.data.dataset import Dataset, make_dataset
from jaxlab.errors import DataError

# Errors a damaged file can raise while it is read (zip, gzip, npy headers).
_READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error)


def load_digits(normalize: bool = True) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes).

    Args:
      normalize: scale pixels from ``[0, 16]`` to ``[0, 1]``.

    Returns:
      ``x``: float32 ``[1797, 8, 8, 1]``; ``y``: int32 ``[1797]`` in ``[0, 10)``.

    Raises:
      DataError: scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise DataError(
            "dataset 'digits' needs scikit-learn: pip install 'jaxlab[data]'"
        ) from None
    bunch = sklearn_digits()
    x = bunch.images[..., None].astype(np.float32)  # [N, 8, 8, 1]
    if normalize:
        x /= 16.0
    return make_dataset(x, bunch.target, source="dataset 'digits'")


# ----------------------------------------------------------------- npz


def load_npz(path: str | os.PathLike) -> tuple[Dataset, Dataset | None]:
    """Reads arrays ``x``, ``y`` and optionally ``x_test``, ``y_test`` from an npz.

    Other arrays in the archive are ignored. Object arrays are refused (they would
    need unpickling, which can run arbitrary code).

    Args:
      path: an archive written by ``np.savez`` or ``np.savez_compressed``.

    Returns:
      ``(train, test)``; ``test`` is None when the archive has no test arrays.

    Raises:
      DataError: missing or damaged file, a missing key (``x_test`` without
        ``y_test`` included), object arrays, or invalid arrays.
    """
    path = _existing_file(path)
    # Check the magic first: np.load would take anything else for a pickle.
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    if magic.startswith(b"\x93NUMPY"):
        raise DataError(f"{path}: expected an .npz archive, found a single .npy array")
    if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise DataError(f"{path}: not an .npz archive (no zip header)")
    try:
        archive = np.load(path, allow_pickle=False)
    except _READ_ERRORS as e:
        raise DataError(f"{path}: cannot read as an .npz archive: {e}") from None
    with archive:
        keys = set(archive.files)

        def get(key: str) -> np.ndarray:
            if key not in keys:
                raise DataError(
                    f"{path}: missing array {key!r} (found {sorted(keys) or 'none'})"
                )
            try:
                return archive[key]
            except _READ_ERRORS as e:
                if "allow_pickle" in str(e):
                    raise DataError(
                        f"{path}: array {key!r} holds Python objects; refusing to "
                        "unpickle (save plain numeric arrays)"
                    ) from None
                raise DataError(f"{path}: cannot read array {key!r}: {e}") from None

        train = make_dataset(get("x"), get("y"), source=str(path))
        test = None
        if "x_test" in keys or "y_test" in keys:
            test = make_dataset(get("x_test"), get("y_test"), source=f"{path} (test)")
    _check_same_features(train, test, path)
    return train, test


# ----------------------------------------------------------------- IDX (MNIST)

# IDX type codes (third magic byte) and the big-endian dtypes they stand for.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dtype.newbyteorder("="): code for code, dtype in _IDX_DTYPES.items()}
_MAGIC_IMAGES = 0x00000803  # uint8, rank 3
_MAGIC_LABELS = 0x00000801  # uint8, rank 1
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (the MNIST format), gzipped if its name ends in ``.gz``.

    The header is a big-endian magic number ``0x0000TTRR`` (``TT``: type code,
    0x08 for uint8; ``RR``: rank), then ``RR`` big-endian uint32 dimensions, then
    the data in C order.

    Returns:
      The array, in native byte order.

    Raises:
      DataError: missing, unreadable or truncated file, bad magic number, or
        bytes after the data.
    """
    path = _existing_file(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    code, rank = data[2], data[3]
    if data[:2] != b"\0\0" or code not in _IDX_DTYPES or rank == 0:
        raise DataError(f"{path}: bad magic number 0x{magic:08X}: not an IDX file")
    header = 4 + 4 * rank
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes)")
    shape = tuple(
        int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank)
    )
    dtype = _IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    found = len(data) - header
    if found < expected:
        raise DataError(
            f"{path}: truncated: shape {shape} needs {expected} bytes of data, "
            f"found {found}"
        )
    if found > expected:
        raise DataError(f"{path}: {found - expected} unexpected bytes after the data")
    array = np.frombuffer(
        data, dtype=dtype, count=expected // dtype.itemsize, offset=header
    )
    return array.reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Writes an array as an IDX file, gzipped if `path` ends in ``.gz``.

    MNIST files are uint8 of rank 3 (images ``[N, H, W]``) or rank 1 (labels
    ``[N]``); int8, int16, int32, float32 and float64 of any rank 1-255 are
    written too.

    Raises:
      ValueError: an unsupported dtype or rank.
    """
    array = np.asarray(array)
    code = _IDX_CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"write_idx: unsupported dtype {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"write_idx: rank must be 1-255, got {array.ndim}")
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    payload = header + array.astype(_IDX_DTYPES[code], copy=False).tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)


def load_mnist_idx(
    directory: str | os.PathLike, normalize: bool = True
) -> tuple[Dataset, Dataset | None]:
    """Reads MNIST-format IDX files from a directory.

    Expects ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte`` and,
    optionally, ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``; each
    may instead be gzipped with a ``.gz`` suffix (the plain file wins if both
    exist). Works for Fashion-MNIST and other datasets in the same layout.

    Args:
      directory: the folder holding the files.
      normalize: scale pixels from ``[0, 255]`` to ``[0, 1]``.

    Returns:
      ``(train, test)``: ``x`` float32 ``[N, H, W, 1]``, ``y`` int32 ``[N]``;
      ``test`` is None when the t10k files are absent.

    Raises:
      DataError: a missing training file or a test file without its partner,
        wrong magic numbers, truncated files, or image and label counts that
        differ.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: MNIST directory not found")
    found = {
        split: [_find_idx(directory / name) for name in names]
        for split, names in _MNIST_FILES.items()
    }
    images_path, labels_path = found["train"]
    if images_path is None or labels_path is None:
        missing = _MNIST_FILES["train"][0 if images_path is None else 1]
        raise DataError(f"{directory / missing}: file not found (nor with .gz)")
    train = _read_mnist_pair(images_path, labels_path, normalize)
    test = None
    test_images, test_labels = found["test"]
    if test_images is not None or test_labels is not None:
        if test_images is None or test_labels is None:
            missing = _MNIST_FILES["test"][0 if test_images is None else 1]
            raise DataError(
                f"{directory / missing}: file not found (nor with .gz), but its "
                "partner test file exists"
            )
        test = _read_mnist_pair(test_images, test_labels, normalize)
    _check_same_features(train, test, directory)
    return train, test


def _find_idx(path: Path) -> Path | None:
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _read_mnist_pair(images_path: Path, labels_path: Path, normalize: bool) -> Dataset:
    images = _read_idx_expecting(images_path, _MAGIC_IMAGES, "images [N, H, W]")
    labels = _read_idx_expecting(labels_path, _MAGIC_LABELS, "labels [N]")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path}: {images.shape[0]} images but {labels_path} has "
            f"{labels.shape[0]} labels"
        )
    x = images[..., None].astype(np.float32)  # [N, H, W, 1]
    if normalize:
        x /= 255.0
    return make_dataset(x, labels, source=str(images_path))


def _read_idx_expecting(path: Path, magic: int, what: str) -> np.ndarray:
    array = read_idx(path)
    found = (_IDX_CODES[array.dtype] << 8) | array.ndim
    if found != magic:
        raise DataError(
            f"{path}: magic number 0x{found:08X}, expected 0x{magic:08X} (uint8 {what})"
        )
    return array


# ----------------------------------------------------------------- CSV


def load_csv(
    path: str | os.PathLike, *, label_column: str | int = -1, delimiter: str = ","
) -> Dataset:
    """Reads a numeric CSV file: one label (or target) column, the rest features.

    The first row is a header if none of its cells is a number. Blank lines are
    skipped; every other cell must parse as a float (no missing values).

    Args:
      path: the CSV file (UTF-8, an optional byte-order mark is skipped).
      label_column: the label column's 0-based index (negative counts from the
        end) or, when the file has a header, its name.
      delimiter: the field separator.

    Returns:
      ``x``: float32 ``[N, F]``; ``y``: ``[N]``, int32 if every label is
      integral, else float32.

    Raises:
      DataError: missing or undecodable file, a non-numeric or empty cell
        (naming its line and column), rows of different lengths, an unknown
        label column, no data rows, or NaN/Inf features.
    """
    path = _existing_file(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            rows = [
                (reader.line_num, row) for row in reader if any(c.strip() for c in row)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read CSV: {e}") from None
    if not rows:
        raise DataError(f"{path}: the file has no rows")
    header = None
    if not any(_is_number(cell) for cell in rows[0][1]):
        header = [cell.strip() for cell in rows[0][1]]
        rows = rows[1:]
        if not rows:
            raise DataError(f"{path}: the file has a header but no data rows")
    width = len(header) if header is not None else len(rows[0][1])
    if width < 2:
        raise DataError(f"{path}: need a label column and at least one feature")
    label = _label_index(label_column, header, width, path)

    data = np.empty((len(rows), width), dtype=np.float64)
    for r, (line, row) in enumerate(rows):
        if len(row) != width:
            raise DataError(
                f"{path}: line {line} has {len(row)} cells, expected {width}"
            )
        for j, cell in enumerate(row):
            try:
                data[r, j] = float(cell)
            except ValueError:
                name = f" ({header[j]!r})" if header is not None else ""
                hint = "" if r or header else " (a header row must hold no numbers)"
                raise DataError(
                    f"{path}: line {line}, column {j + 1}{name}: {cell.strip()!r} "
                    f"is not a number{hint}"
                ) from None
    x = np.delete(data, label, axis=1)
    return make_dataset(x, data[:, label], source=str(path))


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _label_index(
    label_column: str | int, header: list[str] | None, width: int, path: Path
) -> int:
    if isinstance(label_column, str):
        if header is None:
            raise DataError(
                f"{path}: label_column {label_column!r} is a name, but the file "
                "has no header row; give the column index"
            )
        matches = [j for j, name in enumerate(header) if name == label_column]
        if len(matches) != 1:
            problem = "is not a column" if not matches else "names several columns"
            raise DataError(
                f"{path}: label_column {label_column!r} {problem} (columns: "
                f"{', '.join(header)})"
            )
        return matches[0]
    if isinstance(label_column, bool) or not isinstance(label_column, int):
        raise DataError(f"{path}: label_column must be a str or int")
    if not -width <= label_column < width:
        raise DataError(
            f"{path}: label_column {label_column} is out of range for {width} columns"
        )
    return label_column % width


# ----------------------------------------------------------------- helpers


def _existing_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    return path


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except _READ_ERRORS as e:
        raise DataError(f"{path}: cannot read: {e}") from None


def _check_same_features(
    train: Dataset, test: Dataset | None, source: str | os.PathLike
) -> None:
    if test is None:
        return
    if train.x.shape[1:] != test.x.shape[1:] or train.y.shape[1:] != test.y.shape[1:]:
        raise DataError(
            f"{source}: test examples have shapes x {test.x.shape[1:]}, "
            f"y {test.y.shape[1:]} but training examples x {train.x.shape[1:]}, "
            f"y {train.y.shape[1:]}"
        )
