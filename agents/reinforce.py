"""REINFORCE: Monte-Carlo policy gradient on whole episodes (a teaching agent).

"Simple Statistical Gradient-Following Algorithms for Connectionist Reinforcement
Learning", Williams (1992). Each update plays one fresh episode in each of
`num_envs` environments (up to the time limit), computes the discounted return
`G_t` from every step, and follows ``-mean_t log pi(a_t|s_t) G_t``
(`agents.losses.policy_gradient_loss`). No critic, no bootstrapping: time limits
end episodes like terminal states, as in the textbook algorithm.

```python
trainer = reinforce.make_train("CartPole-v1", ReinforceConfig(), optimizer,
                               num_envs=8, total_env_steps=200_000)
runner_state, metrics = trainer.train(key)
```
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from pydantic import field_validator
from pydantic.dataclasses import dataclass

from agents.envs import Environment, Spec
from agents.losses import discounted_returns, policy_gradient_loss
from agents.ppo.agent import Agent, make_act, make_transform
from agents.ppo.config import Activation, UnitFloat, tuple_from_list
from agents.ppo.networks import actor_critic
from agents.ppo.training import (
    OptimizerLike,
    Trainer,
    as_config,
    as_environment,
    as_optimizer,
    episode_metrics,
    evaluate,
    key_data,
    num_updates_for,
)
from jaxlab.config import _STRICT, Bool, PosFloat, PosInt

Metrics = dict[str, jax.Array]


@dataclass(config=_STRICT)
class ReinforceConfig:
    """REINFORCE hyperparameters.

    Attributes:
      name: always ``"reinforce"``.
      gamma: discount factor of the returns.
      normalize_returns: standardise the returns of each batch of episodes (a
        constant baseline plus scaling, which lowers the variance).
      max_grad_norm: clip gradients to this global norm (``None``: no clipping).
      hidden: hidden layer sizes of the policy.
      activation: hidden activation.
    """

    name: Literal["reinforce"] = "reinforce"
    gamma: UnitFloat = 0.99
    normalize_returns: Bool = True
    max_grad_norm: PosFloat | None = None
    hidden: tuple[PosInt, ...] = (64, 64)
    activation: Activation = "tanh"

    _hidden_tuple = field_validator("hidden", mode="before")(tuple_from_list)


class ReinforceState(NamedTuple):
    """Policy params and optimizer state (``params["critic"]`` is empty)."""

    params: Any
    opt_state: Any


class Episodes(NamedTuple):
    """A batch of `B` episodes padded to `T` steps, time-major.

    Attributes:
      obs: [T, B, ...]. action: [T, B]. reward: [T, B] (0 after the end).
      mask: 1.0 on the steps of the episode, 0.0 on the padding, [T, B].
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    mask: jax.Array


class ReinforceRunnerState(NamedTuple):
    """Agent state, PRNG key data [2] uint32, updates and env steps done."""

    agent: ReinforceState
    rng: jax.Array
    update: jax.Array
    env_steps: jax.Array


def reinforce(
    config: ReinforceConfig,
    obs_spec: Spec,
    action_spec: Spec,
    optimizer: optax.GradientTransformation,
) -> Agent:
    """Builds a REINFORCE agent with a softmax policy (discrete actions).

    Its `update(state, episodes, key)` takes `Episodes`; `act` returns zero
    values (there is no critic).
    """
    if not action_spec.is_discrete:
        raise ValueError("action_spec: REINFORCE here supports discrete actions only")
    c = config
    networks = actor_critic(
        obs_spec, action_spec, hidden=c.hidden, activation=c.activation, critic=False
    )
    tx = make_transform(
        optimizer,
        max_grad_norm=c.max_grad_norm,
        anneal_lr=False,
        steps_per_update=1,
        num_updates=None,
    )

    def init(key: jax.Array, obs: jax.Array) -> ReinforceState:
        params = networks.init(key, obs)
        return ReinforceState(params, tx.init(params))

    def loss_fn(params, obs, action, returns, mask):
        logits = networks.policy(params, obs)  # [T * B, A]
        # policy_gradient_loss averages over all T * B steps; rescale to a mean
        # over the real ones.
        scale = mask.size / jnp.maximum(mask.sum(), 1.0)
        return scale * policy_gradient_loss(logits, action, returns, mask)

    def update(
        state: ReinforceState, episodes: Episodes, key: jax.Array
    ) -> tuple[ReinforceState, Metrics]:
        del key
        num_steps, num_envs = episodes.reward.shape
        discount = jnp.full_like(episodes.reward, c.gamma)
        returns = jax.vmap(discounted_returns, in_axes=1, out_axes=1)(
            episodes.reward, discount
        )  # [T, B]; rewards are 0 after the end, so G_t is exact.
        mask = episodes.mask
        if c.normalize_returns:
            mean = jnp.sum(returns * mask) / jnp.sum(mask)
            std = jnp.sqrt(jnp.sum(jnp.square(returns - mean) * mask) / jnp.sum(mask))
            returns = (returns - mean) / (std + 1e-8)
        flat = lambda x: x.reshape(num_steps * num_envs, *x.shape[2:])
        loss, grads = jax.value_and_grad(loss_fn)(
            state.params,
            flat(episodes.obs),
            flat(episodes.action),
            flat(returns),
            flat(mask),
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return ReinforceState(params, opt_state), {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
        }

    return Agent(init=init, act=make_act(networks), update=update, networks=networks)


def make_train(
    env: Environment | str,
    config: ReinforceConfig | Mapping[str, Any],
    optimizer: OptimizerLike,
    *,
    num_envs: int,
    total_env_steps: float,
) -> Trainer:
    """A REINFORCE training run on a JAX-native environment (`Trainer` contract).

    Each update plays `num_envs` episodes of at most ``T = env.max_episode_steps``
    steps (all `T` are computed, the steps after an episode's end are masked),
    so the run does ``total_env_steps // (num_envs * T)`` updates; the
    `env_steps` metric counts the real steps.
    """
    env = as_environment(env)
    config = as_config(ReinforceConfig, config)
    horizon = env.max_episode_steps
    if horizon is None:
        raise ValueError(f"env: REINFORCE needs a time limit; {env.name} has none")
    num_updates = num_updates_for(total_env_steps, num_envs * horizon)
    agent = reinforce(
        config, env.observation_spec, env.action_spec, as_optimizer(optimizer)
    )

    def init(key: jax.Array) -> ReinforceRunnerState:
        key, agent_key, obs_key = jax.random.split(key_data(key), 3)
        obs, _ = env.reset(obs_key)
        return ReinforceRunnerState(
            agent=agent.init(agent_key, obs[None]),
            rng=key,
            update=jnp.zeros((), jnp.int32),
            env_steps=jnp.zeros((), jnp.int32),
        )

    def play(agent_state: ReinforceState, key: jax.Array):
        reset_key, key = jax.random.split(key)
        obs, env_state = jax.vmap(env.reset)(jax.random.split(reset_key, num_envs))

        def step(carry, step_key):
            obs, env_state, active = carry
            act_key, env_key = jax.random.split(step_key)
            action, _, _ = agent.act(agent_state, act_key, obs)
            ts = jax.vmap(env.step)(
                jax.random.split(env_key, num_envs), env_state, action
            )
            mask = active.astype(jnp.float32)
            done = ts.terminated | ts.truncated
            out = (obs, action, ts.reward * mask, mask, done & active, ts.info)
            return (ts.obs, ts.state, active & ~done), out

        active = jnp.ones(num_envs, jnp.bool_)
        keys = jax.random.split(key, horizon)
        _, (obs, action, reward, mask, ended, info) = jax.lax.scan(
            step, (obs, env_state, active), keys
        )
        episodes = Episodes(obs, action, reward, mask)
        return episodes, episode_metrics(
            ended, info["episode_return"], info["episode_length"]
        )

    def update_step(rs: ReinforceRunnerState, _):
        rng, play_key, update_key = jax.random.split(rs.rng, 3)
        episodes, ep_metrics = play(rs.agent, play_key)
        agent_state, metrics = agent.update(rs.agent, episodes, update_key)
        env_steps = rs.env_steps + jnp.sum(episodes.mask).astype(jnp.int32)
        rs = ReinforceRunnerState(agent_state, rng, rs.update + 1, env_steps)
        return rs, {**metrics, **ep_metrics, "env_steps": env_steps}

    @functools.partial(jax.jit, static_argnames="num_updates")
    def run(rs: ReinforceRunnerState, num_updates: int):
        return jax.lax.scan(update_step, rs, None, num_updates)

    init_jit = jax.jit(init)

    def train(key: jax.Array):
        return run(init_jit(key), num_updates)  # Reuses the compiled pieces.

    @functools.partial(jax.jit, static_argnames="num_episodes")
    def evaluate_fn(agent_state, key, *, num_episodes: int = 10):
        return evaluate(
            env, agent, agent_state, key_data(key), num_episodes=num_episodes
        )

    return Trainer(
        init=init_jit,
        run=run,
        train=train,
        evaluate=evaluate_fn,
        agent=agent,
        num_updates=num_updates,
        steps_per_update=num_envs * horizon,
    )


__all__ = [
    "Episodes",
    "ReinforceConfig",
    "ReinforceRunnerState",
    "ReinforceState",
    "make_train",
    "reinforce",
]
