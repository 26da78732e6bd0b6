"""Supervised losses: pure, jittable, a scalar mean over the batch.

Every loss takes ``(outputs, labels, weights=None)``. `weights` ([B], bool or float)
turns the batch mean into a weighted mean, so padded evaluation batches can mask
their padding; when all weights are zero the loss is 0 (never NaN). Losses are
thin wrappers around optax's per-example losses.

`get_loss(spec)` builds a loss from a config entry (``"mse"`` or
``{name: huber, delta: 2.0}``); `l2_regularization` adds weight decay on chosen
Haiku modules.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax

from jaxlab.errors import ConfigError

LossFn = Callable[..., jax.Array]  # (outputs, labels, weights=None) -> scalar


def _weighted_mean(per_example: jax.Array, weights: chex.Array | None) -> jax.Array:
    """Mean of `per_example` [B] weighted by `weights` [B]; 0 if they sum to 0."""
    if weights is None:
        return jnp.mean(per_example)
    chex.assert_rank(weights, 1)
    chex.assert_equal_shape_prefix([per_example, weights], 1)
    w = jnp.asarray(weights).astype(per_example.dtype)
    # `where` keeps garbage (inf/NaN) in padded rows out of the sum.
    total = jnp.sum(jnp.where(w != 0, per_example * w, 0.0))
    norm = jnp.sum(w)
    safe_norm = jnp.where(norm != 0, norm, 1.0)
    return jnp.where(norm != 0, total / safe_norm, 0.0)


def _per_example_mean(x: jax.Array) -> jax.Array:
    """Means a [B, ...] array over all but the batch axis -> [B]."""
    return jnp.mean(x.reshape(x.shape[0], -1), axis=1)


def _match_single_output(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Squeezes outputs [B, 1] to [B] when targets are [B] (no silent [B, B])."""
    if outputs.ndim == 2 and targets.ndim == 1 and outputs.shape[1] == 1:
        return outputs[:, 0]
    return outputs


def softmax_cross_entropy(
    logits: chex.Array, labels: chex.Array, weights: chex.Array | None = None
) -> jax.Array:
    """Softmax cross-entropy, mean over the batch.

    Args:
      logits: unnormalized log-probabilities, [B, C].
      labels: integer class ids [B], or one-hot / probabilities [B, C] (float).
      weights: optional per-example weights or mask, [B].

    Returns:
      The (weighted) mean cross-entropy, a float scalar.
    """
    chex.assert_rank(logits, 2)
    chex.assert_type(logits, float)
    if labels.ndim == 1:
        chex.assert_type(labels, int)
        chex.assert_equal_shape_prefix([logits, labels], 1)
        per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    else:
        chex.assert_equal_shape([logits, labels])
        per_example = optax.softmax_cross_entropy(logits, labels.astype(logits.dtype))
    return _weighted_mean(per_example, weights)


def sigmoid_binary_cross_entropy(
    logits: chex.Array, labels: chex.Array, weights: chex.Array | None = None
) -> jax.Array:
    """Sigmoid binary cross-entropy, mean over all elements (and weighted batch).

    Args:
      logits: [B] or [B, K] (K independent binary outputs); [B, 1] is also accepted
        with labels [B].
      labels: same shape as `logits`, values in {0, 1} (int or float) or
        probabilities in [0, 1].
      weights: optional per-example weights or mask, [B].

    Returns:
      The mean over outputs and the (weighted) mean over the batch, a scalar.
    """
    chex.assert_type(logits, float)
    logits = _match_single_output(logits, labels)
    chex.assert_equal_shape([logits, labels])
    per_element = optax.sigmoid_binary_cross_entropy(
        logits, labels.astype(logits.dtype)
    )
    return _weighted_mean(_per_example_mean(per_element), weights)


def mean_squared_error(
    preds: chex.Array, targets: chex.Array, weights: chex.Array | None = None
) -> jax.Array:
    """Mean squared error over all elements (unweighted: ``mean((p - t)**2)``).

    Args:
      preds: predictions, [B, ...]; [B, 1] is also accepted with targets [B].
      targets: same shape as `preds`.
      weights: optional per-example weights or mask, [B].

    Returns:
      The (weighted) mean over the batch of the per-example mean squared error.
    """
    chex.assert_type(preds, float)
    preds = _match_single_output(preds, targets)
    chex.assert_equal_shape([preds, targets])
    per_element = optax.squared_error(preds, targets.astype(preds.dtype))
    return _weighted_mean(_per_example_mean(per_element), weights)


def huber(
    preds: chex.Array,
    targets: chex.Array,
    weights: chex.Array | None = None,
    *,
    delta: float = 1.0,
) -> jax.Array:
    """Huber loss (`optax.huber_loss`), mean over all elements.

    Quadratic (``0.5 * e**2``) for ``|e| <= delta``, linear beyond.

    Args:
      preds: predictions, [B, ...]; [B, 1] is also accepted with targets [B].
      targets: same shape as `preds`.
      weights: optional per-example weights or mask, [B].
      delta: where the loss turns from quadratic to linear.

    Returns:
      The (weighted) mean over the batch of the per-example mean Huber loss.
    """
    chex.assert_type(preds, float)
    preds = _match_single_output(preds, targets)
    chex.assert_equal_shape([preds, targets])
    per_element = optax.huber_loss(preds, targets.astype(preds.dtype), delta=delta)
    return _weighted_mean(_per_example_mean(per_element), weights)


def l2_regularization(
    params: Mapping[str, Any], regularizers: Mapping[str, float]
) -> jax.Array:
    """L2 penalty ``sum_m scale_m * 0.5 * sum(w**2)`` over chosen Haiku modules.

    A params key ``k`` belongs to module ``m`` if ``k == m`` or
    ``k.startswith(m + "/")`` (so ``"mlp"`` covers ``"mlp/~/linear_0"``). Only
    leaves named ``w`` count: biases and normalization parameters are not
    regularized. A key matched by two listed modules is counted twice.

    Args:
      params: Haiku params, ``{module_name: {param_name: array}}``.
      regularizers: ``{module_name: scale}``; empty means no penalty.

    Returns:
      The penalty, a float32 scalar.

    Raises:
      ValueError: a listed module matches no key of `params` (likely a typo).
    """
    total = jnp.zeros([], jnp.float32)
    for module, scale in regularizers.items():
        keys = [k for k in params if k == module or k.startswith(module + "/")]
        if not keys:
            raise ValueError(
                f"l2_regularization: no module {module!r} in params "
                f"(modules: {sorted(params)})"
            )
        for key in keys:
            leaves = jax.tree_util.tree_leaves_with_path(params[key])
            for path, leaf in leaves:
                last = path[-1] if path else None
                if getattr(last, "key", getattr(last, "name", None)) == "w":
                    sq = jnp.sum(jnp.square(leaf.astype(jnp.float32)))
                    total = total + scale * 0.5 * sq
    return total


# ----------------------------------------------------------------- registry

LOSSES: dict[str, LossFn] = {
    "softmax_cross_entropy": softmax_cross_entropy,
    "sigmoid_cross_entropy": sigmoid_binary_cross_entropy,
    "mean_squared_error": mean_squared_error,
    "huber": huber,
}

_CLASSIFICATION = frozenset({"softmax_cross_entropy", "sigmoid_cross_entropy"})


def _norm(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


_ALIASES: dict[str, str] = {
    _norm(alias): name
    for name, aliases in {
        "softmax_cross_entropy": (
            "softmax_cross_entropy",
            "cross_entropy",
            "categorical_crossentropy",
            "softmax_cross_entropy_with_logits",
        ),
        "sigmoid_cross_entropy": (
            "sigmoid_cross_entropy",
            "sigmoid_binary_cross_entropy",
            "binary_crossentropy",
            "bce",
        ),
        "mean_squared_error": ("mean_squared_error", "mse", "l2"),
        "huber": ("huber", "huber_loss"),
    }.items()
    for alias in aliases
}


def _parse_spec(spec: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Returns (canonical name, kwargs) or raises ConfigError."""
    if isinstance(spec, str):
        raw_name, kwargs = spec, {}
    elif isinstance(spec, Mapping):
        kwargs = dict(spec)
        raw_name = kwargs.pop("name", None)
        if not isinstance(raw_name, str):
            raise ConfigError(
                f"model.loss.name: required, a loss name (known: {', '.join(LOSSES)})"
            )
    else:
        raise ConfigError(
            f"model.loss: expected a loss name or a mapping, got {spec!r}"
        )
    name = _ALIASES.get(_norm(raw_name))
    if name is None:
        raise ConfigError(
            f"model.loss: unknown loss {raw_name!r} (known: {', '.join(LOSSES)})"
        )
    return name, kwargs


def get_loss(spec: str | Mapping[str, Any]) -> LossFn:
    """Builds a loss from a name or ``{name: ..., **kwargs}`` (case-insensitive).

    Names and aliases: softmax_cross_entropy (cross_entropy,
    categorical_crossentropy, softmax_cross_entropy_with_logits),
    sigmoid_cross_entropy (sigmoid_binary_cross_entropy, binary_crossentropy,
    bce), mean_squared_error (mse, l2, MeanSquaredError), huber (huber_loss).

    Args:
      spec: e.g. ``"mse"`` or ``{"name": "huber", "delta": 2.0}``.

    Returns:
      ``loss(outputs, labels, weights=None) -> scalar``.

    Raises:
      ConfigError: unknown name or argument, or a bad argument value; the message
        starts with ``model.loss``.
    """
    name, kwargs = _parse_spec(spec)
    fn = LOSSES[name]
    accepted = [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    for key, value in kwargs.items():
        if key not in accepted:
            raise ConfigError(
                f"model.loss.{key}: unknown argument for loss {name!r} "
                f"(accepted: {', '.join(accepted) or 'none'})"
            )
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not value > 0:
            raise ConfigError(
                f"model.loss.{key}: expected a positive number, got {value!r}"
            )
    return functools.partial(fn, **kwargs) if kwargs else fn


def is_classification(spec: str | Mapping[str, Any]) -> bool:
    """Whether the loss takes class labels (so classification metrics apply)."""
    return _parse_spec(spec)[0] in _CLASSIFICATION
