"""Crash-safe checkpoints of array pytrees, on top of orbax's CheckpointManager.

A checkpoint is one directory ``<directory>/<step>/`` holding three orbax items,
written together and committed atomically:

- ``state``: the arrays of the pytree (orbax ``StandardSave``), stored as a flat
  dict of numpy arrays keyed ``l0, l1, ...`` (so any pytree node type, Haiku's
  ``"mlp/~/linear"`` names and typed PRNG keys all store the same way);
- ``manifest``: JSON, one entry per leaf: its path (``params/linear/w``), shape,
  dtype and CRC32 of its bytes;
- ``meta``: the caller's small JSON dict (e.g. the config hash, the data epoch).

Atomicity is orbax's: it writes ``<step>.orbax-checkpoint-tmp/``, writes
``commit_success.txt`` into it and renames it to ``<step>/`` (one atomic rename on
a local filesystem). Only directories named by a step number that contain
``commit_success.txt`` count as checkpoints, so a save killed at any moment leaves
nothing that `latest_step` or `restore` would use. Data damaged after the commit
(truncated or overwritten files) is caught by orbax's own errors or by the CRC32
check; `restore` then warns and falls back to the previous checkpoint.

Restoring never unpickles: orbax reads tensorstore arrays and JSON.

Testing failpoint: with ``JAXLAB_FAULT_KILL_DURING_SAVE=<step>`` in the
environment, `Checkpointer.save` of that step SIGKILLs its own process once orbax
has written all of the checkpoint's files into ``<step>.orbax-checkpoint-tmp/``
and before it commits them (the ``commit_success.txt`` write and the rename), so
tests can kill a save at its most delicate moment deterministically
(`jaxlab.faults`). Unset, it costs one environment lookup per save.

orbax is slow to import, so it is imported on the first save or restore.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import warnings
import zlib
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxlab.errors import CheckpointError

PyTree = Any

_COMMIT_MARKER = "commit_success.txt"  # orbax atomicity_types.COMMIT_SUCCESS_FILE
_TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax atomicity_types.TMP_DIR_SUFFIX
_STEP_NAME = re.compile(r"0|[1-9][0-9]*")
_FORMAT = "jaxlab-checkpoint"
_VERSION = 1

# Testing failpoint (fault injection), see the module docstring.
KILL_DURING_SAVE_ENV = "JAXLAB_FAULT_KILL_DURING_SAVE"


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was skipped in favour of an older one."""


class _Damaged(Exception):
    """A committed checkpoint cannot be read back intact (internal)."""


class _Leaf(NamedTuple):
    """How one target leaf is stored and rebuilt."""

    path: str  # "params/linear/w"
    shape: tuple[int, ...]  # logical shape (for PRNG keys: the key array's shape)
    dtype: str  # "float32", "key<fry>", ...
    kind: str  # "jax" | "numpy" | "python" | "key"


def _orbax() -> Any:
    """Imports orbax.checkpoint on first use (it takes ~0.5 s)."""
    import orbax.checkpoint as ocp

    return ocp


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _path_str(path: tuple[Any, ...]) -> str:
    return "/".join(_key_name(k) for k in path) or "<root>"


def _is_prng_key(leaf: Any) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _describe(path: str, leaf: Any) -> _Leaf:
    """Shape, dtype and kind of one leaf of a state or target pytree."""
    if _is_prng_key(leaf):
        if not isinstance(leaf, jax.Array):
            raise TypeError(f"{path}: a typed PRNG key leaf must be a key array")
        return _Leaf(path, tuple(leaf.shape), str(leaf.dtype), "key")
    if isinstance(leaf, jax.Array | jax.ShapeDtypeStruct):
        kind = "jax"
    elif isinstance(leaf, np.ndarray | np.generic):
        kind = "numpy"
    elif isinstance(leaf, bool | int | float | complex):
        kind = "python"
    else:
        raise TypeError(f"{path}: cannot checkpoint a leaf of type {type(leaf)}")
    dtype = np.dtype(leaf.dtype) if kind != "python" else np.asarray(leaf).dtype
    if dtype.kind not in "biufcV":  # V: ml_dtypes such as bfloat16 report kind V
        raise TypeError(f"{path}: cannot checkpoint an array of dtype {dtype}")
    return _Leaf(path, tuple(np.shape(leaf)), str(dtype), kind)


def _crc32(array: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic) or (
        isinstance(value, np.ndarray | jax.Array) and np.ndim(value) == 0
    ):
        return np.asarray(value).item()
    raise TypeError(f"meta value {value!r} is not JSON serialisable")


def _plain_json(meta: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON round trip of `meta` (numpy scalars become Python numbers)."""
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    return json.loads(json.dumps(dict(meta), default=_json_default))


def tree_equal(a: PyTree, b: PyTree) -> bool:
    """Whether two pytrees of arrays are exactly, bitwise, equal.

    The tree structures must be equal, and each pair of leaves must have the same
    shape, dtype and bytes (so NaNs with equal payloads compare equal, and ``0.0``
    differs from ``-0.0``). Typed PRNG keys compare by key data and key type.

    Args:
      a: a pytree of arrays or scalars.
      b: another one.

    Returns:
      True when `a` and `b` are identical.
    """
    if jax.tree.structure(a) != jax.tree.structure(b):
        return False
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if _is_prng_key(x) or _is_prng_key(y):
            if not (_is_prng_key(x) and _is_prng_key(y)) or x.dtype != y.dtype:
                return False
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if _crc32(x) != _crc32(y) or x.tobytes() != y.tobytes():
            return False
    return True


class Checkpointer:
    """Saves and restores numbered checkpoints of a pytree in one directory.

    Saves are synchronous: when `save` returns, the checkpoint is committed on
    disk. One process writes a directory at a time; others may read it.

    Example::

        with Checkpointer(run_dir / "checkpoints", keep=3) as ckpt:
            if ckpt.latest_step() is not None:
                state, meta = ckpt.restore(state)  # newest intact checkpoint
            ...
            ckpt.save(step, state, meta={"epoch": epoch})

    Attributes:
      directory: absolute path of the checkpoint directory.
      keep: how many of the newest checkpoints are kept.
      restored_step: the step of the checkpoint that the last `restore` returned
        (older than `latest_step()` when the newest one was damaged), or None.
    """

    def __init__(self, directory: str | os.PathLike[str], *, keep: int = 3) -> None:
        """Opens (without creating) a checkpoint directory.

        Args:
          directory: where the ``<step>/`` directories live; created by the
            first `save`.
          keep: how many of the newest checkpoints to keep (>= 1).

        Raises:
          ValueError: if `keep` < 1.
        """
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep: expected a positive int, got {keep!r}")
        self.directory = Path(directory).absolute()
        self.keep = keep
        self.restored_step: int | None = None
        self._manager: Any = None
        self._damaged: set[int] = set()  # steps that restore found damaged
        self._swept = False

    # ------------------------------------------------------------------ listing

    def all_steps(self) -> list[int]:
        """The steps of all committed checkpoints, ascending.

        A directory counts only when it is named by a step number and holds
        orbax's ``commit_success.txt``; temporary directories of saves that were
        interrupted are ignored. Reads the directory each call (no orbax import).
        """
        try:
            entries = list(os.scandir(self.directory))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(
            int(entry.name)
            for entry in entries
            if _STEP_NAME.fullmatch(entry.name)
            and entry.is_dir()
            and os.path.isfile(os.path.join(entry.path, _COMMIT_MARKER))
        )

    def latest_step(self) -> int | None:
        """The newest committed step, or None when there is none.

        `restore(target)` starts from this step but falls back to an older one if
        it turns out damaged; `restored_step` tells which one it used.
        """
        steps = self.all_steps()
        return steps[-1] if steps else None

    # ------------------------------------------------------------------- saving

    def save(
        self,
        step: int,
        state: PyTree,
        *,
        meta: Mapping[str, Any] | None = None,
        force: bool = False,
    ) -> None:
        """Writes `state` and `meta` as checkpoint `step`, then prunes old ones.

        Args:
          step: the step number (>= 0), the directory name.
          state: a pytree of arrays (jax, numpy, Python scalars, typed PRNG keys).
            Arrays are copied to the host; pass unreplicated (single-copy) state.
          meta: a small JSON-serialisable dict saved alongside (numpy scalars are
            converted to Python numbers).
          force: replace existing checkpoints at `step` or later. Without it such
            a save raises, unless all of them were found damaged by `restore`
            (the normal resume-after-fallback case), in which case they are
            replaced silently.

        Raises:
          CheckpointError: if checkpoints at `step` or later exist (see `force`).
          TypeError: if a leaf is not an array or `meta` is not JSON-serialisable.
          ValueError: if `step` is not an int >= 0, or two leaves share a path.
        """
        if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
            raise ValueError(f"step: expected an int >= 0, got {step!r}")
        step = int(step)
        meta_json = _plain_json(meta or {})
        stored, manifest = _pack(state)

        in_the_way = [s for s in self.all_steps() if s >= step]
        healthy = [s for s in in_the_way if s not in self._damaged]
        if healthy and not force:
            raise CheckpointError(
                f"{self.directory}: checkpoints at steps {healthy} already exist"
                f" and are not older than step {step}; pass force=True to replace"
                " them"
            )
        ocp = _orbax()
        manager = self._get_manager()
        self._remove_stale(step, in_the_way)
        manager.reload()

        items = {
            "manifest": ocp.args.JsonSave(manifest),
            "meta": ocp.args.JsonSave(meta_json),
        }
        if stored:  # orbax refuses an empty pytree
            items["state"] = ocp.args.StandardSave(stored)
        if os.environ.get(KILL_DURING_SAVE_ENV) == str(step):
            _arm_kill_before_commit(self.directory / str(step))
        manager.save(step, args=ocp.args.Composite(**items), force=True)
        manager.wait_until_finished()
        self._damaged -= set(in_the_way)

    def _get_manager(self) -> Any:
        if self._manager is None:
            ocp = _orbax()
            extra = {}
            if jax.process_count() > 1:
                # Multi-process runs: only process 0 keeps checkpoints (of
                # state every process holds), so no barrier waits on the others.
                me = jax.process_index()
                extra["multiprocessing_options"] = ocp.options.MultiprocessingOptions(
                    primary_host=me, active_processes={me}
                )
                # orbax cannot create the root itself with `active_processes`.
                self.directory.mkdir(parents=True, exist_ok=True)
                extra["create"] = False
            options = ocp.CheckpointManagerOptions(
                enable_async_checkpointing=False,
                preservation_policy=ocp.checkpoint_managers.LatestN(self.keep),
                **{"create": True, **extra},
            )
            self._manager = ocp.CheckpointManager(
                self.directory,
                item_names=("state", "meta", "manifest"),
                options=options,
            )
        return self._manager

    def _remove_stale(self, step: int, in_the_way: list[int]) -> None:
        """Deletes what would block or confuse a save at `step`.

        Checkpoints at `step` or later (already approved by `save`); step-named
        directories without a commit marker at `step` or later (a delete that
        was killed); and, on the first save, temporary directories of saves that
        were killed (safe: this process is the directory's only writer).
        """
        doomed = [self.directory / str(s) for s in in_the_way]
        for entry in os.scandir(self.directory):
            name = entry.name
            if not entry.is_dir():
                continue
            if (
                _STEP_NAME.fullmatch(name)
                and int(name) >= step
                and not os.path.exists(os.path.join(entry.path, _COMMIT_MARKER))
            ) or (not self._swept and _TMP_SUFFIX in name):
                doomed.append(Path(entry.path))
        self._swept = True
        for path in doomed:
            # Drop the marker first, so a kill during rmtree leaves a directory
            # that no longer counts as a checkpoint.
            (path / _COMMIT_MARKER).unlink(missing_ok=True)
            shutil.rmtree(path, ignore_errors=True)

    # ---------------------------------------------------------------- restoring

    def restore(
        self, target: PyTree, step: int | None = None
    ) -> tuple[PyTree, dict[str, Any]]:
        """Restores a checkpoint into the structure, shapes and dtypes of `target`.

        Leaves are matched by path (``params/linear/w``), so the target's node
        types (NamedTuple, dict, optax states) are what comes back. Each restored
        leaf has the type of its target leaf: jax arrays (on the default device;
        re-replicate them yourself), numpy arrays, Python scalars, typed PRNG
        keys of the target's key type.

        Args:
          target: a pytree of arrays (e.g. a freshly initialised train state);
            only its structure, shapes, dtypes and leaf types are used.
          step: the step to restore; None restores the newest intact checkpoint,
            warning (`CheckpointWarning`, naming the step) about each damaged one
            it skips.

        Returns:
          ``(state, meta)``: the restored pytree and the saved meta dict.

        Raises:
          CheckpointError: if there is no (intact) checkpoint, `step` does not
            exist or is damaged, or the checkpoint does not match `target`
            (naming the parameter path and both shapes or dtypes).
        """
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"{self.directory}: no committed checkpoint found")
        if step is not None:
            if step not in steps:
                raise CheckpointError(
                    f"{self.directory}: no committed checkpoint at step {step}"
                    f" (found steps {steps})"
                )
            try:
                return self._restore_step(int(step), target)
            except _Damaged as err:
                self._damaged.add(int(step))
                raise CheckpointError(
                    f"{self.directory}: checkpoint at step {step} is damaged: {err}"
                ) from None
        reasons = []
        for candidate in reversed(steps):
            try:
                return self._restore_step(candidate, target)
            except _Damaged as err:
                self._damaged.add(candidate)
                reasons.append(f"step {candidate}: {err}")
                warnings.warn(
                    f"checkpoint at step {candidate} in {self.directory} is damaged"
                    f" ({err}); falling back to an older checkpoint",
                    CheckpointWarning,
                    stacklevel=2,
                )
        raise CheckpointError(
            f"{self.directory}: no usable checkpoint, all are damaged ("
            + "; ".join(reasons)
            + ")"
        )

    def _restore_step(self, step: int, target: PyTree) -> tuple[PyTree, dict]:
        ocp = _orbax()
        manager = self._get_manager()
        flat, treedef = jax.tree_util.tree_flatten_with_path(target)
        leaves = [_describe(_path_str(path), leaf) for path, leaf in flat]
        try:
            small = manager.restore(
                step,
                args=ocp.args.Composite(
                    manifest=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()
                ),
            )
            entries = _parse_manifest(small.manifest)
            meta = small.meta
            if not isinstance(meta, dict):
                raise _Damaged("meta is not a JSON object")
        except _Damaged:
            raise
        except Exception as err:  # any read failure means damaged
            raise _Damaged(_short(err)) from err
        self._check_compatible(step, leaves, entries)

        stored = [
            _stored_spec(leaf, spec, entries[spec.path])
            for spec, (_, leaf) in zip(leaves, flat, strict=True)
        ]
        abstract = {
            entries[spec.path]["key"]: jax.ShapeDtypeStruct(shape, dtype)
            for spec, (shape, dtype) in zip(leaves, stored, strict=True)
            if entries[spec.path]["key"] is not None
        }
        try:
            restored = {}
            if abstract:  # orbax stores no item for a state without data
                args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
                restored = manager.restore(step, args=args).state
            arrays = []
            for spec, (shape, dtype) in zip(leaves, stored, strict=True):
                entry = entries[spec.path]
                if entry["key"] is None:  # zero-size: nothing stored
                    array = np.zeros(shape, dtype)
                else:
                    array = np.asarray(restored[entry["key"]])
                    if array.shape != shape or array.dtype != dtype:
                        raise _Damaged(
                            f"{spec.path}: read back as {array.dtype}{array.shape}"
                        )
                if _crc32(array) != entry["crc32"]:
                    raise _Damaged(f"{spec.path}: checksum mismatch")
                arrays.append(array)
        except _Damaged:
            raise
        except Exception as err:
            raise _Damaged(_short(err)) from err

        to_device = [
            a for a, s in zip(arrays, leaves, strict=True) if s.kind in ("jax", "key")
        ]
        on_device = iter(jax.device_put(to_device))
        out = []
        for array, spec, (_, leaf) in zip(arrays, leaves, flat, strict=True):
            if spec.kind == "key":
                impl = jax.random.key_impl(leaf)
                out.append(jax.random.wrap_key_data(next(on_device), impl=impl))
            elif spec.kind == "jax":
                out.append(next(on_device))
            elif spec.kind == "numpy":
                out.append(array if isinstance(leaf, np.ndarray) else array[()])
            else:
                out.append(type(leaf)(array.item()))
        self.restored_step = step
        return jax.tree_util.tree_unflatten(treedef, out), meta

    def _check_compatible(
        self, step: int, leaves: list[_Leaf], entries: dict[str, dict]
    ) -> None:
        """Raises CheckpointError listing every leaf where target and step differ."""
        problems = []
        for spec in leaves:
            entry = entries.get(spec.path)
            if entry is None:
                problems.append(
                    f"{spec.path} (shape {spec.shape}) is in the target but not in"
                    " the checkpoint"
                )
                continue
            shape = tuple(entry["shape"])
            if shape != spec.shape:
                problems.append(
                    f"{spec.path} has shape {shape} in the checkpoint but"
                    f" {spec.shape} in the target"
                )
            elif entry["dtype"] != spec.dtype and not (
                spec.kind == "python" and _is_real_numpy_dtype(entry["dtype"])
            ):
                problems.append(
                    f"{spec.path} has dtype {entry['dtype']} in the checkpoint but"
                    f" {spec.dtype} in the target"
                )
        target_paths = {spec.path for spec in leaves}
        problems.extend(
            f"{path} (shape {tuple(entry['shape'])}) is in the checkpoint but not"
            " in the target"
            for path, entry in entries.items()
            if path not in target_paths
        )
        if problems:
            more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
            raise CheckpointError(
                f"{self.directory}: checkpoint at step {step} does not match the"
                " target: " + "; ".join(problems[:5]) + more
            )

    # -------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Waits for orbax's background work and releases it (idempotent)."""
        if self._manager is not None:
            self._manager.close()
            self._manager = None

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _arm_kill_before_commit(final: Path) -> None:
    """Testing failpoint: SIGKILL this process when orbax commits `final`.

    Orbax's checkpointer writes every file of a save into a temporary directory,
    then calls the temporary path's ``finalize`` to commit it (write
    ``commit_success.txt``, rename to `final`). This wraps ``finalize`` so that
    the process kills itself right before that commit. Only armed for the one
    save that `KILL_DURING_SAVE_ENV` names, never undone: the process dies.
    """
    atomicity = _orbax().path.atomicity
    for cls in (atomicity.AtomicRenameTemporaryPath, atomicity.CommitFileTemporaryPath):
        original = cls.finalize

        async def finalize(self: Any, *args: Any, _original: Any = original) -> Any:
            if Path(self.get_final()) == final:
                os.kill(os.getpid(), signal.SIGKILL)
            return await _original(self, *args)

        cls.finalize = finalize


def _is_real_numpy_dtype(name: str) -> bool:
    """Whether `name` is a bool, int or float dtype that numpy knows by name."""
    try:
        return np.dtype(name).kind in "biuf"
    except TypeError:
        return False


def _stored_spec(
    leaf: Any, spec: _Leaf, entry: dict[str, Any]
) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the array stored for a (compatible) target leaf."""
    if spec.kind == "key":  # a typed PRNG key array is stored as its key data
        data = jax.eval_shape(jax.random.key_data, leaf)
        return tuple(data.shape), np.dtype(data.dtype)
    if spec.kind == "python":  # any numeric dtype restores into a Python scalar
        return (), np.dtype(entry["dtype"])
    return spec.shape, np.dtype(leaf.dtype)


def _pack(state: PyTree) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Host copies of the leaves of `state` and the manifest describing them."""
    flat, _ = jax.tree_util.tree_flatten_with_path(state)
    specs = [_describe(_path_str(path), leaf) for path, leaf in flat]
    seen: set[str] = set()
    for spec in specs:
        if spec.path in seen:
            raise ValueError(f"two leaves of the state have the same path {spec.path}")
        seen.add(spec.path)
    raw = [
        jax.random.key_data(leaf) if spec.kind == "key" else leaf
        for spec, (_, leaf) in zip(specs, flat, strict=True)
    ]
    host = [np.asarray(x) for x in jax.device_get(raw)]  # one transfer
    stored: dict[str, np.ndarray] = {}
    entries = []
    for i, (spec, array) in enumerate(zip(specs, host, strict=True)):
        key = f"l{i}" if array.size else None  # orbax cannot store empty arrays
        if key is not None:
            stored[key] = array
        entries.append(
            {
                "path": spec.path,
                "key": key,
                "shape": list(spec.shape),
                "dtype": spec.dtype,
                "crc32": _crc32(array),
            }
        )
    return stored, {"format": _FORMAT, "version": _VERSION, "leaves": entries}


def _parse_manifest(manifest: Any) -> dict[str, dict]:
    """Validates a stored manifest; returns its entries by path."""
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != _FORMAT
        or not isinstance(manifest.get("leaves"), list)
    ):
        raise _Damaged("manifest is missing or not a jaxlab manifest")
    if manifest.get("version") != _VERSION:
        raise _Damaged(f"unsupported manifest version {manifest.get('version')!r}")
    entries = {}
    for entry in manifest["leaves"]:
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("path"), str)
            and isinstance(entry.get("key"), str | None)
            and isinstance(entry.get("shape"), list)
            and all(isinstance(n, int) for n in entry["shape"])
            and isinstance(entry.get("dtype"), str)
            and isinstance(entry.get("crc32"), int)
        ):
            raise _Damaged("manifest entry is malformed")
        entries[entry["path"]] = entry
    return entries


def _short(err: BaseException) -> str:
    """First line of an exception, capped: orbax's messages can be pages long."""
    text = str(err).strip().splitlines()
    line = text[0] if text else ""
    line = f"{type(err).__name__}: {line}"
    return line if len(line) <= 200 else line[:197] + "..."
