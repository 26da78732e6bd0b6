"""The command line: errors are one line naming the field, exit code 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import small_config

from jaxlab import cli


def _run(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"data.batchsize": 3}, r"data\.batchsize: unknown field"),
        ({"data.batch_size": "64x"}, r"data\.batch_size: .*integer.*'64x'"),
        (
            {"optimizer.learning_rate": -1.0},
            r"optimizer\.learning_rate: .*greater than 0",
        ),
        (
            {"model.network": [["Flatten", {}], ["Conv3x", {}]]},
            r"model\.network\[1\].*unknown layer 'Conv3x'",
        ),
        (
            {"model.network": [["Linear", {"output_size": "ten"}]]},
            r"model\.network\[0\] \(Linear\)\.output_size",
        ),
        (
            {
                "model.network": {
                    "inputs": ["x"],
                    "nodes": [
                        {
                            "name": "a",
                            "layer": "Linear",
                            "args": {"output_size": 4},
                            "inputs": ["b"],
                        },
                        {
                            "name": "b",
                            "layer": "Linear",
                            "args": {"output_size": 4},
                            "inputs": ["a"],
                        },
                    ],
                    "outputs": ["b"],
                }
            },
            r"model\.network.*cycle.*'a'.*'b'",
        ),
        ({"model.loss": "hinge"}, r"model\.loss: .*hinge"),
        ({"model.metrics": ["accuracy", "bogus"]}, r"model\.metrics\[1\]: .*bogus"),
    ],
)
def test_bad_config_is_one_line_exit_2(
    capsys, write_config, tmp_path, overrides, expected
):
    path = write_config(small_config(**overrides))
    code, out, err = _run(
        capsys, "train", str(path), "--output-dir", str(tmp_path / "r")
    )
    assert code == 2
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert pytest.importorskip("re").search(expected, err), err


def test_missing_config_file(capsys, tmp_path):
    code, _, err = _run(capsys, "train", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert "nope.yaml: config file not found" in err


def test_invalid_yaml_names_file_and_line(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmodel: [unclosed\n")
    code, _, err = _run(capsys, "train", str(path))
    assert code == 2
    assert "bad.yaml: invalid YAML" in err


def test_bad_override(capsys, write_config, tmp_path):
    path = write_config(small_config())
    code, _, err = _run(capsys, "train", str(path), "--set", "train.steps=0")
    assert code == 2
    assert "train.steps: " in err


def test_unwritable_output_dir(capsys, write_config, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    path = write_config(small_config())
    code, _, err = _run(
        capsys, "train", str(path), "--output-dir", str(blocker / "run")
    )
    assert code == 2
    assert "not writable" in err


def test_eval_of_missing_run_dir(capsys, tmp_path):
    code, _, err = _run(capsys, "eval", str(tmp_path / "none"))
    assert code == 2
    assert "no such run directory" in err


def test_train_eval_show(capsys, write_config, tmp_path):
    path = write_config(small_config())
    run = tmp_path / "run"
    code, _, err = _run(capsys, "train", str(path), "--output-dir", str(run), "--quiet")
    assert code == 0, err
    rows = [
        json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
    ]
    test_rows = [r for r in rows if "test/accuracy" in r]
    assert test_rows and test_rows[-1]["step"] == 40
    assert any("train/grad_norm" in r for r in rows)
    assert any(k.startswith("train/grad_norm/") for r in rows for k in r)
    assert (run / "config.yaml").is_file()
    assert list(run.glob("events.out.tfevents.*"))

    code, out, _ = _run(capsys, "eval", str(run), "--json")
    assert code == 0
    evaluated = json.loads(out)
    assert evaluated["accuracy"] == pytest.approx(
        test_rows[-1]["test/accuracy"], abs=1e-6
    )
    # Far above chance (0.1 for 10 classes) after 40 steps of a tiny MLP.
    assert evaluated["accuracy"] > 0.5

    code, out, _ = _run(capsys, "show", str(run))
    assert code == 0
    assert "name: small" in out and "test/accuracy" in out


def test_nonfinite_loss_halts_naming_the_step(capsys, write_config, tmp_path):
    # An absurd learning rate overflows the parameters within a few steps.
    cfg = small_config(**{"optimizer": {"name": "sgd", "learning_rate": 1e30}})
    path = write_config(cfg)
    run = tmp_path / "run"
    code, _, err = _run(capsys, "train", str(path), "--output-dir", str(run), "--quiet")
    assert code == 2
    assert re.search(r"step \d+: the loss or gradients are not finite; halted", err)
    # Nothing non-finite was ever checkpointed.
    from jaxlab import checkpoint, experiment
    from jaxlab import config as config_lib

    config = config_lib.load_config(path)
    with checkpoint.Checkpointer(run / "checkpoints") as ckpt:
        if ckpt.latest_step() is not None:
            state, _ = ckpt.restore(experiment.initial_state(experiment.build(config)))
            assert all(
                np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params)
            )


def test_nonfinite_steps_are_skipped_on_request(capsys, write_config, tmp_path):
    cfg = small_config(
        **{
            "optimizer": {"name": "sgd", "learning_rate": 1e30},
            "train.on_nonfinite": "skip_step",
            "train.steps": 10,
        }
    )
    run = tmp_path / "run"
    code, _, err = _run(
        capsys, "train", str(write_config(cfg)), "--output-dir", str(run), "--quiet"
    )
    assert code == 0, err
    rows = [
        json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
    ]
    assert any(r.get("train/nonfinite") == 1.0 for r in rows)


def test_activation_stats_and_rerun_of_a_finished_run(capsys, write_config, tmp_path):
    cfg = small_config(**{"train.steps": 10, "train.log_activations": True})
    path, run = write_config(cfg), tmp_path / "run"
    assert _run(capsys, "train", str(path), "--output-dir", str(run), "--quiet")[0] == 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    test_row = json.loads(lines[-1])
    for layer in ("flatten_0", "linear_1", "linear_2"):
        for stat in ("mean", "std", "frac_zero"):
            assert f"test/activations/{layer}/{stat}" in test_row
    # ReLU outputs: some zeros, never negative fraction.
    assert 0.0 < test_row["test/activations/linear_1/frac_zero"] < 1.0
    # Training a finished run again reports it and logs nothing twice.
    code, out, _ = _run(capsys, "train", str(path), "--output-dir", str(run))
    assert code == 0
    assert "already trained to step 10" in out
    assert (run / "metrics.jsonl").read_text().splitlines() == lines


def test_train_uses_a_persistent_compilation_cache(tmp_path, write_config):
    # The second run of a config loads its programs from the cache.
    from conftest import REPO as repo
    from conftest import small_config

    cache = tmp_path / "xla"
    path = write_config(small_config(**{"train.steps": 5}))
    env = {
        **os.environ,
        "JAXLAB_COMPILATION_CACHE": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    for run in ("a", "b"):
        result = subprocess.run(
            [sys.executable, "-m", "jaxlab", "train", str(path), "--quiet"]
            + ["--output-dir", str(tmp_path / run)],
            capture_output=True,
            text=True,
            env=env,
            cwd=repo,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        written = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
        if run == "a":
            first = written
    assert first  # the first run filled the cache
    assert written == first  # the second read it: nothing compiled, nothing written
