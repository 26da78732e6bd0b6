"""Time to solve CartPole with PPO: process start to a greedy return >= 475.

What a notebook user feels: interpreter start, imports, compilation, training
and the evaluation that shows the policy works, all counted (the parent stamps
the time it spawns each child). Contestants, alternating, at PureJaxRL's
default hyperparameters (configs/cartpole_ppo.yaml, 5e5 steps):

- jaxlab, one call: ``trainer.train(key)`` over the whole budget (what
  ``agents.ppo.train(...)`` runs: ``run`` compiles while ``init`` runs), then
  evaluate (what PureJaxRL does).
- jaxlab, chunks: the public early stop, ``trainer.train_until(key,
  target_return=475, eval_every=16)`` (what ``agents.ppo.train(...,
  target_return=475)`` runs): ``trainer.run(state, 16)`` compiled once, a greedy
  evaluation (20 episodes) after each chunk, stop at the first >= 475.
- the same with JAX's persistent compilation cache, warm (filled by an untimed
  run first): what every run after a user's first one costs.
- PureJaxRL (reference implementation), whole budget then evaluate; in the
  rejax virtualenv it first imports what PureJaxRL's script imports (flax,
  distrax, gymnax), so its import time is PureJaxRL's.
- rejax, whole budget then evaluate.

A second table gives the compile time of each RL config's programs, cold and
with a warm persistent cache, and a third where jaxlab's import time goes.

    python -m benchmarks.time_to_solve            # ~10 min
    python -m benchmarks.time_to_solve --quick    # smoke test
"""

from __future__ import annotations

import sys
import tempfile
from typing import Any

from benchmarks import common
from benchmarks.common import Job
from benchmarks.rejax_ppo import REQUIREMENTS as REJAX_REQUIREMENTS

CHUNK = 16
JAXLAB_BEST = "jaxlab, chunks + early stop, warm cache"
PEER = "PureJaxRL (reference)"
CONFIGS = ("cartpole_ppo", "cartpole_ppo_zoo", "cartpole_a2c", "cartpole_dqn_zoo")


def _solve_jobs(cache: str, rejax_python: str | None) -> list[Job]:
    ppo = "benchmarks.rl_jobs:ppo_time_to_solve"
    jobs = [
        Job("jaxlab, one call (whole budget)", ppo, {"chunk_updates": 0}),
        Job("jaxlab, chunks + early stop", ppo, {"chunk_updates": CHUNK}),
        Job(JAXLAB_BEST, ppo, {"chunk_updates": CHUNK, "cache_dir": cache}),
    ]
    ref = "benchmarks.purejaxrl_ppo:time_to_solve"
    if rejax_python:
        jobs += [
            Job(PEER, ref, {"purejaxrl_imports": True}, python=rejax_python),
            Job(PEER + ", warm cache", ref,
                {"purejaxrl_imports": True, "cache_dir": cache}, python=rejax_python),
            Job("rejax 0.1.3", "benchmarks.rejax_ppo:time_to_solve", {},
                python=rejax_python),
        ]  # fmt: skip
    else:
        jobs += [
            Job(PEER + " (without flax/distrax/gymnax imports)", ref, {}),
            Job(PEER + ", warm cache", ref, {"cache_dir": cache}),
        ]
    return jobs


def _solve_table(summary: dict[str, dict[str, Any]]) -> str:
    peer = next(
        (s for n, s in summary.items() if n.startswith(PEER) and "warm" not in n), {}
    )
    rows = []
    for name, s in summary.items():
        rows.append(
            (
                name,
                common.fmt_stats(s["import_s"], ".1f"),
                common.fmt_stats(s["compile_s"], ".1f"),
                common.fmt_stats(s["solved_s"], ".1f"),
                common.fmt_ratio(common.ratio(s["solved_s"], peer.get("solved_s", {}))),
                f"{s['solved']}/{s['runs']}",
                common.fmt_stats(s["env_steps"], ",.0f"),
                " ".join(f"{x:.0f}" for x in s["final_returns"]),
                " ".join(f"{x:.1f}" for x in s["load"]),
            )
        )
    header = (
        "contestant", "import s", "compile s", "process start to solved, s",
        "vs PureJaxRL", "solved", "env steps used", "greedy return", "load",
    )  # fmt: skip
    return common.markdown_table(header, rows)


def _summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, rs in runs.items():
        solved = [r for r in rs if r["solved"]]
        out[name] = {
            "import_s": common.stats(r["import_s"] for r in rs),
            "compile_s": common.stats(r["compile_s"] for r in rs),
            "solved_s": common.stats(r["solved_s"] for r in solved),
            "env_steps": common.stats(r["env_steps"] for r in rs),
            "final_returns": [r["final_return"] for r in rs],
            "solved": len(solved),
            "runs": len(rs),
            "load": [r["load"] for r in rs],
            "raw": rs,
        }
    return out


def _compile_table(results: dict[str, dict[str, Any]]) -> str:
    rows = []
    for config, r in results.items():
        cold, warm = r["cold"], r["warm"]
        rows.append(
            (
                config,
                f"{cold['train_s']:.1f} / {warm['train_s']:.2f}",
                f"{cold['chunk_s']:.1f} / {warm['chunk_s']:.2f}",
                f"{cold['init_s']:.1f} / {warm['init_s']:.2f}",
                f"{cold['evaluate_s']:.1f} / {warm['evaluate_s']:.2f}",
                f"{cold['load']:.1f} / {warm['load']:.1f}",
            )
        )
    header = (
        "config", "whole run (jit(train))", f"one chunk (run(state, {CHUNK}))",
        "init", "greedy evaluate", "load",
    )  # fmt: skip
    return "Compile seconds, cold / warm persistent cache:\n\n" + common.markdown_table(
        header, rows
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = common.parser("time_to_solve", __doc__)
    p.add_argument("--no-rejax", action="store_true", help="skip the rejax venv")
    p.add_argument("--no-compile-table", action="store_true")
    args = p.parse_args(argv)
    rejax_python = None
    if not args.no_rejax:
        venv = common.VENVS / "rejax" / "bin" / "python"
        if args.quick:
            rejax_python = str(venv) if venv.exists() else None
        else:
            rejax_python = common.ensure_venv("rejax", REJAX_REQUIREMENTS)
    repeats = 1 if args.quick else args.repeats
    payload: dict[str, Any] = {"quick": args.quick}
    tables = []
    with tempfile.TemporaryDirectory(prefix="jax-cache-") as cache:
        if not args.quick:
            jobs = _solve_jobs(cache, rejax_python)
            print("# priming the persistent compilation cache", file=sys.stderr)
            for job in jobs:
                if job.kwargs.get("cache_dir"):
                    common.run_job(job, seed=99)
            runs = common.alternate(jobs, repeats)
            payload["solve"] = _summarize(runs)
            tables.append(_solve_table(payload["solve"]))

        configs = CONFIGS[:1] if args.quick else CONFIGS
        if not args.no_compile_table:
            compiles = {}
            for config in configs:
                with tempfile.TemporaryDirectory(prefix="jax-cache-") as cc:
                    job = Job(config, "benchmarks.rl_jobs:compile_times",
                              {"config": config, "cache_dir": cc})  # fmt: skip
                    try:
                        cold = common.run_job(job, seed=0)
                        warm = common.run_job(job, seed=0)
                    except common.BenchError as e:
                        print(f"  ! compile {config}: {e}", file=sys.stderr)
                        continue
                compiles[config] = {"cold": cold, "warm": warm}
                print(f"  compile {config}: {cold} / {warm}", file=sys.stderr)
            payload["compile"] = compiles
            tables.append(_compile_table(compiles))

        imports = common.run_job(Job("imports", "benchmarks.rl_jobs:import_profile"))
        payload["imports"] = imports
        order = ("jax", "optax", "haiku", "chex", "rlax", "pydantic", "gymnasium",
                 "jaxlab", "nets", "agents")  # fmt: skip
        tables.append(
            "Import seconds, each module after the ones left of it "
            f"(process start to all imported: {imports['total']:.1f} s):\n\n"
            + common.markdown_table(order, [[f"{imports[m]:.2f}" for m in order]])
        )
    common.report(
        "time_to_solve",
        "Time to solve CartPole-v1 with PPO (process start to greedy >= 475)",
        "\n\n".join(tables),
        payload,
        args.json,
    )
    return payload


if __name__ == "__main__":
    main()
