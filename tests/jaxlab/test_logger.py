"""MetricLogger: JSON lines, TensorBoard events, resume truncation, quiet mode."""

from __future__ import annotations

import io
import json
import math
import os
import struct
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from jaxlab.errors import JaxlabError
from jaxlab.logger import MetricLogger, atomic_write_text, read_metrics


def read_events(run_dir: Path) -> list[event_pb2.Event]:
    """All events of all TensorBoard event files in `run_dir` (TFRecord format)."""
    events = []
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            payload = data[offset + 12 : offset + 12 + length]  # skip length CRC
            events.append(event_pb2.Event.FromString(payload))
            offset += 12 + length + 4  # payload CRC
    return events


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for event in read_events(run_dir):
        for value in event.summary.value:
            out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def log_steps(run_dir: Path, steps, **kwargs) -> None:
    with MetricLogger(run_dir, total_steps=100, quiet=True, **kwargs) as log:
        for step in steps:
            log.log(
                step, {"loss": 1.0 / (step + 1), "accuracy": step / 100}, prefix="train"
            )


def test_log_writes_json_lines_and_tensorboard(tmp_path):
    with MetricLogger(tmp_path, total_steps=10, quiet=True) as log:
        log.log(
            1,
            {"loss": jnp.float32(0.5), "accuracy": np.float64(0.25), "n": np.int32(3)},
            prefix="train",
        )
        log.log(2, {"accuracy": 0.75, "flag": True}, prefix="eval")
        log.log(3, {"lr": jnp.array([1e-3])})  # a size-1 array; no prefix

    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    first, second, third = (json.loads(line) for line in lines)
    assert first["step"] == 1 and first["train/loss"] == 0.5
    assert first["train/accuracy"] == 0.25 and first["train/n"] == 3.0
    assert isinstance(first["train/n"], float)
    assert second == {
        "step": 2,
        "time": second["time"],
        "elapsed": second["elapsed"],
        "eval/accuracy": 0.75,
        "eval/flag": 1.0,
    }
    assert third["lr"] == pytest.approx(1e-3)
    assert 0 <= first["elapsed"] <= second["elapsed"] <= third["elapsed"]
    assert abs(first["time"] - os.path.getmtime(tmp_path / "metrics.jsonl")) < 60

    tb = scalars(tmp_path)
    assert tb["train/loss"] == [(1, 0.5)]
    assert tb["eval/accuracy"] == [(2, 0.75)]
    assert [step for step, _ in tb["lr"]] == [3]
    assert read_metrics(tmp_path)[0]["train/loss"] == 0.5


def test_no_tensorboard_writes_no_event_file(tmp_path):
    log_steps(tmp_path, [1, 2], tensorboard=False)
    assert not list(tmp_path.glob("events.*"))
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]


def test_non_finite_values_round_trip_as_strings(tmp_path):
    with MetricLogger(tmp_path, total_steps=None, quiet=True) as log:
        log.log(5, {"a": float("nan"), "b": jnp.inf, "c": -np.inf, "d": 1.5})
    raw = json.loads((tmp_path / "metrics.jsonl").read_text())  # strict JSON
    assert (raw["a"], raw["b"], raw["c"], raw["d"]) == ("nan", "inf", "-inf", 1.5)
    (record,) = read_metrics(tmp_path)
    assert math.isnan(record["a"]) and record["b"] == math.inf
    assert record["c"] == -math.inf and record["d"] == 1.5


def test_resume_drops_lines_past_the_checkpoint_and_a_broken_line(tmp_path):
    uninterrupted = tmp_path / "clean"
    log_steps(uninterrupted, range(0, 100, 10))

    killed = tmp_path / "killed"
    log_steps(killed, range(0, 80, 10))  # got to step 70, checkpoint at 40
    with open(killed / "metrics.jsonl", "a") as f:
        f.write('{"step": 80, "train/lo')  # killed mid-line
    elapsed_at_40 = read_metrics(killed)[4]["elapsed"]

    log_steps(killed, range(50, 100, 10), resume_step=40)

    def rows(run_dir):
        return [
            {k: v for k, v in row.items() if k not in ("time", "elapsed")}
            for row in read_metrics(run_dir)
        ]

    assert rows(killed) == rows(uninterrupted)
    assert read_metrics(killed)[5]["elapsed"] >= elapsed_at_40  # clock continues
    assert sorted(p.name for p in killed.iterdir() if "metrics" in p.name) == [
        "metrics.jsonl"
    ]
    # TensorBoard is told to hide the killed attempt's events from step 41 on.
    starts = [e.step for e in read_events(killed) if e.HasField("session_log")]
    assert 41 in starts


def test_resume_minus_one_starts_the_log_afresh(tmp_path):
    log_steps(tmp_path, [1, 2, 3])
    log_steps(tmp_path, [1], resume_step=-1)
    assert [r["step"] for r in read_metrics(tmp_path)] == [1]


def test_appending_repairs_a_broken_last_line(tmp_path):
    log_steps(tmp_path, [1, 2])
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "tra')
    log_steps(tmp_path, [3])  # resume_step=None: append
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]


def test_read_metrics_skips_only_a_broken_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "x": 1.0}\n{"step": 2, "x"')
    assert read_metrics(tmp_path) == [{"step": 1, "x": 1.0}]
    path.write_text('{"step": 1, "x": 1.0}\nnot json\n{"step": 3}\n')
    with pytest.raises(JaxlabError, match="metrics.jsonl:2"):
        read_metrics(tmp_path)
    (tmp_path / "fresh").mkdir()
    assert read_metrics(tmp_path / "fresh") == []
    with pytest.raises(JaxlabError, match="no such run directory"):
        read_metrics(tmp_path / "missing")


def test_quiet_prints_nothing_but_forced_messages(tmp_path, capsys):
    with MetricLogger(tmp_path, total_steps=3, quiet=True) as log:
        for step in range(3):
            log.log(step, {"loss": float("nan") if step == 2 else 1.0}, prefix="train")
        log.message("not shown")
        log.message("shown", force=True)
    captured = capsys.readouterr()
    assert captured.out == "shown\n"
    assert captured.err == ""


def test_not_a_tty_prints_messages_without_a_bar(tmp_path, capsys):
    with MetricLogger(tmp_path, total_steps=3) as log:
        log.log(1, {"loss": 1.0}, prefix="train")
        log.message("[eval] done")
    captured = capsys.readouterr()
    assert captured.out == "[eval] done\n" and captured.err == ""


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal(tmp_path, monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    with MetricLogger(tmp_path, total_steps=20, tensorboard=False) as log:
        for step in range(1, 21):
            log.log(step, {"loss": 0.125, "lr": 0.1}, prefix="train")
        log.message("[halfway] literal brackets")
    out = terminal.getvalue()
    assert "20/20" in out and "train/loss=0.125" in out and "steps/s" in out
    assert "train/lr" not in out  # not a loss, accuracy or return
    assert "[halfway] literal brackets" in out


def test_log_rejects_non_scalars_and_reserved_names(tmp_path):
    with MetricLogger(tmp_path, total_steps=1, quiet=True) as log:
        with pytest.raises(ValueError, match="train/v: expected a real scalar"):
            log.log(0, {"v": np.zeros(3)}, prefix="train")
        with pytest.raises(ValueError, match="reserved"):
            log.log(0, {"step": 1.0})


def test_atomic_write_text_replaces_and_leaves_no_tmp_files(tmp_path):
    path = tmp_path / "config.yaml"
    atomic_write_text(path, "a: 1\n")
    atomic_write_text(path, "a: 2\n")
    assert path.read_text() == "a: 2\n"
    assert os.listdir(tmp_path) == ["config.yaml"]
    with pytest.raises(FileNotFoundError):
        atomic_write_text(tmp_path / "missing" / "x.txt", "x")
    assert os.listdir(tmp_path) == ["config.yaml"]


def test_tensorboard_writer_does_not_import_torch(tmp_path):
    """tensorboardX imports PyTorch when it is installed (~2 s); the logger's
    writer is imported without it, scalars still land, and a later
    ``import torch`` (where installed) works."""
    import subprocess

    script = f"""
import importlib.util, sys
from jaxlab.logger import MetricLogger
with MetricLogger({str(tmp_path)!r}, total_steps=2, quiet=True) as log:
    log.log(1, {{"loss": 0.5}}, prefix="train")
assert "torch" not in sys.modules, "torch was imported"
if importlib.util.find_spec("torch") is not None:
    import torch
    assert torch.ones(2).sum().item() == 2.0
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    (event,) = [e for e in read_events(tmp_path) if e.summary.value]
    assert event.step == 1 and event.summary.value[0].tag == "train/loss"
    assert event.summary.value[0].simple_value == pytest.approx(0.5)
