"""Value-based losses: Q-learning, double Q-learning and categorical (C51) DQN.

Every loss here takes a batch of transitions with rlax's time suffixes
(``q_tm1, a_tm1, r_t, discount_t, q_t``), applies rlax's single-transition operator
with ``jax.vmap``, and returns ``(loss, per_sample)``: the scalar mean loss to minimise
and a ``[B]`` array (the TD errors, or the per-sample cross-entropies for C51) to feed,
for instance, a prioritised replay buffer.

``discount_t`` is the discount *applied to the bootstrap*, i.e. ``gamma * (1 - done)``
for the transition that produced ``r_t``; targets carry no gradient.
"""

from typing import Literal

import chex
import jax
import jax.numpy as jnp
import rlax

LossKind = Literal["huber", "l2"]

_batched_q_learning = jax.vmap(rlax.q_learning)
_batched_double_q_learning = jax.vmap(rlax.double_q_learning)


def huber_loss(x: jax.Array, delta: float = 1.0) -> jax.Array:
    """Elementwise Huber loss: ``0.5 x^2`` for ``|x| <= delta``, linear beyond.

    Thin wrapper on ``rlax.huber_loss``. See "Robust Estimation of a Location
    Parameter", Huber (1964).

    Args:
      x: errors of any shape, float.
      delta: where the loss turns from quadratic to linear.

    Returns:
      The loss, same shape as ``x`` (not reduced).
    """
    chex.assert_type(x, float)
    return rlax.huber_loss(x, delta)


def l2_loss(x: jax.Array) -> jax.Array:
    """Elementwise squared loss ``0.5 x^2`` (thin wrapper on ``rlax.l2_loss``).

    Args:
      x: errors of any shape, float.

    Returns:
      The loss, same shape as ``x`` (not reduced).
    """
    chex.assert_type(x, float)
    return rlax.l2_loss(x)


def _reduce_td(
    td_error: jax.Array,
    loss: LossKind,
    huber_delta: float,
    weights: jax.Array | None,
) -> jax.Array:
    """Mean (optionally importance-weighted) Huber or L2 loss of TD errors [B]."""
    if loss == "huber":
        per_sample = rlax.huber_loss(td_error, huber_delta)
    elif loss == "l2":
        per_sample = rlax.l2_loss(td_error)
    else:
        raise ValueError(f"loss: expected 'huber' or 'l2', got {loss!r}")
    if weights is not None:
        chex.assert_type(weights, float)
        chex.assert_equal_shape([weights, td_error])
        per_sample = per_sample * weights
    return jnp.mean(per_sample)


def _check_transitions(q_tm1, a_tm1, r_t, discount_t, q_ts) -> None:
    """Shape and dtype checks shared by the Q-learning losses (trace time only)."""
    chex.assert_rank(
        [q_tm1, a_tm1, r_t, discount_t, *q_ts], [2, 1, 1, 1] + [2] * len(q_ts)
    )
    chex.assert_type(
        [q_tm1, a_tm1, r_t, discount_t, *q_ts],
        [float, int, float, float] + [float] * len(q_ts),
    )
    chex.assert_equal_shape([q_tm1, *q_ts])
    chex.assert_equal_shape([a_tm1, r_t, discount_t])
    chex.assert_equal_shape_prefix([q_tm1, a_tm1], 1)


def q_learning_loss(
    q_tm1: jax.Array,
    a_tm1: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    q_t: jax.Array,
    *,
    loss: LossKind = "huber",
    huber_delta: float = 1.0,
    weights: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Batched Q-learning loss (DQN) via ``jax.vmap(rlax.q_learning)``.

    ``td_error = r_t + discount_t * max_a q_t[a] - q_tm1[a_tm1]``, target stopped.
    See "Human-level control through deep reinforcement learning", Mnih et al.
    (2015), and Sutton & Barto, "Reinforcement Learning: An Introduction", 6.5.

    Args:
      q_tm1: online Q-values at the state where ``a_tm1`` was taken, [B, A].
      a_tm1: actions taken, int, [B].
      r_t: rewards, [B].
      discount_t: bootstrap discounts, ``gamma * (1 - done)``, [B].
      q_t: target-network Q-values at the next state, [B, A].
      loss: ``"huber"`` (DQN) or ``"l2"`` (``0.5 td^2``).
      huber_delta: Huber threshold, used when ``loss="huber"``.
      weights: optional per-sample weights (e.g. prioritised-replay importance
        weights), [B].

    Returns:
      ``(loss, td_error)``: the mean loss, a scalar, and the TD errors, [B].
    """
    _check_transitions(q_tm1, a_tm1, r_t, discount_t, [q_t])
    td_error = _batched_q_learning(q_tm1, a_tm1, r_t, discount_t, q_t)
    return _reduce_td(td_error, loss, huber_delta, weights), td_error


def double_q_learning_loss(
    q_tm1: jax.Array,
    a_tm1: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    q_t_value: jax.Array,
    q_t_selector: jax.Array,
    *,
    loss: LossKind = "huber",
    huber_delta: float = 1.0,
    weights: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Batched double Q-learning loss via ``jax.vmap(rlax.double_q_learning)``.

    The online network picks the next action, the target network evaluates it:
    ``td_error = r_t + discount_t * q_t_value[argmax q_t_selector] - q_tm1[a_tm1]``.
    See "Double Q-learning", van Hasselt (2010), and "Deep Reinforcement Learning
    with Double Q-learning", van Hasselt, Guez & Silver (2016).

    Args:
      q_tm1: online Q-values at the state where ``a_tm1`` was taken, [B, A].
      a_tm1: actions taken, int, [B].
      r_t: rewards, [B].
      discount_t: bootstrap discounts, ``gamma * (1 - done)``, [B].
      q_t_value: target-network Q-values at the next state, [B, A].
      q_t_selector: online-network Q-values at the next state, [B, A].
      loss: ``"huber"`` or ``"l2"``.
      huber_delta: Huber threshold, used when ``loss="huber"``.
      weights: optional per-sample weights, [B].

    Returns:
      ``(loss, td_error)``: the mean loss, a scalar, and the TD errors, [B].
    """
    _check_transitions(q_tm1, a_tm1, r_t, discount_t, [q_t_value, q_t_selector])
    td_error = _batched_double_q_learning(
        q_tm1, a_tm1, r_t, discount_t, q_t_value, q_t_selector
    )
    return _reduce_td(td_error, loss, huber_delta, weights), td_error


def categorical_q_values(logits: jax.Array, atoms: jax.Array) -> jax.Array:
    """Expected Q-values of categorical return distributions (C51).

    Args:
      logits: logits over the atoms, [..., A, N].
      atoms: the fixed support, [N].

    Returns:
      ``sum_i softmax(logits)_i * atoms_i``, [..., A].
    """
    chex.assert_rank(atoms, 1)
    chex.assert_type([logits, atoms], float)
    chex.assert_axis_dimension(logits, -1, atoms.shape[0])
    return jnp.sum(jax.nn.softmax(logits, axis=-1) * atoms, axis=-1)


def _categorical_double_q(atoms, logits_tm1, a_tm1, r_t, discount_t, logits_t, sel_t):
    """One transition; mirrors ``rlax.categorical_double_q_learning``.

    rlax's version computes the cross-entropy with its deprecated distribution
    helpers, so we keep its projection and take the cross-entropy with ``jax.nn``.
    """
    target_z = r_t + discount_t * atoms  # [N]
    p_target_z = jax.nn.softmax(logits_t[jnp.argmax(sel_t)])  # [N]
    target = jax.lax.stop_gradient(
        rlax.categorical_l2_project(target_z, p_target_z, atoms)
    )
    return -jnp.sum(target * jax.nn.log_softmax(logits_tm1[a_tm1]))


def categorical_double_q_loss(
    logits_tm1: jax.Array,
    a_tm1: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    logits_t: jax.Array,
    q_t_selector: jax.Array,
    *,
    atoms: jax.Array,
    weights: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Batched categorical (C51) double Q-learning loss.

    The target distribution ``r_t + discount_t * z`` under the target network's
    distribution for ``argmax q_t_selector`` is projected back onto ``atoms`` with
    ``rlax.categorical_l2_project``; the loss is its cross-entropy with the online
    distribution for ``a_tm1``. Same maths as ``rlax.categorical_double_q_learning``.
    See "A Distributional Perspective on Reinforcement Learning", Bellemare, Dabney
    & Munos (2017), and "Double Q-learning", van Hasselt (2010).

    Args:
      logits_tm1: online logits at the state where ``a_tm1`` was taken, [B, A, N].
      a_tm1: actions taken, int, [B].
      r_t: rewards, [B].
      discount_t: bootstrap discounts, ``gamma * (1 - done)``, [B].
      logits_t: target-network logits at the next state, [B, A, N].
      q_t_selector: online Q-values at the next state (e.g.
        ``categorical_q_values(online_logits_t, atoms)``), [B, A].
      atoms: the fixed, increasing support shared by both networks, [N].
      weights: optional per-sample weights, [B].

    Returns:
      ``(loss, cross_entropy)``: the mean loss, a scalar, and the per-sample
      cross-entropies, [B] (a natural replay priority).
    """
    chex.assert_rank(
        [logits_tm1, a_tm1, r_t, discount_t, logits_t, q_t_selector, atoms],
        [3, 1, 1, 1, 3, 2, 1],
    )
    chex.assert_type(
        [logits_tm1, a_tm1, r_t, discount_t, logits_t, q_t_selector, atoms],
        [float, int, float, float, float, float, float],
    )
    chex.assert_equal_shape([logits_tm1, logits_t])
    chex.assert_equal_shape([a_tm1, r_t, discount_t])
    chex.assert_equal_shape_prefix([logits_tm1, q_t_selector], 2)
    chex.assert_equal_shape_prefix([logits_tm1, a_tm1], 1)
    chex.assert_axis_dimension(logits_tm1, 2, atoms.shape[0])
    per_sample = jax.vmap(_categorical_double_q, in_axes=(None, 0, 0, 0, 0, 0, 0))(
        atoms, logits_tm1, a_tm1, r_t, discount_t, logits_t, q_t_selector
    )
    if weights is not None:
        chex.assert_type(weights, float)
        chex.assert_equal_shape([weights, per_sample])
        return jnp.mean(per_sample * weights), per_sample
    return jnp.mean(per_sample), per_sample
