"""RL throughput: jaxlab against its peers, measured side by side in one run.

Three comparisons, each contestant in a fresh child process, alternating:

1. PPO CartPole at PureJaxRL's defaults (configs/cartpole_ppo.yaml): jaxlab on
   its JAX env (whole loop jitted), the PureJaxRL reference
   (`benchmarks.purejaxrl_ppo`), rejax (own virtualenv), SB3 on gymnasium.
2. PPO at RL-Zoo's settings (configs/cartpole_ppo_zoo.yaml): jaxlab JAX env,
   jaxlab on gymnasium (host loop), SB3.
3. DQN at RL-Zoo's settings (configs/cartpole_dqn_zoo.yaml): the same three.

Reported per contestant: compile time, env steps/s of the run alone (median
and range over the runs), the greedy return of each seed (run ``r`` is seed
``r``), and the speed ratio to jaxlab's JAX-env run measured in the same
invocation. SB3 on the PureJaxRL config gets a smaller budget by default
(``--sb3-ppo-steps``, 98 updates: 5e5 steps would take minutes per run); its
steps/s is a steady state, its return that of the smaller budget. SB3 runs
PyTorch on 1 thread, its fastest setting here (see `benchmarks.sb3_jobs`).

    python -m benchmarks.rl_throughput                    # ~25 min
    python -m benchmarks.rl_throughput --only ppo_purejaxrl --repeats 5
    python -m benchmarks.rl_throughput --quick            # smoke test
"""

from __future__ import annotations

import sys
from typing import Any

from benchmarks import common
from benchmarks.common import Job
from benchmarks.rejax_ppo import REQUIREMENTS as REJAX_REQUIREMENTS

SECTIONS = ("ppo_purejaxrl", "ppo_zoo", "dqn_zoo")
THRESHOLD = 475.0
JAXLAB = "jaxlab (JAX env)"


def _jobs(section: str, args: Any, rejax_python: str | None) -> list[Job]:
    quick = args.quick
    if section == "ppo_purejaxrl":
        steps = 2048 if quick else 500_000
        sb3_steps = 2048 if quick else args.sb3_ppo_steps
        jobs = [
            Job(JAXLAB, "benchmarks.rl_jobs:ppo_jax",
                {"config": "cartpole_ppo", "total_env_steps": steps}),
            Job(f"{JAXLAB}, rollout_unroll=2", "benchmarks.rl_jobs:ppo_jax",
                {"config": "cartpole_ppo", "total_env_steps": steps,
                 "rollout_unroll": 2}),
            Job("PureJaxRL (reference)", "benchmarks.purejaxrl_ppo:throughput",
                {"total_env_steps": steps}),
        ]  # fmt: skip
        if rejax_python:
            jobs.append(
                Job("rejax 0.1.3", "benchmarks.rejax_ppo:throughput",
                    {"total_env_steps": steps}, python=rejax_python)
            )  # fmt: skip
        if not args.no_sb3:
            jobs.append(
                Job("SB3 (gymnasium)", "benchmarks.sb3_jobs:ppo",
                    {"preset": "purejaxrl", "total_env_steps": sb3_steps})
            )  # fmt: skip
        return jobs
    if section == "ppo_zoo":
        steps = 2560 if quick else 100_000
        jobs = [
            Job(JAXLAB, "benchmarks.rl_jobs:ppo_jax",
                {"config": "cartpole_ppo_zoo", "total_env_steps": steps}),
            Job("jaxlab (gymnasium)", "benchmarks.rl_jobs:ppo_gym",
                {"config": "cartpole_ppo_zoo", "total_env_steps": steps}),
        ]  # fmt: skip
        if not args.no_sb3:
            jobs.append(
                Job("SB3 (gymnasium)", "benchmarks.sb3_jobs:ppo",
                    {"preset": "zoo", "total_env_steps": steps})
            )  # fmt: skip
        return jobs
    if section == "dqn_zoo":
        steps = 2048 if quick else 50_000
        jobs = [
            Job(JAXLAB, "benchmarks.rl_jobs:dqn_jax",
                {"config": "cartpole_dqn_zoo", "total_env_steps": steps}),
            Job("jaxlab (gymnasium)", "benchmarks.rl_jobs:dqn_gym",
                {"config": "cartpole_dqn_zoo", "total_env_steps": steps}),
        ]  # fmt: skip
        if not args.no_sb3:
            jobs.append(
                Job("SB3 (gymnasium)", "benchmarks.sb3_jobs:dqn",
                    {"total_env_steps": steps})
            )  # fmt: skip
        return jobs
    raise ValueError(section)


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per contestant: stats of steps/s and compile time, returns per seed."""
    out = {}
    for name, rs in runs.items():
        returns = [r["returns"][0] for r in rs]
        out[name] = {
            "steps_per_s": common.stats(r["steps_per_s"] for r in rs),
            "compile_s": common.stats(r["compile_s"] for r in rs),
            "import_s": common.stats(r["import_s"] for r in rs),
            "env_steps": rs[0]["env_steps"] if rs else 0,
            "returns": returns,
            "solved": sum(x >= THRESHOLD for x in returns),
            "load": [round(r["load"], 2) for r in rs],
            "runs": rs,
        }
    return out


def table(summary: dict[str, dict[str, Any]]) -> str:
    ref = summary.get(JAXLAB, {}).get("steps_per_s", {})
    rows = []
    for name, s in summary.items():
        sps = s["steps_per_s"]
        rows.append(
            (
                name,
                f"{s['env_steps']:,}",
                common.fmt_stats(s["compile_s"], ".1f"),
                common.fmt_stats(sps),
                common.fmt_ratio(common.ratio(ref, sps)),
                " ".join(f"{x:.0f}" for x in s["returns"]) or "-",
                f"{s['solved']}/{len(s['returns'])}",
                " ".join(f"{x:.1f}" for x in s["load"]),
            )
        )
    header = (
        "contestant", "env steps / run", "compile s", "env steps/s median [range]",
        "jaxlab JAX env is", "greedy return per seed", ">= 475", "load (1 min)",
    )  # fmt: skip
    return common.markdown_table(header, rows)


TITLES = {
    "ppo_purejaxrl": "PPO CartPole-v1, PureJaxRL defaults (configs/cartpole_ppo.yaml)",
    "ppo_zoo": "PPO CartPole-v1, RL-Zoo settings (configs/cartpole_ppo_zoo.yaml)",
    "dqn_zoo": "DQN CartPole-v1, RL-Zoo settings (configs/cartpole_dqn_zoo.yaml)",
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = common.parser("rl_throughput", __doc__)
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument(
        "--dqn-repeats", type=int, default=5, help="DQN runs (= seeds) per contestant"
    )
    p.add_argument(
        "--sb3-ppo-steps",
        type=int,
        default=50_176,
        help="SB3's budget on the PureJaxRL config (98 updates of 512 steps)",
    )
    p.add_argument("--no-sb3", action="store_true", help="skip SB3 (no torch)")
    p.add_argument("--no-rejax", action="store_true", help="skip rejax")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats = args.dqn_repeats = 1
    if not args.no_sb3 and not _has("stable_baselines3"):
        print("# stable-baselines3 missing: pip install -e '.[bench]'", file=sys.stderr)
        args.no_sb3 = True

    rejax_python = None
    if "ppo_purejaxrl" in args.only and not args.no_rejax:
        venv = common.VENVS / "rejax" / "bin" / "python"
        if args.quick:  # a smoke test never installs
            rejax_python = str(venv) if venv.exists() else None
        else:
            rejax_python = common.ensure_venv("rejax", REJAX_REQUIREMENTS)

    sections, tables = {}, []
    for section in args.only:
        repeats = args.dqn_repeats if section == "dqn_zoo" else args.repeats
        print(f"# {section}: {repeats} alternating runs", file=sys.stderr)
        runs = common.alternate(_jobs(section, args, rejax_python), repeats)
        sections[section] = summarize(runs)
        tables.append(f"#### {TITLES[section]}\n\n{table(sections[section])}")
    common.report(
        "rl_throughput",
        "RL throughput (env steps/s exclude compilation; runs alternate)",
        "\n\n".join(tables),
        {"quick": args.quick, "sections": sections},
        args.json,
    )
    return sections


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    main()
