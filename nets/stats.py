"""Activation statistics (mean, std, fraction of zeros) of layer outputs.

Two ways to get them:

* networks from `nets.build_network` compute them directly for every layer or
  node (after its activation) in `Network.stats_transformed`;
* `with_activation_stats(fn)` wraps any Haiku function body and records, through
  `hk.intercept_methods`, the output of every module ``__call__`` at a given
  depth (1: top-level modules). It sees module outputs only: an activation
  applied outside a module (``jax.nn.relu(hk.Linear(4)(x))``) is not included.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import haiku as hk
import jax
import jax.numpy as jnp

Stats = dict[str, dict[str, jax.Array]]


def activation_stats(x: jax.Array) -> dict[str, jax.Array]:
    """Scalar statistics of `x` (any shape) computed in float32.

    Returns:
      ``{"mean", "std", "frac_zero"}``, each a float32 scalar; ``frac_zero`` is the
      fraction of elements exactly equal to 0 (dead ReLUs, dropped units).
    """
    x = jnp.asarray(x, jnp.float32)
    return {
        "mean": jnp.mean(x),
        "std": jnp.std(x),
        "frac_zero": jnp.mean((x == 0).astype(jnp.float32)),
    }


def _depth(module_name: str) -> int:
    # Submodules are named "parent/child" (older Haiku: "parent/~/child").
    return len([part for part in module_name.split("/") if part != "~"])


def with_activation_stats(
    fn: Callable[..., Any], *, depth: int = 1
) -> Callable[..., tuple[Any, Stats]]:
    """Wraps a Haiku function body to also return activation statistics.

    Args:
      fn: a function meant to run inside `hk.transform` / `transform_with_state`.
      depth: record modules at this nesting depth (1: top-level modules such as
        ``"mlp"``; 2: their direct children such as ``"mlp/linear_0"``).

    Returns:
      A function with `fn`'s arguments returning ``(outputs, stats)``, where
      ``stats[module_name] = {"mean", "std", "frac_zero"}`` of each module's
      output (array outputs only). A module called several times gets keys
      ``name``, ``name#2``, ...
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth: expected a positive int, got {depth!r}")

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        stats: Stats = {}

        def interceptor(next_fn, a, kw, context: hk.MethodContext):
            out = next_fn(*a, **kw)
            name = context.module.module_name
            if (
                context.method_name == "__call__"
                and _depth(name) == depth
                and isinstance(out, jax.Array)
            ):
                key, k = name, 1
                while key in stats:
                    k += 1
                    key = f"{name}#{k}"
                stats[key] = activation_stats(out)
            return out

        with hk.intercept_methods(interceptor):
            out = fn(*args, **kwargs)
        return out, stats

    return wrapped
