"""A2C: synchronous advantage actor-critic on n-step rollouts.

"Asynchronous Methods for Deep Reinforcement Learning", Mnih et al. (2016), in its
synchronous form (OpenAI Baselines, SB3): each update collects `num_steps` steps
from every environment and takes one gradient step on the whole batch. It shares
PPO's networks, rollouts, truncation-aware advantages and training loops
(`agents.ppo`); only the update differs.

```python
trainer = a2c.make_train("CartPole-v1", A2CConfig(), optimizer, num_envs=8,
                         total_env_steps=500_000)
runner_state, metrics = trainer.train(key)
```
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax
import rlax
from pydantic import Field, Strict, field_validator
from pydantic.dataclasses import dataclass

from agents.envs import Environment, GymnasiumVecEnv, Spec
from agents.ppo.agent import (
    Agent,
    Trajectory,
    annealing_fraction,
    current_learning_rate,
    make_act,
    make_act_drawn,
    make_transform,
    normalize,
    truncation_aware_gae,
)
from agents.ppo.config import Activation, UnitFloat, tuple_from_list
from agents.ppo.host import HostTrainer
from agents.ppo.networks import actor_critic
from agents.ppo.training import (
    OptimizerLike,
    Trainer,
    as_config,
    as_environment,
    as_optimizer,
    make_on_policy_train,
    num_updates_for,
)
from jaxlab.config import _STRICT, Bool, NonNegFloat, PosFloat, PosInt

Metrics = dict[str, jax.Array]


@dataclass(config=_STRICT)
class A2CConfig:
    """A2C hyperparameters (defaults: SB3 / RL-Zoo's A2C).

    Attributes:
      name: always ``"a2c"`` (selects the agent in an experiment config).
      num_steps: n, the rollout length per environment and update.
      gamma: discount factor.
      gae_lambda: lambda of the advantages (1: plain n-step returns, A2C's).
      ent_coef: weight of the entropy bonus.
      vf_coef: weight of the value loss.
      max_grad_norm: clip gradients to this global norm (``None``: no clipping).
      anneal_lr: linear learning-rate decay to 0 over the run.
      normalize_advantages: standardise advantages over each batch.
      hidden: hidden layer sizes of the actor and of the critic.
      activation: hidden activation.
      log_std_init: initial log standard deviation of a Gaussian policy.
      reward_scale: rewards are multiplied by this before learning.
    """

    name: Literal["a2c"] = "a2c"
    num_steps: PosInt = 5
    gamma: UnitFloat = 0.99
    gae_lambda: UnitFloat = 1.0
    ent_coef: NonNegFloat = 0.0
    vf_coef: NonNegFloat = 0.5
    max_grad_norm: PosFloat | None = 0.5
    anneal_lr: Bool = False
    normalize_advantages: Bool = False
    hidden: tuple[PosInt, ...] = (64, 64)
    activation: Activation = "tanh"
    log_std_init: Annotated[float, Strict(), Field(allow_inf_nan=False)] = 0.0
    reward_scale: PosFloat = 1.0

    _hidden_tuple = field_validator("hidden", mode="before")(tuple_from_list)


class A2CState(NamedTuple):
    """State of an A2C agent.

    Attributes:
      params: ``{"actor": ..., "critic": ...}`` network parameters.
      opt_state: optimizer state.
      update_count: updates done, [] int32.
    """

    params: Any
    opt_state: Any
    update_count: jax.Array


def a2c(
    config: A2CConfig,
    obs_spec: Spec,
    action_spec: Spec,
    optimizer: optax.GradientTransformation,
    *,
    num_updates: int | None = None,
) -> Agent:
    """Builds an A2C agent (same `Agent` contract as `agents.ppo.ppo`).

    The loss is ``-mean(log pi(a|s) A) + vf_coef * 0.5 mean((R - v)^2) -
    ent_coef * mean(H)`` with truncation-aware GAE advantages `A` and returns
    ``R = A + v`` (`agents.losses.a2c_loss` is the discrete, unnormalised case;
    this form also serves Gaussian policies).

    Args:
      config: hyperparameters.
      obs_spec: spec of one observation.
      action_spec: discrete spec or a [D] box spec.
      optimizer: an optax optimizer; clipping and annealing are added here.
      num_updates: length of the run in updates (needed by `anneal_lr`).
    """
    c = config
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
        steps_per_update=1,
        num_updates=num_updates,
    )

    def init(key: jax.Array, obs: jax.Array) -> A2CState:
        params = networks.init(key, obs)
        return A2CState(params, tx.init(params), jnp.zeros((), jnp.int32))

    def loss_fn(params, obs, action, advantage, returns):
        out = networks.policy(params, obs)
        values = networks.value(params, obs)
        advantage = jax.lax.stop_gradient(advantage)
        policy_loss = -jnp.mean(dist.log_prob(out, action) * advantage)
        value_loss = jnp.mean(rlax.l2_loss(jax.lax.stop_gradient(returns) - values))
        entropy = jnp.mean(dist.entropy(out))
        loss = policy_loss + c.vf_coef * value_loss - c.ent_coef * entropy
        return loss, {
            "policy_loss": policy_loss,
            "value_loss": value_loss,
            "entropy": entropy,
        }

    def update(
        state: A2CState,
        trajectory: Trajectory,
        key: jax.Array,
        *,
        axis_name: str | None = None,
    ) -> tuple[A2CState, Metrics]:
        """One full-batch step; see `agents.ppo.Agent.update`. Data-parallel,
        each device's loss is the mean over its equal share of the batch, so the
        `pmean` of gradients and metrics is the whole batch's; advantages are
        normalised with the global mean and std."""
        del key  # One full-batch step: nothing to shuffle.
        chex.assert_rank(trajectory.reward, 2)
        num_steps, num_envs = trajectory.reward.shape
        flat = lambda x: x.reshape(num_steps * num_envs, *x.shape[2:])
        lr = current_learning_rate(state.opt_state)
        if c.anneal_lr:
            lr = lr * annealing_fraction(state.update_count, num_updates)
        v_final = networks.value(state.params, flat(trajectory.final_obs))
        advantage, returns = truncation_aware_gae(
            trajectory.reward * c.reward_scale,
            trajectory.terminated,
            trajectory.truncated,
            trajectory.value,
            v_final.reshape(num_steps, num_envs),
            gamma=c.gamma,
            lambda_=c.gae_lambda,
        )
        advantage = flat(advantage)
        if c.normalize_advantages:
            advantage = normalize(advantage, axis_name)
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params,
            flat(trajectory.obs),
            flat(trajectory.action),
            advantage,
            flat(returns),
        )
        if axis_name is not None:
            loss, metrics, grads = jax.lax.pmean((loss, metrics, grads), axis_name)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            **metrics,
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "learning_rate": lr,
        }
        return A2CState(params, opt_state, state.update_count + 1), metrics

    return Agent(
        init=init,
        act=make_act(networks),
        update=update,
        networks=networks,
        **make_act_drawn(networks),
    )


def make_train(
    env: Environment | str,
    config: A2CConfig | Mapping[str, Any],
    optimizer: OptimizerLike,
    *,
    num_envs: int,
    total_env_steps: float,
    devices: Sequence[jax.Device] | None = None,
    backend: str = "pmap",
) -> Trainer:
    """An A2C training run on a JAX-native environment (see
    `agents.ppo.make_train`; same `Trainer` contract, and the same
    data-parallel `devices` / `backend`)."""
    env = as_environment(env)
    config = as_config(A2CConfig, config)
    num_updates = num_updates_for(total_env_steps, num_envs * config.num_steps)
    agent = a2c(
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
    )


def make_host_train(
    env: GymnasiumVecEnv | str,
    config: A2CConfig | Mapping[str, Any],
    optimizer: OptimizerLike,
    *,
    total_env_steps: float,
    num_envs: int | None = None,
    eval_env: GymnasiumVecEnv | None = None,
) -> HostTrainer:
    """An A2C training run on gymnasium environments (see
    `agents.ppo.make_host_train`)."""
    if isinstance(env, str):
        if num_envs is None:
            raise ValueError("num_envs: required when env is a gymnasium id")
        env = GymnasiumVecEnv(env, num_envs)
    config = as_config(A2CConfig, config)
    num_updates = num_updates_for(total_env_steps, env.num_envs * config.num_steps)
    agent = a2c(
        config,
        env.observation_spec,
        env.action_spec,
        as_optimizer(optimizer),
        num_updates=num_updates,
    )
    return HostTrainer(
        env,
        agent,
        num_steps=config.num_steps,
        num_updates=num_updates,
        eval_env=eval_env,
    )


__all__ = ["A2CConfig", "A2CState", "a2c", "make_host_train", "make_train"]
