"""Learning benchmark of the on-policy agents (not a test): returns and speed.

Runs the configs in `configs/` (PPO CartPole with PureJaxRL's and RL-Zoo's
hyperparameters, PPO Pendulum, A2C CartPole) on the JAX-native environments,
several seeds at once with ``jax.jit(jax.vmap(trainer.train))``, plus the RL-Zoo
PPO config on gymnasium's CartPole through `HostTrainer`, and prints a markdown
table. "Solved" is a greedy (deterministic) mean return over 20 fresh episodes
of at least 475 on CartPole-v1 and -250 on Pendulum-v1.

    python -m benchmarks.ppo_learning              # everything, a few minutes
    python -m benchmarks.ppo_learning --seeds 2 --gym-seeds 0
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agents import a2c, ppo  # noqa: E402
from agents.ppo.training import as_config  # noqa: E402
from jaxlab.config import parse_yaml  # noqa: E402

EVAL_EPISODES = 20
THRESHOLDS = {"CartPole-v1": 475.0, "Pendulum-v1": -250.0}


def _load(name: str) -> dict[str, Any]:
    return parse_yaml((REPO / "configs" / f"{name}.yaml").read_text(), name)


def _make_trainer(raw: dict[str, Any]):
    agent = dict(raw["agent"])
    kind = agent["name"]
    module, cls = {"ppo": (ppo, ppo.PPOConfig), "a2c": (a2c, a2c.A2CConfig)}[kind]
    return module.make_train(
        raw["env"]["id"],
        as_config(cls, agent),
        raw["optimizer"],
        num_envs=raw["env"]["num_envs"],
        total_env_steps=raw["train"]["env_steps"],
    )


def _row(raw, backend, returns, steps, compile_s, run_s, seeds) -> dict[str, Any]:
    env_id = raw["env"]["id"]
    returns = np.asarray(returns, np.float64)
    solved = int(np.sum(returns >= THRESHOLDS[env_id]))
    total = steps * seeds
    return {
        "agent": f"{raw['agent']['name']} ({raw['name']})",
        "env": env_id,
        "backend": backend,
        "solved": f"{solved}/{seeds}",
        "return": f"{returns.mean():.1f} [{returns.min():.0f}, {returns.max():.0f}]",
        "steps": f"{steps:,}",
        "wall": f"{compile_s + run_s:.1f} / {run_s:.1f}",
        "sps": f"{total / run_s:,.0f}",
    }


def bench_jax(name: str, seeds: int) -> dict[str, Any]:
    raw = _load(name)
    trainer = _make_trainer(raw)
    keys = jax.random.split(jax.random.PRNGKey(raw["seed"]), seeds)
    if seeds == 1:
        fn, args = jax.jit(trainer.train), (keys[0],)
    else:
        fn, args = jax.jit(jax.vmap(trainer.train)), (keys,)
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    t1 = time.perf_counter()
    runner_state, metrics = jax.block_until_ready(compiled(*args))
    t2 = time.perf_counter()
    eval_keys = jax.random.split(jax.random.PRNGKey(1234), seeds)
    evaluate = lambda agent, key: trainer.evaluate(
        agent, key, num_episodes=EVAL_EPISODES
    )
    if seeds == 1:
        returns = [evaluate(runner_state.agent, eval_keys[0])]
    else:
        returns = jax.vmap(evaluate)(runner_state.agent, eval_keys)
    steps = trainer.num_updates * trainer.steps_per_update
    return _row(raw, "jax", returns, steps, t1 - t0, t2 - t1, seeds)


def bench_gym(name: str, seeds: int) -> dict[str, Any]:
    raw = _load(name)
    returns, compile_s, run_s = [], 0.0, 0.0
    for seed in range(seeds):
        trainer = ppo.make_host_train(
            raw["env"]["id"],
            as_config(ppo.PPOConfig, raw["agent"]),
            raw["optimizer"],
            num_envs=raw["env"]["num_envs"],
            total_env_steps=raw["train"]["env_steps"],
        )
        with trainer:
            t0 = time.perf_counter()
            state = trainer.init(jax.random.PRNGKey(raw["seed"] + seed))
            state, _ = trainer.run(state, 1)  # Compiles act and update.
            t1 = time.perf_counter()
            state, _ = trainer.run(state, trainer.num_updates - 1)
            t2 = time.perf_counter()
            returns.append(
                trainer.evaluate(
                    state.agent, jax.random.PRNGKey(1234), num_episodes=EVAL_EPISODES
                )
            )
        # The first update (compile included) counts as compile time.
        per_update = (t2 - t1) / (trainer.num_updates - 1)
        compile_s += t1 - t0 - per_update
        run_s += t2 - t1 + per_update
    steps = trainer.num_updates * trainer.steps_per_update
    return _row(raw, "gymnasium", returns, steps, compile_s, run_s, seeds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per JAX run")
    parser.add_argument("--gym-seeds", type=int, default=2, help="gymnasium seeds")
    args = parser.parse_args(argv)

    runs = [
        ("cartpole_ppo", 1),
        ("cartpole_ppo", args.seeds),
        ("cartpole_ppo_zoo", args.seeds),
        ("pendulum_ppo", args.seeds),
        ("cartpole_a2c", args.seeds),
    ]
    rows = []
    for name, seeds in runs:
        rows.append(bench_jax(name, seeds))
        print(f"done: {name} x{seeds}: {rows[-1]}", file=sys.stderr, flush=True)
    if args.gym_seeds:
        rows.append(bench_gym("cartpole_ppo_zoo", args.gym_seeds))
        print(f"done: gymnasium: {rows[-1]}", file=sys.stderr, flush=True)

    header = (
        "| agent (config) | env | backend | seeds solved | greedy return mean "
        "[min, max] | env steps per seed | wall s incl. / excl. compile | "
        "env steps/s (all seeds, excl. compile) |"
    )
    print(
        f"\njax {jax.__version__}, {jax.devices()[0].platform}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n"
    )
    print(header)
    print("|" + "---|" * 8)
    for r in rows:
        print(
            f"| {r['agent']} | {r['env']} | {r['backend']} | {r['solved']} | "
            f"{r['return']} | {r['steps']} | {r['wall']} | {r['sps']} |"
        )


if __name__ == "__main__":
    main()
