"""A run directory on disk: its lock, its saved config, its layout.

```
runs/<name>/
  config.yaml       the resolved config (absolute data paths)
  metrics.jsonl     one JSON object per logged step
  events.*          TensorBoard
  checkpoints/<step>/
  .lock             held by the process that trains into this directory
```
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path
from typing import Any

from jaxlab import config as config_lib
from jaxlab.errors import CheckpointError, ConfigError, JaxlabError

CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"

# Fields that may change when a run is resumed: they do not alter the trajectory.
# (An RL run's length may not change: PPO anneals over the whole budget.)
_RESUMABLE_CHANGES = {
    "supervised": {
        "train.steps",
        "train.num_epochs",
        "train.eval_every",
        "train.log_every",
        "train.checkpoint_every",
        "train.keep_checkpoints",
        "train.log_activations",
    },
    "rl": {
        "train.eval_every",
        "train.eval_episodes",
        "train.log_every",
        "train.checkpoint_every",
        "train.keep_checkpoints",
    },
}


def prepare(run_dir: str | os.PathLike) -> Path:
    """Creates `run_dir` and checks that it is writable, before any training."""
    path = Path(run_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise JaxlabError(
            f"output directory {path}: not writable ({e.strerror})"
        ) from None
    return path


class RunLock:
    """An exclusive lock on a run directory (released when the process dies)."""

    def __init__(self, run_dir: Path):
        self._path = run_dir / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JaxlabError(
                f"output directory {self._path.parent}: another jaxlab process is "
                "training into it"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree}


def check_resumable(saved: dict[str, Any], new: dict[str, Any], run_dir: Path) -> None:
    """Raises if `new` would change the trajectory of the run saved as `saved`."""
    old_flat, new_flat = _flatten(saved), _flatten(new)
    allowed = set(_RESUMABLE_CHANGES.get(new.get("kind", "supervised"), set()))
    if (new.get("agent") or {}).get("name") != "dqn":
        # Results do not depend on the device count or backend (exact data
        # parallelism), except DQN's (one replay shard per device).
        allowed |= {"parallel.backend", "parallel.devices"}
    for key in sorted(set(old_flat) | set(new_flat)):
        if key in allowed:
            continue
        if old_flat.get(key) != new_flat.get(key):
            raise ConfigError(
                f"{key}: the run in {run_dir} was started with "
                f"{old_flat.get(key)!r}, now {new_flat.get(key)!r}; resuming would not "
                "reproduce it (use another --output-dir)"
            )


def save_config(run_path: Path, config: Any, *, resuming: bool) -> None:
    """Saves the resolved config; when resuming, first checks it still fits."""
    resolved = config_lib.config_to_dict(config)
    file = run_path / CONFIG_FILE
    if resuming and file.is_file():
        saved = config_lib.config_to_dict(load_run_config(run_path))
        check_resumable(saved, resolved, run_path)
    # Imported here: the logger pulls in TensorBoard, not needed to read configs.
    from jaxlab.logger import atomic_write_text

    atomic_write_text(file, config_lib.dump_yaml(resolved))


def save_checkpoint(checkpointer: Any, step: int, state: Any, meta: dict) -> None:
    """`checkpointer.save`, with a failing disk (full, read-only, gone) reported
    as one `JaxlabError` naming the directory and the last good checkpoint.

    A failed save commits nothing: the last good checkpoint stays restorable.
    """
    try:
        checkpointer.save(step, state, meta=meta)
    except Exception as e:
        reason = _os_error(e)
        if reason is None:
            raise
        raise JaxlabError(
            f"{checkpointer.directory}: cannot save the checkpoint at step {step} "
            f"({reason}); the last good checkpoint is step "
            f"{checkpointer.latest_step()}"
        ) from None


def meta_count(meta: dict, key: str, checkpointer: Any) -> int:
    """``meta[key]`` of a restored checkpoint: an int >= 0, or `CheckpointError`
    (a meta file edited by hand is JSON, but not necessarily ours)."""
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CheckpointError(
            f"{checkpointer.directory}: checkpoint at step "
            f"{checkpointer.restored_step}: meta {key!r} must be an int >= 0, "
            f"got {value!r}"
        )
    return value


def _os_error(error: BaseException) -> str | None:
    """The OS error behind a failed save, or None if it is not one."""
    if isinstance(error, OSError):
        return error.strerror or str(error)
    # tensorstore (orbax's array writer) reports OS errors as ValueError with
    # the errno: "... No space left on device [os_error_code='28']".
    match = re.search(r"\[os_error_code='(\d+)'\]", str(error))
    return os.strerror(int(match.group(1))) if match else None


def load_run_config(run_dir: str | os.PathLike) -> config_lib.AnyExperimentConfig:
    """The resolved config saved in a run directory."""
    path = Path(run_dir)
    if not path.is_dir():
        raise JaxlabError(f"{path}: no such run directory")
    file = path / CONFIG_FILE
    if not file.is_file():
        raise JaxlabError(f"{path}: not a jaxlab run directory (no {CONFIG_FILE})")
    return config_lib.load_config(file)
