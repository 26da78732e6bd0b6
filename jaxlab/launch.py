"""`jaxlab launch`: start the processes of a multi-process (multi-host) run.

Locally (the default) it starts `--num-processes` copies of ``python -m jaxlab
<command>`` on this machine, each told the coordinator's address, the number of
processes and its own id through environment variables that
`jaxlab.parallel.initialize` reads, and (``--devices-per-process K``) K CPU
devices each (``JAX_NUM_CPU_DEVICES``; collectives over gloo). It waits for all
of them; if one fails it stops the others (they would wait forever on its
collectives) and exits with the failed one's status.

On several machines start one process per machine yourself, with
``--process-id``: ``jaxlab launch --num-processes 2 --coordinator host0:1234
--process-id 0 -- train CONFIG`` on host0, ``... --process-id 1 ...`` on host1.
On SLURM and Cloud TPU pod slices no launcher is needed: ``jaxlab train``
detects the cluster (see docs/scaling.md).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from jaxlab import parallel
from jaxlab.errors import ConfigError


def free_port() -> int:
    """A TCP port on localhost that nothing listens on (for the coordinator)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def process_env(
    *,
    coordinator: str,
    num_processes: int,
    process_id: int,
    devices_per_process: int | None,
    base: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of one process of the run."""
    env = dict(os.environ if base is None else base)
    env[parallel.COORDINATOR_ENV] = coordinator
    env[parallel.NUM_PROCESSES_ENV] = str(num_processes)
    env[parallel.PROCESS_ID_ENV] = str(process_id)
    if devices_per_process is not None:
        env["JAX_NUM_CPU_DEVICES"] = str(devices_per_process)
        # A forced host device count would override JAX_NUM_CPU_DEVICES.
        flags = [
            f
            for f in env.get("XLA_FLAGS", "").split()
            if "xla_force_host_platform_device_count" not in f
        ]
        env["XLA_FLAGS"] = " ".join(flags)
    return env


def _check(num_processes: int, process_id: int | None, devices: int | None) -> None:
    if num_processes < 1:
        raise ConfigError(f"--num-processes: expected >= 1, got {num_processes}")
    if process_id is not None and not 0 <= process_id < num_processes:
        raise ConfigError(
            f"--process-id: expected 0 <= id < {num_processes}, got {process_id}"
        )
    if devices is not None and devices < 1:
        raise ConfigError(f"--devices-per-process: expected >= 1, got {devices}")


def launch(
    command: Sequence[str],
    *,
    num_processes: int,
    coordinator: str | None = None,
    process_id: int | None = None,
    devices_per_process: int | None = None,
    poll_seconds: float = 0.2,
    python: Sequence[str] | None = None,
) -> int:
    """Runs ``python -m jaxlab <command>`` as the processes of one run.

    Args:
      command: the jaxlab command line to run, e.g. ``["train", "cfg.yaml"]``.
      num_processes: processes in the whole run (over all machines).
      coordinator: ``host:port`` of process 0 (default: a free localhost port;
        required with `process_id`).
      process_id: start only this process (one machine of a multi-machine run);
        None starts all of them here.
      devices_per_process: CPU devices each process gets (CPU runs only).
      python: the program to start instead of ``python -m jaxlab`` (tests).

    Returns:
      The exit status: 0, or that of the first process that failed.
    """
    _check(num_processes, process_id, devices_per_process)
    if not command:
        raise ConfigError("launch: give the command after --, e.g. -- train CONFIG")
    if process_id is not None and coordinator is None:
        raise ConfigError("--coordinator: needed with --process-id (host:port of 0)")
    coordinator = coordinator or f"localhost:{free_port()}"
    argv = [*(python or [sys.executable, "-m", "jaxlab"]), *command]
    ids = [process_id] if process_id is not None else list(range(num_processes))
    procs = [
        subprocess.Popen(
            argv,
            env=process_env(
                coordinator=coordinator,
                num_processes=num_processes,
                process_id=i,
                devices_per_process=devices_per_process,
            ),
        )
        for i in ids
    ]
    try:
        return _wait(procs, poll_seconds)
    except KeyboardInterrupt:
        _stop(procs)
        return 130


def _wait(procs: list[subprocess.Popen], poll_seconds: float) -> int:
    while True:
        codes = [p.poll() for p in procs]
        failed = [c for c in codes if c not in (None, 0)]
        if failed:
            _stop(procs)
            return failed[0]
        if all(c == 0 for c in codes):
            return 0
        time.sleep(poll_seconds)


def _stop(procs: list[subprocess.Popen], grace: float = 5.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
