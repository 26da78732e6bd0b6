"""Policy-gradient losses: REINFORCE, A2C, PPO and IMPALA (V-trace).

All losses are to be *minimised*. The simple pieces (``policy_gradient_loss``,
``entropy_loss``, ``reinforce_loss``) return a scalar; the actor-critic losses return
``(loss, metrics)`` with ``metrics`` a dict of scalar diagnostics (no gradient).
``a2c_loss`` takes logits (discrete actions); ``ppo_loss`` and ``vtrace_loss`` take
log-probabilities and entropies of the actions taken, so they serve categorical and
Gaussian policies alike (see ``agents.losses.distributions``).
"""

import chex
import jax
import jax.numpy as jnp
import rlax

from agents.losses.distributions import categorical_entropy, categorical_log_prob
from agents.losses.returns import vtrace_targets_batch

Metrics = dict[str, jax.Array]

_sg = jax.lax.stop_gradient


def _weights(w_t: jax.Array | None, like: jax.Array) -> jax.Array:
    if w_t is None:
        return jnp.ones_like(like)
    chex.assert_type(w_t, float)
    chex.assert_equal_shape([w_t, like])
    return w_t


def policy_gradient_loss(
    logits_t: jax.Array,
    a_t: jax.Array,
    adv_t: jax.Array,
    w_t: jax.Array | None = None,
) -> jax.Array:
    """Policy-gradient loss ``-mean(w_t * log pi(a_t) * stop_gradient(adv_t))``.

    Same maths as ``rlax.policy_gradient_loss``, with the log-probabilities taken by
    ``jax.nn.log_softmax`` rather than rlax's deprecated distribution helpers. See
    "Simple Statistical Gradient-Following Algorithms for Connectionist
    Reinforcement Learning", Williams (1992).

    Args:
      logits_t: action logits, [T, A] (or [B, A]).
      a_t: actions taken, int, [T].
      adv_t: advantages (or returns), [T]; no gradient flows through them.
      w_t: optional per-step weights, [T] (e.g. a padding mask); default ones.

    Returns:
      The scalar loss.
    """
    chex.assert_rank([logits_t, a_t, adv_t], [2, 1, 1])
    chex.assert_type([logits_t, a_t, adv_t], [float, int, float])
    chex.assert_equal_shape([a_t, adv_t])
    chex.assert_equal_shape_prefix([logits_t, a_t], 1)
    w_t = _weights(w_t, adv_t)
    log_pi_a_t = categorical_log_prob(logits_t, a_t)
    return -jnp.mean(log_pi_a_t * _sg(adv_t) * w_t)


def entropy_loss(logits_t: jax.Array, w_t: jax.Array | None = None) -> jax.Array:
    """Entropy regulariser ``-mean(w_t * H(pi_t))``: the *negative* mean entropy.

    Adding ``coef * entropy_loss`` to a loss pushes entropy *up*. See "Function
    Optimization using Connectionist Reinforcement Learning Algorithms", Williams &
    Peng (1991).

    Args:
      logits_t: action logits, [T, A] (or [B, A]).
      w_t: optional per-step weights, [T]; default ones.

    Returns:
      The scalar loss (<= 0 for non-negative weights).
    """
    chex.assert_rank(logits_t, 2)
    chex.assert_type(logits_t, float)
    entropy_t = categorical_entropy(logits_t)
    return -jnp.mean(entropy_t * _weights(w_t, entropy_t))


def reinforce_loss(
    logits_t: jax.Array, a_t: jax.Array, returns_t: jax.Array
) -> jax.Array:
    """REINFORCE: the policy gradient with Monte-Carlo returns and no baseline.

    ``-mean_t(log pi(a_t|s_t) * G_t)``; the simplest policy-gradient method, kept
    as a teaching example. Compute ``returns_t`` with
    ``agents.losses.discounted_returns(r_t, discount_t)``. See Williams (1992).

    Args:
      logits_t: action logits along one episode, [T, A].
      a_t: actions taken, int, [T].
      returns_t: returns from each step, [T].

    Returns:
      The scalar loss.
    """
    return policy_gradient_loss(logits_t, a_t, returns_t)


def a2c_loss(
    logits: jax.Array,
    values: jax.Array,
    actions: jax.Array,
    returns: jax.Array,
    *,
    value_coef: float = 0.5,
    entropy_coef: float = 0.01,
) -> tuple[jax.Array, Metrics]:
    """Advantage actor-critic loss for a discrete policy.

    ``loss = policy_loss + value_coef * value_loss - entropy_coef * entropy`` with
    ``policy_loss = -mean(log pi(a) * stop_gradient(returns - values))``,
    ``value_loss = 0.5 * mean((returns - values)^2)`` and ``entropy`` the mean
    policy entropy. See "Asynchronous Methods for Deep Reinforcement Learning",
    Mnih et al. (2016).

    Args:
      logits: action logits, [B, A].
      values: value estimates ``v(s)``, [B].
      actions: actions taken, int, [B].
      returns: value targets (n-step or lambda-returns), [B]; no gradient.
      value_coef: weight of the value loss.
      entropy_coef: weight of the entropy bonus.

    Returns:
      ``(loss, metrics)`` with metrics ``policy_loss``, ``value_loss``, ``entropy``.
    """
    chex.assert_rank([logits, values, actions, returns], [2, 1, 1, 1])
    chex.assert_type([logits, values, actions, returns], [float, float, int, float])
    chex.assert_equal_shape([values, actions, returns])
    chex.assert_equal_shape_prefix([logits, values], 1)
    returns = _sg(returns)
    policy_loss = policy_gradient_loss(logits, actions, returns - values)
    value_loss = jnp.mean(rlax.l2_loss(returns - values))
    entropy = jnp.mean(categorical_entropy(logits))
    loss = policy_loss + value_coef * value_loss - entropy_coef * entropy
    metrics = {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy}
    return loss, _sg(metrics)


def ppo_loss(
    log_prob: jax.Array,
    old_log_prob: jax.Array,
    advantages: jax.Array,
    values: jax.Array,
    old_values: jax.Array,
    returns: jax.Array,
    entropy: jax.Array,
    *,
    clip_eps: float = 0.2,
    value_clip_eps: float | None = 0.2,
    value_coef: float = 0.5,
    entropy_coef: float = 0.01,
    normalize_advantages: bool = True,
) -> tuple[jax.Array, Metrics]:
    """PPO-clip loss: clipped surrogate, (clipped) value loss and entropy bonus.

    With ``ratio = exp(log_prob - old_log_prob)``:
    ``policy_loss = rlax.clipped_surrogate_pg_loss(ratio, adv, clip_eps)``
    ``= -mean(min(ratio * adv, clip(ratio, 1 +- clip_eps) * adv))``;
    ``value_loss = 0.5 * mean(max((v - R)^2, (v_old + clip(v - v_old, +-value_clip_eps)
    - R)^2))`` as in PureJaxRL/CleanRL (plain ``0.5 * mean((v - R)^2)`` when
    ``value_clip_eps`` is None); ``loss = policy_loss + value_coef * value_loss -
    entropy_coef * mean(entropy)``. See "Proximal Policy Optimization Algorithms",
    Schulman et al. (2017).

    Discrete policies: ``log_prob = categorical_log_prob(logits, a)``,
    ``entropy = categorical_entropy(logits)``. Gaussian policies:
    ``gaussian_log_prob(mean, log_std, a)``, ``gaussian_entropy(log_std)``. Flatten
    a [T, B] rollout minibatch to [T * B] first.

    Args:
      log_prob: log pi(a|s) under the current parameters, [B].
      old_log_prob: log pi(a|s) when the data was collected, [B].
      advantages: advantage estimates (e.g. from ``gae_batch``), [B].
      values: current value estimates, [B].
      old_values: value estimates when the data was collected, [B].
      returns: value targets (e.g. ``gae_batch``'s returns), [B].
      entropy: policy entropy at each state under the current parameters, [B].
      clip_eps: ratio clipping range epsilon.
      value_clip_eps: value clipping range, or None for an unclipped value loss.
      value_coef: weight of the value loss.
      entropy_coef: weight of the entropy bonus.
      normalize_advantages: standardise ``advantages`` over the minibatch
        (mean 0, std 1) before use.

    Returns:
      ``(loss, metrics)`` with scalar metrics ``policy_loss``, ``value_loss``,
      ``entropy``, ``approx_kl`` (the ``(ratio - 1) - log ratio`` estimator of
      KL(old || new)) and ``clip_fraction`` (share of samples with
      ``|ratio - 1| > clip_eps``).
    """
    args = [log_prob, old_log_prob, advantages, values, old_values, returns, entropy]
    chex.assert_rank(args, 1)
    chex.assert_type(args, float)
    chex.assert_equal_shape(args)
    old_log_prob, advantages, old_values, returns = _sg(
        (old_log_prob, advantages, old_values, returns)
    )

    if normalize_advantages:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    log_ratio = log_prob - old_log_prob
    ratio = jnp.exp(log_ratio)
    policy_loss = rlax.clipped_surrogate_pg_loss(ratio, advantages, clip_eps)

    value_sq = jnp.square(values - returns)
    if value_clip_eps is not None:
        clipped = old_values + jnp.clip(
            values - old_values, -value_clip_eps, value_clip_eps
        )
        value_sq = jnp.maximum(value_sq, jnp.square(clipped - returns))
    value_loss = 0.5 * jnp.mean(value_sq)

    mean_entropy = jnp.mean(entropy)
    loss = policy_loss + value_coef * value_loss - entropy_coef * mean_entropy
    metrics = {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": mean_entropy,
        "approx_kl": jnp.mean((ratio - 1.0) - log_ratio),
        "clip_fraction": jnp.mean(
            (jnp.abs(ratio - 1.0) > clip_eps).astype(ratio.dtype)
        ),
    }
    return loss, _sg(metrics)


def vtrace_loss(
    log_prob_tm1: jax.Array,
    behaviour_log_prob_tm1: jax.Array,
    entropy_tm1: jax.Array,
    values: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    *,
    lambda_: float = 1.0,
    clip_rho: float = 1.0,
    clip_pg_rho: float = 1.0,
    value_coef: float = 0.5,
    entropy_coef: float = 0.01,
) -> tuple[jax.Array, Metrics]:
    """IMPALA actor-critic loss with V-trace off-policy corrections.

    ``rho = exp(stop_gradient(log_prob_tm1 - behaviour_log_prob_tm1))`` feeds
    ``vtrace_targets_batch``; then ``policy_loss = -mean(log_prob_tm1 *
    pg_advantage)``, ``value_loss = 0.5 * mean(errors^2)`` (errors ``vs - v``, target
    stopped) and ``loss = policy_loss + value_coef * value_loss - entropy_coef *
    mean(entropy_tm1)``. See "IMPALA: Scalable Distributed Deep-RL with Importance
    Weighted Actor-Learner Architectures", Espeholt et al. (2018).

    Args:
      log_prob_tm1: log pi(a|s) of the actions taken, learner policy, [T, B].
      behaviour_log_prob_tm1: log mu(a|s) of the same actions under the actor
        policy that collected them, [T, B].
      entropy_tm1: learner-policy entropies at those states, [T, B].
      values: learner values ``v(s_0) .. v(s_T)`` incl. the bootstrap row, [T + 1, B]
        (the same convention as ``gae_batch``).
      r_t: rewards, [T, B].
      discount_t: bootstrap discounts ``gamma * (1 - done)``, [T, B].
      lambda_: trace mixing parameter.
      clip_rho: rho-bar, clips the ratios in the value targets.
      clip_pg_rho: clips the ratios in the policy-gradient advantage.
      value_coef: weight of the value loss.
      entropy_coef: weight of the entropy bonus.

    Returns:
      ``(loss, metrics)`` with scalar metrics ``policy_loss``, ``value_loss``,
      ``entropy`` and ``mean_rho`` (mean unclipped importance ratio).
    """
    seqs = [log_prob_tm1, behaviour_log_prob_tm1, entropy_tm1, r_t, discount_t]
    chex.assert_rank([*seqs, values], 2)
    chex.assert_type([*seqs, values], float)
    chex.assert_equal_shape([*seqs, values[1:]])
    rho_tm1 = jnp.exp(_sg(log_prob_tm1 - behaviour_log_prob_tm1))
    out = vtrace_targets_batch(
        values[:-1],
        values[1:],
        r_t,
        discount_t,
        rho_tm1,
        lambda_=lambda_,
        clip_rho=clip_rho,
        clip_pg_rho=clip_pg_rho,
    )
    policy_loss = -jnp.mean(log_prob_tm1 * out.pg_advantage)
    value_loss = jnp.mean(rlax.l2_loss(out.errors))
    entropy = jnp.mean(entropy_tm1)
    loss = policy_loss + value_coef * value_loss - entropy_coef * entropy
    metrics = {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": entropy,
        "mean_rho": jnp.mean(rho_tm1),
    }
    return loss, _sg(metrics)
