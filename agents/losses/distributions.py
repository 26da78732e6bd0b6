"""Log-probabilities and entropies of the policies the losses take, from ``jax.nn``.

rlax's distribution helpers are deprecated; these four functions are all the policy
losses need. Sampling belongs to the agents (``jax.random.categorical``,
``mean + exp(log_std) * jax.random.normal``).
"""

import math

import chex
import jax
import jax.numpy as jnp

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def categorical_log_prob(logits: jax.Array, a: jax.Array) -> jax.Array:
    """Log-probability of actions under a softmax policy.

    Args:
      logits: unnormalised action preferences, [..., A]. Mask actions with a large
        negative finite value rather than ``-inf`` to keep gradients finite.
      a: action indices, int, [...] (the leading shape of ``logits``).

    Returns:
      ``log_softmax(logits)[..., a]``, [...].
    """
    chex.assert_type([logits, a], [float, int])
    chex.assert_rank(logits, a.ndim + 1)
    chex.assert_equal_shape_prefix([logits, a], a.ndim)
    log_pi = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(log_pi, a[..., None], axis=-1)[..., 0]


def categorical_entropy(logits: jax.Array) -> jax.Array:
    """Entropy ``-sum_a pi(a) log pi(a)`` of a softmax policy, in nats.

    Args:
      logits: unnormalised action preferences, [..., A].

    Returns:
      The entropy, [...].
    """
    chex.assert_type(logits, float)
    log_pi = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.sum(jnp.exp(log_pi) * log_pi, axis=-1)


def gaussian_log_prob(mean: jax.Array, log_std: jax.Array, a: jax.Array) -> jax.Array:
    """Log-density of actions under a diagonal Gaussian, summed over action dims.

    ``sum_d [-0.5 ((a_d - mean_d) / std_d)^2 - log std_d - 0.5 log(2 pi)]``.

    Args:
      mean: means, [..., D].
      log_std: log standard deviations, broadcastable to ``mean`` (e.g. a
        state-independent [D] parameter).
      a: actions, [..., D].

    Returns:
      The log-density, [...].
    """
    chex.assert_type([mean, log_std, a], float)
    chex.assert_equal_shape([mean, a])
    chex.assert_is_broadcastable(log_std.shape, mean.shape)
    z = (a - mean) * jnp.exp(-log_std)
    log_density = -0.5 * jnp.square(z) - log_std - _HALF_LOG_2PI
    return jnp.sum(log_density, axis=-1)


def gaussian_entropy(log_std: jax.Array) -> jax.Array:
    """Entropy of a diagonal Gaussian, summed over action dims, in nats.

    ``sum_d [0.5 + 0.5 log(2 pi) + log std_d]``; it does not depend on the mean.

    Args:
      log_std: log standard deviations, [..., D]. Pass a state-independent [D]
        parameter broadcast to [B, D] to get per-sample entropies.

    Returns:
      The entropy, [...].
    """
    chex.assert_type(log_std, float)
    return jnp.sum(0.5 + _HALF_LOG_2PI + log_std, axis=-1)
