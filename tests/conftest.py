"""Shared fixtures: small, fast experiment configs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# Tests compile from scratch: no persistent compilation cache shared between
# runs (test_cli checks the cache itself), so compile counts stay meaningful.
os.environ.setdefault("JAXLAB_COMPILATION_CACHE", "0")


def small_config(**overrides) -> dict:
    """An MLP on the digits: compiles and trains in a few seconds."""
    config = {
        "name": "small",
        "seed": 0,
        "data": {"dataset": "digits", "batch_size": 32, "test_split": 0.2},
        "model": {
            "network": [
                ["Flatten", {}],
                ["Linear", {"output_size": 32, "activation": "relu"}],
                ["Linear", {"output_size": 10}],
            ],
            "loss": "softmax_cross_entropy",
            "metrics": ["accuracy", "precision", "recall", "auc"],
        },
        "optimizer": {"name": "adam", "learning_rate": 0.01},
        "train": {
            "steps": 40,
            "eval_every": 20,
            "log_every": 5,
            "checkpoint_every": 10,
        },
    }
    for key, value in overrides.items():
        node = config
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return config


def exploding_config(**overrides) -> dict:
    """`small_config` with SGD whose learning rate jumps to 1e30 after step 12
    (piecewise schedule): the loss turns non-finite a step or three later."""
    schedule = {"name": "piecewise", "boundaries": [12], "scales": [1e30]}
    optimizer = {"name": "sgd", "learning_rate": 0.1, "schedule": schedule}
    return small_config(optimizer=optimizer, **overrides)


@pytest.fixture
def write_config(tmp_path):
    """Writes a config dict as YAML (or JSON) and returns its path."""

    def write(config: dict, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        if name.endswith(".json"):
            import json

            path.write_text(json.dumps(config))
        else:
            path.write_text(yaml.safe_dump(config))
        return path

    return write


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None):
    """Runs `python -m jaxlab ARGS` in a fresh process (its own JAX runtime)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "jaxlab", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or REPO,
        timeout=600,
    )


class CompileEvents:
    """(function name, thread name) of each XLA compilation, in order."""

    def __init__(self):
        self.events: list[tuple[str, str]] = []

    def __call__(self, event, duration, **kwargs):
        del duration
        if event == "/jax/core/compile/backend_compile_duration":
            name = kwargs.get("fun_name", "")
            self.events.append((name, threading.current_thread().name))

    def of(self, name: str) -> list[str]:
        """Threads that compiled ``jax.jit(<function called name>)``."""
        return [thread for fun, thread in self.events if fun == f"jit({name})"]


@pytest.fixture
def compiles():
    """Records the XLA compilations made during the test (`CompileEvents`)."""
    import jax

    recorder = CompileEvents()
    jax.monitoring.register_event_duration_secs_listener(recorder)
    yield recorder
    jax.monitoring.unregister_event_duration_listener(recorder)
