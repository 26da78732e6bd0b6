"""PPO as a bundle of pure functions: `ppo(config, ...) -> Agent(init, act, update)`.

The on-policy agents (PPO here, A2C in `agents.a2c`) share this module's
contract, which is what the training loops in `agents.ppo.training` drive:

```python
agent = ppo(config, obs_spec, action_spec, optax.adam(2.5e-4), num_updates=976)
state = agent.init(key, obs)                           # obs: [B, ...]
action, log_prob, value = agent.act(state, key, obs)   # each [B] (actions [B, D])
action, log_prob, value = agent.act(state, keys, obs)  # keys [B]: one per row
state, metrics = agent.update(state, trajectory, key)  # trajectory: [T, B] leaves
# Data-parallel: each device passes its [T, B / D] slice and the same key.
state, metrics = agent.update(state, trajectory, key, axis_name="batch")
```

Truncation is handled correctly (PureJaxRL treats a time limit as a terminal
state): see `truncation_aware_gae`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from agents.data_parallel import global_mean, split_evenly
from agents.envs import Spec
from agents.losses import gae_batch, ppo_loss
from agents.ppo.config import PPOConfig
from agents.ppo.networks import ActorCritic, actor_critic
from jaxlab.optim import learning_rate as _injected_learning_rate

Metrics = dict[str, jax.Array]


class Trajectory(NamedTuple):
    """A time-major rollout of `T` steps from `B` auto-resetting environments.

    Attributes:
      obs: observations the actions were taken in, [T, B, ...].
      action: actions taken, [T, B] int32 or [T, B, D] float32.
      log_prob: log pi(a|s) when acting, [T, B].
      value: critic values v(obs) when acting, [T, B].
      reward: rewards, [T, B] float32.
      terminated: the transition reached a terminal state, [T, B] bool.
      truncated: the episode hit its time limit, [T, B] bool.
      final_obs: the true next observation of each transition (the
        environment's ``info["final_obs"]``: ``obs[t + 1]`` unless the episode
        ended at ``t``), [T, B, ...].
    """

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_obs: jax.Array


class PPOState(NamedTuple):
    """State of a PPO agent (a pytree of arrays).

    Attributes:
      params: ``{"actor": ..., "critic": ...}`` network parameters.
      opt_state: optimizer state (its step count drives learning-rate annealing).
      update_count: updates done so far, [] int32 (drives `clip_eps` annealing).
    """

    params: Any
    opt_state: Any
    update_count: jax.Array


class Agent(NamedTuple):
    """An on-policy agent as pure functions.

    Attributes:
      init: ``(key, obs [B, ...]) -> state``.
      act: ``(state, key, obs [B, ...], *, deterministic=False) -> (action [B]
        or [B, D], log_prob [B], value [B])``; deterministic actions are the
        argmax (discrete) or the mean (Gaussian). `key` is one key, or one key
        per row ([B] typed or [B, 2] raw), which makes row ``i``'s action
        depend only on its own key (so it does not depend on the batch split).
      update: ``(state, trajectory [T, B], key, *, axis_name=None) -> (state,
        metrics)`` with scalar metrics. With `axis_name`, each device passes
        its slice of the environments ([T, B / D]) and the same `key`; the
        result (identical on every device) equals the single-device update on
        the whole [T, B] batch.
      networks: the `ActorCritic` the agent acts with.
      draw: ``(keys [B]) -> noise`` the stochastic actions of a batch of keys
        draw (a pytree of [B, ...] arrays), or None.
      act_drawn: ``(state, noise, obs [B, ...]) -> (action, log_prob, value)``
        with ``act(state, keys, obs) == act_drawn(state, draw(keys), obs)``
        for a batch of keys, or None. The training loop draws a whole
        rollout's noise before its loop of steps (cheaper on a CPU); an agent
        without these two is driven with `act` and per-step keys, the same run.
    """

    init: Callable[..., Any]
    act: Callable[..., tuple[jax.Array, jax.Array, jax.Array]]
    update: Callable[..., tuple[Any, Metrics]]
    networks: ActorCritic
    draw: Callable[[jax.Array], Any] | None = None
    act_drawn: Callable[..., tuple[jax.Array, jax.Array, jax.Array]] | None = None


def truncation_aware_gae(
    r_t: jax.Array,
    terminated_t: jax.Array,
    truncated_t: jax.Array,
    v_tm1: jax.Array,
    v_final_t: jax.Array,
    *,
    gamma: float,
    lambda_: float,
) -> tuple[jax.Array, jax.Array]:
    """GAE over an auto-reset rollout that bootstraps through time limits.

    A time limit is not a terminal state: the value of the state where the
    episode was cut is still ``v(final_obs)`` (Pardo et al. 2018, "Time Limits in
    Reinforcement Learning"; SB3 does the same). With ``done = terminated |
    truncated`` this calls `agents.losses.gae_batch` with

    - ``discount_t = gamma * (1 - done_t)``: the trace stops at every episode
      end, because ``obs[t + 1]`` already belongs to the next episode;
    - ``r'_t = r_t + gamma * v(final_obs_t)`` where ``truncated & ~terminated``:
      a truncated step bootstraps from its true next state;
    - bootstrap row ``v(final_obs_{T-1})``: the state after the rollout.

    So ``delta_t = r_t + gamma (1 - terminated_t) v(s_{t+1}) - v(s_t)`` with
    ``s_{t+1}`` the true next state, and advantages never cross an episode end.

    Args:
      r_t: rewards, [T, B].
      terminated_t: terminal flags, [T, B] bool.
      truncated_t: time-limit flags, [T, B] bool.
      v_tm1: values of the observations acted in, ``v(obs_t)``, [T, B].
      v_final_t: values of the true next observations, ``v(final_obs_t)``,
        [T, B] (only the last row and truncated steps are used).
      gamma: discount factor.
      lambda_: GAE lambda.

    Returns:
      ``(advantages, returns)``, both [T, B], without gradient.
    """
    chex.assert_rank([r_t, terminated_t, truncated_t, v_tm1, v_final_t], 2)
    chex.assert_equal_shape([r_t, terminated_t, truncated_t, v_tm1, v_final_t])
    chex.assert_type([terminated_t, truncated_t], bool)
    done_t = terminated_t | truncated_t
    cut_t = (truncated_t & ~terminated_t).astype(r_t.dtype)
    r_t = r_t + gamma * cut_t * v_final_t
    discount_t = gamma * (1.0 - done_t.astype(r_t.dtype))
    values = jnp.concatenate([v_tm1, v_final_t[-1:]], axis=0)  # [T + 1, B]
    return gae_batch(r_t, discount_t, values, lambda_=lambda_)


def annealing_fraction(count: jax.Array, num_updates: int | None) -> jax.Array:
    """``1 - count / num_updates``, the remaining fraction of the run (1 if None)."""
    if num_updates is None:
        return jnp.ones((), jnp.float32)
    return 1.0 - count.astype(jnp.float32) / num_updates


def current_learning_rate(opt_state: Any) -> jax.Array:
    """The base learning rate stored in `opt_state`, or NaN if it stores none.

    Optimizers from `jaxlab.optim.make_optimizer` (or any with
    `optax.inject_hyperparams`) store it; a plain `optax.adam(...)` does not.
    """
    try:
        return jnp.asarray(_injected_learning_rate(opt_state), jnp.float32)
    except ValueError:
        return jnp.full((), jnp.nan, jnp.float32)


def make_transform(
    optimizer: optax.GradientTransformation,
    *,
    max_grad_norm: float | None,
    anneal_lr: bool,
    steps_per_update: int,
    num_updates: int | None,
) -> optax.GradientTransformation:
    """Gradient clipping, then `optimizer`, then linear learning-rate annealing.

    Annealing scales the optimizer's output by ``1 - (count // steps_per_update)
    / num_updates`` (PureJaxRL's schedule: constant within an update), which
    equals scaling the learning rate for any optax optimizer. ``count`` lives in
    the optimizer state, so a run split into chunks anneals exactly like one.
    """
    if anneal_lr and num_updates is None:
        raise ValueError(
            "anneal_lr: needs num_updates (the length of the run) to anneal over"
        )
    parts = []
    if max_grad_norm is not None:
        parts.append(optax.clip_by_global_norm(max_grad_norm))
    parts.append(optimizer)
    if anneal_lr:
        parts.append(
            optax.scale_by_schedule(
                lambda count: annealing_fraction(count // steps_per_update, num_updates)
            )
        )
    return optax.chain(*parts)


def permutation(key: jax.Array, n: int) -> jax.Array:
    """A uniformly random permutation of ``range(n)``, int32 [n].

    The same method as `jax.random.permutation` (sort by random keys, stable
    on ties, in rounds until ``3 log2(n)`` random bits per element), but each
    round sorts a single uint32 array whose high bits are random and low bits
    are the element's position, instead of sorting (key, value) pairs: about
    1.8x faster on a CPU for PPO's minibatch shuffles (2 rounds of 23 random
    bits for 512 elements, against one round of 32; ties are broken by the
    position, i.e. stably, in both). Falls back to `jax.random.permutation`
    when fewer than 8 random bits would remain (n > 2**24).
    """
    index_bits = max(1, (n - 1).bit_length())
    random_bits = 32 - index_bits
    if random_bits < 8:
        return jax.random.permutation(key, n)
    rounds = max(1, math.ceil(3 * math.log2(max(n, 2)) / random_bits))
    mask = jnp.uint32((1 << index_bits) - 1)
    position = jnp.arange(n, dtype=jnp.uint32)
    perm = None
    for round_key in jax.random.split(key, rounds):
        packed = (jax.random.bits(round_key, (n,), jnp.uint32) << index_bits) | position
        order = jnp.sort(packed) & mask  # positions in order of their random keys
        perm = order if perm is None else perm[order]
    return perm.astype(jnp.int32)


def _flatten(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])  # [T, B, ...] -> [TB, ...]


def normalize(x: jax.Array, axis_name: str | None = None) -> jax.Array:
    """``(x - mean) / (std + 1e-8)`` over all of `x` (and over the devices of
    `axis_name`, each holding an equal share)."""
    mean = global_mean(x, axis_name)
    std = jnp.sqrt(global_mean(jnp.square(x - mean), axis_name))
    return (x - mean) / (std + 1e-8)


def make_act(networks: ActorCritic) -> Callable[..., Any]:
    """The `act` function shared by the actor-critic agents (a single key, or
    one key per row of `obs`: see `ActionDist.sample`)."""
    dist = networks.dist

    def act(
        state: Any, key: jax.Array, obs: jax.Array, *, deterministic: bool = False
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        out = networks.policy(state.params, obs)
        action = dist.mode(out) if deterministic else dist.sample(key, out)
        return action, dist.log_prob(out, action), networks.value(state.params, obs)

    return act


def make_act_drawn(networks: ActorCritic) -> dict[str, Callable[..., Any] | None]:
    """``{"draw": ..., "act_drawn": ...}`` of an `Agent` acting with `networks`
    (see `Agent`; both None if the distribution has no `draw`)."""
    dist = networks.dist
    if dist.draw is None or dist.sample_drawn is None:
        return {"draw": None, "act_drawn": None}

    def draw(keys: jax.Array) -> jax.Array:
        return jax.vmap(dist.draw)(keys)

    def act_drawn(
        state: Any, noise: jax.Array, obs: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        out = networks.policy(state.params, obs)
        action = dist.sample_drawn(out, noise)
        return action, dist.log_prob(out, action), networks.value(state.params, obs)

    return {"draw": draw, "act_drawn": act_drawn}


def ppo(
    config: PPOConfig,
    obs_spec: Spec,
    action_spec: Spec,
    optimizer: optax.GradientTransformation,
    *,
    num_updates: int | None = None,
) -> Agent:
    """Builds a PPO-clip agent (Schulman et al. 2017, "Proximal Policy Optimization
    Algorithms"), PureJaxRL-style: separate actor and critic, GAE, epochs of
    shuffled minibatches, gradient clipping.

    Args:
      config: hyperparameters.
      obs_spec: spec of one observation.
      action_spec: spec of one action: discrete (categorical policy) or a [D] box
        (Gaussian policy with a state-independent log_std).
      optimizer: an optax optimizer (e.g. from `jaxlab.optim.make_optimizer`);
        `config.max_grad_norm` clipping and `config.anneal_lr` are added here.
      num_updates: length of the run in updates; needed by `anneal_lr` and by
        the linear `clip_eps_schedule`.

    Returns:
      An `Agent` whose `update` takes a `Trajectory` whose ``T * B`` is divisible
      by `config.num_minibatches`.
    """
    c = config
    if c.clip_eps_schedule == "linear" and num_updates is None:
        raise ValueError("clip_eps_schedule: 'linear' needs num_updates")
    networks = actor_critic(
        obs_spec,
        action_spec,
        hidden=c.hidden,
        activation=c.activation,
        log_std_init=c.log_std_init,
    )
    dist = networks.dist
    tx = make_transform(
        optimizer,
        max_grad_norm=c.max_grad_norm,
        anneal_lr=c.anneal_lr,
        steps_per_update=c.update_epochs * c.num_minibatches,
        num_updates=num_updates,
    )

    def init(key: jax.Array, obs: jax.Array) -> PPOState:
        params = networks.init(key, obs)
        return PPOState(params, tx.init(params), jnp.zeros((), jnp.int32))

    def loss_fn(params: Any, batch: dict[str, jax.Array], clip_eps: jax.Array):
        out = networks.policy(params, batch["obs"])
        values = networks.value(params, batch["obs"])
        return ppo_loss(
            dist.log_prob(out, batch["action"]),
            batch["log_prob"],
            batch["advantage"],
            values,
            batch["value"],
            batch["return"],
            dist.entropy(out),
            clip_eps=clip_eps,
            value_clip_eps=clip_eps if c.value_clip else None,
            value_coef=c.vf_coef,
            entropy_coef=c.ent_coef,
            # Normalised in `update`, over the whole minibatch (all devices).
            normalize_advantages=False,
        )

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def update(
        state: PPOState,
        trajectory: Trajectory,
        key: jax.Array,
        *,
        axis_name: str | None = None,
    ) -> tuple[PPOState, Metrics]:
        """One PPO update; see `Agent.update`.

        Data-parallel (`axis_name` set), exactly PureJaxRL's full-batch shuffle:
        each device computes GAE on its own environments, then all-gathers the
        batch along the environment axis, so every device holds the global
        [T, B] batch in the single-device order. The same key gives every
        device the same global permutation and minibatches; advantages are
        normalised over the whole minibatch; each device then takes its 1/D
        share of the minibatch, and the `pmean` of the share gradients is the
        gradient of the whole minibatch. Metrics are `pmean`ed likewise.
        """
        chex.assert_rank(trajectory.reward, 2)
        num_steps, local_envs = trajectory.reward.shape
        num_devices = 1 if axis_name is None else jax.lax.axis_size(axis_name)
        num_envs = local_envs * num_devices
        batch_size = num_steps * num_envs
        if batch_size % c.num_minibatches:
            raise ValueError(
                f"num_minibatches: the batch of num_steps * num_envs = {num_steps} * "
                f"{num_envs} = {batch_size} transitions is not divisible by "
                f"{c.num_minibatches}"
            )
        minibatch_size = batch_size // c.num_minibatches
        share = split_evenly(
            minibatch_size,
            num_devices,
            "agent.num_minibatches",
            "transitions per minibatch",
        )
        frac = annealing_fraction(state.update_count, num_updates)
        clip_eps = c.clip_eps * (frac if c.clip_eps_schedule == "linear" else 1.0)
        lr = current_learning_rate(state.opt_state)
        if c.anneal_lr:
            lr = lr * frac

        v_final = networks.value(state.params, _flatten(trajectory.final_obs))
        advantage, returns = truncation_aware_gae(
            trajectory.reward * c.reward_scale,
            trajectory.terminated,
            trajectory.truncated,
            trajectory.value,
            v_final.reshape(num_steps, local_envs),
            gamma=c.gamma,
            lambda_=c.gae_lambda,
        )
        batch = {
            "obs": trajectory.obs,
            "action": trajectory.action,
            "log_prob": trajectory.log_prob,
            "value": trajectory.value,
            "advantage": advantage,
            "return": returns,
        }
        if axis_name is not None:
            # [T, B / D] slices -> the global [T, B], envs in device order.
            batch = jax.tree.map(
                lambda x: jax.lax.all_gather(x, axis_name, axis=1, tiled=True), batch
            )
        batch = jax.tree.map(_flatten, batch)  # [T * B, ...]

        def sgd_step(carry, minibatch):
            params, opt_state = carry
            if c.normalize_advantages:
                minibatch = {
                    **minibatch,
                    "advantage": normalize(minibatch["advantage"]),
                }
            if axis_name is not None:
                start = jax.lax.axis_index(axis_name) * share
                minibatch = jax.tree.map(
                    lambda x: jax.lax.dynamic_slice_in_dim(x, start, share), minibatch
                )
            (loss, metrics), grads = grad_fn(params, minibatch, clip_eps)
            if axis_name is not None:
                loss, metrics, grads = jax.lax.pmean((loss, metrics, grads), axis_name)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads)}
            return (params, opt_state), metrics

        def epoch(carry, epoch_key):
            perm = permutation(epoch_key, batch_size)
            minibatches = jax.tree.map(
                lambda x: x[perm].reshape(c.num_minibatches, -1, *x.shape[1:]), batch
            )
            return jax.lax.scan(sgd_step, carry, minibatches)

        keys = jax.random.split(key, c.update_epochs)
        (params, opt_state), metrics = jax.lax.scan(
            epoch, (state.params, state.opt_state), keys
        )
        metrics = jax.tree.map(jnp.mean, metrics)
        metrics["learning_rate"] = lr
        metrics["clip_eps"] = jnp.asarray(clip_eps, jnp.float32)
        new_state = PPOState(params, opt_state, state.update_count + 1)
        return new_state, metrics

    return Agent(
        init=init,
        act=make_act(networks),
        update=update,
        networks=networks,
        **make_act_drawn(networks),
    )
