"""Shared machinery of the benchmarks: isolated, alternating runs and reporting.

Every measured run is a fresh child process (``python -m benchmarks.common
module:function '{"kwargs": ...}'``) that prints one ``BENCH_RESULT {json}``
line. The parent alternates contestants (A B C A B C ...), so slow drift of a
shared machine's load hits all of them alike, and ratios of medians taken in
one invocation stay meaningful where absolute times do not. A child process
per run also gives each contestant a cold start (imports and compilation are
its own), its own thread pool (PyTorch and XLA never share a process), and its
own interpreter: a peer with conflicting dependencies (rejax) runs in its own
virtualenv, made by `ensure_venv`.

Nothing here imports jaxlab, so worker modules can run in a peer's virtualenv.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
VENVS = REPO / "benchmarks" / ".venvs"
RESULT_MARK = "BENCH_RESULT "
# Wall-clock time (time.time()) at which the parent spawned this process.
T0_ENV = "BENCH_T0"
_MODULE_T0 = time.time()


def since_start() -> float:
    """Seconds since the parent spawned this process (interpreter start included)."""
    return time.time() - float(os.environ.get(T0_ENV, _MODULE_T0))


class CompileClock:
    """Wall time JAX spent compiling (tracing, lowering, XLA compile).

    Registers `jax.monitoring` listeners, so it also sees compilations hidden
    inside a host loop (the first call of each jitted function), and counts
    persistent-cache hits. Events nest (tracing a jitted function traces the
    jitted functions it calls), so `seconds` is the length of the union of the
    events' time intervals, not their sum.
    """

    _DURATIONS = (
        "/jax/core/compile/jaxpr_trace_duration",
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "/jax/core/compile/backend_compile_duration",
    )

    def __init__(self) -> None:
        import jax

        self._intervals: list[tuple[float, float]] = []
        self.cache_hits = 0
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        jax.monitoring.register_event_listener(self._on_event)

    def _on_duration(self, name: str, duration: float, **_: Any) -> None:
        if name in self._DURATIONS:
            end = time.perf_counter()  # listeners run as the event ends
            self._intervals.append((end - duration, end))

    @property
    def seconds(self) -> float:
        total, reach = 0.0, float("-inf")
        for start, end in sorted(self._intervals):
            if end > reach:
                total += end - max(start, reach)
                reach = end
        return total

    def _on_event(self, name: str, **_: Any) -> None:
        if name == "/jax/compilation_cache/cache_hits":
            self.cache_hits += 1


def enable_compilation_cache(path: str | os.PathLike) -> None:
    """Turns on JAX's persistent compilation cache in `path` for every program."""
    import jax

    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# ------------------------------------------------------------------ child runs


class Job(NamedTuple):
    """One contestant: `target` (``"module:function"``) called with `kwargs`.

    Attributes:
      name: the label in tables.
      target: the function a child process calls; it returns a JSON-able dict.
      kwargs: its keyword arguments (a ``seed`` is added per run).
      python: the interpreter (default: this one); a peer's virtualenv.
      env: extra environment variables of the child.
    """

    name: str
    target: str
    kwargs: Mapping[str, Any] = {}
    python: str | None = None
    env: Mapping[str, str] | None = None


class BenchError(RuntimeError):
    """A child run failed; the message holds the end of its output."""


def run_job(job: Job, *, timeout: float | None = None, **extra: Any) -> dict[str, Any]:
    """Runs `job` in a fresh child process; returns its result dict.

    The result gains ``process_s`` (spawn to exit), ``load`` (the 1-minute load
    average when it started) and ``name``.
    """
    kwargs = {**job.kwargs, **extra}
    env = {**os.environ, **(job.env or {})}
    env.setdefault("PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env["PYTHONPATH"]) if p)
    load = os.getloadavg()[0]
    start = time.time()
    env[T0_ENV] = repr(start)
    cmd = [
        job.python or sys.executable,
        "-m",
        "benchmarks.common",
        job.target,
        json.dumps(kwargs),
    ]
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    process_s = time.time() - start
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise BenchError(
            f"{job.name} ({job.target}) failed ({proc.returncode}):\n{tail}"
        )
    result = json.loads(lines[-1][len(RESULT_MARK) :])
    result.update(name=job.name, process_s=process_s, load=load)
    return result


def alternate(
    jobs: Sequence[Job],
    repeats: int,
    *,
    seed0: int = 0,
    timeout: float | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Runs every job `repeats` times, alternating (A B C A B C ...).

    Run ``r`` of every job gets ``seed = seed0 + r``, so contestants see the same
    seeds. A job that fails is reported and dropped from later rounds.

    Returns:
      ``{job.name: [result of each run]}``.
    """
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    results: dict[str, list[dict[str, Any]]] = {job.name: [] for job in jobs}
    failed: set[str] = set()
    for r in range(repeats):
        for job in jobs:
            if job.name in failed:
                continue
            try:
                result = run_job(job, timeout=timeout, seed=seed0 + r)
            except (BenchError, subprocess.TimeoutExpired) as e:
                log(f"  ! {job.name}: {e}")
                failed.add(job.name)
                continue
            results[job.name].append(result)
            brief = ", ".join(
                f"{k} {_short(v)}"
                for k, v in result.items()
                if k in ("steps_per_s", "compile_s", "returns", "solved_s", "load")
            )
            log(f"  run {r + 1}/{repeats} {job.name}: {brief}")
    return results


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, list):
        return "[" + " ".join(_short(x) for x in v) + "]"
    return str(v)


# ------------------------------------------------------------------ statistics


def stats(values: Iterable[float]) -> dict[str, float]:
    """Median, min, max and count of `values` (NaN median when empty)."""
    values = [float(v) for v in values]
    if not values:
        return {
            "median": float("nan"),
            "min": float("nan"),
            "max": float("nan"),
            "n": 0,
        }
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def fmt_stats(s: Mapping[str, float], fmt: str = ",.0f") -> str:
    """``median [min-max]`` (or ``-`` without values)."""
    if not s.get("n"):
        return "-"
    if s["n"] == 1:
        return format(s["median"], fmt)
    return f"{s['median']:{fmt}} [{s['min']:{fmt}}-{s['max']:{fmt}}]"


def ratio(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Ratio of the medians ``a / b`` (NaN if either is missing)."""
    if not a.get("n") or not b.get("n") or not b["median"]:
        return float("nan")
    return a["median"] / b["median"]


def fmt_ratio(x: float) -> str:
    return "-" if x != x else f"{x:.2f}x"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------ machine


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU, cores, load, Python and the versions of the libraries measured."""
    dists = (
        "jax", "jaxlib", "dm-haiku", "optax", "rlax", "gymnasium", "numpy",
        "torch", "stable-baselines3",
    )  # fmt: skip
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {d: v for d in dists if (v := _version(d)) is not None},
    }


def machine_line(info: Mapping[str, Any]) -> str:
    v = info["versions"]
    libs = ", ".join(f"{k} {x}" for k, x in v.items())
    load = " ".join(f"{x:.2f}" for x in info["load_avg"])
    return (
        f"{info['cpu']}, {info['cores']} cores, Python {info['python']}; {libs}; "
        f"load average {load} ({info['date']})"
    )


# ------------------------------------------------------------------ CLI, output


def parser(name: str, doc: str | None, *, repeats: int = 3) -> argparse.ArgumentParser:
    """An argument parser with the flags every benchmark shares."""
    p = argparse.ArgumentParser(
        prog=f"python -m benchmarks.{name}",
        description=(doc or name).strip().splitlines()[0],
    )
    p.add_argument(
        "--quick", action="store_true", help="tiny budgets: a smoke test, not a result"
    )
    p.add_argument(
        "--repeats", type=int, default=repeats, help="alternating runs per contestant"
    )
    p.add_argument(
        "--json",
        type=Path,
        default=RESULTS / f"{name}.json",
        help="where to write the results (default: %(default)s)",
    )
    return p


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=_jsonable) + "\n")
    print(f"\nresults: {path}", file=sys.stderr)


def _jsonable(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


def report(name: str, title: str, tables: str, payload: dict[str, Any], path: Path):
    """Prints the markdown and writes the JSON (with the machine's description)."""
    info = machine_info()
    print(f"\n### {title}\n\n{machine_line(info)}\n\n{tables}\n")
    write_json(path, {"benchmark": name, "machine": info, **payload})


# ------------------------------------------------------------------ virtualenvs


def ensure_venv(name: str, requirements: Sequence[str]) -> str | None:
    """The Python of ``benchmarks/.venvs/<name>`` with `requirements` installed.

    Made on first use (pip, ordinary index); returns None when the install
    fails (the reason is printed and kept in ``install.log``).
    """
    root = VENVS / name
    python = root / "bin" / "python"
    stamp = root / "requirements.txt"
    wanted = "\n".join(requirements) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return str(python)
    print(f"# creating {root} ({' '.join(requirements)}) ...", file=sys.stderr)
    root.parent.mkdir(parents=True, exist_ok=True)
    log = root.parent / f"{name}-install.log"
    with log.open("w") as out:
        ok = (
            subprocess.run(
                [sys.executable, "-m", "venv", "--clear", str(root)],
                stdout=out,
                stderr=subprocess.STDOUT,
            ).returncode
            == 0
            and subprocess.run(
                [str(python), "-m", "pip", "install", *requirements],
                stdout=out,
                stderr=subprocess.STDOUT,
            ).returncode
            == 0
        )
    if not ok:
        print(f"# could not install {name}: see {log}", file=sys.stderr)
        return None
    stamp.write_text(wanted)
    return str(python)


# ------------------------------------------------------------------ worker


def _worker(argv: Sequence[str]) -> None:
    target, kwargs = argv
    module, function = target.split(":")
    result = getattr(importlib.import_module(module), function)(**json.loads(kwargs))
    result.setdefault("total_s", since_start())
    print(RESULT_MARK + json.dumps(result, default=_jsonable), flush=True)


if __name__ == "__main__":
    _worker(sys.argv[1:])
