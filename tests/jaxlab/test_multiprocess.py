"""Multi-process runs through `jaxlab launch` and `jax.distributed` (gloo on CPU).

Two processes with two CPU devices each must train to the same params as one
process with four devices, for both backends, and resume like a single process.
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO, small_config

from jaxlab import checkpoint, experiment, logger, parallel
from jaxlab import config as config_lib
from jaxlab import launch as launch_lib
from jaxlab.errors import ConfigError

TIMEOUT = 300

# One xdist worker runs this module (`--dist loadgroup`): its module fixtures
# launch several processes of several CPU devices each; built in two workers
# at once on a 2-core machine they starved each other past TIMEOUT.
pytestmark = pytest.mark.xdist_group("multiprocess")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAXLAB_")}
    env.pop("XLA_FLAGS", None)
    return {**env, "PYTHONPATH": str(REPO / "tests"), **extra}


def _jaxlab(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "jaxlab", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    return result


def _final_params(raw: dict, run_dir) -> dict:
    config = config_lib.validate_config(raw)
    exp = experiment.build(config)
    with checkpoint.Checkpointer(run_dir / "checkpoints") as ckpt:
        state, meta = ckpt.restore(experiment.initial_state(exp))
    return state.params, meta["step"]


def _assert_close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        rel = np.max(np.abs(x - y)) / max(np.max(np.abs(x)), 1e-12)
        assert rel <= 1e-5, rel


@pytest.fixture(scope="module")
def supervised_runs(tmp_path_factory):
    """One process x 4 devices, and 2 processes x 2 devices for each backend."""
    tmp = tmp_path_factory.mktemp("multiprocess")
    raw = small_config(
        **{"train.steps": 12, "data.batch_size": 64, "train.checkpoint_every": 5}
    )
    runs = {}
    for backend in ("pmap", "shard_map"):
        raw["parallel"] = {"backend": backend, "devices": "auto"}
        path = tmp / f"{backend}.yaml"
        path.write_text(config_lib.dump_yaml(raw))
        run = tmp / f"two_{backend}"
        _jaxlab(
            "launch",
            "--num-processes=2",
            "--devices-per-process=2",
            "--",
            "train",
            str(path),
            "--output-dir",
            str(run),
            "--quiet",
            env=_env(),
        )
        runs[backend] = run
        runs[f"{backend}_config"] = path
    single = tmp / "one"
    _jaxlab(
        "train",
        str(runs["pmap_config"]),
        "--output-dir",
        str(single),
        "--quiet",
        env=_env(JAX_NUM_CPU_DEVICES="4"),
    )
    runs["single"] = single
    return raw, runs


def test_two_processes_match_one_process(supervised_runs):
    raw, runs = supervised_runs
    one, step = _final_params(raw, runs["single"])
    assert step == 12
    for backend in ("pmap", "shard_map"):
        two, step = _final_params(raw, runs[backend])
        assert step == 12
        _assert_close(one, two)


def test_only_process_zero_writes(supervised_runs):
    _, runs = supervised_runs
    run = runs["shard_map"]
    names = {p.name for p in run.iterdir() if not p.name.startswith("events")}
    assert names == {".lock", "checkpoints", "config.yaml", "metrics.jsonl"}
    assert len([p for p in run.iterdir() if p.name.startswith("events")]) == 1
    steps = [row["step"] for row in logger.read_metrics(run) if "train/loss" in row]
    assert steps == [5, 10, 12]  # each row once: a single writer


def test_failed_process_stops_the_others(tmp_path):
    # Process 1 fails at once (no such config); process 0 would wait forever
    # for it in jax.distributed: launch stops it and reports the failure.
    script = (
        "import os, sys, time\n"
        "if os.environ['JAXLAB_PROCESS_ID'] == '1': sys.exit(3)\n"
        "time.sleep(60)\n"
    )
    code = launch_lib.launch(
        ["--version-that-does-not-exist"],
        num_processes=2,
        devices_per_process=1,
        python=[sys.executable, "-c", script],
    )
    assert code == 3


def test_process_env():
    env = launch_lib.process_env(
        coordinator="localhost:1234",
        num_processes=4,
        process_id=2,
        devices_per_process=3,
        base={"XLA_FLAGS": "--xla_force_host_platform_device_count=8 --foo"},
    )
    assert env[parallel.COORDINATOR_ENV] == "localhost:1234"
    assert env[parallel.NUM_PROCESSES_ENV] == "4"
    assert env[parallel.PROCESS_ID_ENV] == "2"
    assert env["JAX_NUM_CPU_DEVICES"] == "3"
    assert env["XLA_FLAGS"] == "--foo"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_processes": 0}, "--num-processes"),
        ({"num_processes": 2, "process_id": 2, "coordinator": "h:1"}, "--process-id"),
        ({"num_processes": 2, "process_id": 0}, "--coordinator"),
        ({"num_processes": 2, "devices_per_process": 0}, "--devices-per-process"),
    ],
)
def test_launch_errors_name_the_flag(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        launch_lib.launch(["train", "x.yaml"], **kwargs)


def test_launch_cli_errors_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "jaxlab", "launch", "--num-processes", "2", "--"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 2
    assert "launch: give the command after --" in result.stderr


def test_initialize_is_a_no_op_on_one_process(monkeypatch):
    for name in ("SLURM_JOB_ID", "JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(parallel.COORDINATOR_ENV, raising=False)
    monkeypatch.delenv(parallel.NUM_PROCESSES_ENV, raising=False)
    assert parallel.initialize() is False
    assert parallel.devices() == jax.local_devices()


def test_initialize_needs_all_three_settings(monkeypatch):
    monkeypatch.setenv(parallel.COORDINATOR_ENV, "localhost:1")
    monkeypatch.delenv(parallel.NUM_PROCESSES_ENV, raising=False)
    monkeypatch.delenv(parallel.PROCESS_ID_ENV, raising=False)
    with pytest.raises(ConfigError, match="JAXLAB_NUM_PROCESSES"):
        parallel.initialize()


def test_cluster_detection(monkeypatch):
    for name in (
        "SLURM_JOB_ID",
        "SLURM_NTASKS",
        "OMPI_COMM_WORLD_SIZE",
        "TPU_WORKER_HOSTNAMES",
        "CLOUD_TPU_TASK_ID",
        "JAX_COORDINATOR_ADDRESS",
    ):
        monkeypatch.delenv(name, raising=False)
    assert parallel._detected_cluster() is None
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert parallel._detected_cluster() is None  # one task: nothing to join
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert parallel._detected_cluster() == "slurm"


# ------------------------------------------------------------------ PPO


def _ppo_raw(backend: str = "pmap", env_steps: int = 768) -> dict:
    return {
        "name": "mp-ppo",
        "kind": "rl",
        "seed": 3,
        "env": {"id": "CartPole-v1", "backend": "jax", "num_envs": 8},
        "agent": {
            "name": "ppo",
            "num_steps": 16,
            "update_epochs": 2,
            "num_minibatches": 2,
            "hidden": [16, 16],
        },
        "optimizer": {"name": "adam", "learning_rate": 1e-3},
        "train": {
            "env_steps": env_steps,
            "eval_every": 384,
            "eval_episodes": 2,
            "log_every": 128,
            "checkpoint_every": 384,
        },
        "parallel": {"backend": backend, "devices": "auto"},
    }


def _rl_final(raw: dict, run_dir) -> tuple[dict, int]:
    from jaxlab import rl_experiment

    config = config_lib.validate_config(raw)
    run = rl_experiment._Run(config, single_device=True)
    with checkpoint.Checkpointer(run_dir / "checkpoints") as ckpt:
        state, meta = ckpt.restore(run.trainer.init(jax.random.key(0)))
    return state.agent.params, meta["step"]


@pytest.fixture(scope="module")
def ppo_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mp_ppo")
    runs = {}
    for backend in ("pmap", "shard_map"):
        path = tmp / f"ppo_{backend}.yaml"
        path.write_text(config_lib.dump_yaml(_ppo_raw(backend)))
        runs[f"{backend}_config"] = path
        runs[f"two_{backend}"] = tmp / f"two_{backend}"
        _jaxlab(
            "launch",
            "--num-processes=2",
            "--devices-per-process=2",
            "--",
            "train",
            str(path),
            "--output-dir",
            str(runs[f"two_{backend}"]),
            "--quiet",
            env=_env(),
        )
    for name, devices in (("one_device", "1"), ("four_devices", "4")):
        runs[name] = tmp / name
        _jaxlab(
            "train",
            str(runs["shard_map_config"]),
            "--output-dir",
            str(runs[name]),
            "--quiet",
            env=_env(JAX_NUM_CPU_DEVICES=devices),
        )
    return runs


def test_ppo_same_params_at_every_scale(ppo_runs):
    raw = _ppo_raw()
    one, step = _rl_final(raw, ppo_runs["one_device"])
    assert step == 768
    for name in ("four_devices", "two_pmap", "two_shard_map"):
        other, step = _rl_final(raw, ppo_runs[name])
        assert step == 768
        _assert_close(one, other)


def test_ppo_logs_data_parallel_once(ppo_runs):
    rows = logger.read_metrics(ppo_runs["two_shard_map"])
    steps = [row["step"] for row in rows if "train/loss" in row]
    assert steps == sorted(set(steps)) and steps[-1] == 768
    single = logger.read_metrics(ppo_runs["one_device"])
    for a, b in zip(rows, single, strict=True):
        for key in ("train/loss", "train/episode_return", "eval/mean_return"):
            if key in a:
                np.testing.assert_allclose(a[key], b[key], rtol=1e-4)


def test_ppo_killed_on_two_processes_resumes_on_one_device(ppo_runs, tmp_path):
    # Both processes are SIGKILLed right after the checkpoint at env step 384;
    # the run then finishes on one process with one device.
    run = tmp_path / "moved"
    killed = subprocess.run(
        [sys.executable, "-m", "jaxlab", "launch", "--num-processes=2"]
        + ["--devices-per-process=2", "--", "train", str(ppo_runs["pmap_config"])]
        + ["--output-dir", str(run), "--quiet"],
        capture_output=True,
        text=True,
        env=_env(JAXLAB_FAULT_KILL_AT_STEP="384"),
        cwd=REPO,
        timeout=TIMEOUT,
    )
    assert killed.returncode != 0
    latest = checkpoint.Checkpointer(run / "checkpoints").latest_step()
    assert latest == 384, killed.stderr[-3000:]
    _jaxlab(
        "train",
        str(ppo_runs["pmap_config"]),
        "--output-dir",
        str(run),
        "--quiet",
        env=_env(JAX_NUM_CPU_DEVICES="1"),
    )
    raw = _ppo_raw()
    resumed, step = _rl_final(raw, run)
    assert step == 768
    _assert_close(_rl_final(raw, ppo_runs["one_device"])[0], resumed)
