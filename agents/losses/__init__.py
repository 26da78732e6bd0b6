"""Loss operators for custom agents: batched, jittable, built on rlax.

Time suffixes follow rlax (``q_tm1, a_tm1, r_t, discount_t, q_t``); batched losses take
``[B, ...]`` transitions, sequence estimators take one trajectory ``[T]`` or a
time-major rollout ``[T, B]`` (the ``*_batch`` variants). ``discount_t`` is always
``gamma * (1 - done)``. Losses are to be minimised.
"""

from agents.losses.distributions import categorical_entropy as categorical_entropy
from agents.losses.distributions import categorical_log_prob as categorical_log_prob
from agents.losses.distributions import gaussian_entropy as gaussian_entropy
from agents.losses.distributions import gaussian_log_prob as gaussian_log_prob
from agents.losses.policy import Metrics as Metrics
from agents.losses.policy import a2c_loss as a2c_loss
from agents.losses.policy import entropy_loss as entropy_loss
from agents.losses.policy import policy_gradient_loss as policy_gradient_loss
from agents.losses.policy import ppo_loss as ppo_loss
from agents.losses.policy import reinforce_loss as reinforce_loss
from agents.losses.policy import vtrace_loss as vtrace_loss
from agents.losses.returns import VTraceOutput as VTraceOutput
from agents.losses.returns import discounted_returns as discounted_returns
from agents.losses.returns import gae as gae
from agents.losses.returns import gae_batch as gae_batch
from agents.losses.returns import n_step_targets as n_step_targets
from agents.losses.returns import n_step_targets_batch as n_step_targets_batch
from agents.losses.returns import n_step_transition as n_step_transition
from agents.losses.returns import vtrace_targets as vtrace_targets
from agents.losses.returns import vtrace_targets_batch as vtrace_targets_batch
from agents.losses.value import categorical_double_q_loss as categorical_double_q_loss
from agents.losses.value import categorical_q_values as categorical_q_values
from agents.losses.value import double_q_learning_loss as double_q_learning_loss
from agents.losses.value import huber_loss as huber_loss
from agents.losses.value import l2_loss as l2_loss
from agents.losses.value import q_learning_loss as q_learning_loss

__all__ = [
    "Metrics",
    "VTraceOutput",
    "a2c_loss",
    "categorical_double_q_loss",
    "categorical_entropy",
    "categorical_log_prob",
    "categorical_q_values",
    "discounted_returns",
    "double_q_learning_loss",
    "entropy_loss",
    "gae",
    "gae_batch",
    "gaussian_entropy",
    "gaussian_log_prob",
    "huber_loss",
    "l2_loss",
    "n_step_targets",
    "n_step_targets_batch",
    "n_step_transition",
    "policy_gradient_loss",
    "ppo_loss",
    "reinforce_loss",
    "vtrace_loss",
    "vtrace_targets",
    "vtrace_targets_batch",
]
