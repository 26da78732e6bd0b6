"""The shell around the pure core: config in, trained run directory out.

`train(config, run_dir)` builds the data, network, loss, optimizer and metrics
from a validated `ExperimentConfig`, runs the jitted (or data-parallel) train
step, evaluates, logs and checkpoints; started again on the same directory it
resumes from the newest complete checkpoint and ends with exactly the result
of an uninterrupted run. `evaluate(run_dir)` restores a run and evaluates it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import nets
from jaxlab import checkpoint as ckpt_lib
from jaxlab import chunks, optim, parallel
from jaxlab import config as config_lib
from jaxlab import data as data_lib
from jaxlab import logger as logger_lib
from jaxlab import losses as losses_lib
from jaxlab import metrics as metrics_lib
from jaxlab import run_dir as run_dir_lib
from jaxlab.errors import ConfigError, DataError, JaxlabError
from jaxlab.train import (
    TrainState,
    init_train_state,
    make_eval_step,
    make_train_loop,
    supervised_loss,
)

# Testing hook (fault injection): SIGKILL this process right after this step.
KILL_AT_STEP_ENV = "JAXLAB_FAULT_KILL_AT_STEP"


class Experiment(NamedTuple):
    """The pieces built from a config (all pure functions and host data)."""

    config: config_lib.ExperimentConfig
    splits: data_lib.Splits
    network: nets.Network
    optimizer: Any
    loss_fn: Any
    metric_set: Any
    classification: bool
    num_classes: int | None


def build(config: config_lib.ExperimentConfig) -> Experiment:
    """Loads the data and builds network, loss, optimizer and metrics."""
    splits = data_lib.load_dataset(config.data, seed=config.seed)
    classification = losses_lib.is_classification(config.model.loss)
    num_classes = config.model.num_classes
    if classification:
        num_classes = _class_count(config, splits, num_classes)
    try:
        network = nets.build_network(config.model.network, num_classes=num_classes)
    except nets.SpecError as e:
        raise ConfigError(f"model.network{_join(str(e))}") from None
    regularizer = None
    if network.regularizers:
        regularizer = functools.partial(
            losses_lib.l2_regularization, regularizers=network.regularizers
        )
    loss = losses_lib.get_loss(config.model.loss)
    loss_fn = supervised_loss(
        network.transformed,
        loss,
        regularizer=regularizer,
        apply_kwargs={"is_training": True},
    )
    metric_set = None
    if classification:
        metric_set = metrics_lib.make_metrics(
            config.model.metrics, num_classes=num_classes
        )
    elif config.model.metrics:
        raise ConfigError(
            "model.metrics: classification metrics need a classification loss, "
            f"got loss {config.model.loss!r}"
        )
    return Experiment(
        config=config,
        splits=splits,
        network=network,
        optimizer=optim.make_optimizer(config.optimizer),
        loss_fn=loss_fn,
        metric_set=metric_set,
        classification=classification,
        num_classes=num_classes,
    )


def _class_count(
    config: config_lib.ExperimentConfig, splits: data_lib.Splits, given: int | None
) -> int:
    """`model.num_classes`, or the count the labels imply; raises `DataError`
    naming the data file for labels that are not class ids in range."""
    source = config.data.path or f"dataset {config.data.dataset!r}"
    found = 0
    # The largest class may only occur in a held-out split.
    for name, split in zip(splits._fields, splits, strict=True):
        if split is not None:
            try:
                found = max(found, data_lib.num_classes(split))
            except DataError as e:
                raise DataError(f"{source} ({name} split): {e}") from None
    if given is not None and found > given:
        raise DataError(
            f"{source}: class label {found - 1} is out of range for "
            f"model.num_classes {given} (labels must be in [0, {given}))"
        )
    return given or found


def check(config: config_lib.AnyExperimentConfig) -> None:
    """Validates the parts of a config that its schema leaves to `nets`, the
    losses, metrics and `agents`, before anything is written or loaded."""
    if config.kind == "rl":
        from jaxlab import rl_experiment

        rl_experiment.check(config)
        return
    try:
        nets.validate_network_spec(config.model.network)
    except nets.SpecError as e:
        raise ConfigError(f"model.network{_join(str(e))}") from None
    losses_lib.get_loss(config.model.loss)
    if losses_lib.is_classification(config.model.loss):
        # num_classes only matters for the values, not for the names' validity.
        metrics_lib.make_metrics(config.model.metrics, num_classes=2)


def _join(message: str) -> str:
    """Joins a nets error (``[1] (MaxPool).x: ...``) onto the ``model.network`` path."""
    if message.startswith(("[", ".")):
        return message
    return f": {message.removeprefix('network: ')}"


def initial_state(exp: Experiment) -> TrainState:
    x = exp.splits.train.x[:1]
    return init_train_state(
        exp.network.transformed,
        exp.optimizer,
        jax.random.key(exp.config.seed),
        x,
        is_training=True,
    )


def total_steps(config: config_lib.ExperimentConfig, steps_per_epoch: int) -> int:
    if config.train.steps is not None:
        return config.train.steps
    return config.train.num_epochs * steps_per_epoch


# ----------------------------------------------------------------- evaluation


def make_evaluator(exp: Experiment):
    """Returns ``evaluate(params, net_state, dataset) -> {metric: float}``."""
    loss = losses_lib.get_loss(exp.config.model.loss)
    metric_set = exp.metric_set

    def update(carry, outputs, labels, mask):
        count = jnp.sum(mask)
        metric_state = carry["metrics"]
        if metric_set is not None:
            metric_state = metric_set.update(metric_state, outputs, labels, mask)
        return {
            "metrics": metric_state,
            "loss_sum": carry["loss_sum"] + loss(outputs, labels, weights=mask) * count,
            "count": carry["count"] + count,
        }

    eval_step = jax.jit(
        make_eval_step(
            exp.network.transformed, update, apply_kwargs={"is_training": False}
        )
    )

    batch_size = exp.config.data.eval_batch_size or exp.config.data.batch_size

    def evaluate(params, net_state, dataset: data_lib.Dataset) -> dict[str, float]:
        carry = {
            "metrics": metric_set.init() if metric_set is not None else {},
            "loss_sum": jnp.zeros(()),
            "count": jnp.zeros(()),
        }
        for batch in data_lib.eval_batches(dataset, batch_size):
            carry = eval_step(params, net_state, carry, batch)
        carry = jax.device_get(carry)
        results = {"loss": float(carry["loss_sum"] / max(carry["count"], 1.0))}
        if metric_set is not None:
            computed = jax.device_get(metric_set.compute(carry["metrics"]))
            results.update({k: float(v) for k, v in computed.items()})
        return results

    return evaluate


def _eval_split(exp: Experiment) -> tuple[str, data_lib.Dataset]:
    if exp.splits.validation is not None:
        return "validation", exp.splits.validation
    return "test", exp.splits.test


def activation_stats(exp: Experiment, params, net_state, x) -> dict[str, float]:
    """Per-layer activation statistics (mean, std, fraction of zeros) on `x`."""
    (_, stats), _ = exp.network.stats_transformed.apply(
        params, net_state, None, x, is_training=False
    )
    flat = {}
    for layer, values in jax.device_get(stats).items():
        for key, value in values.items():
            flat[f"{layer}/{key}"] = float(value)
    return flat


# ----------------------------------------------------------------- training


def _kill_step() -> int | None:
    value = os.environ.get(KILL_AT_STEP_ENV)
    return int(value) if value else None


def _checkpoint_meta(step: int, batcher: data_lib.Batcher) -> dict[str, Any]:
    return {"step": step, "data": batcher.position(step)}


def _all_finite(tree: Any) -> bool:
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(x.dtype, jnp.floating)
    ]
    return bool(jax.device_get(jnp.all(jnp.stack(leaves)))) if leaves else True


def train(
    config: config_lib.AnyExperimentConfig,
    run_dir: str | os.PathLike,
    *,
    quiet: bool = False,
) -> dict[str, float]:
    """Trains (or resumes) the run in `run_dir`; returns the final test metrics
    (supervised) or evaluation results (RL)."""
    check(config)
    if not parallel.is_main_process():
        # Other processes of a multi-process run write nothing: process 0 owns
        # the run directory, and hands them the restored state.
        return _train_worker(config, Path(run_dir), quiet=quiet)
    run_path = run_dir_lib.prepare(run_dir)
    with run_dir_lib.RunLock(run_path):
        checkpointer = ckpt_lib.Checkpointer(
            run_path / run_dir_lib.CHECKPOINT_DIR, keep=config.train.keep_checkpoints
        )
        latest = checkpointer.latest_step()
        run_dir_lib.save_config(run_path, config, resuming=latest is not None)
        if config.kind == "rl":
            from jaxlab import rl_experiment

            return rl_experiment.train(config, run_path, checkpointer, quiet=quiet)
        return _train_supervised(config, run_path, checkpointer, quiet=quiet)


def _train_worker(
    config: config_lib.AnyExperimentConfig, run_path: Path, *, quiet: bool
) -> dict[str, float]:
    """A process other than 0 of a multi-process run (no run directory)."""
    if config.kind == "rl":
        from jaxlab import rl_experiment

        return rl_experiment.train(config, run_path, None, quiet=True)
    return _train_supervised(config, run_path, None, quiet=True)


def _train_supervised(
    config: config_lib.ExperimentConfig,
    run_path: Path,
    checkpointer: ckpt_lib.Checkpointer | None,
    *,
    quiet: bool,
) -> dict[str, float]:
    """`checkpointer` is None on processes other than 0 of a multi-process run."""
    exp = build(config)
    batcher = data_lib.Batcher(
        exp.splits.train,
        batch_size=config.data.batch_size,
        seed=config.seed,
        shuffle=config.data.shuffle,
    )
    num_steps = total_steps(config, batcher.steps_per_epoch)
    state = initial_state(exp)
    start = 0
    if checkpointer is not None and checkpointer.latest_step() is not None:
        state, meta = checkpointer.restore(state)
        start = run_dir_lib.meta_count(meta, "step", checkpointer)
    # Multi-process: process 0 read the checkpoint; the others take its state.
    state, start = parallel.broadcast_from_main((state, np.int64(start)))
    start = int(start)

    devices = parallel.devices(config.parallel.devices)
    tc = config.train
    kill_at = _kill_step()
    # Steps per call: one compiled loop runs up to `max_chunk` steps, ending at
    # every step where the host has something to do (log, eval, checkpoint).
    max_chunk = chunks.chunk_limit(tc, exp.splits.train, config.data.batch_size)
    split = exp.splits.train
    example = {"x": split.x[:1], "y": split.y[:1]}
    if chunks.loops_are_slow(exp.loss_fn, state, example, devices):
        max_chunk = 1
    step_options = dict(
        axis_name=parallel.AXIS if len(devices) > 1 else None,
        per_layer_grad_norms=True,
        # Both modes keep the last good params in the step; "halt" then stops.
        skip_nonfinite=True,
    )
    loop_fn = make_train_loop(exp.loss_fn, exp.optimizer, **step_options)
    # Where several chunks make one logging interval, those ending where nothing
    # is logged run a second program, without norms (LeNet on CPU: -3% a step).
    lean_fn = None
    if max_chunk < tc.log_every:
        lean_fn = make_train_loop(
            exp.loss_fn, exp.optimizer, full_metrics=False, **step_options
        )
    if len(devices) > 1:

        def compile_loop(fn):
            return parallel.data_parallel(fn, devices, backend=config.parallel.backend)

        state = parallel.replicate(state, devices)

        def put(batches, count):
            return (
                parallel.shard(batches, devices, axis=1),
                parallel.replicate(np.int32(count), devices),
            )

        def host(tree):
            return parallel.unreplicate(tree)
    else:
        compile_loop = jax.jit

        def put(batches, count):
            return batches, np.int32(count)

        def host(tree):
            return tree

    loop_fn = compile_loop(loop_fn)
    lean_fn = compile_loop(lean_fn) if lean_fn is not None else loop_fn

    def chunk(step: int, count: int):
        """The stacked batches of steps ``step .. step + count - 1``, padded to
        `max_chunk` (one compiled program for every chunk length)."""
        batches = batcher.batches(step, count)
        if count < max_chunk:
            batches = {
                k: np.concatenate(
                    [v, np.zeros((max_chunk - count, *v.shape[1:]), v.dtype)]
                )
                for k, v in batches.items()
            }
        return put(batches, count)

    evaluate = make_evaluator(exp)
    eval_name, eval_data = _eval_split(exp)

    def last_good() -> int | None:
        return checkpointer.latest_step() if checkpointer is not None else None

    def save(step: int) -> None:
        host_state = host(state)
        if not _all_finite(host_state.params):
            raise JaxlabError(
                f"step {step}: parameters are not finite; halted without saving "
                f"(last good checkpoint: step {last_good()})"
            )
        if checkpointer is not None:  # process 0 writes for all
            meta = _checkpoint_meta(step, batcher)
            run_dir_lib.save_checkpoint(checkpointer, step, host_state, meta)

    def halt_if_nonfinite(first_bad: jax.Array) -> None:
        if int(first_bad) >= 0:
            raise JaxlabError(
                f"step {int(first_bad)}: the loss or gradients are not finite; halted "
                f"(last good checkpoint: step {last_good()}; "
                "train.on_nonfinite: skip_step skips such steps instead)"
            )

    def run_eval(step: int, name: str, dataset) -> dict[str, float]:
        host_state = host(state)
        results = evaluate(host_state.params, host_state.net_state, dataset)
        if tc.log_activations:
            x = dataset.x[: config.data.eval_batch_size or config.data.batch_size]
            results.update(
                {
                    f"activations/{k}": v
                    for k, v in activation_stats(
                        exp, host_state.params, host_state.net_state, x
                    ).items()
                }
            )
        log.log(step, results, prefix=name)
        return results

    if start >= num_steps:
        # Nothing left to train: report the finished run without logging again.
        host_state = host(state)
        results = evaluate(host_state.params, host_state.net_state, exp.splits.test)
        if checkpointer is not None:
            checkpointer.close()
        if not quiet:
            done = f"{run_path}: already trained to step {start}"
            print(f"{done}; test: {_summary(results)}")
        return results

    with logger_lib.make_logger(
        run_path,
        main=checkpointer is not None,
        total_steps=num_steps,
        quiet=quiet,
        # Drops lines a killed attempt logged past its last checkpoint.
        resume_step=start,
    ) as log:
        if start:
            log.message(f"resuming {run_path} from step {start}")
        # First step with a NaN/Inf loss or gradient, tracked on the device
        # (no host sync per step); checked when metrics are logged.
        first_bad = jnp.asarray(-1, jnp.int32)
        step = start
        while step < num_steps:
            done = chunks.next_stop(step, num_steps, tc, kill_at, max_chunk)
            logs = done % tc.log_every == 0 or done == num_steps
            fn = loop_fn if logs else lean_fn
            state, metrics = fn(state, *chunk(step, done - step))
            if tc.on_nonfinite == "halt":
                i = host(metrics)["first_nonfinite"]
                first_bad = chunks.note_first_bad(first_bad, i, np.int32(step + 1))
            step = done
            if logs:
                halt_if_nonfinite(first_bad)
                metrics = jax.device_get(host(metrics))
                del metrics["first_nonfinite"]
                metrics["learning_rate"] = optim.learning_rate(host(state).opt_state)
                log.log(done, metrics, prefix="train")
            if done % tc.eval_every == 0 and done != num_steps:
                run_eval(done, eval_name, eval_data)
            # The final checkpoint is saved after the final evaluations below.
            if done % tc.checkpoint_every == 0 and done != num_steps:
                halt_if_nonfinite(first_bad)
                save(done)
            if kill_at is not None and done == kill_at:
                jax.block_until_ready(state)
                parallel.sync("jaxlab-fault-kill")  # after process 0's save
                os.kill(os.getpid(), signal.SIGKILL)
        if eval_name != "test":
            run_eval(num_steps, eval_name, eval_data)
        results = run_eval(num_steps, "test", exp.splits.test)
        # Last: a rerun that finds the final checkpoint logs nothing more, so a
        # kill must not land between this save and the final evaluation rows.
        halt_if_nonfinite(first_bad)
        save(num_steps)
        if checkpointer is not None:
            checkpointer.close()
        log.message(f"test: {_summary(results)}", force=True)
    return results


def _summary(results: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in results.items() if "/" not in k)


def evaluate_run(
    run_dir: str | os.PathLike, *, split: str = "test"
) -> dict[str, float]:
    """Restores the newest checkpoint of a run and evaluates it on `split`
    (RL runs: evaluation episodes; `split` does not apply)."""
    config = run_dir_lib.load_run_config(run_dir)
    if config.kind == "rl":
        from jaxlab import rl_experiment

        return rl_experiment.evaluate_run(config, Path(run_dir))
    exp = build(config)
    dataset = {"train": exp.splits.train, "test": exp.splits.test}.get(split)
    if split == "validation":
        dataset = exp.splits.validation
    if dataset is None:
        raise JaxlabError(
            f"--split {split}: this run has no {split} split "
            "(choose train, validation or test)"
        )
    checkpointer = ckpt_lib.Checkpointer(Path(run_dir) / run_dir_lib.CHECKPOINT_DIR)
    if checkpointer.latest_step() is None:
        raise JaxlabError(f"{run_dir}: no checkpoint to evaluate")
    state, meta = checkpointer.restore(initial_state(exp))
    checkpointer.close()
    results = make_evaluator(exp)(state.params, state.net_state, dataset)
    return {"step": run_dir_lib.meta_count(meta, "step", checkpointer), **results}


def replace_data_path(
    config: config_lib.ExperimentConfig, base_dir: Path
) -> config_lib.ExperimentConfig:
    """Makes a relative `data.path` absolute (relative to the config's folder)."""
    path = getattr(getattr(config, "data", None), "path", None)
    if path is None or Path(path).is_absolute():
        return config
    data = dataclasses.replace(config.data, path=str((base_dir / path).resolve()))
    return dataclasses.replace(config, data=data)


def results_table(results: Mapping[str, float]) -> str:
    width = max(len(k) for k in results)
    return "\n".join(f"{k:<{width}}  {v:.6g}" for k, v in results.items())
