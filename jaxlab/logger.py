"""Metric logging for the host shell: JSON lines, TensorBoard and a progress bar.

A run directory gets ``metrics.jsonl``, one JSON object per `MetricLogger.log`
call::

    {"step": 200, "time": 1718000000.1, "elapsed": 12.5, "train/loss": 0.31}

``time`` is the Unix time, ``elapsed`` the seconds of logging so far (summed over
resumed attempts). JSON has no NaN or infinity, so non-finite values are written
as the strings ``"nan"``, ``"inf"`` and ``"-inf"``; `read_metrics` turns them back
into floats. The same scalars go to TensorBoard (tensorboardX) under the same
tags.

Resuming a killed run (``resume_step=<checkpoint step>``) drops the lines that
the killed attempt logged after that step (and a half-written last line), and
tells TensorBoard to hide its events from ``resume_step + 1`` on, so the resumed
run's logs read like those of an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxlab.errors import JaxlabError

if TYPE_CHECKING:
    import jax

METRICS_FILE = "metrics.jsonl"
_RESERVED = ("step", "time", "elapsed")
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_BAR_SUFFIXES = ("loss", "accuracy", "return", "episode_return", "reward")
_BAR_MAX_KEYS = 4


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Replaces the file at `path` by `text` (UTF-8) atomically.

    Writes a temporary file in the same directory, fsyncs it and renames it over
    `path`, so readers (and a crash) see either the old or the new content, and
    no temporary file is left behind.

    Args:
      path: the file to write; its directory must exist.
      text: the new content.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable; best effort (not on all platforms)
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _bar_rank(key: str) -> int | None:
    name = key.rsplit("/", 1)[-1]
    for rank, suffix in enumerate(_BAR_SUFFIXES):
        if name.endswith(suffix):
            return rank
    return None


def _encode(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _decode(record: dict[str, Any]) -> dict[str, Any]:
    return {
        k: _NON_FINITE[v] if isinstance(v, str) and v in _NON_FINITE else v
        for k, v in record.items()
    }


def _parse_line(line: str) -> dict[str, Any] | None:
    """A metrics record, or None for a broken line (e.g. half-written)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    step = record.get("step")
    if isinstance(step, bool) or not isinstance(step, int):
        return None
    return record


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Reads ``run_dir/metrics.jsonl`` into a list of dicts, in file order.

    ``"nan"``, ``"inf"`` and ``"-inf"`` strings come back as floats. A broken
    last line (a run killed while writing it) is skipped.

    Args:
      run_dir: a run directory.

    Returns:
      One dict per logged line; empty when nothing was logged yet.

    Raises:
      JaxlabError: if `run_dir` is not a directory, or a line other than the
        last one is not a metrics record.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise JaxlabError(f"{run_dir}: no such run directory")
    try:
        lines = (run_dir / METRICS_FILE).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    records = []
    for number, line in enumerate(lines, start=1):
        record = _parse_line(line)
        if record is None:
            if number == len(lines):
                break
            where = f"{run_dir / METRICS_FILE}:{number}"
            raise JaxlabError(f"{where}: not a metrics record: {line[:80]!r}")
        records.append(_decode(record))
    return records


def _repair_metrics(path: Path, resume_step: int | None) -> dict[str, Any] | None:
    """Drops broken lines and, if `resume_step` is set, lines past it.

    The file is rewritten atomically, and only when something is dropped (a run
    killed while writing leaves a half line, which the next append would glue
    onto its first record).

    Returns:
      The last record kept, or None.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    lines = text.splitlines()
    kept, last = [], None
    for line in lines:
        record = _parse_line(line)
        if record is not None and (
            resume_step is None or record["step"] <= resume_step
        ):
            kept.append(line + "\n")
            last = record
    if len(kept) != len(lines) or (text and not text.endswith("\n")):
        atomic_write_text(path, "".join(kept))
    return last


def _summary_writer_class() -> Any:
    """tensorboardX's ``SummaryWriter``, imported (slow: only when used) without
    PyTorch.

    tensorboardX's writer module imports torch whenever it is installed, only
    to name ``torch.Tensor`` in its type hints (1.9 s on the 2-core CPU, most of
    a run's start-up where PyTorch is installed beside jaxlab). The logger
    hands it Python floats, so unless torch is imported already, a ``None``
    entry in ``sys.modules`` makes that one ``import torch`` raise the
    ImportError tensorboardX handles; the entry is removed right after, and a
    later ``import torch`` works as usual.
    """
    if "torch" in sys.modules or "tensorboardX.writer" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        from tensorboardX import SummaryWriter
    finally:
        if "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]
    return SummaryWriter


class _DropNanWarning(logging.Filter):
    """Drops tensorboardX's "NaN or Inf found" warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "NaN or Inf found" not in record.getMessage()


def _silence_tensorboardx_nan_warning() -> None:
    """Silences tensorboardX's per-scalar NaN warning.

    It would print to stderr even when quiet, once per value; non-finite values
    are logged deliberately (and shown on the bar).
    """
    tbx_logger = logging.getLogger("tensorboardX.x2num")
    if not any(isinstance(f, _DropNanWarning) for f in tbx_logger.filters):
        tbx_logger.addFilter(_DropNanWarning())


def _make_progress(latest_text: Any) -> Any:
    """A rich Progress: step/total, steps/s, ETA, then `latest_text()`."""
    from rich.console import Console  # rich is imported only for a bar
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.table import Column
    from rich.text import Text

    class StepsPerSecond(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.1f} steps/s" if speed else "", style="cyan")

    class LatestMetrics(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(latest_text(), no_wrap=True, overflow="ellipsis")

    console = Console(file=sys.stdout)
    # The other columns take ~60 characters; the metrics get what is left.
    metrics_column = Column(
        no_wrap=True, overflow="ellipsis", max_width=max(20, console.width - 62)
    )
    return Progress(
        TextColumn("step"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        StepsPerSecond(table_column=Column(no_wrap=True)),
        TimeRemainingColumn(),
        LatestMetrics(table_column=metrics_column),
        console=console,
        redirect_stdout=False,
        redirect_stderr=False,
    )


class MetricLogger:
    """Writes metrics to ``metrics.jsonl`` and TensorBoard; shows a progress bar.

    Host-side only: call it outside jitted code with the metrics a step returned.

    Example::

        with MetricLogger(run_dir, total_steps=2000, resume_step=start - 1) as log:
            for step in range(start, 2000):
                state, metrics = train_step(state, batch)
                if step % 100 == 0:
                    log.log(step, metrics, prefix="train")
            log.message("done", force=True)

    The progress bar (step/total, steps/s, ETA and the latest loss, accuracy or
    return values) is drawn only when stdout is a terminal and `quiet` is False.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        total_steps: int | None,
        quiet: bool = False,
        tensorboard: bool = True,
        resume_step: int | None = None,
        bar_keys: Sequence[str] | None = None,
    ) -> None:
        """Opens (creating if needed) the run directory's logs.

        Args:
          run_dir: the run directory.
          total_steps: the last step, for the bar's total and ETA (None: unknown).
          quiet: print nothing at all except `message(..., force=True)`.
          tensorboard: also write TensorBoard event files into `run_dir`.
          resume_step: None appends to an existing ``metrics.jsonl`` (e.g. an
            evaluation logging into a finished run), dropping only a broken
            last line. An int rewrites it
            atomically keeping only the valid lines with ``step <= resume_step``
            and purges TensorBoard events from ``resume_step + 1`` on: pass the
            step of the checkpoint a run resumes from, or -1 to start a run's
            log afresh (dropping lines of an attempt killed before its first
            checkpoint).
          bar_keys: metric keys (with prefix, e.g. ``"train/loss"``) to show on
            the bar; by default the first few keys ending in loss, accuracy,
            return or reward.
        """
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.total_steps = total_steps
        self.quiet = quiet
        self._path = self.run_dir / METRICS_FILE
        last = _repair_metrics(self._path, resume_step)
        elapsed = last.get("elapsed") if last else None
        self._elapsed_offset = 0.0  # resumed runs continue the elapsed clock
        if isinstance(elapsed, int | float) and math.isfinite(elapsed):
            self._elapsed_offset = float(elapsed)
        self._start = time.monotonic()
        self._file = open(self._path, "a", encoding="utf-8")  # noqa: SIM115
        self._writer = None
        if tensorboard:
            writer_class = _summary_writer_class()

            _silence_tensorboardx_nan_warning()
            purge = None if resume_step is None else resume_step + 1
            self._writer = writer_class(
                logdir=str(self.run_dir), purge_step=purge, flush_secs=10
            )
        self._bar_keys = list(bar_keys) if bar_keys is not None else None
        self._latest: dict[str, float] = {}
        self._progress = None
        self._task = None
        if not quiet and sys.stdout.isatty():
            self._start_bar(0 if resume_step is None else max(resume_step, 0))

    # ------------------------------------------------------------------- logging

    def log(
        self,
        step: int,
        metrics: Mapping[str, float | np.ndarray | jax.Array],
        *,
        prefix: str | None = None,
    ) -> None:
        """Logs scalar `metrics` at `step` (one line, TensorBoard, bar).

        Args:
          step: the training step.
          metrics: name -> scalar (Python number, numpy or jax scalar/size-1
            array); all are fetched from the device in one transfer.
          prefix: prepended as ``"<prefix>/<name>"``, e.g. ``"train"``.

        Raises:
          ValueError: if a value is not a scalar or a key clashes with
            ``step``, ``time`` or ``elapsed``.
        """
        import jax  # imported lazily so that `jaxlab show` starts fast

        host = jax.device_get(dict(metrics))  # one transfer for all values
        values: dict[str, float] = {}
        for name, value in host.items():
            key = f"{prefix}/{name}" if prefix else str(name)
            array = np.asarray(value)
            if array.size != 1 or array.dtype.kind in "cOSUM":
                raise ValueError(
                    f"metric {key}: expected a real scalar, got shape"
                    f" {array.shape} dtype {array.dtype}"
                )
            if key in _RESERVED:
                raise ValueError(f"metric name {key!r} is reserved")
            values[key] = float(array.reshape(()))
        now = time.time()
        record: dict[str, Any] = {
            "step": int(step),
            "time": now,
            "elapsed": self._elapsed_offset + time.monotonic() - self._start,
        }
        record.update((k, _encode(v)) for k, v in values.items())
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(key, value, int(step), walltime=now)
        if self._progress is not None:
            self._latest.update(values)
            self._progress.update(self._task, completed=int(step))

    def message(self, text: str, *, force: bool = False) -> None:
        """Prints a line to stdout above the bar; nothing when quiet unless forced.

        Args:
          text: the line (printed literally; no rich markup).
          force: print even when `quiet` (for important lines).
        """
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        elif force or not self.quiet:
            print(text, flush=True)

    # --------------------------------------------------------------------- bar

    def _start_bar(self, completed: int) -> None:
        self._progress = _make_progress(self._latest_text)
        self._task = self._progress.add_task(
            "train", total=self.total_steps, completed=completed
        )
        self._progress.start()

    def _latest_text(self) -> str:
        keys = self._bar_keys
        if keys is None:  # e.g. train/loss before eval/accuracy before .../return
            rank = {k: _bar_rank(k) for k in self._latest}
            keys = sorted((k for k in rank if rank[k] is not None), key=rank.get)
        shown = [k for k in keys if k in self._latest][:_BAR_MAX_KEYS]
        return "  ".join(f"{k}={self._latest[k]:.4g}" for k in shown)

    # --------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Stops the bar and closes the metrics file and TensorBoard writer."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> MetricLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.close()
        except OSError as e:  # e.g. a full disk: flushing the logs fails too
            if exc is not None:
                return  # the error in flight (say, the failed save) says more
            raise JaxlabError(
                f"{self.run_dir}: cannot write the logs ({e.strerror or e})"
            ) from None


class NullLogger:
    """A `MetricLogger` that writes nothing: for processes other than process 0
    of a multi-process run, which log nothing themselves."""

    def log(self, step: int, metrics: Mapping[str, Any], *, prefix: str = "") -> None:
        del step, metrics, prefix

    def message(self, text: str, *, force: bool = False) -> None:
        del text, force

    def close(self) -> None:
        pass

    def __enter__(self) -> NullLogger:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def make_logger(
    run_dir: str | os.PathLike[str], *, main: bool = True, **kwargs: Any
) -> MetricLogger | NullLogger:
    """A `MetricLogger` on the main process, a `NullLogger` elsewhere."""
    return MetricLogger(run_dir, **kwargs) if main else NullLogger()
