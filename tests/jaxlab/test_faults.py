"""Kill anywhere, lose nothing: SIGKILLed `jaxlab train` runs resume exactly.

Each run is a real `python -m jaxlab train` process (`jaxlab.faults.launch`). One
uninterrupted reference run per config is shared by the module's tests. The
deterministic kills come from the checkpoint-write failpoint
(``JAXLAB_FAULT_KILL_DURING_SAVE``: the process dies after orbax wrote the
checkpoint's files into its temporary directory, before the commit) and the
step hook (``JAXLAB_FAULT_KILL_AT_STEP``); `python -m jaxlab.faults` adds random
kills (one small run of it here; the full one is a script).
"""

from __future__ import annotations

import concurrent.futures
import json
import signal

import jax
import numpy as np
import pytest

from jaxlab import checkpoint, experiment, faults
from jaxlab import config as config_lib


def _smaller(name: str, **train) -> dict:
    """A built-in config of `jaxlab.faults`, shortened for CI."""
    config = faults.CONFIGS[name]()
    config["train"].update(train)
    return config


# The configs (fewer checkpoints than the script's), and a failpoint step of
# each: a save in the middle of the run.
CI_CONFIGS = {
    "supervised": (_smaller("supervised", steps=60, eval_every=30), 30),
    "dqn": (_smaller("dqn", env_steps=480, eval_every=240), 240),
    "ppo": (_smaller("ppo", env_steps=640, eval_every=320), 384),
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def references(workdir) -> dict[str, faults.Reference]:
    """The uninterrupted run of each CI config, launched all at once (the cold
    compilations overlap)."""
    cache = workdir / "jax-cache"
    paths = {}
    for name, (config, _) in CI_CONFIGS.items():
        (workdir / name).mkdir()
        paths[name] = workdir / name / "config.json"
        paths[name].write_text(json.dumps(config))

    def run(name: str) -> faults.Launch:
        return faults.launch(paths[name], workdir / name / "reference", cache_dir=cache)

    with concurrent.futures.ThreadPoolExecutor(len(paths)) as pool:
        launches = dict(zip(paths, pool.map(run, paths), strict=True))
        # A warm uninterrupted run of the supervised config, while the targets
        # are built here: it times the random kills (and checks that two
        # uninterrupted runs are identical in the first place).
        control_dir = workdir / "supervised" / "control"
        control = pool.submit(
            faults.launch, paths["supervised"], control_dir, cache_dir=cache
        )
        references = {
            name: faults.load_reference(
                paths[name],
                workdir / name / "reference",
                launches[name],
                cache_dir=cache,
            )
            for name in paths
        }
        faults.check_controls(
            references["supervised"], [control_dir], [control.result()]
        )
    return references


def _previous_checkpoint(reference: faults.Reference, step: int) -> int:
    config = config_lib.load_config(reference.config_path)
    every = config.train.checkpoint_every
    return step - every


@pytest.mark.parametrize("name", ["supervised", "dqn", "ppo"])
def test_kill_during_a_checkpoint_write_then_rerun_is_exact(references, name):
    reference = references[name]
    step = CI_CONFIGS[name][1]
    run_dir = reference.run_dir.parent / "killed-in-save"
    checkpoints = run_dir / "checkpoints"

    first = faults.launch(
        reference.config_path, run_dir, failpoint=step, cache_dir=reference.cache_dir
    )
    assert first.returncode == -signal.SIGKILL, faults.log_tail(run_dir)
    assert first.in_save
    # All of the checkpoint's files are written, but it is not committed...
    tmp = checkpoints / f"{step}.orbax-checkpoint-tmp"
    assert (tmp / "state").is_dir() and (tmp / "meta").is_dir()
    assert not (tmp / "commit_success.txt").exists()
    assert not (checkpoints / str(step)).exists()
    # ... so the previous checkpoint is the newest.
    previous = _previous_checkpoint(reference, step)
    with checkpoint.Checkpointer(checkpoints) as ckpt:
        assert ckpt.latest_step() == previous
        if name == "dqn":  # the replay buffer at the kill point is not trivial
            state, _ = ckpt.restore(reference.target)
            assert int(state.replay.size) == 160, int(state.replay.size)

    second = faults.launch(
        reference.config_path, run_dir, cache_dir=reference.cache_dir
    )
    assert second.returncode == 0, faults.log_tail(run_dir)
    assert not tmp.exists()  # the next save swept the partial write
    assert (
        faults.differences(reference.outcome, faults.outcome(run_dir, reference.target))
        == []
    )


def test_kill_after_the_last_step_reruns_the_final_evaluation(references):
    """The final checkpoint comes after the final evaluation rows: a run killed
    right after its last train step redoes both (it once found the checkpoint,
    reported the run as finished and left the final test row out)."""
    reference = references["supervised"]
    run_dir = reference.run_dir.parent / "killed-at-end"
    last = reference.outcome.step
    first = faults.launch(
        reference.config_path,
        run_dir,
        cache_dir=reference.cache_dir,
        env={experiment.KILL_AT_STEP_ENV: str(last)},
    )
    assert first.killed, faults.log_tail(run_dir)
    with checkpoint.Checkpointer(run_dir / "checkpoints") as ckpt:
        assert ckpt.latest_step() == _previous_checkpoint(reference, last)

    second = faults.launch(
        reference.config_path, run_dir, cache_dir=reference.cache_dir
    )
    assert second.returncode == 0, faults.log_tail(run_dir)
    assert (
        faults.differences(reference.outcome, faults.outcome(run_dir, reference.target))
        == []
    )
    assert reference.outcome.rows[-1]["step"] == last
    assert "test/accuracy" in reference.outcome.rows[-1]


def test_random_kills_resume_exactly(references, workdir):
    """A small run of the harness: two runs SIGKILLed at random moments."""
    reference = references["supervised"]  # timed by a warm launch
    lines: list[str] = []
    report = faults.run_config(
        "supervised",
        CI_CONFIGS["supervised"][0],
        workdir,
        kills=2,
        seed=0,
        failpoints=(),
        reference=reference,
        jobs=2,
        progress=lines.append,
    )
    assert len(report.runs) == 2 and len(lines) == 2
    assert report.all_exact, "\n".join(lines)
    for run in report.runs:
        assert run.launches[0].kill_attempted
        assert run.launches[-1].returncode == 0
    # (A run whose first kill comes too late starts over, up to twice.)
    assert any(launch.killed for run in report.runs for launch in run.launches)
    table = report.table(details=True)
    assert "| 2 with random kills |" in table and "| 2/2 |" in table


def test_differences_name_what_differs(references):
    reference = references["supervised"]
    out = reference.outcome
    changed = faults.Outcome(
        step=out.step,
        state=jax.tree.map(lambda x: x, out.state),
        meta=dict(out.meta),
        rows=[dict(row) for row in out.rows],
        steps=out.steps,
    )
    assert faults.differences(out, changed) == []
    changed.rows[3]["train/loss"] = 0.0
    params = changed.state.params
    changed.state = changed.state._replace(
        params=jax.tree.map(lambda x: np.asarray(x) + 1, params)
    )
    found = faults.differences(out, changed)
    assert any("state differs at" in f and "params" in f for f in found), found
    assert any("from row 4" in f for f in found), found
