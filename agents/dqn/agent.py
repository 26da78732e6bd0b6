"""The DQN agent: a factory returning pure `init`, `act` and `update` functions.

```python
network = q_network(num_actions, hidden=config.hidden)
agent = dqn(network, optax.adam(1e-3), config)
state = agent.init(key, obs[None])                       # DQNState
actions = agent.act(state, key, obs_batch, epsilon)      # [B] int32
state, metrics = agent.update(state, transitions)        # one learner step
```
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from agents import losses
from agents.dqn.config import DQNConfig
from agents.dqn.replay import Transition

Params = Any
Metrics = dict[str, jax.Array]


class DQNState(NamedTuple):
    """Learner state.

    Attributes:
      params: online Q-network parameters.
      target_params: target Q-network parameters.
      opt_state: optimizer state.
      steps: learner updates done so far, `[]` int32.
    """

    params: Params
    target_params: Params
    opt_state: optax.OptState
    steps: jax.Array


class Agent(NamedTuple):
    """Pure functions of a DQN agent.

    Attributes:
      init: ``(key, obs[B, ...]) -> DQNState``; `obs` is an example batch.
      act: ``(state, key, obs[B, ...], epsilon []) -> actions [B] int32``,
        epsilon-greedy (``epsilon=0``: greedy).
      update: ``(state, Transition[B], *, axis_name=None) -> (state, metrics)``,
        one gradient step then the target-network update; with `axis_name`
        (data-parallel), gradients and metrics are averaged over the devices,
        so the replicas stay identical.
    """

    init: Callable[[jax.Array, jax.Array], DQNState]
    act: Callable[[DQNState, jax.Array, jax.Array, jax.Array | float], jax.Array]
    update: Callable[..., tuple[DQNState, Metrics]]


class Network(NamedTuple):
    """Anything with these two pure functions (e.g. an `hk.Transformed` without
    apply rng): ``init(key, obs[B, ...]) -> params``, ``apply(params, obs) ->
    q [B, A]``."""

    init: Callable[[jax.Array, jax.Array], Params]
    apply: Callable[[Params, jax.Array], jax.Array]


def epsilon_greedy(
    key: jax.Array, q: jax.Array, epsilon: jax.Array | float
) -> jax.Array:
    """Epsilon-greedy actions from Q-values.

    With probability `epsilon` an action uniform over all `A` actions, else the
    greedy one (lowest index among ties).

    Args:
      key: a JAX random key.
      q: Q-values, `[B, A]`.
      epsilon: exploration probability, `[]`.

    Returns:
      Actions, `[B]` int32.
    """
    chex.assert_rank(q, 2)
    batch, num_actions = q.shape
    greedy = jnp.argmax(q, axis=-1).astype(jnp.int32)  # [B]
    # One draw per row: u[:, 0] decides to explore, u[:, 1] picks the action.
    u = jax.random.uniform(key, (batch, 2))  # [B, 2]
    explore = u[:, 0] < epsilon  # [B]
    random = jnp.minimum((u[:, 1] * num_actions).astype(jnp.int32), num_actions - 1)
    return jnp.where(explore, random, greedy)


def dqn(
    network: Network | Any,
    optimizer: optax.GradientTransformation,
    config: DQNConfig,
) -> Agent:
    """Builds a DQN agent (Mnih et al. 2015) with the extensions of `config`.

    The loss is `agents.losses.double_q_learning_loss` (``config.double``) or
    `agents.losses.q_learning_loss`, Huber or L2, on `Transition` batches whose
    `discount` already holds ``gamma**k * (1 - terminated)``. After each
    gradient step the target network is updated every
    ``config.target_update_period`` updates: copied (`optax.periodic_update`)
    or, with ``config.target_tau``, Polyak-averaged (`optax.incremental_update`).

    Only `double`, `loss`, `huber_delta`, `target_update_period` and
    `target_tau` are read here; the network and the optimizer come built.

    Args:
      network: pure ``init(key, obs)`` / ``apply(params, obs) -> q [B, A]``,
        e.g. `agents.dqn.q_network(...)`.
      optimizer: an optax optimizer (e.g. from `jaxlab.optim.make_optimizer`).
      config: the agent's hyperparameters.

    Returns:
      An `Agent` of pure, jittable functions.
    """
    apply = network.apply
    double = config.double
    period = config.target_update_period
    tau = config.target_tau
    loss_kind = config.loss
    huber_delta = config.huber_delta

    def init(key: jax.Array, obs: jax.Array) -> DQNState:
        params = network.init(key, obs)
        return DQNState(
            params=params,
            target_params=params,
            opt_state=optimizer.init(params),
            steps=jnp.zeros((), jnp.int32),
        )

    def act(
        state: DQNState, key: jax.Array, obs: jax.Array, epsilon: jax.Array | float
    ) -> jax.Array:
        q = apply(state.params, obs)  # [B, A]
        return epsilon_greedy(key, q, epsilon)

    def loss_fn(
        params: Params, target_params: Params, batch: Transition
    ) -> tuple[jax.Array, Metrics]:
        q_t_value = apply(target_params, batch.next_obs)  # [B, A]
        if double:
            # One online pass over [obs; next_obs] gives q_tm1 and the selector.
            both = jnp.concatenate([batch.obs, batch.next_obs])  # [2B, ...]
            q_tm1, q_t_selector = jnp.split(apply(params, both), 2)  # [B, A] x 2
            loss, td_error = losses.double_q_learning_loss(
                q_tm1,
                batch.action,
                batch.reward,
                batch.discount,
                q_t_value,
                q_t_selector,
                loss=loss_kind,
                huber_delta=huber_delta,
            )
        else:
            q_tm1 = apply(params, batch.obs)  # [B, A]
            loss, td_error = losses.q_learning_loss(
                q_tm1,
                batch.action,
                batch.reward,
                batch.discount,
                q_t_value,
                loss=loss_kind,
                huber_delta=huber_delta,
            )
        metrics = {
            "q_mean": jnp.mean(q_tm1),
            "td_abs": jnp.mean(jnp.abs(td_error)),
        }
        return loss, metrics

    def update(
        state: DQNState, batch: Transition, *, axis_name: str | None = None
    ) -> tuple[DQNState, Metrics]:
        chex.assert_rank([batch.action, batch.reward, batch.discount], 1)
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.target_params, batch
        )
        if axis_name is not None:
            # Equal batch shares: the mean of the shares' means is the batch's.
            loss, metrics, grads = jax.lax.pmean((loss, metrics, grads), axis_name)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(params=state.params, updates=updates)
        steps = state.steps + 1
        if tau is None:
            target_params = optax.periodic_update(
                params, state.target_params, steps, period
            )
        else:
            averaged = optax.incremental_update(params, state.target_params, tau)
            target_params = optax.periodic_update(
                averaged, state.target_params, steps, period
            )
        metrics = {"loss": loss, **metrics, "grad_norm": optax.tree.norm(grads)}
        return DQNState(params, target_params, opt_state, steps), metrics

    return Agent(init=init, act=act, update=update)
