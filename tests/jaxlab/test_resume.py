"""Resuming: a run killed with SIGKILL and restarted ends bit-identical.

Each run is a real `python -m jaxlab train` process. The kill comes from the
fault-injection hook JAXLAB_FAULT_KILL_AT_STEP (the process SIGKILLs itself
right after that step, between two checkpoints), so the test is deterministic.
"""

from __future__ import annotations

import json
import signal

import jax
import numpy as np
from conftest import run_cli, small_config

from jaxlab import checkpoint, experiment
from jaxlab import config as config_lib


def _final_state(run_dir, config_path):
    config = config_lib.load_config(config_path)
    exp = experiment.build(config)
    with checkpoint.Checkpointer(run_dir / "checkpoints") as ckpt:
        state, meta = ckpt.restore(experiment.initial_state(exp))
    return state, meta


def _rows(run_dir):
    rows = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows.append({k: v for k, v in row.items() if k not in ("time", "elapsed")})
    return rows


def test_sigkill_between_checkpoints_then_resume_is_bit_exact(write_config, tmp_path):
    path = write_config(
        small_config(**{"train.steps": 40, "train.checkpoint_every": 10})
    )
    clean, killed = tmp_path / "clean", tmp_path / "killed"

    result = run_cli("train", str(path), "--output-dir", str(clean), "--quiet")
    assert result.returncode == 0, result.stderr

    # Killed after step 25: checkpoints at 10 and 20 exist, steps 21-25 are lost.
    result = run_cli(
        "train",
        str(path),
        "--output-dir",
        str(killed),
        "--quiet",
        env={experiment.KILL_AT_STEP_ENV: "25"},
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    with checkpoint.Checkpointer(killed / "checkpoints") as ckpt:
        assert ckpt.latest_step() == 20

    result = run_cli("train", str(path), "--output-dir", str(killed), "--quiet")
    assert result.returncode == 0, result.stderr

    a, meta_a = _final_state(clean, path)
    b, meta_b = _final_state(killed, path)
    assert meta_a["step"] == meta_b["step"] == 40
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = (
            np.asarray(
                jax.random.key_data(x)
                if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                else x
            ),
            np.asarray(
                jax.random.key_data(y)
                if jax.dtypes.issubdtype(y.dtype, jax.dtypes.prng_key)
                else y
            ),
        )
        np.testing.assert_array_equal(x, y)
    # The metrics log of the resumed run is the uninterrupted run's, step by step.
    assert _rows(clean) == _rows(killed)


def test_resume_with_a_changed_config_is_refused(write_config, tmp_path):
    path = write_config(small_config(**{"train.steps": 10}))
    run = tmp_path / "run"
    assert (
        run_cli("train", str(path), "--output-dir", str(run), "--quiet").returncode == 0
    )
    result = run_cli(
        "train",
        str(path),
        "--output-dir",
        str(run),
        "--quiet",
        "--set",
        "optimizer.learning_rate=0.5",
    )
    assert result.returncode == 2
    assert "optimizer.learning_rate" in result.stderr


def test_finished_run_extended_with_more_steps(write_config, tmp_path):
    """Raising train.steps continues a finished run to the longer budget."""
    path = write_config(small_config(**{"train.steps": 20}))
    run = tmp_path / "run"
    assert (
        run_cli("train", str(path), "--output-dir", str(run), "--quiet").returncode == 0
    )
    result = run_cli(
        "train",
        str(path),
        "--output-dir",
        str(run),
        "--quiet",
        "--set",
        "train.steps=30",
    )
    assert result.returncode == 0, result.stderr
    with checkpoint.Checkpointer(run / "checkpoints") as ckpt:
        assert ckpt.latest_step() == 30
