"""`DQNConfig`: the validated, frozen hyperparameters of a DQN agent.

Same approach as `jaxlab.config`: pydantic dataclasses in strict mode with
``extra="forbid"``, so unknown keys, wrong types and impossible values fail with a
message naming the field. `as_dqn_config` validates a plain dict (the ``agent:``
section of an RL experiment file) and prefixes every field with ``agent.``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field, Strict, field_validator, model_validator
from pydantic.dataclasses import dataclass

from jaxlab import config as _config
from jaxlab.config import _STRICT, Bool, NonNegInt, PosFloat, PosInt, Str
from jaxlab.errors import ConfigError
from nets.activations import activation_names

# A probability (epsilon) and a discount: in [0, 1].
Probability = Annotated[float, Strict(), Field(ge=0, le=1, allow_inf_nan=False)]
# A multiplicative decay or a Polyak step size: in (0, 1].
UnitInterval = Annotated[float, Strict(), Field(gt=0, le=1, allow_inf_nan=False)]


@dataclass(config=_STRICT)
class ExplorationConfig:
    """Epsilon-greedy exploration, as a function of environment steps taken.

    Environment steps count transitions over all parallel environments (one
    vectorized step of `num_envs` environments is `num_envs` steps).

    Attributes:
      schedule: ``linear``: from `start` to `end` over `steps`, then constant
        (`optax.linear_schedule`). ``exponential``: ``start * decay_rate **
        (t / steps)``, never below `end` (polyaxon-lib's exponential decay
        exploration; `optax.exponential_decay`).
      start: epsilon at step 0.
      end: final (linear) or smallest (exponential) epsilon, at most `start`.
      steps: linear: steps to go from `start` to `end` (RL-Zoo's
        ``exploration_fraction * total_timesteps``); exponential: steps over
        which epsilon is multiplied by `decay_rate`.
      decay_rate: exponential only (required there): factor per `steps`, in
        (0, 1].
    """

    schedule: Literal["linear", "exponential"] = "linear"
    start: Probability = 1.0
    end: Probability = 0.05
    steps: PosInt = 10_000
    decay_rate: UnitInterval | None = None

    @model_validator(mode="after")
    def _check(self) -> ExplorationConfig:
        if self.end > self.start:
            raise ValueError(f"end: must be <= start ({self.start}), got {self.end}")
        if self.schedule == "exponential" and self.decay_rate is None:
            raise ValueError("decay_rate: required for the exponential schedule")
        if self.schedule == "linear" and self.decay_rate is not None:
            raise ValueError("decay_rate: only used by the exponential schedule")
        return self


@dataclass(config=_STRICT)
class ReplayConfig:
    """The experience replay buffer (uniform sampling).

    Attributes:
      capacity: transitions kept; the oldest are overwritten first.
      batch_size: transitions per learner update.
      min_size: transitions stored before learning starts (SB3's
        ``learning_starts``); 0 starts as soon as one transition is stored.
      prioritized: prioritized replay is not implemented; must be false.
    """

    capacity: PosInt = 50_000
    batch_size: PosInt = 64
    min_size: NonNegInt = 1_000
    prioritized: Bool = False

    @model_validator(mode="after")
    def _check(self) -> ReplayConfig:
        if self.prioritized:
            raise ValueError(
                "prioritized: prioritized replay is not implemented; "
                "set it to false (uniform replay)"
            )
        if self.min_size > self.capacity:
            raise ValueError(
                f"min_size: must be <= capacity ({self.capacity}), got {self.min_size}"
            )
        return self


@dataclass(config=_STRICT)
class DQNConfig:
    """DQN and its common extensions (double, dueling, n-step, Polyak targets).

    See "Human-level control through deep reinforcement learning", Mnih et al.
    (2015); "Deep Reinforcement Learning with Double Q-learning", van Hasselt et
    al. (2016); "Dueling Network Architectures", Wang et al. (2016).

    Attributes:
      name: always ``dqn`` (selects the agent in an experiment file).
      double: double Q-learning targets (the online net picks the next action).
      dueling: dueling head, ``q = v + a - mean(a)``.
      hidden: sizes of the hidden layers of the Q-network MLP.
      activation: hidden-layer activation, a `nets.activation_names()` name.
      loss: ``huber`` or ``l2`` on the TD error.
      huber_delta: where the Huber loss turns linear.
      discount: gamma, in [0, 1].
      n_step: rewards summed before bootstrapping (1: one-step DQN).
      target_update_period: learner updates between target-network updates.
      target_tau: `None`: hard copy every `target_update_period` updates
        (`optax.periodic_update`). A number in (0, 1]: Polyak averaging
        ``target <- tau * online + (1 - tau) * target`` every
        `target_update_period` updates (`optax.incremental_update`; set the
        period to 1 to average after every update).
      exploration: epsilon-greedy schedule (`ExplorationConfig`).
      replay: replay buffer (`ReplayConfig`).
      train_freq: vectorized environment steps between learner phases (each
        adds ``num_envs`` transitions; ``num_envs`` belongs to the env config).
      gradient_steps: learner updates per learner phase.
    """

    name: Literal["dqn"] = "dqn"
    double: Bool = True
    dueling: Bool = False
    hidden: list[PosInt] = dataclasses.field(default_factory=lambda: [64, 64])
    activation: Str = "relu"
    loss: Literal["huber", "l2"] = "huber"
    huber_delta: PosFloat = 1.0
    discount: Probability = 0.99
    n_step: PosInt = 1
    target_update_period: PosInt = 100
    target_tau: UnitInterval | None = None
    exploration: ExplorationConfig = dataclasses.field(
        default_factory=ExplorationConfig
    )
    replay: ReplayConfig = dataclasses.field(default_factory=ReplayConfig)
    train_freq: PosInt = 1
    gradient_steps: PosInt = 1

    @field_validator("activation", mode="before")
    @classmethod
    def _check_activation(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.lower() not in activation_names():
                raise ValueError(
                    f"unknown activation {value!r} "
                    f"(known: {', '.join(activation_names())})"
                )
            return value.lower()
        return value


def as_dqn_config(
    config: DQNConfig | Mapping[str, Any] | None = None,
    *,
    prefix: str = "agent",
    **overrides: Any,
) -> DQNConfig:
    """Validates a dict (plus keyword overrides) into a `DQNConfig`.

    Args:
      config: a `DQNConfig` (overrides are applied to it), a mapping such as the
        ``agent:`` section of an experiment file, or `None` for the defaults.
      prefix: field-path prefix in error messages (``agent.replay.capacity``).
      **overrides: fields replacing those of `config` (nested configs are given
        whole or as dicts, e.g. ``replay={"capacity": 1000}``).

    Returns:
      The validated config.

    Raises:
      ConfigError: naming the offending field, e.g. ``agent.discount: ...``.
    """
    if isinstance(config, DQNConfig):
        raw: dict[str, Any] = dataclasses.asdict(config)
    elif config is None:
        raw = {}
    elif isinstance(config, Mapping):
        raw = dict(config)
    else:
        raise ConfigError(
            f"{prefix}: expected a DQNConfig or a mapping, got {config!r}"
        )
    raw.update(overrides)
    try:
        return pydantic.TypeAdapter(DQNConfig).validate_python(raw)
    except pydantic.ValidationError as e:
        errors = []
        for err in e.errors(include_url=False):
            err = dict(err)
            err["loc"] = (prefix, *err["loc"]) if prefix else tuple(err["loc"])
            errors.append(_config._format_error(err))
        raise ConfigError("; ".join(dict.fromkeys(errors))) from None
