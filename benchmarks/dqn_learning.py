"""Does DQN learn? Trains the shipped DQN configs over several seeds and reports.

    python -m benchmarks.dqn_learning                  # everything (a few minutes)
    python -m benchmarks.dqn_learning --configs catch_dqn --seeds 3 --gym-seeds 0

For each config the JAX backend trains all seeds as ONE program,
``jax.jit(jax.vmap(trainer.train))(keys)``, then evaluates each seed's greedy
policy (``epsilon = 0``) on fresh episodes. The gymnasium backend (host loop,
`HostTrainer`) trains one seed at a time. Prints a markdown table: mean greedy
return per seed, how many seeds reach the target, compile and run wall time and
environment steps per second (all seeds together, run time only).

Targets: CartPole-v1 >= 475 (on >= 4 of 5 seeds for the RL-Zoo config after
5e4 steps), Catch >= 0.9 within 2e4 steps.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agents import envs  # noqa: E402
from agents.dqn import HostTrainer, as_dqn_config, make_train  # noqa: E402
from jaxlab.config import read_config_file  # noqa: E402

TARGETS = {"CartPole-v1": 475.0, "Catch": 0.9, "Catch-bsuite": 0.9}
DEFAULT_CONFIGS = ("cartpole_dqn_zoo", "cartpole_ddqn", "catch_dqn")


def _load(name: str) -> dict:
    raw = read_config_file(REPO / "configs" / f"{name}.yaml")
    assert raw.get("kind") == "rl" and raw["agent"]["name"] == "dqn", name
    return raw


def run_jax(raw: dict, seeds: int, eval_episodes: int, seed: int) -> dict:
    """Trains `seeds` seeds in one vmapped program; returns the row's numbers."""
    env = envs.make(raw["env"]["id"])
    num_envs = raw["env"]["num_envs"]
    trainer = make_train(
        env,
        as_dqn_config(raw["agent"]),
        raw["optimizer"],
        num_envs=num_envs,
        total_env_steps=raw["train"]["env_steps"],
    )
    keys = jax.random.split(jax.random.key(seed), seeds)
    start = time.perf_counter()
    train = jax.jit(jax.vmap(trainer.train)).lower(keys).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    runner, metrics = train(keys)
    jax.block_until_ready(metrics)
    run_s = time.perf_counter() - start

    evaluate = jax.jit(
        jax.vmap(lambda agent, key: trainer.evaluate(agent, key, eval_episodes))
    )
    eval_keys = jax.random.split(jax.random.key(seed + 10_000), seeds)
    returns = np.asarray(evaluate(runner.agent, eval_keys))
    steps = trainer.num_iterations * trainer.steps_per_iteration
    return {
        "returns": returns,
        "env_steps": steps,
        "compile_s": compile_s,
        "run_s": run_s,
        "steps_per_s": seeds * steps / run_s,
    }


def run_gymnasium(raw: dict, seeds: int, eval_episodes: int, seed: int) -> dict:
    """Trains `seeds` seeds one after the other with the host loop."""
    returns, run_s, steps = [], 0.0, 0
    for i in range(seeds):
        with HostTrainer(
            raw["env"]["id"],
            as_dqn_config(raw["agent"]),
            raw["optimizer"],
            num_envs=raw["env"]["num_envs"],
            total_env_steps=raw["train"]["env_steps"],
        ) as trainer:
            key, eval_key = jax.random.split(jax.random.key(seed + i))
            start = time.perf_counter()
            runner, _ = trainer.train(key)
            jax.block_until_ready(runner)
            run_s += time.perf_counter() - start
            returns.append(trainer.evaluate(runner.agent, eval_key, eval_episodes))
            steps = trainer.num_iterations * trainer.steps_per_iteration
    return {
        "returns": np.asarray(returns),
        "env_steps": steps,
        "compile_s": float("nan"),  # included in the run time
        "run_s": run_s,
        "steps_per_s": seeds * steps / run_s,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--gym-seeds", type=int, default=1, help="gymnasium seeds (0: skip)"
    )
    parser.add_argument(
        "--gym-configs", nargs="+", default=["cartpole_dqn_zoo"],
        help="configs also run on the gymnasium backend",
    )  # fmt: skip
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rows = []
    jobs = [(name, "jax", args.seeds) for name in args.configs]
    if args.gym_seeds > 0:
        jobs += [(name, "gymnasium", args.gym_seeds) for name in args.gym_configs]
    for name, backend, seeds in jobs:
        raw = _load(name)
        runner = run_jax if backend == "jax" else run_gymnasium
        print(f"# {name} ({backend}, {seeds} seeds) ...", file=sys.stderr, flush=True)
        result = runner(raw, seeds, args.eval_episodes, args.seed)
        target = TARGETS.get(raw["env"]["id"])
        reached = (
            f"{int(np.sum(result['returns'] >= target))}/{seeds}"
            if target is not None
            else "-"
        )
        rows.append(
            (
                name,
                raw["env"]["id"],
                backend,
                f"{result['env_steps']:,}",
                " ".join(
                    f"{r:.1f}" if abs(r) >= 10 else f"{r:.2f}"
                    for r in result["returns"]
                ),
                f"{np.mean(result['returns']):.2f}",
                f">= {target:g}: {reached}" if target is not None else "-",
                "-" if np.isnan(result["compile_s"]) else f"{result['compile_s']:.1f}",
                f"{result['run_s']:.1f}",
                f"{result['steps_per_s']:,.0f}",
            )
        )
    header = (
        "config", "env", "backend", "env steps / seed", "greedy return per seed",
        "mean", "target reached", "compile s", "run s", "env steps/s (all seeds)",
    )  # fmt: skip
    print(f"\n{jax.devices()[0].platform.upper()}, jax {jax.__version__}, "
          f"{args.eval_episodes} greedy evaluation episodes per seed\n")  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
