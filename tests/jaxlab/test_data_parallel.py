"""8 devices and 1 device give the same params for the same global batch.

Run in a subprocess: the device count is fixed when JAX starts
(XLA_FLAGS=--xla_force_host_platform_device_count=8).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import REPO

SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np
    from conftest import small_config
    from jaxlab import config as config_lib, experiment
    assert jax.local_device_count() == 8, jax.devices()

    def final_params(devices, backend, tmp):
        raw = small_config(**{"train.steps": 15, "data.batch_size": 64,
                              "parallel.devices": devices, "parallel.backend": backend})
        config = config_lib.validate_config(raw)
        experiment.train(config, tmp, quiet=True)
        from jaxlab import checkpoint
        exp = experiment.build(config)
        with checkpoint.Checkpointer(tmp + "/checkpoints") as ckpt:
            state, _ = ckpt.restore(experiment.initial_state(exp))
        return state.params

    import tempfile
    one = final_params(1, "pmap", tempfile.mkdtemp())
    for backend in ("pmap", "shard_map"):
        eight = final_params(8, backend, tempfile.mkdtemp())
        for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(eight), strict=True):
            a, b = np.asarray(a), np.asarray(b)
            rel = np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-12)
            assert rel <= 1e-5, (backend, rel)
        print(backend, "ok")
    """
)


def test_eight_devices_match_one_device():
    env = {
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "PYTHONPATH": str(REPO / "tests"),
    }
    import os

    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pmap ok" in result.stdout and "shard_map ok" in result.stdout
