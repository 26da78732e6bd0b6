"""Chunk planning of the supervised trainer (`jaxlab.chunks`), and one step
per call (the path conv nets take on a CPU) against chunked runs."""

from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import exploding_config, small_config

from jaxlab import chunks, experiment
from jaxlab import config as config_lib
from jaxlab.checkpoint import Checkpointer
from jaxlab.errors import JaxlabError


def _rows(run) -> list[dict]:
    """metrics.jsonl without the wall-clock fields."""
    return [
        {k: v for k, v in json.loads(line).items() if k not in ("time", "elapsed")}
        for line in (run / "metrics.jsonl").read_text().splitlines()
    ]


def _final_params(run, config: dict):
    exp = experiment.build(config_lib.validate_config(config))
    with Checkpointer(run / "checkpoints") as ckpt:
        return ckpt.restore(experiment.initial_state(exp))[0].params


def _train_config(**train) -> config_lib.TrainConfig:
    raw = small_config(**{f"train.{k}": v for k, v in train.items()})
    return config_lib.validate_config(raw).train


def test_next_stop_ends_chunks_where_the_host_has_work():
    tc = _train_config(steps=40, log_every=5, eval_every=20, checkpoint_every=10)
    assert chunks.next_stop(0, 40, tc, None, 100) == 5
    assert chunks.next_stop(5, 40, tc, None, 100) == 10
    assert chunks.next_stop(5, 40, tc, None, 2) == 7  # at most max_chunk steps
    assert chunks.next_stop(36, 38, tc, None, 100) == 38  # the end
    assert chunks.next_stop(10, 40, tc, 12, 100) == 12  # a test's kill step
    assert chunks.next_stop(12, 40, tc, 12, 100) == 15  # once past it


def test_chunk_limit_is_the_shortest_interval_within_the_byte_budget(monkeypatch):
    tc = _train_config(log_every=50, eval_every=20, checkpoint_every=30)
    exp = experiment.build(config_lib.validate_config(small_config()))
    train = exp.splits.train
    assert chunks.chunk_limit(tc, train, 32) == 20
    example_bytes = train.x[:1].nbytes + train.y[:1].nbytes
    monkeypatch.setattr(chunks, "CHUNK_BYTES", example_bytes * 32 * 3)
    assert chunks.chunk_limit(tc, train, 32) == 3
    monkeypatch.setattr(chunks, "CHUNK_BYTES", 1)
    assert chunks.chunk_limit(tc, train, 32) == 1


@pytest.mark.parametrize(
    ("first_bad", "i", "base", "want"),
    [(-1, -1, 11, -1), (-1, 0, 11, 11), (-1, 3, 11, 14), (7, 3, 11, 7)],
)
def test_note_first_bad_keeps_the_first(first_bad, i, base, want):
    got = chunks.note_first_bad(jnp.int32(first_bad), jnp.int32(i), np.int32(base))
    assert got.dtype == jnp.int32 and got.shape == ()
    assert int(got) == want


def _train_per_call(tmp_path, monkeypatch, config: dict, name: str, chunk_bytes):
    """Trains `config` in-process; ``chunk_bytes=1`` forces one step per call
    (the path conv nets take on CPU): non-logging steps then run the program
    without norms."""
    monkeypatch.setattr(chunks, "CHUNK_BYTES", chunk_bytes)
    run = tmp_path / name
    experiment.train(config_lib.validate_config(config), run, quiet=True)
    return run


def test_one_step_per_call_trains_and_logs_as_chunks_do(tmp_path, monkeypatch):
    config = small_config(**{"train.steps": 20, "train.eval_every": 10})
    chunked = _train_per_call(tmp_path, monkeypatch, config, "a", chunks.CHUNK_BYTES)
    single = _train_per_call(tmp_path, monkeypatch, config, "b", 1)
    rows_a, rows_b = _rows(chunked), _rows(single)
    assert [sorted(r) for r in rows_a] == [sorted(r) for r in rows_b]
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
    for a, b in zip(rows_a, rows_b, strict=True):
        for key, value in a.items():
            if isinstance(value, float):
                assert b[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    a, b = _final_params(chunked, config), _final_params(single, config)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def test_one_step_per_call_halts_at_the_step_chunks_name(tmp_path, monkeypatch):
    """The first non-finite step of a lean (unlogged) call is the step named."""
    config = exploding_config(**{"train.steps": 20, "train.log_every": 20})
    errors = []
    for name, chunk_bytes in (("a", chunks.CHUNK_BYTES), ("b", 1)):
        with pytest.raises(JaxlabError) as caught:
            _train_per_call(tmp_path, monkeypatch, config, name, chunk_bytes)
        errors.append(str(caught.value))
    assert re.match(r"step 1[3-5]: the loss or gradients are not finite", errors[0])
    assert errors[1] == errors[0]


def _conv_config(**conv_args):
    return small_config(
        **{
            "model.network": [
                ["Conv2D", {"output_channels": 4, "kernel_shape": 3, **conv_args}],
                ["Flatten", {}],
                ["Linear", {"output_size": 10}],
            ]
        }
    )


@pytest.mark.parametrize(
    ("config", "slow"),
    [
        (small_config(), False),  # an MLP
        (_conv_config(), False),  # nets' conv: patches + matmul on CPU
        (_conv_config(lowering="patches"), False),
        (_conv_config(lowering="xla"), True),  # XLA's convolution op
    ],
    ids=["mlp", "conv-auto", "conv-patches", "conv-xla"],
)
def test_programs_with_an_xla_convolution_run_one_step_per_call(config, slow):
    """XLA:CPU runs convolution ops inside compiled loops 15-25x slower."""
    exp = experiment.build(config_lib.validate_config(config))
    state = experiment.initial_state(exp)
    example = {"x": exp.splits.train.x[:1], "y": exp.splits.train.y[:1]}
    cpu = jax.devices("cpu")
    assert chunks.loops_are_slow(exp.loss_fn, state, example, cpu) is slow
