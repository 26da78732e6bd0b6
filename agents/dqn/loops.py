"""DQN training on JAX-native environments: the whole run is one jitted program.

```python
trainer = make_train(envs.make("CartPole-v1"), config, optax.adam(1e-3),
                     num_envs=8, total_env_steps=50_000)
runner, metrics = jax.jit(trainer.train)(key)                 # one seed
runner, metrics = jax.jit(jax.vmap(trainer.train))(keys)      # many seeds
run = jax.jit(trainer.run, static_argnums=1)                  # or in chunks:
runner, m1 = run(trainer.init(key), 10)
runner, m2 = run(runner, 20)                                  # == 30 at once
score = jax.jit(trainer.evaluate, static_argnums=2)(runner.agent, key, 10)
```

One iteration is `config.train_freq` vectorized environment steps (each adds
`num_envs` transitions to the replay), then, once the replay holds
`config.replay.min_size` transitions, `config.gradient_steps` learner updates
(`lax.cond`). Metrics come back stacked per iteration; nothing is printed or
logged from inside the program.

The pieces shared with the gymnasium loop (`agents.dqn.host`) are in
`agents.dqn.rollout`.

Data-parallel (``devices=[...]``, two or more; `agents.data_parallel`): a
replicated learner with per-device replay shards. Each device steps
``num_envs / D`` environments and writes their transitions into its own shard
of ``capacity / D``; each learner step samples ``batch_size / D`` transitions
per device (with a per-device key) and averages the gradients over the devices,
so the parameters and target networks stay identical everywhere. The replay
is the global state's ``[capacity, ...]`` arrays, device ``i`` holding rows
``i * capacity / D`` onwards. Unlike the on-policy loops, a D-device run is not
the 1-device run: which transitions are sampled depends on the shards (and
exploration draws per device), so it matches in distribution only. A checkpoint
still restores on any device count (the shards are then read as one buffer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from agents import data_parallel as _dp
from agents.dqn.agent import Agent, DQNState, dqn
from agents.dqn.config import DQNConfig, as_dqn_config
from agents.dqn.networks import q_network
from agents.dqn.replay import ReplayState
from agents.dqn.rollout import (
    EpisodeStats,
    Metrics,
    NStepWindow,
    RunnerState,
    as_optimizer,
    check_discrete,
    iteration_metrics,
    make_core,
)
from agents.envs import Environment
from jaxlab.parallel import AXIS


class Trainer(NamedTuple):
    """Pure functions of a DQN training run on a JAX-native environment.

    Attributes:
      init: ``(key) -> RunnerState``.
      run: ``(runner_state, num_iterations) -> (runner_state, metrics)``; jit
        with `num_iterations` static. Metrics: dict of `[num_iterations]` arrays
        (see `make_train`).
      train: ``(key) -> (runner_state, metrics)``, `init` then `run` for the
        whole budget; jit it, or ``jit(vmap(train))`` over seeds.
      evaluate: ``(agent_state, key, num_episodes) -> mean greedy return []``;
        jit with `num_episodes` static.
      agent: the agent's pure functions.
      num_iterations: iterations in the whole budget.
      steps_per_iteration: environment steps per iteration
        (``num_envs * train_freq``).
      to_host: ``(runner_state) -> runner_state`` of host NumPy arrays with the
        global shapes, on every process (to checkpoint; `run` takes it back).
      num_devices: devices the run is split across (1: a plain program).
    """

    init: Callable[[jax.Array], RunnerState]
    run: Callable[[RunnerState, int], tuple[RunnerState, Metrics]]
    train: Callable[[jax.Array], tuple[RunnerState, Metrics]]
    evaluate: Callable[[DQNState, jax.Array, int], jax.Array]
    agent: Agent
    num_iterations: int
    steps_per_iteration: int
    to_host: Callable[[Any], Any] = _dp.to_host
    num_devices: int = 1


# The split axis of each part of a `RunnerState` (None: replicated).
_AXES = RunnerState(
    agent=None,
    replay=ReplayState(data=0, insert_pos=None, size=None),
    env_state=0,
    obs=0,
    window=NStepWindow(
        obs=1,
        action=1,
        reward=1,
        terminated=1,
        truncated=1,
        next_obs=1,
        fill=None,
    ),
    rng=None,
    env_steps=None,
    iteration=None,
)


# ------------------------------------------------------------ evaluation


def evaluate(
    env: Environment,
    agent: Agent,
    agent_state: DQNState,
    key: jax.Array,
    *,
    num_episodes: int,
    max_steps: int | None = None,
) -> jax.Array:
    """Mean undiscounted return of greedy (``epsilon = 0``) episodes.

    Runs `num_episodes` environments in parallel, each until its first episode
    ends (`lax.while_loop`, stopping when all have ended), so the result is
    jittable and vmappable.

    Args:
      env: a JAX-native environment.
      agent: the agent's functions.
      agent_state: its state (only `params` are used).
      key: random key (initial states).
      num_episodes: episodes to average, static.
      max_steps: stop after this many steps; an episode still running then
        counts its partial return. Defaults to the environment's time limit,
        or 100,000 steps without one.

    Returns:
      The mean return, `[]` float32.
    """
    limit = max_steps or env.max_episode_steps or 100_000
    reset_key, key = jax.random.split(key)
    obs, env_state = jax.vmap(env.reset)(jax.random.split(reset_key, num_episodes))
    zeros = jnp.zeros((num_episodes,), jnp.float32)
    finished = jnp.zeros((num_episodes,), jnp.bool_)

    def cond(carry: tuple) -> jax.Array:
        t, _, _, _, finished, _, _ = carry
        return (t < limit) & ~jnp.all(finished)

    def body(carry: tuple) -> tuple:
        t, key, env_state, obs, finished, returns, running = carry
        key, act_key, step_key = jax.random.split(key, 3)
        actions = agent.act(agent_state, act_key, obs, 0.0)
        ts = jax.vmap(env.step)(
            jax.random.split(step_key, num_episodes), env_state, actions
        )
        ended = (ts.terminated | ts.truncated) & ~finished
        returns = jnp.where(ended, ts.info["episode_return"], returns)
        running = jnp.where(finished, running, ts.info["episode_return"])
        return t + 1, key, ts.state, ts.obs, finished | ended, returns, running

    carry = (jnp.zeros((), jnp.int32), key, env_state, obs, finished, zeros, zeros)
    _, _, _, _, finished, returns, running = jax.lax.while_loop(cond, body, carry)
    return jnp.mean(jnp.where(finished, returns, running))


# ------------------------------------------------------------ training


def make_train(
    env: Environment,
    config: DQNConfig | Mapping[str, Any],
    optimizer: optax.GradientTransformation | Mapping[str, Any] | Any,
    *,
    num_envs: int,
    total_env_steps: int,
    network: Any = None,
    devices: Sequence[jax.Device] | None = None,
    backend: str = "pmap",
) -> Trainer:
    """Builds the pure functions of a DQN run on a JAX-native environment.

    Per-iteration metrics (each `[num_iterations]`): ``env_steps`` and
    ``updates`` (totals after the iteration), ``epsilon`` (of its last step),
    ``episodes`` (episodes finished in it), ``episode_return`` and
    ``episode_length`` (their means; 0 when none finished), and the learner
    phase's means ``loss``, ``q_mean``, ``td_abs``, ``grad_norm`` with
    ``learning`` (1 if the phase ran, else 0 and the others 0).

    Args:
      env: a JAX-native environment with a discrete action space.
      config: a `DQNConfig` (or a dict validated into one).
      optimizer: an optax optimizer, or an `OptimizerConfig`/dict for
        `jaxlab.optim.make_optimizer`.
      num_envs: parallel environments `N`.
      total_env_steps: environment steps of `train`; rounded up to whole
        iterations of ``num_envs * train_freq`` steps.
      network: ``init``/``apply`` Q-network; default `q_network` from `config`.
      devices: two or more devices (possibly of several processes) to split
        the environments and the replay across (see the module docstring);
        None or one device: a plain program. `init` and `run` then use jitted,
        global states whatever the device count.
      backend: ``"pmap"`` or ``"shard_map"``.

    Returns:
      A `Trainer`.

    Raises:
      ValueError: naming the field when `num_envs`, ``replay.capacity`` or
        ``replay.batch_size`` cannot be split evenly across the devices.
    """
    if not isinstance(config, DQNConfig):
        config = as_dqn_config(config)
    if num_envs < 1:
        raise ValueError(f"num_envs must be positive, got {num_envs}")
    if total_env_steps < 1:
        raise ValueError(f"total_env_steps must be positive, got {total_env_steps}")
    num_actions = check_discrete(env.action_spec, env.name)
    if network is None:
        network = q_network(
            num_actions,
            hidden=config.hidden,
            activation=config.activation,
            dueling=config.dueling,
        )
    devices = _dp.resolve_devices(devices, backend)
    num_devices = 1 if devices is None else len(devices)
    axis_name = None if devices is None else AXIS
    local_envs = _dp.split_evenly(num_envs, num_devices, "env.num_envs", "environments")
    _dp.split_evenly(
        config.replay.capacity,
        num_devices,
        "agent.replay.capacity",
        "replay slots",
    )
    _dp.split_evenly(
        config.replay.batch_size,
        num_devices,
        "agent.replay.batch_size",
        "sampled transitions",
    )
    agent = dqn(network, as_optimizer(optimizer), config)
    obs_spec = env.observation_spec
    global_core = make_core(agent, config, num_envs=num_envs, obs_spec=obs_spec)
    core = make_core(
        agent,
        config,
        num_envs=local_envs,
        obs_spec=obs_spec,
        axis_name=axis_name,
        num_devices=num_devices,
    )
    steps_per_iteration = num_envs * config.train_freq
    total_iterations = math.ceil(total_env_steps / steps_per_iteration)

    def init(key: jax.Array) -> RunnerState:
        env_key, core_key = jax.random.split(key)
        obs, env_state = jax.vmap(env.reset)(jax.random.split(env_key, num_envs))
        return global_core.init(core_key, obs, env_state)

    def env_step(
        carry: tuple[RunnerState, EpisodeStats], _: None
    ) -> tuple[tuple[RunnerState, EpisodeStats], jax.Array]:
        rs, stats = carry
        rng, act_key, env_key = jax.random.split(rs.rng, 3)
        rs = rs._replace(rng=rng)
        actions, epsilon = core.act(rs, act_key)
        env_keys = jax.random.split(env_key, num_envs)  # [N]: this device's slice
        ts = jax.vmap(env.step)(
            _dp.local_slice(env_keys, axis_name, local_envs), rs.env_state, actions
        )
        rs = core.record(
            rs._replace(env_state=ts.state),
            actions,
            ts.reward,
            ts.terminated,
            ts.truncated,
            ts.info["final_obs"],
            ts.obs,
        )
        stats = stats.add(ts.terminated | ts.truncated, ts.info)
        return (rs, stats), epsilon

    def iteration(rs: RunnerState, _: None) -> tuple[RunnerState, Metrics]:
        (rs, stats), epsilons = jax.lax.scan(
            env_step, (rs, EpisodeStats.zeros()), None, length=config.train_freq
        )
        if axis_name is not None:
            stats = jax.lax.psum(stats, axis_name)  # episodes of all devices
        rs, learn_metrics = core.learn(rs)
        rs = rs._replace(iteration=rs.iteration + 1)
        return rs, iteration_metrics(rs, epsilons[-1], stats, learn_metrics)

    def run_local(rs: RunnerState, num_iterations: int) -> tuple[RunnerState, Metrics]:
        return jax.lax.scan(iteration, rs, None, length=num_iterations)

    run = run_local
    if devices is not None:
        init, run = _dp.parallelize(
            init,
            run_local,
            devices=devices,
            backend=backend,
            axes=_AXES,
        )

    def train(key: jax.Array) -> tuple[RunnerState, Metrics]:
        return run(init(key), total_iterations)

    def evaluate_fn(
        agent_state: DQNState, key: jax.Array, num_episodes: int
    ) -> jax.Array:
        return evaluate(env, agent, agent_state, key, num_episodes=num_episodes)

    return Trainer(
        init=init,
        run=run,
        train=train,
        evaluate=evaluate_fn,
        agent=agent,
        num_iterations=total_iterations,
        steps_per_iteration=steps_per_iteration,
        num_devices=num_devices,
    )
