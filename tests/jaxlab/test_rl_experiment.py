"""`kind: rl` runs through the shell: train, resume after SIGKILL, eval, errors."""

from __future__ import annotations

import json
import signal

import jax
import numpy as np
import pytest
from conftest import run_cli

from jaxlab import checkpoint, cli, experiment, rl_experiment
from jaxlab import config as config_lib


def ppo_config(**train) -> dict:
    return {
        "name": "tiny-ppo",
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
            "env_steps": 640,
            "eval_every": 320,
            "eval_episodes": 2,
            "log_every": 64,
            "checkpoint_every": 128,
            **train,
        },
    }


def dqn_config(**train) -> dict:
    return {
        "name": "tiny-dqn",
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
                "steps": 200,
            },
            "replay": {"capacity": 300, "batch_size": 8, "min_size": 32},
            "train_freq": 2,
            "gradient_steps": 1,
        },
        "optimizer": {"name": "adam", "learning_rate": 1e-3},
        "train": {
            "env_steps": 480,
            "eval_every": 240,
            "eval_episodes": 2,
            "log_every": 40,
            "checkpoint_every": 80,
            **train,
        },
    }


def _rows(run_dir):
    rows = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows.append({k: v for k, v in row.items() if k not in ("time", "elapsed")})
    return rows


def _final_state(run_dir):
    config = config_lib.load_config(run_dir / "config.yaml")
    run = rl_experiment._Run(config)
    init_key, _ = rl_experiment._keys(config.seed)
    with checkpoint.Checkpointer(run_dir / "checkpoints") as ckpt:
        return ckpt.restore(run.trainer.init(init_key))


@pytest.mark.parametrize(
    ("make", "kill_at", "last_checkpoint"),
    [(ppo_config, 300, 256), (dqn_config, 200, 160)],
    ids=["ppo", "dqn"],
)
def test_sigkill_then_resume_is_bit_exact(
    write_config, tmp_path, make, kill_at, last_checkpoint
):
    """Agent, optimizer, env states, replay buffer and rng all resume exactly."""
    path = write_config(make())
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    result = run_cli("train", str(path), "--output-dir", str(clean), "--quiet")
    assert result.returncode == 0, result.stderr
    result = run_cli(
        "train",
        str(path),
        "--output-dir",
        str(killed),
        "--quiet",
        env={rl_experiment.KILL_AT_STEP_ENV: str(kill_at)},
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    with checkpoint.Checkpointer(killed / "checkpoints") as ckpt:
        assert ckpt.latest_step() == last_checkpoint
    result = run_cli("train", str(path), "--output-dir", str(killed), "--quiet")
    assert result.returncode == 0, result.stderr

    (a, meta_a), (b, meta_b) = _final_state(clean), _final_state(killed)
    assert meta_a == meta_b
    assert checkpoint.tree_equal(a, b)
    assert _rows(clean) == _rows(killed)


def test_eval_reproduces_the_final_evaluation(write_config, tmp_path, capsys):
    path, run = write_config(ppo_config()), tmp_path / "run"
    results = experiment.train(config_lib.load_config(path), run, quiet=True)
    capsys.readouterr()  # the training summary line
    assert cli.main(["eval", str(run), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["mean_return"] == pytest.approx(results["mean_return"])
    assert evaluated["step"] == 640
    logged = [r for r in _rows(run) if "eval/mean_return" in r]
    assert [r["step"] for r in logged] == [320, 640]
    train_rows = [r for r in _rows(run) if "train/loss" in r]
    assert [r["step"] for r in train_rows] == list(range(64, 641, 64))
    assert all(np.isfinite(r["train/loss"]) for r in train_rows)


def test_gymnasium_backend_runs_the_same_agent(write_config, tmp_path):
    raw = ppo_config(env_steps=128, eval_every=128, checkpoint_every=128)
    raw["env"]["backend"] = "gymnasium"
    run = tmp_path / "run"
    results = experiment.train(config_lib.validate_config(raw), run, quiet=True)
    assert np.isfinite(results["mean_return"]) and results["mean_return"] >= 8
    with checkpoint.Checkpointer(run / "checkpoints") as ckpt:
        assert ckpt.latest_step() == 128


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c["env"].update(id="Nope-v0"),
            r"env\.id: 'Nope-v0' is not a JAX-native",
        ),
        (lambda c: c["agent"].update(clip_eps=0), r"agent\.clip_eps: "),
        (lambda c: c["agent"].update(name="sac"), r"agent\.name: expected one of"),
        (lambda c: c["agent"].update(gama=0.9), r"agent\.gama: unknown field"),
        (lambda c: c["train"].update(env_steps=0), r"train\.env_steps: "),
    ],
)
def test_bad_rl_configs_name_the_field(tmp_path, change, message):
    raw = ppo_config()
    change(raw)
    with pytest.raises(Exception, match=message) as info:
        experiment.train(config_lib.validate_config(raw), tmp_path / "r", quiet=True)
    assert isinstance(info.value, config_lib.ConfigError)
    assert not (tmp_path / "r").exists()


def test_summarize_weights_episode_returns_by_episode_count():
    metrics = {
        "loss": np.array([1.0, 3.0]),
        "episodes": np.array([1.0, 3.0]),
        "episode_return": np.array([10.0, 20.0]),
        "env_steps": np.array([32.0, 64.0]),
    }
    row = rl_experiment.summarize(jax.tree.map(np.asarray, metrics))
    assert row == {
        "loss": 2.0,
        "episodes": 4.0,
        "episode_return": 17.5,
        "env_steps": 64.0,
    }
    none_finished = dict(metrics, episodes=np.zeros(2))
    assert "episode_return" not in rl_experiment.summarize(none_finished)


@pytest.mark.parametrize(
    ("make", "env_steps", "run_name", "eval_name"),
    [
        (ppo_config, 672, "run_local", "evaluate_fn"),
        (dqn_config, 488, "run_local", "evaluate_fn"),
    ],
    ids=["ppo", "dqn"],
)
def test_programs_compile_ahead_once_each(
    tmp_path, compiles, make, env_steps, run_name, eval_name
):
    """The chunk and the evaluation compile while `init` runs, the shorter
    last chunk while the run trains, each once, on background threads; the
    run logs every chunk (PPO: 21 updates in chunks of 2 and a last of 1;
    DQN: 61 iterations in chunks of 5 and a last of 1)."""
    config = config_lib.validate_config(make(env_steps=env_steps))
    run = tmp_path / "run"
    results = experiment.train(config, run, quiet=True)
    assert np.isfinite(results["mean_return"])
    runs, evals = compiles.of(run_name), compiles.of(eval_name)
    assert len(runs) == 2 and len(evals) == 1, compiles.events
    assert all(t.startswith("jaxlab-compile") for t in runs + evals), compiles.events
    train_steps = [r["step"] for r in _rows(run) if "train/loss" in r]
    assert train_steps[-1] == env_steps and len(set(train_steps)) == len(train_steps)
    with checkpoint.Checkpointer(run / "checkpoints") as ckpt:
        assert ckpt.latest_step() == env_steps
    # A finished run only evaluates: its chunk program is not compiled again.
    again = experiment.train(config, run, quiet=True)
    assert again["mean_return"] == results["mean_return"]
    assert len(compiles.of(run_name)) == 2 and len(compiles.of(eval_name)) == 2


def test_the_shell_runs_the_trainer_s_own_programs():
    """PPO's jitted `run` and `evaluate` keep their compiler options (an outer
    `jax.jit` would drop them); DQN's plain functions get jitted."""
    ppo = rl_experiment._Run(config_lib.validate_config(ppo_config()))
    assert ppo.run is ppo.trainer.run and ppo._evaluate is ppo.trainer.evaluate
    assert ppo.can_compile_ahead
    dqn = rl_experiment._Run(config_lib.validate_config(dqn_config()))
    assert dqn.run is not dqn.trainer.run and hasattr(dqn.run, "lower")
    assert dqn.can_compile_ahead


@pytest.mark.parametrize(
    ("iterations", "done", "log", "last"),
    [
        (976, 0, 10, 6),
        (980, 0, 10, 10),
        (976, 970, 10, 6),
        (5, 0, 10, 5),
        (10, 10, 10, 0),
        (11, 0, 1, 1),
    ],
)
def test_last_chunk(iterations, done, log, last):
    assert rl_experiment.last_chunk(iterations, done, log) == last
