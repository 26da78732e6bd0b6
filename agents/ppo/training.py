"""Training loops of the on-policy agents on JAX-native environments.

A whole run is one jitted program (PureJaxRL's design): a `lax.scan` over updates,
each a `lax.scan` over `num_steps` vectorised environment steps followed by the
agent's `update`. Everything the run needs to continue exactly lives in a
`RunnerState` (a pytree of arrays that can be checkpointed), so

```python
trainer = make_train(env, PPOConfig(), {"name": "adam", "learning_rate": 2.5e-4},
                     num_envs=4, total_env_steps=500_000)
state = trainer.init(key)
state, m1 = trainer.run(state, 100)      # a chunk of 100 updates
state, m2 = trainer.run(state, 100)      # == one run of 200 updates, bit for bit
state, metrics = trainer.train(key)      # the whole budget in one program
jax.jit(jax.vmap(trainer.train))(jax.random.split(key, 5))   # 5 seeds at once
trainer.evaluate(state.agent, key, num_episodes=10)          # greedy mean return
```

Nothing in the loop calls back to the host (PureJaxRL's per-update
`jax.debug.callback` costs 2-4x here); metrics come back stacked per update.

Data-parallel ("Anakin"): with ``devices=[...]`` (two or more) each device steps
``num_envs / D`` of the environments and the agent's update averages over the
devices (`agents.data_parallel`). The result does not depend on how the
environments are split: every per-environment random key (resets, actions,
environment steps) comes from one global ``jax.random.split(key, num_envs)``
of which each device takes its slice, in single-device mode too, so 1 and D
devices give the same run up to the order of float summation (~1e-6 after tens
of updates; like any rounding difference it grows until trajectories part,
after ~100 updates on CartPole). `init` and `run` always work on
the canonical global `RunnerState` (environment leaves ``[num_envs, ...]``,
the rest unreplicated), so a checkpoint resumes on any device count:

```python
trainer = make_train(env, config, optimizer, num_envs=64, total_env_steps=1e6,
                     devices=jax.devices(), backend="shard_map")
state, metrics = trainer.run(trainer.init(key), 10)
host_state = trainer.to_host(state)       # full NumPy arrays, to checkpoint
```
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from agents import data_parallel as _dp
from agents import envs as _envs
from agents.envs import Environment
from agents.ppo.agent import Agent, Trajectory, ppo
from agents.ppo.config import PPOConfig
from jaxlab.compile import init_compiling_ahead as compile_init_ahead
from jaxlab.compile import is_staged, jit_rarely_run, jit_training
from jaxlab.config import OptimizerConfig, validate
from jaxlab.optim import make_optimizer
from jaxlab.parallel import AXIS

OptimizerLike = OptimizerConfig | Mapping[str, Any] | optax.GradientTransformation
Metrics = dict[str, jax.Array]


class RunnerState(NamedTuple):
    """Everything a training run carries from one update to the next.

    Attributes:
      agent: the agent's state (params, optimizer state, update count).
      env_state: states of the `N` environments (leaves [N, ...]).
      obs: current observations, [N, ...].
      rng: PRNG key data, [2] uint32.
      update: updates done, [] int32.
      env_steps: environment steps done (all environments), [] int32.
      episode_return: return of each environment's last finished episode, [N]
        float32 (NaN before the first one).
    """

    agent: Any
    env_state: Any
    obs: jax.Array
    rng: jax.Array
    update: jax.Array
    env_steps: jax.Array
    episode_return: jax.Array


class Trainer(NamedTuple):
    """A training run on a JAX-native environment, as jitted pure functions.

    Attributes:
      init: ``(key) -> RunnerState``.
      run: ``(runner_state, num_updates) -> (runner_state, metrics)``;
        `num_updates` is static; metrics are [num_updates] arrays.
      train: ``(key) -> (runner_state, metrics)``: `init` then `run` over the
        whole budget; ``jax.jit(jax.vmap(train))`` runs several seeds (on one
        device; a data-parallel trainer runs one seed over its devices).
      evaluate: ``(agent_state, key, *, num_episodes=10) -> mean return``
        of the deterministic policy, [] float32.
      agent: the agent being trained.
      num_updates: updates in the whole budget.
      steps_per_update: environment steps per update (``num_envs * num_steps``).
      to_host: ``(runner_state) -> runner_state`` of host NumPy arrays with the
        global shapes, on every process (checkpoint this; `run` takes it back).
      num_devices: devices the run is split across (1: a plain jitted program).

    `train_until` trains in chunks with an early stop at a target greedy return.
    """

    init: Callable[[jax.Array], RunnerState]
    run: Callable[..., tuple[RunnerState, Metrics]]
    train: Callable[[jax.Array], tuple[RunnerState, Metrics]]
    evaluate: Callable[..., jax.Array]
    agent: Agent
    num_updates: int
    steps_per_update: int
    to_host: Callable[[Any], Any] = _dp.to_host
    num_devices: int = 1

    def train_until(
        self,
        key: jax.Array,
        *,
        target_return: float,
        eval_every: int,
        eval_episodes: int = 20,
        eval_key: jax.Array | None = None,
    ) -> tuple[RunnerState, dict[str, np.ndarray]]:
        """Trains in chunks and stops at the first greedy evaluation that reaches
        `target_return` (or at the end of the budget).

        ``init(key)``, then ``run(state, eval_every)`` (compiled once) and a greedy
        evaluation of `eval_episodes` fresh episodes after each chunk; the run
        stops after the first chunk whose evaluation is ``>= target_return``. The
        last chunk is shorter if `eval_every` does not divide `num_updates`.
        Learning-rate and clip annealing follow the whole budget, so the updates
        done are exactly the first ones of `train(key)`.

        ```python
        state, metrics = trainer.train_until(key, target_return=475, eval_every=16)
        solved = metrics["eval_return"][-1] >= 475
        ```

        Args:
          key: PRNG key of the run (as for `train`).
          target_return: stop once the greedy mean return is at least this.
          eval_every: updates between evaluations (a chunk), >= 1.
          eval_episodes: episodes per evaluation, >= 1.
          eval_key: PRNG key of the evaluations (default `key`); the one after
            ``u`` updates uses ``jax.random.fold_in(eval_key, u)``.

        Returns:
          ``(runner_state, metrics)``: the state after the last chunk, and the
          per-update metrics of the updates done, as NumPy arrays, plus
          ``eval_return`` (the greedy mean return after each chunk's last
          update, NaN at the other updates).

        Raises:
          ValueError: naming the argument, for a non-finite `target_return` or
            a non-positive `eval_every` / `eval_episodes`.
        """
        number = isinstance(target_return, int | float | np.number)
        if (
            isinstance(target_return, bool)
            or not number
            or not np.isfinite(target_return)
        ):
            raise ValueError(
                f"target_return: expected a finite number, got {target_return!r}"
            )
        for name, value in (
            ("eval_every", eval_every),
            ("eval_episodes", eval_episodes),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | np.integer)
                or value < 1
            ):
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        eval_key = key if eval_key is None else eval_key
        every, episodes = int(eval_every), int(eval_episodes)
        state = init_compiling_ahead(
            self,
            key,
            min(every, self.num_updates),
            eval_key=eval_key,
            eval_episodes=episodes,
        )
        chunks, returns, done = [], [], 0
        while done < self.num_updates:
            n = min(every, self.num_updates - done)
            state, metrics = self.run(state, n)
            done += n
            key_i = jax.random.fold_in(eval_key, done)
            ret = float(self.evaluate(state.agent, key_i, num_episodes=episodes))
            chunks.append(metrics)
            returns.append(np.full(n, np.nan, np.float32))
            returns[-1][-1] = ret
            if ret >= target_return:
                break
        metrics = jax.device_get(chunks)
        out = {
            k: np.concatenate([np.asarray(m[k]) for m in metrics]) for k in metrics[0]
        }
        out["eval_return"] = np.concatenate(returns)
        return state, out


def init_compiling_ahead(
    trainer: Trainer,
    key: jax.Array,
    num_updates: int,
    *,
    eval_key: jax.Array | None = None,
    eval_episodes: int | None = None,
) -> RunnerState:
    """``trainer.init(key)``, while ``trainer.run(state, num_updates)`` (and,
    with `eval_episodes`, ``trainer.evaluate(state.agent, <a key like
    eval_key>, num_episodes=eval_episodes)``) compile on background threads,
    so the calls that follow find them compiled (`jaxlab.compile`; CartPole
    at PureJaxRL's settings, 2 cores: init + chunk + evaluation 4.0 -> 3.5 s
    from a cold start). One device only (a data-parallel `run` compiles when
    called), and only functions that can be lowered (a `Trainer` may carry
    plain ones)."""
    if trainer.num_devices != 1:
        return trainer.init(key)
    return compile_init_ahead(
        trainer.init,
        key,
        run=trainer.run,
        num_iterations=num_updates,
        evaluate=trainer.evaluate,
        eval_key=eval_key,
        eval_episodes=eval_episodes,
    )


def key_data(key: jax.Array) -> jax.Array:
    """Raw uint32 key data of a typed or raw PRNG key (checkpointable)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key


def as_config(cls: type, config: Any) -> Any:
    """A config dataclass as is, or one validated from a dict (errors name
    ``agent.<field>``)."""
    if isinstance(config, cls):
        return config
    return validate(cls, dict(config), prefix="agent")


def as_optimizer(optimizer: OptimizerLike) -> optax.GradientTransformation:
    """An optax optimizer as is, or one built by `jaxlab.optim.make_optimizer`."""
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer
    return make_optimizer(optimizer)


def as_environment(env: Environment | str) -> Environment:
    """An `Environment` as is, or `agents.envs.make(env)` for an id."""
    return _envs.make(env) if isinstance(env, str) else env


def num_updates_for(total_env_steps: float, steps_per_update: int) -> int:
    """Whole updates that fit in the budget (``total // steps_per_update``)."""
    num_updates = int(total_env_steps) // steps_per_update
    if num_updates < 1:
        raise ValueError(
            f"train.env_steps: {int(total_env_steps)} steps is less than one update "
            f"of num_envs * num_steps = {steps_per_update} steps"
        )
    return num_updates


def episode_metrics(
    done: jax.Array,
    episode_return: jax.Array,
    episode_length: jax.Array,
    *,
    axis_name: str | None = None,
) -> Metrics:
    """Mean return and length of the episodes that ended (NaN if none), and their
    count; inputs [T, N] (with `axis_name`: each device's [T, N / D], summed over
    the devices)."""
    total = (lambda x: x) if axis_name is None else lambda x: jax.lax.psum(x, axis_name)
    count = total(jnp.sum(done))
    denom = jnp.where(count > 0, count, 1)
    nan = jnp.full((), jnp.nan, jnp.float32)
    mean = lambda x: total(jnp.sum(jnp.where(done, x, 0.0))) / denom
    return {
        "episode_return": jnp.where(count > 0, mean(episode_return), nan),
        "episode_length": jnp.where(count > 0, mean(episode_length), nan),
        "episodes": count.astype(jnp.int32),
    }


def evaluate(
    env: Environment,
    agent: Agent,
    agent_state: Any,
    key: jax.Array,
    *,
    num_episodes: int = 10,
    max_steps: int | None = None,
) -> jax.Array:
    """Mean undiscounted return of the deterministic policy over fresh episodes.

    Runs `num_episodes` environments in parallel until each has finished its
    first episode (or `max_steps` steps: default the time limit, else 100,000;
    an unfinished episode counts with its partial return). Jittable and
    vmappable; every episode counts, short or long, so the mean is unbiased.

    Returns:
      The mean return, [] float32.
    """
    max_steps = max_steps or env.max_episode_steps or 100_000
    reset_key, key = jax.random.split(key)
    obs, env_state = jax.vmap(env.reset)(jax.random.split(reset_key, num_episodes))
    returns = jnp.zeros(num_episodes, jnp.float32)
    active = jnp.ones(num_episodes, jnp.bool_)

    def cond(carry):
        t, *_, active, _ = carry
        return (t < max_steps) & jnp.any(active)

    def body(carry):
        t, obs, env_state, returns, active, key = carry
        key, act_key, step_key = jax.random.split(key, 3)
        action, _, _ = agent.act(agent_state, act_key, obs, deterministic=True)
        step_keys = jax.random.split(step_key, num_episodes)
        ts = jax.vmap(env.step)(step_keys, env_state, action)
        returns = returns + jnp.where(active, ts.reward, 0.0)
        active = active & ~(ts.terminated | ts.truncated)
        return t + 1, ts.obs, ts.state, returns, active, key

    carry = (0, obs, env_state, returns, active, key)
    _, _, _, returns, _, _ = jax.lax.while_loop(cond, body, carry)
    return jnp.mean(returns)


# Above this, a rollout's environment draws (`draw_rollout`: a reset per step
# and environment) are made step by step instead (large observations).
MAX_DRAWN_BYTES = 64 << 20


def drawn_bytes(draw: Callable[[jax.Array], Any], count: int) -> int:
    """Bytes of `count` results of ``draw(key)`` (one raw uint32 key each)."""
    out = jax.eval_shape(draw, jax.ShapeDtypeStruct((2,), jnp.uint32))
    return count * sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(out))


def make_on_policy_train(
    env: Environment,
    agent: Agent,
    *,
    num_envs: int,
    num_steps: int,
    num_updates: int,
    devices: Sequence[jax.Device] | None = None,
    backend: str = "pmap",
    rollout_unroll: int = 1,
) -> Trainer:
    """The jitted training loop of any on-policy `Agent` (PPO, A2C).

    Randomness is drawn per environment from global splits (``jax.random.split(
    key, num_envs)``) and `act` gets one key per environment, so the run is the
    same whether it is split across devices or not.

    Args:
      env: a JAX-native, auto-resetting environment.
      agent: an agent with the `agents.ppo.Agent` contract; on several devices
        its `update` is called with ``axis_name=AXIS`` and must average over it.
      num_envs: environments stepped in parallel, `N` (all devices together).
      num_steps: rollout length per environment and update, `T`.
      num_updates: updates in the whole budget (`train` runs them all).
      devices: with two or more devices (possibly of several processes), each
        steps ``N / D`` environments (Anakin data parallelism); None or one
        device: a plain jitted program without collectives.
      backend: ``"pmap"`` or ``"shard_map"`` (same results).
      rollout_unroll: environment steps per trip of the rollout loop
        (``lax.scan(..., unroll=)``; same results). XLA:CPU pays a fixed cost
        per loop trip: at PureJaxRL's CartPole defaults 2 is 3.6% faster per
        update but compiles 0.18 s longer (a net loss for one cold 500k-step
        run, a gain for longer runs or a warm compilation cache); 4 gains
        less, 8 is 1.5x slower (`benchmarks/README.md`).

    Returns:
      A `Trainer` whose `init` and `run` use the canonical global `RunnerState`
      (environment leaves [N, ...], the rest unreplicated) on any device count.

    Raises:
      ValueError: naming the field, e.g. ``env.num_envs`` not divisible by the
        device count.
    """
    if num_envs < 1 or num_steps < 1 or num_updates < 1:
        raise ValueError(
            "num_envs, num_steps and num_updates must be positive, got "
            f"{num_envs}, {num_steps}, {num_updates}"
        )
    if (
        isinstance(rollout_unroll, bool)
        or not isinstance(rollout_unroll, int)
        or rollout_unroll < 1
    ):
        raise ValueError(
            f"rollout_unroll must be a positive int, got {rollout_unroll!r}"
        )
    devices = _dp.resolve_devices(devices, backend)
    num_devices = 1 if devices is None else len(devices)
    axis_name = None if devices is None else AXIS
    local_envs = _dp.split_evenly(num_envs, num_devices, "env.num_envs", "environments")
    update_kwargs = {} if axis_name is None else {"axis_name": axis_name}
    env_draw, env_step_drawn = _envs.drawn_step(env)
    if drawn_bytes(env_draw, num_steps * local_envs) > MAX_DRAWN_BYTES:
        env_draw, env_step_drawn = _envs.drawn_step(env._replace(draw=None))
    vstep = jax.vmap(env_step_drawn)
    if agent.draw is None or agent.act_drawn is None:
        agent_draw, act_drawn = (lambda keys: keys), agent.act
    else:
        agent_draw, act_drawn = agent.draw, agent.act_drawn

    def rollout_values(params: Any, obs: jax.Array) -> jax.Array:
        """The critic's values v(obs) [T, N / D] of a rollout's observations.

        One batched pass after the rollout rather than one per step: the params
        are those the rollout acted with, so the values are the same (up to
        float rounding: a [T * N]-row product may round its last bit otherwise
        than a [N]-row one), and the critic no longer runs in the loop of steps
        (PureJaxRL's defaults on a CPU: 2.32 -> 2.24 s for 976 updates). The
        host trainer (`agents.ppo.host`) does the same.
        """
        flat = obs.reshape(-1, *obs.shape[2:])
        return agent.networks.value(params, flat).reshape(obs.shape[:2])

    def per_env(key: jax.Array) -> jax.Array:
        """This device's slice of ``num_envs`` keys split from `key`."""
        return _dp.local_slice(jax.random.split(key, num_envs), axis_name, local_envs)

    def draw_rollout(rng: jax.Array) -> tuple[jax.Array, Any]:
        """The random draws of a rollout's `num_steps` steps, made before them.

        The keys are those of splitting ``rng`` at each step (so the run is the
        same), but the actions' noise and the environments' draws (a fresh
        episode's reset for every step) are then made for all the steps in one
        batched call each: inside the loop of steps each draw would be several
        small kernels per step (PureJaxRL's defaults on a CPU: 1.47 -> 0.93 ms
        per 128-step rollout of 4 CartPoles).
        """

        def split(rng: jax.Array, _):
            rng, act_key, step_key = jax.random.split(rng, 3)
            return rng, (act_key, step_key)

        rng, (act_keys, step_keys) = jax.lax.scan(split, rng, None, num_steps)
        act_keys, step_keys = jax.vmap(per_env)(act_keys), jax.vmap(per_env)(step_keys)
        noise = jax.vmap(agent_draw)(act_keys)  # [T, N / D, ...]
        return rng, (noise, jax.vmap(jax.vmap(env_draw))(step_keys))

    def init(key: jax.Array) -> RunnerState:
        key = key_data(key)
        key, reset_key, agent_key = jax.random.split(key, 3)
        obs, env_state = jax.vmap(env.reset)(jax.random.split(reset_key, num_envs))
        return RunnerState(
            agent=agent.init(agent_key, obs),
            env_state=env_state,
            obs=obs,
            rng=key,
            update=jnp.zeros((), jnp.int32),
            env_steps=jnp.zeros((), jnp.int32),
            episode_return=jnp.full((num_envs,), jnp.nan, jnp.float32),
        )

    def env_step(rs: RunnerState, drawn: Any):
        noise, env_drawn = drawn
        # v(obs) is left out here (its computation is then dead code, which XLA
        # drops): `rollout_values` computes it after the loop of steps.
        action, log_prob, _ = act_drawn(rs.agent, noise, rs.obs)
        ts = vstep(env_drawn, rs.env_state, action)
        transition = Trajectory(
            obs=rs.obs,
            action=action,
            log_prob=log_prob,
            value=None,
            reward=ts.reward,
            terminated=ts.terminated,
            truncated=ts.truncated,
            final_obs=ts.info["final_obs"],
        )
        done = ts.terminated | ts.truncated
        last_return = jnp.where(done, ts.info["episode_return"], rs.episode_return)
        rs = rs._replace(env_state=ts.state, obs=ts.obs, episode_return=last_return)
        episode = (done, ts.info["episode_return"], ts.info["episode_length"])
        return rs, (transition, episode)

    def update_step(rs: RunnerState, _):
        rng, drawn = draw_rollout(rs.rng)
        rs, (trajectory, episode) = jax.lax.scan(
            env_step, rs, drawn, unroll=rollout_unroll
        )
        trajectory = trajectory._replace(
            value=rollout_values(rs.agent.params, trajectory.obs)
        )
        rng, update_key = jax.random.split(rng)
        agent_state, metrics = agent.update(
            rs.agent, trajectory, update_key, **update_kwargs
        )
        env_steps = rs.env_steps + num_envs * num_steps
        rs = rs._replace(
            agent=agent_state, rng=rng, update=rs.update + 1, env_steps=env_steps
        )
        metrics = {
            **metrics,
            **episode_metrics(*episode, axis_name=axis_name),
            "env_steps": env_steps,
        }
        return rs, metrics

    def run_local(rs: RunnerState, num_updates: int) -> tuple[RunnerState, Metrics]:
        return jax.lax.scan(update_step, rs, None, num_updates)

    if devices is None:
        run = jit_training(run_local, static_argnames="num_updates")
        init_jit = jit_rarely_run(init)
    else:
        init_jit, run = _dp.parallelize(
            init,
            run_local,
            devices=devices,
            backend=backend,
            axes=RunnerState(
                agent=None,
                env_state=0,
                obs=0,
                rng=None,
                update=None,
                env_steps=None,
                episode_return=0,
            ),
        )

    def train(key: jax.Array) -> tuple[RunnerState, Metrics]:
        # Not jitted itself: called directly it reuses the compiled `init` and
        # `run` (`run` compiles while `init` compiles and runs); under
        # `jax.jit(jax.vmap(train))` it is traced as a whole.
        if is_staged(key):
            return run(init_jit(key), num_updates)
        return run(init_compiling_ahead(trainer, key, num_updates), num_updates)

    @functools.partial(jit_rarely_run, static_argnames=("num_episodes", "max_steps"))
    def evaluate_fn(
        agent_state: Any,
        key: jax.Array,
        *,
        num_episodes: int = 10,
        max_steps: int | None = None,
    ) -> jax.Array:
        return evaluate(
            env,
            agent,
            agent_state,
            key_data(key),
            num_episodes=num_episodes,
            max_steps=max_steps,
        )

    trainer = Trainer(
        init=init_jit,
        run=run,
        train=train,
        evaluate=evaluate_fn,
        agent=agent,
        num_updates=num_updates,
        steps_per_update=num_envs * num_steps,
        num_devices=num_devices,
    )
    return trainer


def check_minibatches(config: PPOConfig, num_envs: int, num_devices: int = 1) -> None:
    """Raises a `ValueError` naming the field if minibatches do not divide (the
    batch, or on several devices each minibatch into equal device shares)."""
    batch = num_envs * config.num_steps
    if batch % config.num_minibatches:
        raise ValueError(
            f"agent.num_minibatches: {config.num_minibatches} does not divide the "
            f"batch of env.num_envs * agent.num_steps = {num_envs} * "
            f"{config.num_steps} = {batch}"
        )
    minibatch = batch // config.num_minibatches
    if minibatch % num_devices:
        raise ValueError(
            f"agent.num_minibatches: minibatches of {minibatch} transitions "
            f"cannot be split evenly across {num_devices} devices"
        )


def make_train(
    env: Environment | str,
    config: PPOConfig | Mapping[str, Any],
    optimizer: OptimizerLike,
    *,
    num_envs: int,
    total_env_steps: float,
    devices: Sequence[jax.Device] | None = None,
    backend: str = "pmap",
    rollout_unroll: int = 1,
) -> Trainer:
    """A PPO training run on a JAX-native environment.

    Args:
      env: an `Environment`, or an id for `agents.envs.make`.
      config: PPO hyperparameters (or a dict of them, validated).
      optimizer: an `OptimizerConfig` (or dict, built by
        `jaxlab.optim.make_optimizer`) or an optax optimizer; PPO adds
        `config.max_grad_norm` clipping and `config.anneal_lr`.
      num_envs: environments stepped in parallel.
      total_env_steps: budget; the run does ``total // (num_envs * num_steps)``
        whole updates.
      devices: two or more devices to split the environments across (see
        `make_on_policy_train`); None: one device.
      backend: ``"pmap"`` or ``"shard_map"``.
      rollout_unroll: environment steps per rollout-loop trip (see
        `make_on_policy_train`; same results, trades compile time for speed).

    Returns:
      A `Trainer`.
    """
    env = as_environment(env)
    config = as_config(PPOConfig, config)
    resolved = _dp.resolve_devices(devices, backend)
    num_devices = 1 if resolved is None else len(resolved)
    _dp.split_evenly(num_envs, num_devices, "env.num_envs", "environments")
    check_minibatches(config, num_envs, num_devices)
    num_updates = num_updates_for(total_env_steps, num_envs * config.num_steps)
    agent = ppo(
        config,
        env.observation_spec,
        env.action_spec,
        as_optimizer(optimizer),
        num_updates=num_updates,
    )
    return make_on_policy_train(
        env,
        agent,
        num_envs=num_envs,
        num_steps=config.num_steps,
        num_updates=num_updates,
        devices=devices,
        backend=backend,
        rollout_unroll=rollout_unroll,
    )


def train(
    env: Environment | str = "CartPole-v1",
    total_steps: float = 5e5,
    seed: int = 0,
    *,
    num_envs: int = 4,
    learning_rate: float = 2.5e-4,
    optimizer: OptimizerLike | None = None,
    target_return: float | None = None,
    eval_every: float | None = None,
    eval_episodes: int = 20,
    **overrides: Any,
) -> tuple[Any, dict[str, np.ndarray]]:
    """Trains PPO in one call, for notebooks: PureJaxRL's defaults plus overrides.

    ```python
    agent_state, metrics = agents.ppo.train("CartPole-v1", 5e5, seed=0)
    agent_state, metrics = agents.ppo.train("Pendulum-v1", 1e6, gamma=0.95, ...)
    # Stop at the first greedy evaluation >= 475 (`Trainer.train_until`):
    agent_state, metrics = agents.ppo.train("CartPole-v1", 5e5, target_return=475)
    ```

    Without `target_return` the whole budget runs as one program; with it, the
    run goes in chunks of `eval_every` steps, each followed by a greedy
    evaluation, and stops at the first that reaches `target_return` (CartPole
    at PureJaxRL's settings: after 25k-80k of the 500k steps).

    Args:
      env: an id for `agents.envs.make`, or an `Environment`.
      total_steps: environment-step budget.
      seed: seed of the run.
      num_envs: environments stepped in parallel.
      learning_rate: Adam's learning rate (eps 1e-5, as PureJaxRL), unless
        `optimizer` is given.
      optimizer: an optimizer config or optax optimizer, replacing the default.
      target_return: stop at the first greedy evaluation whose mean return is
        at least this (None: run the whole budget, no evaluation).
      eval_every: environment steps between evaluations (whole updates of
        ``num_envs * num_steps`` steps, rounded down; default 16 updates); only
        with `target_return`.
      eval_episodes: episodes per evaluation.
      **overrides: `PPOConfig` fields.

    Returns:
      ``(agent_state, metrics)``: the final `PPOState` and a dict of per-update
      NumPy arrays (with `target_return`, of the updates done, plus
      ``eval_return``: see `Trainer.train_until`).

    Raises:
      ValueError: naming the argument, e.g. `eval_every` without
        `target_return`, or shorter than one update.
    """
    if target_return is None and eval_every is not None:
        raise ValueError("eval_every: only used with target_return (early stop)")
    config = PPOConfig(**overrides)
    if optimizer is None:
        optimizer = {"name": "adam", "learning_rate": learning_rate, "eps": 1e-5}
    trainer = make_train(
        env, config, optimizer, num_envs=num_envs, total_env_steps=total_steps
    )
    key = jax.random.PRNGKey(seed)
    if target_return is None:
        runner_state, metrics = trainer.train(key)
        return runner_state.agent, jax.device_get(metrics)
    if eval_every is None:
        every = 16
    else:
        every = int(eval_every) // trainer.steps_per_update
        if every < 1:
            raise ValueError(
                f"eval_every: {eval_every} steps is less than one update of "
                f"num_envs * num_steps = {trainer.steps_per_update} steps"
            )
    runner_state, metrics = trainer.train_until(
        key,
        target_return=target_return,
        eval_every=every,
        eval_episodes=eval_episodes,
    )
    return runner_state.agent, metrics
