"""Return and advantage estimators: n-step, discounted, GAE and V-trace targets.

Conventions (rlax's, Sutton & Barto's): along a trajectory of T transitions,
``r_t[i]`` and ``discount_t[i]`` are the reward and bootstrap discount of transition
``i`` (from state ``s_i`` to ``s_{i+1}``); ``discount_t[i] = gamma * (1 - done_i)``, so
a 0 marks an episode end and nothing after it leaks back across the boundary.
Single-trajectory functions take ``[T]``; the ``*_batch`` variants take time-major
``[T, B]`` arrays (as PPO/IMPALA rollouts are stored) and ``jax.vmap`` over axis 1.

All outputs here are *targets*: they carry no gradient.
"""

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import rlax


class VTraceOutput(NamedTuple):
    """V-trace results, each [T] (or [T, B] from ``vtrace_targets_batch``).

    Attributes:
      errors: ``vs - v_tm1`` with the V-trace target ``vs`` gradient-stopped, so
        ``0.5 * errors**2`` is the value loss and its gradient moves ``v_tm1``.
      pg_advantage: clipped-ratio policy-gradient advantage (no gradient).
      q_estimate: ``r_t + discount_t * vs_{t+1}`` (no gradient).
    """

    errors: jax.Array
    pg_advantage: jax.Array
    q_estimate: jax.Array


def n_step_targets(
    r_t: jax.Array,
    discount_t: jax.Array,
    v_t: jax.Array,
    *,
    n: int,
    lambda_: float = 1.0,
) -> jax.Array:
    """Strided n-step bootstrapped returns via ``rlax.n_step_bootstrapped_returns``.

    ``G_i = r_t[i] + d[i] r_t[i+1] + ... + d[i]...d[i+n-2] r_t[i+n-1]
    + d[i]...d[i+n-1] v_t[i+n-1]``, where ``d = discount_t``. Near the end of the
    sequence fewer steps are available: the return is truncated and bootstraps
    from ``v_t[T-1]``. With ``lambda_ < 1`` each step mixes in its own bootstrap
    value (a truncated lambda-return). See Sutton & Barto, "Reinforcement Learning:
    An Introduction", 7.1.

    Args:
      r_t: rewards, [T].
      discount_t: bootstrap discounts, [T].
      v_t: values of the states *after* each transition, ``v(s_{i+1})``, [T].
      n: number of rewards summed before bootstrapping, ``n >= 1``.
      lambda_: mixing parameter; 1 gives plain n-step returns.

    Returns:
      n-step returns for states ``s_0 .. s_{T-1}``, [T].
    """
    if n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    chex.assert_rank([r_t, discount_t, v_t], 1)
    chex.assert_type([r_t, discount_t, v_t], float)
    chex.assert_equal_shape([r_t, discount_t, v_t])
    return rlax.n_step_bootstrapped_returns(
        r_t, discount_t, v_t, n, lambda_t=lambda_, stop_target_gradients=True
    )


def n_step_targets_batch(
    r_t: jax.Array,
    discount_t: jax.Array,
    v_t: jax.Array,
    *,
    n: int,
    lambda_: float = 1.0,
) -> jax.Array:
    """``n_step_targets`` over a time-major batch: all inputs [T, B], output [T, B]."""
    chex.assert_rank([r_t, discount_t, v_t], 2)
    fn = lambda r, d, v: n_step_targets(r, d, v, n=n, lambda_=lambda_)
    return jax.vmap(fn, in_axes=1, out_axes=1)(r_t, discount_t, v_t)


def n_step_transition(
    r_t: jax.Array, discount_t: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Collapses n consecutive steps into one replay transition (reward, discount).

    For a window ``s_0 -a_0-> s_1 ... -> s_n`` store ``(s_0, a_0, reward, discount,
    s_n)`` with ``reward = sum_k (d_0 ... d_{k-1}) r_k`` and
    ``discount = d_0 ... d_{n-1}``; then any one-step loss above, e.g.
    ``q_learning_loss(q(s_0), a_0, reward, discount, q(s_n))``, learns from the
    n-step target ``reward + discount * max_a q(s_n, a)``. A zero discount inside the
    window (episode end) zeroes every later reward and the bootstrap, so whatever
    the buffer holds after the end is ignored. See "Rainbow: Combining Improvements
    in Deep Reinforcement Learning", Hessel et al. (2018).

    Args:
      r_t: rewards of the window, time-major, [n] or [n, B].
      discount_t: per-step discounts ``gamma * (1 - done)``, same shape as ``r_t``.

    Returns:
      ``(reward, discount)``: scalars for [n] inputs, [B] for [n, B] inputs.
    """
    chex.assert_rank(r_t, {1, 2})
    chex.assert_type([r_t, discount_t], float)
    chex.assert_equal_shape([r_t, discount_t])
    # Discount accumulated *before* step k: 1, d_0, d_0 d_1, ...
    cum = jnp.cumprod(discount_t, axis=0)
    before = jnp.concatenate([jnp.ones_like(cum[:1]), cum[:-1]], axis=0)
    return jnp.sum(before * r_t, axis=0), cum[-1]


def discounted_returns(
    r_t: jax.Array, discount_t: jax.Array, v_t: jax.Array | float = 0.0
) -> jax.Array:
    """Monte-Carlo returns ``G_i = r_t[i] + discount_t[i] G_{i+1}`` via rlax.

    Wraps ``rlax.discounted_returns``; the recursion bootstraps from ``v_t``
    after the last step (0 for a complete episode). See Sutton & Barto, 3.3.

    Args:
      r_t: rewards, [T].
      discount_t: bootstrap discounts, [T].
      v_t: bootstrap value(s): a scalar, or the values after each step, [T]
        (only ``v_t[T-1]`` matters).

    Returns:
      Returns for states ``s_0 .. s_{T-1}``, [T].
    """
    chex.assert_rank([r_t, discount_t], 1)
    chex.assert_type([r_t, discount_t], float)
    chex.assert_equal_shape([r_t, discount_t])
    v_t = jnp.asarray(v_t, dtype=r_t.dtype)
    return rlax.discounted_returns(r_t, discount_t, v_t, stop_target_gradients=True)


def gae(
    r_t: jax.Array,
    discount_t: jax.Array,
    values: jax.Array,
    *,
    lambda_: float = 0.95,
) -> jax.Array:
    """Generalized advantage estimates via rlax's truncated GAE.

    ``delta_i = r_t[i] + discount_t[i] * values[i+1] - values[i]`` and
    ``A_i = delta_i + discount_t[i] * lambda_ * A_{i+1}`` (with ``A_T = 0``), as in
    "High-Dimensional Continuous Control Using Generalized Advantage Estimation",
    Schulman et al. (2016), and PPO (Schulman et al. 2017).

    Value convention (``rlax.truncated_generalized_advantage_estimation``):
    ``values`` has **T + 1** entries, ``v(s_0) .. v(s_T)``; the last one is the
    bootstrap value of the state after the rollout. With auto-resetting envs
    ``values[i+1]`` after a terminal step is the next episode's first state; its
    discount is 0, so it is ignored. (Time-limit truncation is not distinguished
    from termination here.)

    Args:
      r_t: rewards, [T].
      discount_t: bootstrap discounts ``gamma * (1 - done)``, [T].
      values: state values ``v(s_0) .. v(s_T)``, [T + 1].
      lambda_: GAE mixing parameter (0: one-step TD error, 1: Monte-Carlo).

    Returns:
      Advantages for states ``s_0 .. s_{T-1}``, [T] (no gradient).
    """
    chex.assert_rank([r_t, discount_t, values], 1)
    chex.assert_type([r_t, discount_t, values], float)
    chex.assert_equal_shape([r_t, discount_t, values[1:]])
    return rlax.truncated_generalized_advantage_estimation(
        r_t, discount_t, lambda_, values, stop_target_gradients=True
    )


def gae_batch(
    r_t: jax.Array,
    discount_t: jax.Array,
    values: jax.Array,
    *,
    lambda_: float = 0.95,
) -> tuple[jax.Array, jax.Array]:
    """``gae`` over a time-major rollout, plus value targets.

    Args:
      r_t: rewards, [T, B].
      discount_t: bootstrap discounts ``gamma * (1 - done)``, [T, B].
      values: state values including the bootstrap row, [T + 1, B].
      lambda_: GAE mixing parameter.

    Returns:
      ``(advantages, returns)``, both [T, B] and without gradient, where
      ``returns = advantages + values[:-1]`` (the lambda-returns, PPO's value
      targets).
    """
    chex.assert_rank([r_t, discount_t, values], 2)
    chex.assert_type([r_t, discount_t, values], float)
    chex.assert_equal_shape([r_t, discount_t, values[1:]])
    fn = lambda r, d, v: gae(r, d, v, lambda_=lambda_)
    advantages = jax.vmap(fn, in_axes=1, out_axes=1)(r_t, discount_t, values)
    returns = advantages + jax.lax.stop_gradient(values[:-1])
    return advantages, returns


def vtrace_targets(
    v_tm1: jax.Array,
    v_t: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    rho_tm1: jax.Array,
    *,
    lambda_: float = 1.0,
    clip_rho: float = 1.0,
    clip_pg_rho: float = 1.0,
) -> VTraceOutput:
    """V-trace TD errors and policy-gradient advantages for one trajectory.

    Wraps ``rlax.vtrace_td_error_and_advantage``. With ``rho_i`` the importance
    ratio ``pi(a_i|s_i) / mu(a_i|s_i)``, ``c_i = lambda_ * min(1, rho_i)`` and
    ``delta_i = min(clip_rho, rho_i) (r_t[i] + discount_t[i] v_t[i] - v_tm1[i])``,
    the V-trace target ``vs_i`` satisfies
    ``vs_i - v_tm1[i] = delta_i + discount_t[i] c_i (vs_{i+1} - v_t[i])``, and the
    policy-gradient advantage is
    ``min(clip_pg_rho, rho_i) (r_t[i] + discount_t[i] vs_{i+1} - v_tm1[i])``
    (``vs_T = v_t[T-1]``). See "IMPALA: Scalable Distributed Deep-RL with Importance
    Weighted Actor-Learner Architectures", Espeholt et al. (2018), section 4.

    Args:
      v_tm1: values ``v(s_0) .. v(s_{T-1})``, [T].
      v_t: values ``v(s_1) .. v(s_T)``, i.e. ``v_tm1`` shifted by one plus the
        bootstrap value, [T].
      r_t: rewards, [T].
      discount_t: bootstrap discounts, [T].
      rho_tm1: importance ratios ``pi / mu`` of the actions taken (not logs), [T].
      lambda_: trace mixing parameter.
      clip_rho: ``rho-bar``, clips the ratios in the TD errors.
      clip_pg_rho: clips the ratios in the policy-gradient advantage.

    Returns:
      ``VTraceOutput(errors, pg_advantage, q_estimate)``, each [T]:
      ``errors = vs - v_tm1`` (the target ``vs`` is gradient-stopped, so
      ``0.5 * errors**2`` is the value loss), the policy-gradient advantage and the
      Q estimate ``r_t + discount_t * vs_{t+1}``.
    """
    chex.assert_rank([v_tm1, v_t, r_t, discount_t, rho_tm1], 1)
    chex.assert_type([v_tm1, v_t, r_t, discount_t, rho_tm1], float)
    chex.assert_equal_shape([v_tm1, v_t, r_t, discount_t, rho_tm1])
    out = rlax.vtrace_td_error_and_advantage(
        v_tm1,
        v_t,
        r_t,
        discount_t,
        rho_tm1,
        lambda_=lambda_,
        clip_rho_threshold=clip_rho,
        clip_pg_rho_threshold=clip_pg_rho,
        stop_target_gradients=True,
    )
    # Advantages and Q estimates are targets for the policy: never differentiate.
    return VTraceOutput(
        errors=out.errors,
        pg_advantage=jax.lax.stop_gradient(out.pg_advantage),
        q_estimate=jax.lax.stop_gradient(out.q_estimate),
    )


def vtrace_targets_batch(
    v_tm1: jax.Array,
    v_t: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    rho_tm1: jax.Array,
    *,
    lambda_: float = 1.0,
    clip_rho: float = 1.0,
    clip_pg_rho: float = 1.0,
) -> VTraceOutput:
    """``vtrace_targets`` over time-major [T, B] inputs (``jax.vmap`` over axis 1).

    Returns:
      ``VTraceOutput(errors, pg_advantage, q_estimate)``, each [T, B].
    """
    chex.assert_rank([v_tm1, v_t, r_t, discount_t, rho_tm1], 2)
    fn = lambda *xs: vtrace_targets(
        *xs, lambda_=lambda_, clip_rho=clip_rho, clip_pg_rho=clip_pg_rho
    )
    return jax.vmap(fn, in_axes=1, out_axes=1)(v_tm1, v_t, r_t, discount_t, rho_tm1)
