"""Checkpointer: bit-exact round trips, keep-N, damage fallback, SIGKILL safety."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlab.checkpoint import Checkpointer, CheckpointWarning, tree_equal
from jaxlab.errors import CheckpointError

REPO = Path(__file__).resolve().parents[2]


class TrainState(NamedTuple):
    params: dict
    opt_state: optax.OptState
    step: jax.Array
    rng: jax.Array
    extra: dict


_ADAM = optax.adam(1e-3)
_adam_update = jax.jit(_ADAM.update)


def make_state(seed: int, *, width: int = 4) -> TrainState:
    """A train-state-like pytree whose every leaf depends on `seed`."""
    rng = np.random.default_rng(seed)
    params = {
        "linear": {
            "w": jnp.asarray(rng.normal(size=(3, width)), jnp.float32),
            "b": jnp.full((width,), seed, jnp.float32),
        },
        # A Haiku-style module name.
        "mlp/~/linear_0": {"w": jnp.asarray(rng.normal(size=(2, 2)), jnp.float32)},
    }
    grads = jax.tree.map(jnp.ones_like, params)
    # One update, so that mu, nu and count are not trivial.
    _, opt_state = _adam_update(grads, _ADAM.init(params), params)
    return TrainState(
        params=params,
        opt_state=opt_state,
        step=jnp.int32(seed * 10),
        rng=jax.random.fold_in(jax.random.key(7), seed),
        extra={
            "counts": np.arange(5, dtype=np.int32) + seed,
            "mask": np.array([True, False, seed % 2 == 0]),
            "specials": np.array([np.nan, -0.0, np.inf, -np.inf], np.float32),
            "int64": np.int64(2**40 + seed),
            "python": seed,
            "empty": jnp.zeros((0, 3)),
            "keys": jax.random.split(jax.random.key(seed), 3),
        },
    )


def zeros_like_state(state: TrainState) -> TrainState:
    """A fresh target: same structure, shapes, dtypes and leaf types, new values."""

    def zero(leaf):
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
            data = jnp.zeros_like(jax.random.key_data(leaf))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        if isinstance(leaf, int | np.generic):
            return type(leaf)(0)
        if isinstance(leaf, np.ndarray):
            return np.zeros_like(leaf)
        return jnp.zeros_like(leaf)

    return jax.tree.map(zero, state)


def saved_dir(tmp_path: Path, steps=(1, 2, 3), keep: int = 3) -> Path:
    directory = tmp_path / "ckpt"
    with Checkpointer(directory, keep=keep) as ckpt:
        for step in steps:
            ckpt.save(step, make_state(step), meta={"step": step})
    return directory


# ----------------------------------------------------------------- round trips


def test_round_trip_is_bit_exact(tmp_path):
    state = make_state(3)
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(3, state, meta={"step": 3, "loss": np.float32(0.5), "tag": "a"})
        restored, meta = ckpt.restore(zeros_like_state(state))

    assert tree_equal(restored, state)
    assert meta == {"step": 3, "loss": 0.5, "tag": "a"}
    assert isinstance(restored, TrainState)
    assert isinstance(restored.opt_state[0], optax.ScaleByAdamState)
    assert restored.rng.dtype == state.rng.dtype  # a typed key comes back typed
    assert jax.random.key_impl(restored.rng) == jax.random.key_impl(state.rng)
    assert isinstance(restored.params["linear"]["w"], jax.Array)
    assert isinstance(restored.extra["counts"], np.ndarray)
    assert isinstance(restored.extra["int64"], np.int64)
    assert type(restored.extra["python"]) is int
    assert restored.extra["empty"].shape == (0, 3)
    # The restored key is usable.
    jax.random.normal(restored.rng, (2,))


def test_restore_into_another_node_type_with_the_same_paths(tmp_path):
    state = {"params": {"w": jnp.arange(4.0)}, "step": jnp.int32(2)}

    class Target(NamedTuple):
        params: dict
        step: jax.Array

    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(2, state)
        restored, meta = ckpt.restore(Target({"w": jnp.zeros(4)}, jnp.int32(0)))
    assert isinstance(restored, Target) and meta == {}
    assert tree_equal(restored, Target(state["params"], state["step"]))


def test_state_without_stored_arrays_round_trips(tmp_path):
    state = {"empty": np.zeros((0,), np.float32), "nothing": ()}
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(0, state, meta={"epoch": 1})
        restored, meta = ckpt.restore(state)
    assert tree_equal(restored, state) and meta == {"epoch": 1}


def test_tree_equal_is_bitwise():
    a = {"x": np.array([0.0, np.nan], np.float32)}
    assert tree_equal(a, {"x": np.array([0.0, np.nan], np.float32)})
    assert not tree_equal(a, {"x": np.array([-0.0, np.nan], np.float32)})
    assert not tree_equal(a, {"x": np.array([0.0, np.nan], np.float64)})
    assert not tree_equal(a, {"y": np.array([0.0, np.nan], np.float32)})
    assert not tree_equal(jax.random.key(0), jax.random.key(1))
    assert not tree_equal(jax.random.key(0), jax.random.key_data(jax.random.key(0)))


def test_meta_must_be_json(tmp_path):
    with Checkpointer(tmp_path / "ckpt") as ckpt, pytest.raises(TypeError):
        ckpt.save(0, {"w": np.zeros(2)}, meta={"fn": print})


# --------------------------------------------------------- steps and retention


def test_keep_n_latest_step_and_all_steps(tmp_path):
    directory = tmp_path / "ckpt"
    with Checkpointer(directory, keep=2) as ckpt:
        assert ckpt.latest_step() is None and ckpt.all_steps() == []
        for step in range(0, 60, 10):
            ckpt.save(step, make_state(step))
            assert ckpt.latest_step() == step
        assert ckpt.all_steps() == [40, 50]
    assert sorted(p.name for p in directory.iterdir()) == ["40", "50"]
    assert Checkpointer(directory).latest_step() == 50  # a fresh reader agrees


def test_restore_a_specific_step(tmp_path):
    directory = saved_dir(tmp_path)
    ckpt = Checkpointer(directory)
    restored, meta = ckpt.restore(make_state(0), step=2)
    assert meta == {"step": 2} and ckpt.restored_step == 2
    assert tree_equal(restored, make_state(2))
    with pytest.raises(CheckpointError, match=r"no committed checkpoint at step 5"):
        ckpt.restore(make_state(0), step=5)


def test_restore_from_an_empty_directory_names_it(tmp_path):
    with pytest.raises(CheckpointError, match=str(tmp_path / "nothing")):
        Checkpointer(tmp_path / "nothing").restore(make_state(0))
    assert not (tmp_path / "nothing").exists()  # reading creates nothing


def test_saving_over_newer_checkpoints_needs_force(tmp_path):
    directory = saved_dir(tmp_path)
    with Checkpointer(directory) as ckpt:
        with pytest.raises(CheckpointError, match=r"steps \[2, 3\] already exist"):
            ckpt.save(2, make_state(20))
        ckpt.save(2, make_state(20), force=True)
        assert ckpt.all_steps() == [1, 2]
        assert tree_equal(ckpt.restore(make_state(0))[0], make_state(20))


def test_orbax_is_imported_lazily(tmp_path):
    directory = saved_dir(tmp_path, steps=(4,))
    code = (
        "import sys; from jaxlab.checkpoint import Checkpointer; "
        f"assert Checkpointer({str(directory)!r}).latest_step() == 4; "
        "assert 'orbax.checkpoint' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ---------------------------------------------------------- incomplete saves


def test_incomplete_checkpoints_are_ignored_and_cleaned(tmp_path):
    directory = saved_dir(tmp_path, steps=(1, 2))
    # A save killed before orbax's rename: the tmp directory of step 3, and one
    # killed in a commit-file protocol (or a delete): step 4 without the marker.
    shutil.copytree(directory / "2", directory / "3.orbax-checkpoint-tmp")
    shutil.copytree(directory / "2", directory / "4")
    (directory / "4" / "commit_success.txt").unlink()

    ckpt = Checkpointer(directory)
    assert ckpt.all_steps() == [1, 2] and ckpt.latest_step() == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        restored, meta = ckpt.restore(make_state(0))
    assert meta == {"step": 2} and tree_equal(restored, make_state(2))

    ckpt.save(3, make_state(3))  # the writer cleans up both leftovers
    assert sorted(p.name for p in directory.iterdir()) == ["1", "2", "3"]
    ckpt.close()


# ------------------------------------------------------------ damaged saves


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _overwrite(path: Path) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size // 3)
        f.write(b"\xa5" * (size - size // 3))


def _flip_checksum(directory: Path) -> None:
    manifest_file = directory / "manifest" / "metadata"
    manifest = json.loads(manifest_file.read_text())
    manifest["leaves"][0]["crc32"] ^= 1  # as if its array's bytes had changed
    manifest_file.write_text(json.dumps(manifest))


def _damage(step_dir: Path, how: str) -> None:
    if how == "checksum":
        _flip_checksum(step_dir)
        return
    files = [
        p
        for p in step_dir.rglob("*")
        if p.is_file() and p.name != "commit_success.txt" and "process_" not in str(p)
    ]
    files = [p for p in files if how.split(":")[1] in str(p.relative_to(step_dir))]
    assert files
    for path in files:
        (_truncate if how.startswith("truncate") else _overwrite)(path)


@pytest.mark.parametrize(
    "how",
    [
        "truncate:state/",  # array data, ocdbt manifest, array metadata
        "overwrite:state/",
        "truncate:manifest/",
        "overwrite:meta/",
        "truncate:",  # every file
        "checksum",  # silent corruption that only the CRC32 catches
    ],
)
def test_damaged_newest_checkpoint_warns_once_and_falls_back(tmp_path, how):
    directory = saved_dir(tmp_path)
    _damage(directory / "3", how)
    ckpt = Checkpointer(directory)
    assert ckpt.latest_step() == 3  # committed, so still listed

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        restored, meta = ckpt.restore(make_state(0))
    messages = [str(w.message) for w in caught if w.category is CheckpointWarning]
    assert len(messages) == 1 and "step 3" in messages[0], messages
    assert str(directory) in messages[0]
    assert meta == {"step": 2} and ckpt.restored_step == 2
    assert tree_equal(restored, make_state(2))

    # Resuming from step 2 re-saves step 3 over the damaged one, without force.
    ckpt.save(3, make_state(3), meta={"step": 3})
    assert tree_equal(ckpt.restore(make_state(0))[0], make_state(3))
    ckpt.close()


def test_every_checkpoint_damaged_raises_naming_the_directory(tmp_path):
    directory = saved_dir(tmp_path, steps=(1, 2))
    for step in (1, 2):
        _damage(directory / str(step), "truncate:state/")
    ckpt = Checkpointer(directory)
    with (
        pytest.warns(CheckpointWarning),
        pytest.raises(CheckpointError, match=f"{directory}: no usable checkpoint"),
    ):
        ckpt.restore(make_state(0))
    with pytest.raises(CheckpointError, match="step 2 is damaged"):
        ckpt.restore(make_state(0), step=2)


# ------------------------------------------------------------ wrong targets


def test_shape_mismatch_names_the_parameter_and_both_shapes(tmp_path):
    directory = saved_dir(tmp_path, steps=(1,))
    with pytest.raises(CheckpointError) as err:
        Checkpointer(directory).restore(make_state(0, width=5))
    message = str(err.value)
    assert "params/linear/w has shape (3, 4) in the checkpoint but (3, 5)" in message
    assert "step 1" in message and str(directory) in message


def test_missing_and_extra_keys_are_named(tmp_path):
    directory = saved_dir(tmp_path, steps=(1,))
    target = make_state(0)
    del target.params["linear"]["b"]
    target.params["new"] = {"w": jnp.zeros(2)}
    with pytest.raises(CheckpointError) as err:
        Checkpointer(directory).restore(target)
    message = str(err.value)
    assert "params/new/w (shape (2,)) is in the target but not in the checkpoint" in (
        message
    )
    assert (
        "params/linear/b (shape (4,)) is in the checkpoint but not in the target"
        in (message)
    )


def test_dtype_mismatch_is_named(tmp_path):
    directory = saved_dir(tmp_path, steps=(1,))
    target = make_state(0)
    target.extra["counts"] = target.extra["counts"].astype(np.float32)
    with pytest.raises(CheckpointError, match="extra/counts has dtype int32 in the"):
        Checkpointer(directory).restore(target)


# ------------------------------------------------------------------ SIGKILL

_CHILD = r'''
import sys

import jax
import numpy as np

from jaxlab.checkpoint import Checkpointer, tree_equal


def state_at(step):
    """What the writer saves at `step`: a deterministic function of the step."""
    base = np.arange(128 * 128, dtype=np.float32).reshape(128, 128)
    params = {
        f"layer{i}": {"w": base * (step + 1) + i, "b": np.full(128, step - i, np.int32)}
        for i in range(12)
    }
    rng = jax.random.fold_in(jax.random.key(0), step)
    return {"params": params, "step": np.int64(step), "rng": rng}


def main(directory):
    ckpt = Checkpointer(directory, keep=2)
    start = 0
    if ckpt.latest_step() is not None:
        state, meta = ckpt.restore(state_at(0))
        if not tree_equal(state, state_at(meta["step"])):
            sys.exit(3)
        start = meta["step"] + 1
    for step in range(start, start + 100_000):
        ckpt.save(step, state_at(step), meta={"step": step})
        if step == start:  # the kill comes after this attempt's first save
            print("ready", start, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
'''


def test_sigkill_at_random_moments_never_leaves_a_bad_latest(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(_CHILD)
    namespace: dict = {"__name__": "writer"}
    exec(compile(_CHILD, str(script), "exec"), namespace)
    state_at = namespace["state_at"]
    directory = tmp_path / "ckpt"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    delays = random.Random(20240611)
    restored_steps = []
    for _ in range(4):
        child = subprocess.Popen(
            [sys.executable, str(script), str(directory)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=REPO,
        )
        try:
            ready = child.stdout.readline()
            assert ready.startswith("ready"), f"writer failed ({child.wait()})"
            time.sleep(delays.uniform(0.05, 0.6))  # lands mid-save most times
        finally:
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
            child.wait()
            child.stdout.close()
        assert child.returncode == -signal.SIGKILL

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a committed save is never damaged
            ckpt = Checkpointer(directory, keep=2)
            state, meta = ckpt.restore(state_at(0))
        assert meta["step"] == ckpt.latest_step() == ckpt.restored_step
        assert tree_equal(state, state_at(meta["step"]))
        restored_steps.append(meta["step"])
        ckpt.close()
    assert restored_steps == sorted(restored_steps)
    assert restored_steps[-1] > restored_steps[0]
