"""jaxlab's RL contestants, each a job run in a fresh child process.

Every job trains one seed of a shipped config (``configs/<name>.yaml``) and
returns its compile time, run time, environment steps per second (run time
only) and the greedy return (mean of `eval_episodes` fresh episodes).
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.common import REPO, CompileClock, since_start

EVAL_KEY_OFFSET = 10_000


def load_config(name: str) -> dict[str, Any]:
    from jaxlab.config import read_config_file

    return read_config_file(REPO / "configs" / f"{name}.yaml")


def _budget(raw: dict[str, Any], total_env_steps: int | None) -> int:
    return int(total_env_steps or raw["train"]["env_steps"])


def ppo_jax(
    seed: int,
    config: str,
    total_env_steps: int | None = None,
    eval_episodes: int = 20,
    rollout_unroll: int = 1,
) -> dict[str, Any]:
    """PPO on the JAX-native environment, as ``trainer.train(key)`` runs it:
    ``init`` then ``run`` over the whole budget (one program; compile time is
    both programs' compilation, one after the other; `rollout_unroll`: see
    `agents.ppo.make_on_policy_train`)."""
    import jax

    from agents import ppo

    import_s = since_start()
    raw = load_config(config)
    trainer = ppo.make_train(
        raw["env"]["id"],
        raw["agent"],
        raw["optimizer"],
        num_envs=raw["env"]["num_envs"],
        total_env_steps=_budget(raw, total_env_steps),
        rollout_unroll=rollout_unroll,
    )
    key = jax.random.PRNGKey(seed)
    t0 = time.perf_counter()
    state = jax.block_until_ready(trainer.init(key))
    compiled = trainer.run.lower(state, trainer.num_updates).compile()
    t1 = time.perf_counter()
    runner, _ = jax.block_until_ready(compiled(state))
    t2 = time.perf_counter()
    steps = trainer.num_updates * trainer.steps_per_update
    eval_key = jax.random.PRNGKey(EVAL_KEY_OFFSET + seed)
    ret = float(trainer.evaluate(runner.agent, eval_key, num_episodes=eval_episodes))
    return {
        "import_s": import_s,
        "compile_s": t1 - t0,
        "run_s": t2 - t1,
        "env_steps": steps,
        "steps_per_s": steps / (t2 - t1),
        "returns": [ret],
    }


def ppo_gym(
    seed: int, config: str, total_env_steps: int | None = None, eval_episodes: int = 20
) -> dict[str, Any]:
    """PPO on gymnasium's CartPole (`agents.ppo.make_host_train`, host loop).

    Compilation happens inside the first update; `CompileClock` measures it and
    it is subtracted from the run time.
    """
    import jax

    from agents import ppo

    clock = CompileClock()
    import_s = since_start()
    raw = load_config(config)
    trainer = ppo.make_host_train(
        raw["env"]["id"],
        raw["agent"],
        raw["optimizer"],
        num_envs=raw["env"]["num_envs"],
        total_env_steps=_budget(raw, total_env_steps),
    )
    with trainer:
        t0 = time.perf_counter()
        state = trainer.init(jax.random.PRNGKey(seed))
        state, _ = trainer.run(state, trainer.num_updates)
        jax.block_until_ready(state)
        wall = time.perf_counter() - t0
        compile_s = clock.seconds
        ret = trainer.evaluate(
            state.agent, jax.random.PRNGKey(EVAL_KEY_OFFSET + seed), num_episodes=20
        )
    steps = trainer.num_updates * trainer.steps_per_update
    return {
        "import_s": import_s,
        "compile_s": compile_s,
        "run_s": wall - compile_s,
        "env_steps": steps,
        "steps_per_s": steps / (wall - compile_s),
        "returns": [float(ret)],
    }


def _dqn_pieces(raw: dict[str, Any]):
    from agents.dqn import as_dqn_config

    return as_dqn_config(raw["agent"]), raw["optimizer"]


def dqn_jax(
    seed: int, config: str, total_env_steps: int | None = None, eval_episodes: int = 20
) -> dict[str, Any]:
    """DQN on the JAX-native environment: ``jit(trainer.train)``."""
    import jax

    from agents import envs
    from agents.dqn import make_train

    import_s = since_start()
    raw = load_config(config)
    agent_config, optimizer = _dqn_pieces(raw)
    trainer = make_train(
        envs.make(raw["env"]["id"]),
        agent_config,
        optimizer,
        num_envs=raw["env"]["num_envs"],
        total_env_steps=_budget(raw, total_env_steps),
    )
    key = jax.random.key(seed)
    t0 = time.perf_counter()
    compiled = jax.jit(trainer.train).lower(key).compile()
    t1 = time.perf_counter()
    runner, _ = jax.block_until_ready(compiled(key))
    t2 = time.perf_counter()
    evaluate = jax.jit(trainer.evaluate, static_argnums=2)
    eval_key = jax.random.key(EVAL_KEY_OFFSET + seed)
    ret = float(evaluate(runner.agent, eval_key, eval_episodes))
    steps = trainer.num_iterations * trainer.steps_per_iteration
    return {
        "import_s": import_s,
        "compile_s": t1 - t0,
        "run_s": t2 - t1,
        "env_steps": steps,
        "steps_per_s": steps / (t2 - t1),
        "returns": [ret],
    }


def dqn_gym(
    seed: int, config: str, total_env_steps: int | None = None, eval_episodes: int = 20
) -> dict[str, Any]:
    """DQN on gymnasium's CartPole (`agents.dqn.HostTrainer`, host loop)."""
    import jax

    from agents.dqn import HostTrainer

    clock = CompileClock()
    import_s = since_start()
    raw = load_config(config)
    agent_config, optimizer = _dqn_pieces(raw)
    with HostTrainer(
        raw["env"]["id"],
        agent_config,
        optimizer,
        num_envs=raw["env"]["num_envs"],
        total_env_steps=_budget(raw, total_env_steps),
    ) as trainer:
        t0 = time.perf_counter()
        runner, _ = trainer.train(jax.random.key(seed))
        jax.block_until_ready(runner)
        wall = time.perf_counter() - t0
        compile_s = clock.seconds
        eval_key = jax.random.key(EVAL_KEY_OFFSET + seed)
        ret = trainer.evaluate(runner.agent, eval_key, eval_episodes)
        steps = trainer.num_iterations * trainer.steps_per_iteration
    return {
        "import_s": import_s,
        "compile_s": compile_s,
        "run_s": wall - compile_s,
        "env_steps": steps,
        "steps_per_s": steps / (wall - compile_s),
        "returns": [float(ret)],
    }


# ------------------------------------------------------------------ time to solve


def ppo_time_to_solve(
    seed: int,
    config: str = "cartpole_ppo",
    chunk_updates: int = 0,
    threshold: float = 475.0,
    eval_episodes: int = 20,
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """Process start to a greedy return >= `threshold`, as a notebook user runs it.

    With ``chunk_updates == 0`` the whole budget runs as one program and is
    evaluated once at the end (what PureJaxRL does). Otherwise it is the public
    early stop, `Trainer.train_until` (what `agents.ppo.train(...,
    target_return=)` calls): chunks of `chunk_updates` updates (`Trainer.run`,
    compiled once), a greedy evaluation after each, stop at the first that
    reaches `threshold`. `cache_dir` turns on JAX's persistent compilation cache.
    """
    import jax
    import numpy as np

    from agents import ppo
    from benchmarks.common import enable_compilation_cache

    if cache_dir:
        enable_compilation_cache(cache_dir)
    clock = CompileClock()
    imported = since_start()
    raw = load_config(config)
    trainer = ppo.make_train(
        raw["env"]["id"],
        raw["agent"],
        raw["optimizer"],
        num_envs=raw["env"]["num_envs"],
        total_env_steps=raw["train"]["env_steps"],
    )
    key = jax.random.PRNGKey(seed)
    eval_key = jax.random.PRNGKey(EVAL_KEY_OFFSET + seed)
    evals, ret, updates = [], float("nan"), 0
    if chunk_updates <= 0:
        runner, _ = trainer.train(key)
        ret = float(
            trainer.evaluate(runner.agent, eval_key, num_episodes=eval_episodes)
        )
        updates = trainer.num_updates
        evals.append((updates, ret, since_start()))
    else:
        _, metrics = trainer.train_until(
            key,
            target_return=threshold,
            eval_every=chunk_updates,
            eval_episodes=eval_episodes,
            eval_key=eval_key,
        )
        at = np.flatnonzero(np.isfinite(metrics["eval_return"]))
        evals = [(int(i) + 1, float(metrics["eval_return"][i])) for i in at]
        updates, ret = len(metrics["eval_return"]), evals[-1][1]
    done_at = since_start()
    return {
        "import_s": imported,
        "compile_s": clock.seconds,
        "cache_hits": clock.cache_hits,
        "env_steps": updates * trainer.steps_per_update,
        "final_return": ret,
        "solved": ret >= threshold,
        "solved_s": done_at if ret >= threshold else float("nan"),
        "evals": evals,
    }


def import_profile() -> dict[str, Any]:
    """Seconds to import each top-level module jaxlab's PPO path pulls in."""
    out = {}
    for name in ("jax", "optax", "haiku", "chex", "rlax", "pydantic", "gymnasium"):
        t = time.perf_counter()
        __import__(name)
        out[name] = time.perf_counter() - t
    for name in ("jaxlab", "nets", "agents"):
        t = time.perf_counter()
        __import__(name)
        out[name] = time.perf_counter() - t
    out["total"] = since_start()
    return out


def compile_times(
    seed: int, config: str, chunk: int = 16, cache_dir: str | None = None
) -> dict[str, Any]:
    """Compile seconds of a config's programs: the whole run (``jit(train)``),
    one chunk (``run(state, chunk)``), ``init`` and the greedy ``evaluate``."""
    import jax

    from benchmarks.common import enable_compilation_cache

    if cache_dir:
        enable_compilation_cache(cache_dir)
    import agents

    clock = CompileClock()
    raw = load_config(config)
    name = raw["agent"]["name"]
    trainer = agents.AGENTS[name].make_train(
        raw["env"]["id"],
        agents.agent_config(raw["agent"]),
        raw["optimizer"],
        num_envs=raw["env"]["num_envs"],
        total_env_steps=raw["train"]["env_steps"],
    )
    if name == "dqn":  # agents.dqn's Trainer functions are not jitted
        key = jax.random.key(seed)
        evaluate = jax.jit(trainer.evaluate, static_argnums=2)
        init, run = jax.jit(trainer.init), jax.jit(trainer.run, static_argnums=1)
    else:
        key = jax.random.PRNGKey(seed)
        evaluate, init, run = trainer.evaluate, trainer.init, trainer.run
    out = {}
    t = time.perf_counter()
    jax.jit(trainer.train).lower(key).compile()
    out["train_s"] = time.perf_counter() - t
    t = time.perf_counter()
    state = init(key)
    out["init_s"] = time.perf_counter() - t
    t = time.perf_counter()
    run.lower(state, chunk).compile()
    out["chunk_s"] = time.perf_counter() - t
    t = time.perf_counter()
    if name == "dqn":
        evaluate.lower(state.agent, key, 20).compile()
    else:
        evaluate.lower(state.agent, key, num_episodes=20).compile()
    out["evaluate_s"] = time.perf_counter() - t
    out["cache_hits"] = clock.cache_hits
    return out
