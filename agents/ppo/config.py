"""Validated, frozen hyperparameters of PPO.

The experiment loader nests these under ``agent:`` (``agent.name: ppo``). Field
errors name the field (``num_steps: Input should be greater than 0``), and the
loader prefixes the path (``agent.num_steps: ...``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, Strict, field_validator
from pydantic.dataclasses import dataclass

from jaxlab.config import _STRICT, Bool, NonNegFloat, PosFloat, PosInt

# (0, 1]: a discount or GAE lambda of exactly 1 is allowed.
UnitFloat = Annotated[float, Strict(), Field(gt=0, le=1, allow_inf_nan=False)]
Activation = Literal["tanh", "relu", "elu", "gelu", "swish", "silu", "sigmoid"]


def tuple_from_list(value: Any) -> Any:
    """Lists (from YAML or JSON) become tuples, which keep frozen configs hashable."""
    return tuple(value) if isinstance(value, list) else value


@dataclass(config=_STRICT)
class PPOConfig:
    """Proximal Policy Optimization (Schulman et al. 2017), PureJaxRL defaults.

    One *update* collects ``num_steps`` steps from each of the ``num_envs``
    environments (a batch of ``num_steps * num_envs`` transitions), computes GAE
    advantages, then runs ``update_epochs`` passes of ``num_minibatches``
    minibatch gradient steps over the shuffled batch.

    Attributes:
      name: always ``"ppo"`` (selects the agent in an experiment config).
      num_steps: rollout length per environment and update.
      update_epochs: passes over each rollout batch.
      num_minibatches: minibatches per pass; must divide
        ``num_steps * num_envs``.
      gamma: discount factor.
      gae_lambda: GAE lambda (1: Monte-Carlo advantages, 0: one-step TD).
      clip_eps: PPO ratio clipping range epsilon (also the value clipping range).
      clip_eps_schedule: ``constant``, or ``linear`` to anneal `clip_eps` to 0
        over the run (as RL-Zoo's ``clip_range: lin_0.2``).
      value_clip: clip the value loss around the old values (PureJaxRL, CleanRL;
        SB3's default is off).
      ent_coef: weight of the entropy bonus.
      vf_coef: weight of the value loss.
      max_grad_norm: clip gradients to this global norm (``None``: no clipping).
      anneal_lr: multiply the optimizer's learning rate (and any schedule of
        it) by ``1 - update / num_updates``: linear to 0 over the run, as
        PureJaxRL and RL-Zoo's ``lin_`` rates.
      normalize_advantages: standardise advantages in each minibatch.
      hidden: hidden layer sizes of the actor and of the critic (two separate
        MLPs, orthogonally initialised).
      activation: hidden activation.
      log_std_init: initial log standard deviation of a Gaussian policy
        (continuous actions; state-independent, learned).
      reward_scale: rewards are multiplied by this before learning (returns and
        logged episode returns stay unscaled); e.g. 0.1 for Pendulum's [-16, 0]
        rewards.
    """

    name: Literal["ppo"] = "ppo"
    num_steps: PosInt = 128
    update_epochs: PosInt = 4
    num_minibatches: PosInt = 4
    gamma: UnitFloat = 0.99
    gae_lambda: UnitFloat = 0.95
    clip_eps: PosFloat = 0.2
    clip_eps_schedule: Literal["constant", "linear"] = "constant"
    value_clip: Bool = True
    ent_coef: NonNegFloat = 0.01
    vf_coef: NonNegFloat = 0.5
    max_grad_norm: PosFloat | None = 0.5
    anneal_lr: Bool = True
    normalize_advantages: Bool = True
    hidden: tuple[PosInt, ...] = (64, 64)
    activation: Activation = "tanh"
    log_std_init: Annotated[float, Strict(), Field(allow_inf_nan=False)] = 0.0
    reward_scale: PosFloat = 1.0

    _hidden_tuple = field_validator("hidden", mode="before")(tuple_from_list)
