"""Optimizers and learning-rate schedules from an `OptimizerConfig`.

`make_optimizer(config)` returns an optax optimizer whose state carries the
learning rate of the *next* update, so `learning_rate(opt_state)` can be logged
without re-evaluating the schedule on the host:

    tx = make_optimizer({"name": "adam", "learning_rate": 1e-3,
                         "schedule": {"name": "cosine", "decay_steps": 1000}})
    opt_state = tx.init(params)
    learning_rate(opt_state)  # 1e-3, the rate the first update will use
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax

from jaxlab import config as _config
from jaxlab.config import (
    ConstantSchedule,
    CosineSchedule,
    ExponentialDecaySchedule,
    LinearSchedule,
    OptimizerConfig,
    PiecewiseSchedule,
    WarmupCosineSchedule,
)
from jaxlab.errors import ConfigError

_LR = "learning_rate"


def as_optimizer_config(config: OptimizerConfig | Mapping[str, Any]) -> OptimizerConfig:
    """Validates a plain dict into an `OptimizerConfig` (returns configs as-is).

    Raises:
      ConfigError: the dict is invalid; the message names the field, prefixed with
        ``optimizer.`` (e.g. ``optimizer.learning_rate: ...``).
    """
    if isinstance(config, OptimizerConfig):
        return config
    if not isinstance(config, Mapping):
        raise ConfigError(
            f"optimizer: expected an OptimizerConfig or a mapping, got {config!r}"
        )
    return _config.validate(OptimizerConfig, dict(config), prefix="optimizer")


def make_schedule(config: OptimizerConfig | Mapping[str, Any]) -> optax.Schedule:
    """The learning-rate schedule ``step -> rate`` of an optimizer config.

    `config.learning_rate` is the peak (or initial) rate; `config.schedule`
    shapes it (see the schedule dataclasses in `jaxlab.config`):

    - constant (or no schedule): `learning_rate` at every step.
    - exponential_decay: `optax.exponential_decay` (staircase, transition_begin,
      end_value as configured).
    - cosine: `optax.cosine_decay_schedule` down to ``alpha * learning_rate``.
    - warmup_cosine: `optax.warmup_cosine_decay_schedule`, linear warmup from
      `init_value` to `learning_rate`, cosine decay to `end_value`; `decay_steps`
      includes the warmup.
    - linear: `optax.linear_schedule` to `end_value` over `transition_steps`.
    - piecewise: `optax.piecewise_constant_schedule`: the rate is multiplied by
      ``scales[i]`` from step ``boundaries[i]`` on (``step >= boundaries[i]``).

    Args:
      config: an `OptimizerConfig` or a dict validated into one.

    Returns:
      An optax schedule, ``step (int scalar) -> rate (float scalar)``.
    """
    config = as_optimizer_config(config)
    lr = config.learning_rate
    s = config.schedule
    if s is None or isinstance(s, ConstantSchedule):
        return optax.constant_schedule(lr)
    if isinstance(s, ExponentialDecaySchedule):
        return optax.exponential_decay(
            init_value=lr,
            transition_steps=s.transition_steps,
            decay_rate=s.decay_rate,
            transition_begin=s.transition_begin,
            staircase=s.staircase,
            end_value=s.end_value,
        )
    if isinstance(s, CosineSchedule):
        return optax.cosine_decay_schedule(
            init_value=lr, decay_steps=s.decay_steps, alpha=s.alpha
        )
    if isinstance(s, WarmupCosineSchedule):
        if s.warmup_steps >= s.decay_steps:
            raise ConfigError(
                "optimizer.schedule.warmup_steps: must be smaller than decay_steps "
                f"({s.warmup_steps} >= {s.decay_steps})"
            )
        return optax.warmup_cosine_decay_schedule(
            init_value=s.init_value,
            peak_value=lr,
            warmup_steps=s.warmup_steps,
            decay_steps=s.decay_steps,
            end_value=s.end_value,
        )
    if isinstance(s, LinearSchedule):
        return optax.linear_schedule(
            init_value=lr, end_value=s.end_value, transition_steps=s.transition_steps
        )
    if isinstance(s, PiecewiseSchedule):
        return optax.piecewise_constant_schedule(
            init_value=lr,
            boundaries_and_scales=dict(zip(s.boundaries, s.scales, strict=True)),
        )
    raise TypeError(f"unsupported schedule {s!r}")  # unreachable with the schema


def _base_optimizer(
    config: OptimizerConfig,
) -> Callable[[jax.Array], optax.GradientTransformation]:
    """``learning_rate -> optimizer`` with every other hyperparameter bound."""
    c = config
    if c.name == "adam":
        return lambda lr: optax.adam(lr, b1=c.b1, b2=c.b2, eps=c.eps)
    if c.name == "adamw":
        return lambda lr: optax.adamw(
            lr, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay
        )
    if c.name == "sgd":
        return lambda lr: optax.sgd(lr, momentum=c.momentum, nesterov=c.nesterov)
    if c.name == "rmsprop":
        return lambda lr: optax.rmsprop(
            lr, decay=c.decay, eps=c.eps, momentum=c.momentum, nesterov=c.nesterov
        )
    if c.name == "adagrad":
        return lambda lr: optax.adagrad(lr)
    raise TypeError(f"unsupported optimizer {c.name!r}")  # unreachable


def make_optimizer(
    config: OptimizerConfig | Mapping[str, Any],
) -> optax.GradientTransformationExtraArgs:
    """An optax optimizer from a config: clipping, then the optimizer.

    Optimizers: adam, adamw (``weight_decay``), sgd (``momentum``,
    ``nesterov``), rmsprop (``decay``, ``eps``, ``momentum``), adagrad (optax
    defaults). ``eps``, ``b1``, ``b2`` apply to the Adam family (``eps`` also to
    rmsprop). When ``clip_norm`` is set, gradients are first clipped by global
    norm (`optax.clip_by_global_norm`).

    The whole chain is wrapped in `optax.inject_hyperparams`, so the state
    stores the learning rate; after each update it is advanced to the rate of
    the *next* update, which is what `learning_rate(opt_state)` returns (updates
    themselves are exactly those of the plain optax optimizer with the schedule).

    Args:
      config: an `OptimizerConfig` or a dict validated into one.

    Returns:
      An optax gradient transformation.

    Raises:
      ConfigError: `config` is a dict that does not validate.
    """
    config = as_optimizer_config(config)
    schedule = make_schedule(config)
    base = _base_optimizer(config)
    clip_norm = config.clip_norm

    def build(learning_rate: jax.Array) -> optax.GradientTransformation:
        if clip_norm is None:
            return base(learning_rate)
        return optax.chain(optax.clip_by_global_norm(clip_norm), base(learning_rate))

    inner = optax.inject_hyperparams(build)(learning_rate=schedule)

    def update_fn(updates, state, params=None, **extra_args):
        updates, state = inner.update(updates, state, params, **extra_args)
        # inject_hyperparams stores the rate it just applied; store the next one.
        current = state.hyperparams[_LR]
        hyperparams = dict(state.hyperparams)
        hyperparams[_LR] = jnp.asarray(schedule(state.count), current.dtype)
        return updates, state._replace(hyperparams=hyperparams)

    return optax.GradientTransformationExtraArgs(inner.init, update_fn)


def learning_rate(opt_state: optax.OptState) -> jax.Array:
    """The learning rate the next update will apply, read from the state.

    Works on the state of `make_optimizer` and on any optax state containing
    one `optax.inject_hyperparams` state with a ``learning_rate`` (for example
    wrapped in `optax.chain` or `optax.MultiSteps`). On a state replicated over
    devices the result keeps the leading device axis.

    Args:
      opt_state: an optimizer state.

    Returns:
      The learning rate: a scalar, or [num_devices] for a replicated state.

    Raises:
      ValueError: the state holds no injected learning rate, or several.
    """
    try:
        # `hyperparams_states` has a `learning_rate` key too (the schedule's
        # state, a NamedTuple): keep the array.
        lr = optax.tree_utils.tree_get(
            opt_state, _LR, filtering=lambda _, value: hasattr(value, "dtype")
        )
    except KeyError:
        raise ValueError(
            "learning_rate: the optimizer state holds several learning rates; "
            "read them with optax.tree_utils.tree_get_all_with_path"
        ) from None
    if lr is None:
        raise ValueError(
            "learning_rate: the optimizer state holds no learning rate; build the "
            "optimizer with jaxlab.optim.make_optimizer or optax.inject_hyperparams"
        )
    chex.assert_type(lr, float)
    return lr
