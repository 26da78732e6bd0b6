"""Activation functions by name (case-insensitive), shared by modules and layers."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Activation = Callable[[jax.Array], jax.Array]


def _identity(x: jax.Array) -> jax.Array:
    return x


# `gelu` is the tanh approximation (jax.nn.gelu's default); `leaky_relu` uses
# jax.nn's negative slope of 0.01.
ACTIVATIONS: dict[str, Activation] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "elu": jax.nn.elu,
    "gelu": jax.nn.gelu,
    "leaky_relu": jax.nn.leaky_relu,
    "softplus": jax.nn.softplus,
    "swish": jax.nn.swish,
    "silu": jax.nn.silu,
    "linear": _identity,
    "none": _identity,
}


def activation_names() -> list[str]:
    """The accepted activation names, sorted."""
    return sorted(ACTIVATIONS)


def get_activation(name: str | None) -> Activation:
    """Returns the activation function called `name` (case-insensitive).

    Args:
      name: one of `activation_names()`; ``None`` means the identity.

    Returns:
      An elementwise function `x[...] -> y[...]`.

    Raises:
      ValueError: if the name is unknown.
    """
    if name is None:
        return _identity
    if not isinstance(name, str) or name.lower() not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {name!r} (known: {', '.join(activation_names())})"
        )
    return ACTIVATIONS[name.lower()]
