"""Epsilon schedules for epsilon-greedy exploration: ``env_steps -> epsilon``.

Both are optax schedules (pure and jittable), evaluated at the number of
environment steps taken so far.
"""

from __future__ import annotations

import optax

from agents.dqn.config import ExplorationConfig


def linear_epsilon(*, start: float, end: float, steps: int) -> optax.Schedule:
    """Epsilon falling linearly from `start` to `end` over `steps`, then constant.

    Args:
      start: epsilon at step 0.
      end: epsilon from step `steps` on.
      steps: length of the decay, positive.

    Returns:
      A schedule ``t [] int -> epsilon [] float32`` (`optax.linear_schedule`).
    """
    return optax.linear_schedule(
        init_value=start, end_value=end, transition_steps=steps
    )


def exponential_epsilon(
    *, start: float, end: float, steps: int, decay_rate: float
) -> optax.Schedule:
    """Epsilon ``max(end, start * decay_rate ** (t / steps))``.

    The smooth (non-staircase) exponential decay of polyaxon-lib's decaying
    exploration, bounded below by `end`.

    Args:
      start: epsilon at step 0.
      end: lower bound.
      steps: steps over which epsilon is multiplied by `decay_rate`, positive.
      decay_rate: multiplicative factor per `steps`, in (0, 1].

    Returns:
      A schedule ``t [] int -> epsilon [] float32`` (`optax.exponential_decay`).
    """
    return optax.exponential_decay(
        init_value=start,
        transition_steps=steps,
        decay_rate=decay_rate,
        end_value=end,
    )


def epsilon_schedule(config: ExplorationConfig) -> optax.Schedule:
    """The schedule described by an `ExplorationConfig`."""
    if config.schedule == "linear":
        return linear_epsilon(start=config.start, end=config.end, steps=config.steps)
    if config.schedule == "exponential":
        assert config.decay_rate is not None  # checked by ExplorationConfig
        return exponential_epsilon(
            start=config.start,
            end=config.end,
            steps=config.steps,
            decay_rate=config.decay_rate,
        )
    raise ValueError(f"exploration.schedule: unknown schedule {config.schedule!r}")
