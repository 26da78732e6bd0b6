"""Kill anywhere, lose nothing: a fault-injection harness for `jaxlab train`.

For each built-in config (an MLP on the digits, a DQN on Catch with a replay
buffer, a PPO on CartPole; the RL ones on the JAX backend, so that their whole
runner state is checkpointed), the harness

1. runs ``python -m jaxlab train CONFIG --output-dir reference --quiet`` once
   uninterrupted (the reference), then ``--jobs`` control runs at once: each must
   equal the reference, and their mean wall time T sets the kill delays;
2. ``--kills`` times: launches the same command on a fresh output directory and
   SIGKILLs it after a random delay (uniform in [0.5 s, 1.1 T], or with
   probability 1/2 uniform over the training loop's part of the launch, where
   the checkpoint writes happen, up to 1.1 T); after each kill that landed, it
   relaunches, killing again with probability 1/3 (at most `MAX_KILLS_PER_RUN`
   kills in a run), until a launch exits 0. A run whose first kill came too late
   (it finished) is compared like the others and started over, at most twice;
3. two more runs (the failpoint runs) are killed deterministically in the middle
   of a checkpoint write: ``JAXLAB_FAULT_KILL_DURING_SAVE=<step>`` makes
   `jaxlab.checkpoint.Checkpointer.save` SIGKILL the process once orbax has
   written the checkpoint's files into its temporary directory, before the
   commit (at the reference's second-to-last and last checkpoint steps), and
   they are then rerun like the others;
4. compares every finished run with the reference: the final checkpoint
   (restored with `jaxlab.checkpoint.Checkpointer` into a freshly initialised
   state; step, meta and every array bit for bit, via
   `jaxlab.checkpoint.tree_equal`) and ``metrics.jsonl`` (every row, minus the
   wall-clock fields ``time`` and ``elapsed``).

A kill counts as landed when the process died of it (it had not finished yet),
and as landed during a checkpoint write when it left a new
``<step>.orbax-checkpoint-tmp`` directory, or a step directory without
``commit_success.txt``, under ``checkpoints/`` (a save or its pruning of old
checkpoints was under way).

Usage::

    python -m jaxlab.faults [--configs supervised dqn ppo] [--kills 20] [--seed 0]

It prints a markdown table per config and exits 1 if any run did not resume
exactly (or crashed). Launches share a JAX persistent compilation cache (in the
work directory) so that relaunches skip XLA compilation; the reference run fills
it, so a resumed run computes with the same executables (``--no-compile-cache``
compiles in every launch instead). From Python: `run_config`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax

from jaxlab import checkpoint as ckpt_lib
from jaxlab import config as config_lib
from jaxlab import experiment, rl_experiment
from jaxlab import run_dir as run_dir_lib
from jaxlab.logger import METRICS_FILE

KILL_AT_STEP_ENV = experiment.KILL_AT_STEP_ENV
KILL_DURING_SAVE_ENV = ckpt_lib.KILL_DURING_SAVE_ENV
MIN_DELAY_S = 0.5
MAX_KILLS_PER_RUN = 3
_WALL_CLOCK_FIELDS = ("time", "elapsed")
_LAUNCH_TIMEOUT_S = 600.0
_RESTORE_LOCK = threading.Lock()  # one restore at a time (runs go in threads)


# ------------------------------------------------------------------ configs


def supervised_config() -> dict[str, Any]:
    """An MLP on the digits: 150 steps, a checkpoint every 10 (15 saves)."""
    return {
        "name": "faults-supervised",
        "seed": 0,
        "data": {
            "dataset": "digits",
            "batch_size": 32,
            "test_split": 0.2,
            "validation_split": 0.1,
        },
        "model": {
            "network": [
                ["Flatten", {}],
                ["Linear", {"output_size": 32, "activation": "relu"}],
                ["Linear", {"output_size": 10}],
            ],
            "loss": "softmax_cross_entropy",
            "metrics": ["accuracy"],
        },
        "optimizer": {"name": "adam", "learning_rate": 0.01},
        "train": {
            "steps": 150,
            "eval_every": 50,
            "log_every": 5,
            "checkpoint_every": 10,
        },
    }


def dqn_config() -> dict[str, Any]:
    """A DQN on Catch (JAX backend), 4 envs, 800 env steps, a checkpoint every
    80 (10 saves). The replay buffer (capacity 300) holds data from the first
    checkpoint on and wraps around before the end."""
    return {
        "name": "faults-dqn",
        "kind": "rl",
        "seed": 1,
        "env": {"id": "Catch", "backend": "jax", "num_envs": 4},
        "agent": {
            "name": "dqn",
            "hidden": [16],
            "target_update_period": 5,
            "exploration": {
                "schedule": "linear",
                "start": 1.0,
                "end": 0.1,
                "steps": 400,
            },
            "replay": {"capacity": 300, "batch_size": 8, "min_size": 32},
            "train_freq": 2,
            "gradient_steps": 1,
        },
        "optimizer": {"name": "adam", "learning_rate": 1e-3},
        "train": {
            "env_steps": 800,
            "eval_every": 400,
            "eval_episodes": 2,
            "log_every": 40,
            "checkpoint_every": 80,
        },
    }


def ppo_config() -> dict[str, Any]:
    """A PPO on CartPole (JAX backend), 2 envs, 1280 env steps, a checkpoint
    every 128 (10 saves)."""
    return {
        "name": "faults-ppo",
        "kind": "rl",
        "seed": 3,
        "env": {"id": "CartPole-v1", "backend": "jax", "num_envs": 2},
        "agent": {
            "name": "ppo",
            "num_steps": 16,
            "update_epochs": 2,
            "num_minibatches": 2,
            "hidden": [16, 16],
        },
        "optimizer": {"name": "adam", "learning_rate": 3e-3},
        "train": {
            "env_steps": 1280,
            "eval_every": 640,
            "eval_episodes": 2,
            "log_every": 64,
            "checkpoint_every": 128,
        },
    }


CONFIGS: dict[str, Callable[[], dict[str, Any]]] = {
    "supervised": supervised_config,
    "dqn": dqn_config,
    "ppo": ppo_config,
}


# ----------------------------------------------------------------- launching


@dataclasses.dataclass
class Launch:
    """One ``jaxlab train`` process.

    Attributes:
      delay: seconds after which it was to be SIGKILLed; None: left to finish.
      returncode: its exit status (``-9``: it died of SIGKILL).
      seconds: its wall time.
      failpoint: the step of ``JAXLAB_FAULT_KILL_DURING_SAVE``, if set.
      in_save: the kill left a partial checkpoint write behind.
      restarted: it finished before its kill, and the run started over.
    """

    delay: float | None
    returncode: int
    seconds: float
    failpoint: int | None = None
    in_save: bool = False
    restarted: bool = False

    @property
    def kill_attempted(self) -> bool:
        """Whether this launch was to be killed (by a timer or the failpoint)."""
        return self.delay is not None or self.failpoint is not None

    @property
    def killed(self) -> bool:
        """Whether the launch died of SIGKILL (the kill landed before the end)."""
        return self.returncode == -signal.SIGKILL


def launch_env(
    cache_dir: Path | None = None, *, failpoint: int | None = None
) -> dict[str, str]:
    """The environment of a launch: no inherited fault hooks, optionally the
    compilation cache and the checkpoint-write failpoint."""
    env = dict(os.environ)
    env.pop(KILL_AT_STEP_ENV, None)
    env.pop(KILL_DURING_SAVE_ENV, None)
    if cache_dir is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    if failpoint is not None:
        env[KILL_DURING_SAVE_ENV] = str(failpoint)
    return env


def partial_saves(checkpoint_dir: Path) -> set[tuple[str, int, int]]:
    """Directories under `checkpoint_dir` that a killed save may leave behind.

    Orbax temporary directories (``*.orbax-checkpoint-tmp*``) and step-named
    directories without ``commit_success.txt``, each as (name, inode, ctime) so
    that a new one can be told from an old one of the same name.
    """
    found = set()
    try:
        entries = list(os.scandir(checkpoint_dir))
    except (FileNotFoundError, NotADirectoryError):
        return found
    for entry in entries:
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            partial = ckpt_lib._TMP_SUFFIX in entry.name or (
                entry.name.isdigit()
                and not os.path.exists(
                    os.path.join(entry.path, ckpt_lib._COMMIT_MARKER)
                )
            )
            if partial:
                stat = entry.stat(follow_symlinks=False)
                found.add((entry.name, stat.st_ino, stat.st_ctime_ns))
        except FileNotFoundError:  # removed while listing
            continue
    return found


def launch(
    config_path: Path,
    run_dir: Path,
    *,
    delay: float | None = None,
    failpoint: int | None = None,
    cache_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Launch:
    """Runs ``python -m jaxlab train`` into `run_dir`, SIGKILLing it after
    `delay` seconds if it is still running then.

    Its stdout and stderr are appended to ``<run_dir>.log``.

    Args:
      config_path: the config file.
      run_dir: the output directory (resumed when it holds checkpoints).
      delay: seconds from the start to the SIGKILL; None lets it finish.
      failpoint: sets ``JAXLAB_FAULT_KILL_DURING_SAVE`` to this step.
      cache_dir: the JAX compilation cache to use, or None.
      env: more environment variables (e.g. ``JAXLAB_FAULT_KILL_AT_STEP``).

    Returns:
      What happened.
    """
    checkpoints = run_dir / run_dir_lib.CHECKPOINT_DIR
    before = partial_saves(checkpoints)
    command = [sys.executable, "-m", "jaxlab", "train", str(config_path)]
    command += ["--output-dir", str(run_dir), "--quiet"]
    log_path = run_dir.with_name(run_dir.name + ".log")
    with open(log_path, "ab") as log:
        start = time.monotonic()
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**launch_env(cache_dir, failpoint=failpoint), **(env or {})},
        )
        try:
            timeout = _LAUNCH_TIMEOUT_S if delay is None else delay
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            returncode = process.wait()
        seconds = time.monotonic() - start
    result = Launch(delay, returncode, seconds, failpoint)
    if result.killed:
        result.in_save = bool(partial_saves(checkpoints) - before)
    return result


def log_tail(run_dir: Path, lines: int = 5) -> str:
    """The last lines that the launches into `run_dir` printed."""
    try:
        text = run_dir.with_name(run_dir.name + ".log").read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


# --------------------------------------------------------------- comparing


def target_state(config_path: Path) -> Any:
    """A freshly initialised state of the run that `config_path` describes: the
    target that its checkpoints restore into."""
    config = config_lib.load_config(config_path)
    if config.kind == "rl":
        run = rl_experiment._Run(config)
        try:
            init_key, _ = rl_experiment._keys(config.seed)
            return run.trainer.init(init_key)
        finally:
            run.close()
    config = experiment.replace_data_path(config, config_path.resolve().parent)
    return experiment.initial_state(experiment.build(config))


def metric_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl`` without their wall-clock fields."""
    rows = []
    for line in (run_dir / METRICS_FILE).read_text().splitlines():
        row = json.loads(line)
        rows.append({k: v for k, v in row.items() if k not in _WALL_CLOCK_FIELDS})
    return rows


@dataclasses.dataclass
class Outcome:
    """The end of a run: its final checkpoint and its metrics log."""

    step: int | None
    state: Any
    meta: dict[str, Any]
    rows: list[dict[str, Any]]
    steps: list[int]  # all committed checkpoint steps


def outcome(run_dir: Path, target: Any) -> Outcome:
    """Restores the newest checkpoint of `run_dir` into `target`; reads its log."""
    with (
        _RESTORE_LOCK,
        ckpt_lib.Checkpointer(run_dir / run_dir_lib.CHECKPOINT_DIR) as ckpt,
    ):
        steps = ckpt.all_steps()
        with warnings.catch_warnings():
            warnings.simplefilter("error", ckpt_lib.CheckpointWarning)
            state, meta = ckpt.restore(target)
        return Outcome(ckpt.restored_step, state, meta, metric_rows(run_dir), steps)


def differences(reference: Outcome, run: Outcome) -> list[str]:
    """How `run` differs from `reference` (empty when identical)."""
    found = []
    if run.step != reference.step:
        found.append(f"final checkpoint at step {run.step}, not {reference.step}")
    if run.meta != reference.meta:
        found.append(f"checkpoint meta {run.meta} != {reference.meta}")
    if not ckpt_lib.tree_equal(run.state, reference.state):
        ours = jax.tree_util.tree_flatten_with_path(run.state)[0]
        theirs = jax.tree_util.tree_flatten_with_path(reference.state)[0]
        paths = [
            jax.tree_util.keystr(path)
            for (path, a), (_, b) in zip(ours, theirs, strict=False)
            if not ckpt_lib.tree_equal(a, b)
        ]
        found.append(f"checkpointed state differs at {paths[:5] or 'the structure'}")
    if run.rows != reference.rows:
        index = next(
            (
                i
                for i, (a, b) in enumerate(zip(run.rows, reference.rows, strict=False))
                if a != b
            ),
            min(len(run.rows), len(reference.rows)),
        )
        found.append(
            f"metrics.jsonl differs from row {index + 1} on ({len(run.rows)} rows,"
            f" reference {len(reference.rows)})"
        )
    return found


# ----------------------------------------------------------------- running


@dataclasses.dataclass
class Reference:
    """The uninterrupted run of a config, and what a killed run must match.

    Attributes:
      config_path: the config file that every launch trains.
      run_dir: the reference run's directory.
      seconds: wall time of an uninterrupted launch (the controls' mean, under
        the same load as the killed runs, with a warm compilation cache).
      train_seconds: how much of it is the training loop (from the logger's
        start to its last row), the window of the checkpoint writes.
      target: a freshly initialised state to restore checkpoints into.
      outcome: the reference's final checkpoint and metrics.
      cache_dir: the JAX compilation cache of the launches, or None.
    """

    config_path: Path
    run_dir: Path
    seconds: float
    train_seconds: float
    target: Any
    outcome: Outcome
    cache_dir: Path | None


def _train_seconds(run_dir: Path) -> float:
    """The ``elapsed`` of the last metrics row: the training loop's duration."""
    lines = (run_dir / METRICS_FILE).read_text().splitlines()
    return float(json.loads(lines[-1])["elapsed"]) if lines else 0.0


def load_reference(
    config_path: Path,
    run_dir: Path,
    finished: Launch,
    *,
    cache_dir: Path | None = None,
) -> Reference:
    """The reference made of a launch that ran `config_path` into `run_dir`.

    Args:
      config_path: the config file.
      run_dir: the run's directory.
      finished: the (uninterrupted) launch; its wall time is the launch time.
      cache_dir: the JAX compilation cache for later launches, or None.

    Returns:
      The reference.

    Raises:
      RuntimeError: if the launch failed.
    """
    if finished.returncode != 0:
        raise RuntimeError(f"reference run failed:\n{log_tail(run_dir)}")
    target = target_state(config_path)
    return Reference(
        config_path,
        run_dir,
        finished.seconds,
        _train_seconds(run_dir),
        target,
        outcome(run_dir, target),
        cache_dir,
    )


def make_reference(
    config_path: Path,
    workdir: Path,
    *,
    cache_dir: Path | None = None,
    controls: int = 1,
) -> Reference:
    """Runs `config_path` uninterrupted into ``workdir/reference``.

    Then `controls` more uninterrupted runs at once (``workdir/control-<i>``,
    see `run_controls`): each must equal the reference (else resumes cannot be
    compared), and their mean wall time is the launch time that the kill delays
    are drawn against (start as many as the killed runs will run in parallel,
    so that the load is the same).

    Args:
      config_path: the config file.
      workdir: where the reference (and control) run directories go.
      cache_dir: the JAX compilation cache for the launches, or None.
      controls: how many control runs (0: time the reference run itself).

    Returns:
      The reference.

    Raises:
      RuntimeError: if a run fails or an uninterrupted run differs from the
        reference.
    """
    run_dir = workdir / "reference"
    first = launch(config_path, run_dir, cache_dir=cache_dir)
    reference = load_reference(config_path, run_dir, first, cache_dir=cache_dir)
    if controls >= 1:
        run_controls(reference, [workdir / f"control-{i}" for i in range(controls)])
    return reference


def run_controls(reference: Reference, run_dirs: Sequence[Path]) -> None:
    """Runs the reference's config uninterrupted into each of `run_dirs`, all at
    once, then `check_controls`.

    Raises:
      RuntimeError: if a run fails or differs from the reference.
    """

    def run(run_dir: Path) -> Launch:
        return launch(reference.config_path, run_dir, cache_dir=reference.cache_dir)

    with concurrent.futures.ThreadPoolExecutor(len(run_dirs)) as pool:
        launches = list(pool.map(run, run_dirs))
    check_controls(reference, run_dirs, launches)


def check_controls(
    reference: Reference, run_dirs: Sequence[Path], launches: Sequence[Launch]
) -> None:
    """Checks that uninterrupted runs of the reference's config (the `launches`
    into `run_dirs`) equal the reference, and times the reference's launches by
    their mean (`Reference.seconds`, `Reference.train_seconds`).

    Raises:
      RuntimeError: if a run failed or differs from the reference.
    """
    for run_dir, this in zip(run_dirs, launches, strict=True):
        if this.returncode != 0:
            raise RuntimeError(f"control run failed:\n{log_tail(run_dir)}")
        problems = differences(reference.outcome, outcome(run_dir, reference.target))
        if problems:
            raise RuntimeError(
                "two uninterrupted runs differ, so resumes cannot be compared: "
                + "; ".join(problems)
            )
    reference.seconds = sum(this.seconds for this in launches) / len(launches)
    reference.train_seconds = sum(map(_train_seconds, run_dirs)) / len(run_dirs)


def draw_delay(rng: random.Random, reference: Reference) -> float:
    """A kill delay: uniform in [0.5 s, 1.1 T] (T: the launch time), or, with
    probability 1/2, uniform over the training loop's part of it (the window of
    the checkpoint writes, after imports and compilation) up to 1.1 T."""
    high = max(1.1 * reference.seconds, MIN_DELAY_S + 0.1)
    low = MIN_DELAY_S
    if rng.random() < 0.5:
        low = max(MIN_DELAY_S, reference.seconds - reference.train_seconds)
    return rng.uniform(low, high)


@dataclasses.dataclass
class RunResult:
    """A run that was killed (maybe several times) and rerun to its end."""

    name: str
    launches: list[Launch]
    problems: list[str]

    @property
    def exact(self) -> bool:
        """Whether it finished and equals the reference exactly."""
        return not self.problems


def killed_run(
    reference: Reference,
    run_dir: Path,
    rng: random.Random,
    *,
    name: str = "",
    failpoint: int | None = None,
    again: float = 1 / 3,
    max_kills: int = MAX_KILLS_PER_RUN,
    max_restarts: int = 2,
) -> RunResult:
    """Runs the reference's config into `run_dir`, killing it on the way.

    With `failpoint`, the first launch dies in its checkpoint write of that step;
    otherwise it is SIGKILLed after a random delay; if it finishes first, the
    finished run is compared with the reference and the run starts over in an
    emptied `run_dir` (at most `max_restarts` times). After each kill that landed,
    another launch is killed with probability `again` (at most `max_kills` in
    all); launches continue until one exits 0. The run is then compared with the
    reference.

    Args:
      reference: the uninterrupted run.
      run_dir: a fresh output directory.
      rng: draws the delays and repeats.
      name: names the run in the result.
      failpoint: kill the first launch while it saves this step.
      again: the probability of one more kill after a kill that landed.
      max_kills: the most kills in one run.
      max_restarts: how often a run whose first kill came too late starts over.

    Returns:
      The launches and the differences from the reference (if any).
    """
    launches: list[Launch] = []
    problems: list[str] = []
    kill = True
    while True:
        delay = None
        if kill and failpoint is None:
            delay = draw_delay(rng, reference)
        this = launch(
            reference.config_path,
            run_dir,
            delay=delay,
            failpoint=failpoint if not launches else None,
            cache_dir=reference.cache_dir,
        )
        launches.append(this)
        if this.returncode == 0:
            if this.failpoint is not None:
                problems.append(f"the failpoint at step {this.failpoint} never fired")
            too_late = this.delay is not None and not any(e.killed for e in launches)
            if too_late and len(launches) <= max_restarts:
                # The first kill came too late: an uninterrupted run (which must
                # equal the reference too). Start over, to kill it.
                problems += _compare(reference, run_dir)
                this.restarted = True
                shutil.rmtree(run_dir)
                continue
            break
        if not (this.killed and this.kill_attempted):  # crashed, or hung
            problems.append(
                f"launch {len(launches)} exited {this.returncode}:\n"
                + log_tail(run_dir)
            )
            return RunResult(name, launches, problems)
        if this.failpoint is not None and not this.in_save:
            problems.append("the failpoint kill left no partial checkpoint write")
        failpoint = None
        kills = sum(launch.killed for launch in launches)
        kill = kills < max_kills and rng.random() < again
    problems += _compare(reference, run_dir)
    return RunResult(name, launches, problems)


def _compare(reference: Reference, run_dir: Path) -> list[str]:
    """`differences` of a finished run, or why it cannot be read."""
    try:
        return differences(reference.outcome, outcome(run_dir, reference.target))
    except Exception as err:  # a run that cannot be restored is a failure too
        return [f"cannot read the finished run: {type(err).__name__}: {err}"]


@dataclasses.dataclass
class ConfigReport:
    """All runs of one config."""

    name: str
    reference_seconds: float
    checkpoint_steps: list[int]
    runs: list[RunResult]

    def _count(self, runs: Sequence[RunResult]) -> tuple[int, ...]:
        launches = [launch for run in runs for launch in run.launches]
        return (
            sum(launch.kill_attempted for launch in launches),
            sum(launch.killed for launch in launches),
            sum(launch.in_save for launch in launches),
            sum(any(launch.killed for launch in run.launches) for run in runs),
            sum(run.exact for run in runs),
        )

    @property
    def all_exact(self) -> bool:
        """Whether every run resumed exactly."""
        return all(run.exact for run in self.runs)

    def table(self, *, details: bool = False) -> str:
        """The runs as a markdown table: a row for the runs with random kills,
        one for the failpoint runs, and with `details` one per run."""
        header = [
            "| runs | kills attempted | landed before completion"
            " | landed during a checkpoint write | runs killed at least once"
            " | exact resumes / runs |",
            "|---|---|---|---|---|---|",
        ]
        lines = [
            f"### {self.name}: uninterrupted launch {self.reference_seconds:.1f} s,"
            f" checkpoints kept at the end: {self.checkpoint_steps}",
            "",
            *header,
        ]
        random_runs = [r for r in self.runs if r.launches[0].failpoint is None]
        failpoint_runs = [r for r in self.runs if r.launches[0].failpoint is not None]
        groups = [
            (f"{len(random_runs)} with random kills", random_runs),
            (f"{len(failpoint_runs)} killed by the save failpoint", failpoint_runs),
            (f"**all {len(self.runs)}**", self.runs),
        ]
        for label, runs in groups:
            if not runs:
                continue
            attempted, landed, in_save, killed, exact = self._count(runs)
            lines.append(
                f"| {label} | {attempted} | {landed} | {in_save}"
                f" | {killed}/{len(runs)} | {exact}/{len(runs)} |"
            )
        if details:
            lines += [
                "",
                "| run | kills (delay s: outcome) | launches | exact |",
                "|---|---|---|---|",
            ]
            for run in self.runs:
                kills = ", ".join(_describe(launch) for launch in run.launches)
                verdict = "yes" if run.exact else "**no**: " + "; ".join(run.problems)
                lines.append(
                    f"| {run.name} | {kills} | {len(run.launches)}"
                    f" | {verdict.replace(chr(10), ' ')} |"
                )
        return "\n".join(lines)


def _describe(launch: Launch) -> str:
    if launch.failpoint is not None:
        when = f"failpoint@{launch.failpoint}"
    elif launch.delay is not None:
        when = f"{launch.delay:.2f}"
    else:
        return "finish"
    if launch.in_save:
        return f"{when}: in save"
    if launch.restarted:
        return f"{when}: too late, restarted"
    return f"{when}: " + ("landed" if launch.killed else "too late")


def run_config(
    name: str,
    config: Mapping[str, Any],
    workdir: str | os.PathLike[str],
    *,
    kills: int,
    seed: int = 0,
    failpoints: Sequence[int] | None = None,
    reference: Reference | None = None,
    jobs: int = 1,
    compile_cache: bool = True,
    progress: Callable[[str], None] | None = None,
) -> ConfigReport:
    """Kills `kills` runs of `config` at random moments (and the failpoint runs)
    and compares each resumed run with an uninterrupted one.

    Args:
      name: the config's name in the report (and its subfolder of `workdir`).
      config: the experiment config (plain data).
      workdir: a directory for the config file, the runs and the compile cache.
      kills: how many runs with random kills.
      seed: seeds the kill delays (with `name` and the run's number, so a run's
        draws do not depend on the others).
      failpoints: steps at which one run each is killed during its checkpoint
        write; None: the reference's last two committed checkpoint steps.
      reference: an uninterrupted run of the same config to compare with; None
        runs one (and `jobs` control runs) in `workdir`.
      jobs: how many runs go on at once.
      compile_cache: share a JAX compilation cache between the launches.
      progress: called with a line per finished run (e.g. `print`).

    Returns:
      The report.
    """
    base = Path(workdir) / name
    base.mkdir(parents=True, exist_ok=True)
    if reference is None:
        config_path = base / "config.json"
        config_path.write_text(json.dumps(config, indent=1))
        cache = Path(workdir) / "jax-cache" if compile_cache else None
        reference = make_reference(config_path, base, cache_dir=cache, controls=jobs)
    steps = reference.outcome.steps
    if failpoints is None:
        failpoints = steps[-2:]
    plan = [(f"{k}", None) for k in range(1, kills + 1)]
    plan += [(f"failpoint@{step}", step) for step in failpoints]

    def one(run_name: str, failpoint: int | None) -> RunResult:
        run_dir = base / f"run-{run_name}"
        shutil.rmtree(run_dir, ignore_errors=True)
        rng = random.Random(f"{name}:{seed}:{run_name}")
        result = killed_run(reference, run_dir, rng, name=run_name, failpoint=failpoint)
        if progress is not None:
            kills_text = ", ".join(_describe(launch) for launch in result.launches)
            verdict = (
                "exact" if result.exact else "DIFFERS: " + "; ".join(result.problems)
            )
            progress(f"[{name}] run {run_name}: {kills_text} -> {verdict}")
        return result

    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        runs = list(pool.map(lambda item: one(*item), plan))
    return ConfigReport(name, reference.seconds, steps, runs)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit code (1 if a resume differs)."""
    parser = argparse.ArgumentParser(
        prog="python -m jaxlab.faults",
        description="SIGKILL `jaxlab train` at random moments, rerun it, and check "
        "that every resumed run equals an uninterrupted one.",
    )
    parser.add_argument(
        "--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS)
    )
    parser.add_argument(
        "--kills", type=int, default=20, help="runs with random kills per config"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill delays")
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="runs going on at once (default: 2, or 1 on one core)",
    )
    parser.add_argument(
        "--workdir", help="keep the runs here (default: a temporary directory)"
    )
    parser.add_argument(
        "--no-failpoint",
        action="store_true",
        help="skip the runs killed during a checkpoint write by the failpoint",
    )
    parser.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="compile in every launch instead of sharing a compilation cache",
    )
    parser.add_argument("--details", action="store_true", help="a row per run")
    parser.add_argument("--quiet", action="store_true", help="no progress line per run")
    args = parser.parse_args(argv)
    if args.kills < 0:
        parser.error("--kills must be >= 0")
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")

    workdir = Path(args.workdir) if args.workdir else None
    temporary = None
    if workdir is None:
        temporary = tempfile.TemporaryDirectory(prefix="jaxlab-faults-")
        workdir = Path(temporary.name)
    progress = None if args.quiet else (lambda line: print(line, flush=True))
    start = time.monotonic()
    reports = []
    try:
        for name in args.configs:
            reports.append(
                run_config(
                    name,
                    CONFIGS[name](),
                    workdir,
                    kills=args.kills,
                    seed=args.seed,
                    failpoints=() if args.no_failpoint else None,
                    jobs=args.jobs,
                    compile_cache=not args.no_compile_cache,
                    progress=progress,
                )
            )
    finally:
        if temporary is not None:
            temporary.cleanup()
    for report in reports:
        print()
        print(report.table(details=args.details))
    ok = all(report.all_exact for report in reports)
    print()
    print(
        f"{'all runs resumed exactly' if ok else 'SOME RUNS DIFFER'}"
        f" ({time.monotonic() - start:.0f} s)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
