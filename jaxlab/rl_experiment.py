"""The shell of an RL run: `kind: rl` config in, trained run directory out.

The agent's trainer (`agents.AGENTS[name]`) exposes pure pieces: ``init(key) ->
runner_state`` and ``run(runner_state, n) -> (runner_state, metrics[n])`` (a
`lax.scan` over `n` training iterations on the jax backend, a host loop around
jitted act/update on the gymnasium backend). This module runs chunks of `n`
iterations between log points, so metrics reach the host once per chunk (no
`jax.debug.callback` in the compiled loop), evaluates, and checkpoints the whole
runner state (agent, optimizer, replay buffer, environment states, rng).

On the jax backend a run killed at any point and resumed ends bit-identical to an
uninterrupted run. On the gymnasium backend the environments live in gymnasium
objects, which cannot be checkpointed: a resumed run resets them.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxlab import checkpoint as ckpt_lib
from jaxlab import config as config_lib
from jaxlab import logger as logger_lib
from jaxlab import run_dir as run_dir_lib
from jaxlab.errors import ConfigError, JaxlabError

KILL_AT_STEP_ENV = "JAXLAB_FAULT_KILL_AT_STEP"


def check(config: config_lib.RLExperimentConfig) -> None:
    """Validates the agent section and the environment id without building."""
    import agents

    agents.agent_config(config.agent)
    env = config.env
    if env.backend == "jax":
        known = agents.envs.registered_ids()
        if env.id not in known:
            raise ConfigError(
                f"env.id: {env.id!r} is not a JAX-native environment (known: "
                f"{', '.join(known)}); use env.backend: gymnasium for gymnasium ids"
            )
    else:
        import gymnasium

        try:
            gymnasium.spec(env.id)
        except gymnasium.error.Error as e:
            raise ConfigError(f"env.id: {e}") from None
        if agents.AGENTS[config.agent["name"]].make_host_train is None:
            raise ConfigError(
                f"env.backend: agent {config.agent['name']!r} runs only on the "
                "jax backend"
            )


class _Run:
    """A trainer with its budget in iterations and its jitted pieces."""

    def __init__(self, config: config_lib.RLExperimentConfig):
        import agents  # the shell composes the core and the agents

        agent_config = agents.agent_config(config.agent)
        entry = agents.AGENTS[config.agent["name"]]
        env = config.env
        kwargs = dict(
            num_envs=env.num_envs, total_env_steps=config.train.env_steps, **env.kwargs
        )
        check(config)
        self.host = env.backend == "gymnasium"
        if self.host:
            self.trainer = entry.make_host_train(
                env.id, agent_config, config.optimizer, **kwargs
            )
        else:
            self.trainer = entry.make_train(
                env.id, agent_config, config.optimizer, **kwargs
            )
        t = self.trainer
        self.iterations = getattr(t, "num_updates", None) or t.num_iterations
        self.steps_per_iteration = (
            getattr(t, "steps_per_update", None) or t.steps_per_iteration
        )
        if self.host:
            self.run = t.run
            self._evaluate = t.evaluate
        else:
            self.run = jax.jit(t.run, static_argnums=1)
            self._evaluate = jax.jit(t.evaluate, static_argnames="num_episodes")

    def evaluate(self, agent_state: Any, key: jax.Array, episodes: int) -> float:
        return float(self._evaluate(agent_state, key, num_episodes=episodes))

    def close(self) -> None:
        close = getattr(self.trainer, "close", None)
        if close is not None:
            close()


def _iterations(every: int, steps_per_iteration: int) -> int:
    return max(1, -(-every // steps_per_iteration))


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def summarize(metrics: dict[str, Any]) -> dict[str, float]:
    """One row from a chunk's per-iteration metrics ``{name: [n]}``.

    Totals (``env_steps``, ``updates``) and the learning rate / epsilon take the
    last value, ``episodes`` the sum, episode returns/lengths the mean over the
    episodes that finished in the chunk (left out when none did), and the rest
    the mean.
    """
    metrics = {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}
    last = {"env_steps", "updates", "learning_rate", "epsilon", "clip_eps"}
    episodes = metrics.get("episodes")
    row: dict[str, float] = {}
    for name, values in metrics.items():
        values = values.astype(np.float64).reshape(len(values), -1).mean(axis=1)
        if name in last:
            row[name] = float(values[-1])
        elif name == "episodes":
            row[name] = float(values.sum())
        elif name.startswith("episode_") and episodes is not None:
            weights = np.asarray(episodes, np.float64).reshape(len(values), -1).sum(1)
            ok = np.isfinite(values) & (weights > 0)
            if ok.any():
                row[name] = float(np.average(values[ok], weights=weights[ok]))
        else:
            row[name] = float(np.nanmean(values)) if np.isfinite(values).any() else 0.0
    return row


def _keys(seed: int) -> tuple[jax.Array, jax.Array]:
    init_key, eval_key = jax.random.split(jax.random.key(seed))
    return init_key, eval_key


def train(
    config: config_lib.RLExperimentConfig,
    run_path: Path,
    checkpointer: ckpt_lib.Checkpointer,
    *,
    quiet: bool = False,
) -> dict[str, float]:
    """Trains (or resumes) an RL run; returns the final evaluation."""
    run = _Run(config)
    try:
        return _train(config, run, run_path, checkpointer, quiet=quiet)
    finally:
        run.close()
        checkpointer.close()


def _train(config, run: _Run, run_path: Path, checkpointer, *, quiet: bool):
    tc = config.train
    spi = run.steps_per_iteration
    log_it = _iterations(tc.log_every, spi)
    eval_it = _round_up(_iterations(tc.eval_every, spi), log_it)
    ckpt_it = _round_up(_iterations(tc.checkpoint_every, spi), log_it)
    init_key, eval_key = _keys(config.seed)

    state = run.trainer.init(init_key)
    done = 0
    if checkpointer.latest_step() is not None:
        state, meta = checkpointer.restore(state)
        done = run_dir_lib.meta_count(meta, "iteration", checkpointer)
    kill_at = os.environ.get(KILL_AT_STEP_ENV)
    kill_at = int(kill_at) if kill_at else None

    def evaluate(iteration: int) -> dict[str, float]:
        key = jax.random.fold_in(eval_key, iteration)
        return {"mean_return": run.evaluate(state.agent, key, tc.eval_episodes)}

    if done >= run.iterations:
        results = evaluate(done)
        if not quiet:
            print(
                f"{run_path}: already trained; mean_return {results['mean_return']:.2f}"
            )
        return results

    with logger_lib.MetricLogger(
        run_path,
        total_steps=run.iterations * spi,
        quiet=quiet,
        resume_step=done * spi,
    ) as log:
        if done:
            log.message(f"resuming {run_path} from env step {done * spi}")
        results: dict[str, float] = {}
        while done < run.iterations:
            n = min(log_it, run.iterations - done)
            state, metrics = run.run(state, n)
            before, done = done * spi, done + n
            env_steps = done * spi
            log.log(env_steps, summarize(metrics), prefix="train")
            if done % eval_it == 0 or done == run.iterations:
                results = evaluate(done)
                log.log(env_steps, results, prefix="eval")
            if done % ckpt_it == 0 or done == run.iterations:
                meta = {"iteration": done, "step": env_steps}
                run_dir_lib.save_checkpoint(checkpointer, env_steps, state, meta)
            if kill_at is not None and before < kill_at <= env_steps:
                jax.block_until_ready(state)
                os.kill(os.getpid(), signal.SIGKILL)
        log.message(f"eval: mean_return {results['mean_return']:.2f}", force=True)
    return results


def evaluate_run(
    config: config_lib.RLExperimentConfig,
    run_path: Path,
    *,
    episodes: int | None = None,
) -> dict[str, float]:
    """Restores the newest checkpoint of an RL run and runs evaluation episodes.

    With the default number of episodes this reproduces the run's final
    evaluation (same key).
    """
    checkpointer = ckpt_lib.Checkpointer(run_path / run_dir_lib.CHECKPOINT_DIR)
    if checkpointer.latest_step() is None:
        raise JaxlabError(f"{run_path}: no checkpoint to evaluate")
    run = _Run(config)
    try:
        init_key, eval_key = _keys(config.seed)
        state, meta = checkpointer.restore(run.trainer.init(init_key))
        iteration = run_dir_lib.meta_count(meta, "iteration", checkpointer)
        step = run_dir_lib.meta_count(meta, "step", checkpointer)
        key = jax.random.fold_in(eval_key, iteration)
        mean_return = run.evaluate(
            state.agent, key, episodes or config.train.eval_episodes
        )
    finally:
        run.close()
        checkpointer.close()
    return {"step": step, "mean_return": mean_return}
