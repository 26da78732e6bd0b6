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
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxlab import checkpoint as ckpt_lib
from jaxlab import compile as compile_lib
from jaxlab import config as config_lib
from jaxlab import logger as logger_lib
from jaxlab import parallel
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
    """A trainer with its budget in iterations and its jitted pieces.

    On the jax backend the trainer is data-parallel over the devices of
    ``config.parallel`` (`jaxlab.parallel.devices`): PPO and A2C give the same
    run on any number of devices, so ``devices: auto`` takes as many as divide
    ``env.num_envs``; DQN's replay is sharded per device, which changes its
    results, so DQN (and REINFORCE) use one device unless ``parallel.devices``
    asks for more. `single_device` (evaluation) forces one device.
    """

    def __init__(
        self, config: config_lib.RLExperimentConfig, *, single_device: bool = False
    ):
        import agents  # the shell composes the core and the agents

        agent_config = agents.agent_config(config.agent)
        entry = agents.AGENTS[config.agent["name"]]
        env = config.env
        kwargs = dict(
            num_envs=env.num_envs, total_env_steps=config.train.env_steps, **env.kwargs
        )
        check(config)
        self.host = env.backend == "gymnasium"
        self.devices: list[jax.Device] = []
        if self.host:
            if config.parallel.devices not in ("auto", 1):
                raise ConfigError(
                    "parallel.devices: the gymnasium backend steps its environments "
                    "on the host and trains on one device; use env.backend: jax to "
                    "train data-parallel"
                )
            self.trainer = entry.make_host_train(
                env.id, agent_config, config.optimizer, **kwargs
            )
        else:
            self.trainer = self._make_parallel(
                config, entry, agent_config, kwargs, single_device
            )
        t = self.trainer
        self.iterations = getattr(t, "num_updates", None) or t.num_iterations
        self.steps_per_iteration = (
            getattr(t, "steps_per_update", None) or t.steps_per_iteration
        )
        self._to_host = getattr(t, "to_host", None) or jax.device_get
        if self.host:
            self.run = t.run
            self._evaluate = t.evaluate
        elif self.devices:
            self.run = t.run  # already a jitted data-parallel program
            self._evaluate = jax.jit(t.evaluate, static_argnames="num_episodes")
        else:
            # The trainer's own jitted functions keep their compiler options
            # (`jaxlab.compile`: LLVM level 1 for PPO's `run`, 0 for `evaluate`
            # on a CPU), which an outer `jax.jit` would drop.
            self.run = _jitted(t.run, static_argnums=1)
            self._evaluate = _jitted(t.evaluate, static_argnames="num_episodes")

    def _make_parallel(self, config, entry, agent_config, kwargs, single_device):
        spec = config.parallel.devices
        candidates = [] if single_device else parallel.devices(spec)
        flexible = spec == "auto" and parallel.process_count() == 1
        if not flexible:
            counts = [len(candidates)] if len(candidates) > 1 else []
        elif config.agent["name"] in ("dqn", "reinforce"):
            counts = []
        else:  # the most devices that split the environments evenly
            counts = list(range(len(candidates), 1, -1))

        def make(**parallel_kwargs):
            return entry.make_train(
                config.env.id,
                agent_config,
                config.optimizer,
                **parallel_kwargs,
                **kwargs,
            )

        for n in counts:
            try:
                trainer = make(devices=candidates[:n], backend=config.parallel.backend)
            except ValueError as e:
                if flexible:
                    continue
                raise ConfigError(str(e)) from None
            self.devices = candidates[:n]
            return trainer
        try:
            return make()
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def init_compiling_ahead(
        self, key: jax.Array, chunk: int | None, eval_key: jax.Array, episodes: int
    ) -> Any:
        """``trainer.init(key)``, while ``run(state, chunk)`` (unless `chunk` is
        None) and the evaluation compile on background threads
        (`jaxlab.compile.init_compiling_ahead`). One process and one device on
        the jax backend only; elsewhere just ``init``."""
        if not self.can_compile_ahead:
            return self.trainer.init(key)
        return compile_lib.init_compiling_ahead(
            self.trainer.init,
            key,
            run=self.run,
            num_iterations=chunk,
            evaluate=self._evaluate,
            eval_key=eval_key,
            eval_episodes=episodes,
        )

    def compile_chunk_later(self, state: Any, chunk: int) -> Any:
        """A future of ``run(state, chunk)``'s compilation on a background
        thread (`jaxlab.compile.compile_in_background`), or None where
        `can_compile_ahead` is false."""
        if not self.can_compile_ahead:
            return None
        abstract = jax.eval_shape(lambda s: s, state)
        return compile_lib.compile_in_background(
            lambda: self.run.lower(abstract, chunk)
        )

    @property
    def can_compile_ahead(self) -> bool:
        # On one device `run` and `evaluate` are jitted (`_jitted`).
        return not self.host and not self.devices and parallel.process_count() == 1

    def to_host(self, tree: Any) -> Any:
        """A (possibly sharded, multi-process) state as host arrays."""
        return self._to_host(tree)

    def evaluate(self, agent_state: Any, key: jax.Array, episodes: int) -> float:
        if self.devices:
            # One device's copy of the replicated agent: evaluating the
            # replicated arrays would run the episodes on every device.
            agent_state = jax.tree.map(_local_copy, agent_state)
        return float(self._evaluate(agent_state, key, num_episodes=episodes))

    def close(self) -> None:
        close = getattr(self.trainer, "close", None)
        if close is not None:
            close()


def _jitted(fun: Any, **jit_kwargs: Any) -> Any:
    """`fun` itself if it is jitted already (it can ``.lower``), else
    ``jax.jit(fun, **jit_kwargs)``."""
    return fun if hasattr(fun, "lower") else jax.jit(fun, **jit_kwargs)


def last_chunk(iterations: int, done: int, log: int) -> int:
    """Length of a run's last chunk, resuming after `done` of `iterations` in
    chunks of `log` (shorter than `log` when `log` does not divide the rest)."""
    rest = iterations - done
    return rest - log * ((rest - 1) // log) if rest > 0 else 0


def _local_copy(x: Any) -> Any:
    if isinstance(x, jax.Array) and len(x.addressable_shards) > 1:
        return x.addressable_shards[0].data
    return x


def _iterations(every: int, steps_per_iteration: int) -> int:
    return max(1, -(-every // steps_per_iteration))


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class Cadence(NamedTuple):
    """When a run logs, evaluates and checkpoints, in training iterations.

    `eval` and `checkpoint` are multiples of `log` (the chunk length), so they
    fall on chunk boundaries; the last chunk may be shorter than `log`.
    """

    log: int
    eval: int
    checkpoint: int


def cadence(
    train_config: config_lib.RLTrainConfig, steps_per_iteration: int
) -> Cadence:
    """The cadences of `train_config` (env steps) in whole iterations."""
    tc, spi = train_config, steps_per_iteration
    log = _iterations(tc.log_every, spi)
    return Cadence(
        log=log,
        eval=_round_up(_iterations(tc.eval_every, spi), log),
        checkpoint=_round_up(_iterations(tc.checkpoint_every, spi), log),
    )


def kill_step() -> int | None:
    """The env step of the fault-injection hook (`KILL_AT_STEP_ENV`), if set."""
    value = os.environ.get(KILL_AT_STEP_ENV)
    return int(value) if value else None


def kill_if_due(kill_at: int | None, before: int, after: int, state: Any) -> None:
    """SIGKILLs this process if the chunk from env step `before` to `after`
    crossed `kill_at` (a testing hook: a run killed at any point resumes)."""
    if kill_at is not None and before < kill_at <= after:
        jax.block_until_ready(state)
        # Several processes: die together, after process 0's checkpoint.
        parallel.sync("jaxlab-fault-kill")
        os.kill(os.getpid(), signal.SIGKILL)


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
    checkpointer: ckpt_lib.Checkpointer | None,
    *,
    quiet: bool = False,
) -> dict[str, float]:
    """Trains (or resumes) an RL run; returns the final evaluation.

    `checkpointer` is None on the processes other than 0 of a multi-process
    run: they write nothing, and take the restored state from process 0.
    """
    run = _Run(config)
    try:
        return _train(config, run, run_path, checkpointer, quiet=quiet)
    finally:
        run.close()
        if checkpointer is not None:
            checkpointer.close()


def _restore(run: _Run, state: Any, checkpointer) -> tuple[Any, int]:
    """The newest checkpoint's state and iteration (process 0 reads it, the
    others of a multi-process run receive it), or `state` and 0."""
    multi = parallel.process_count() > 1
    done = 0
    if not multi and (checkpointer is None or checkpointer.latest_step() is None):
        return state, 0
    host = run.to_host(state) if (multi or run.devices) else state
    if checkpointer is not None and checkpointer.latest_step() is not None:
        host, meta = checkpointer.restore(host)
        done = run_dir_lib.meta_count(meta, "iteration", checkpointer)
    elif not multi:
        return state, 0
    if multi:
        host, done = parallel.broadcast_from_main((host, np.int64(done)))
        if int(done) == 0:
            return state, 0
    return host, int(done)


def _train(config, run: _Run, run_path: Path, checkpointer, *, quiet: bool):
    tc = config.train
    spi = run.steps_per_iteration
    log_it, eval_it, ckpt_it = cadence(tc, spi)
    init_key, eval_key = _keys(config.seed)
    main = checkpointer is not None

    # A fresh run's first chunk; none for a finished run (it only evaluates).
    finished = main and checkpointer.latest_step() == run.iterations * spi
    first = None if finished else min(log_it, run.iterations)
    state = run.init_compiling_ahead(init_key, first, eval_key, tc.eval_episodes)
    state, done = _restore(run, state, checkpointer)
    kill_at = kill_step()

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

    with logger_lib.make_logger(
        run_path,
        main=main,
        total_steps=run.iterations * spi,
        quiet=quiet,
        resume_step=done * spi,
    ) as log:
        if done:
            log.message(f"resuming {run_path} from env step {done * spi}")
        if run.devices:
            log.message(
                f"data-parallel over {len(run.devices)} devices "
                f"({config.parallel.backend})"
            )
        results: dict[str, float] = {}
        # A shorter last chunk is another program: it compiles on a background
        # thread while the run trains (PureJaxRL's CartPole config: 976
        # updates in chunks of 10, a last chunk of 6, ~2 s to compile).
        last = last_chunk(run.iterations, done, log_it)
        ahead = last not in (0, log_it) and run.iterations - done > log_it
        pending = None
        while done < run.iterations:
            n = min(log_it, run.iterations - done)
            if pending is not None and n == last:
                pending.exception()  # wait; a failure is raised by the call
                pending = None
            state, metrics = run.run(state, n)
            if ahead:  # typed like the state the last chunk will get
                ahead, pending = False, run.compile_chunk_later(state, last)
            before, done = done * spi, done + n
            env_steps = done * spi
            log.log(env_steps, summarize(run.to_host(metrics)), prefix="train")
            if done % eval_it == 0 or done == run.iterations:
                results = evaluate(done)
                log.log(env_steps, results, prefix="eval")
            if done % ckpt_it == 0 or done == run.iterations:
                meta = {"iteration": done, "step": env_steps}
                host = run.to_host(state)  # a collective on several processes
                if main:
                    run_dir_lib.save_checkpoint(checkpointer, env_steps, host, meta)
            kill_if_due(kill_at, before, env_steps, state)
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
    evaluation (same key). A population's directory (or a vmapped member's)
    evaluates its members (`jaxlab.population.evaluate_run`).
    """
    from jaxlab import population

    if population.is_population(run_path):
        return population.evaluate_run(run_path, episodes=episodes)
    checkpointer = ckpt_lib.Checkpointer(run_path / run_dir_lib.CHECKPOINT_DIR)
    if checkpointer.latest_step() is None:
        raise JaxlabError(f"{run_path}: no checkpoint to evaluate")
    run = _Run(config, single_device=True)
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
