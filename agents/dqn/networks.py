"""Q-networks: an MLP torso with a plain or dueling head.

Haiku stays here: `q_network` returns a transformed network (pure `init` /
`apply`); the agent and the training loops only call those two functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import haiku as hk
import jax
import jax.numpy as jnp

from nets.activations import get_activation

Init = Literal["uniform_fan_in", "haiku"]
_INITS = ("uniform_fan_in", "haiku")


def _check_args(num_actions: int, hidden: Sequence[int], init: str) -> tuple[int, ...]:
    if isinstance(num_actions, bool) or not isinstance(num_actions, int):
        raise ValueError(f"num_actions must be a positive int, got {num_actions!r}")
    if num_actions < 1:
        raise ValueError(f"num_actions must be a positive int, got {num_actions!r}")
    hidden = tuple(hidden)
    if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
        raise ValueError(f"hidden sizes must be positive ints, got {hidden!r}")
    if init not in _INITS:
        raise ValueError(f"init must be one of {_INITS}, got {init!r}")
    return hidden


def _linear(size: int, fan_in: int, init: str, name: str) -> hk.Linear:
    if init == "haiku":  # truncated normal, stddev 1/sqrt(fan_in); zero bias
        return hk.Linear(size, name=name)
    bound = 1.0 / math.sqrt(fan_in)
    return hk.Linear(
        size,
        w_init=hk.initializers.RandomUniform(-bound, bound),
        b_init=hk.initializers.RandomUniform(-bound, bound),
        name=name,
    )


class QNetwork(hk.Module):
    """Maps observations to one Q-value per action.

    Observations are flattened (a Catch board `[rows, columns]` becomes a vector),
    passed through an MLP torso (every hidden layer activated), then through a
    linear head, or a dueling head ``q = v + a - mean_a(a)`` (Wang et al. 2016,
    "Dueling Network Architectures for Deep Reinforcement Learning").

    Initialization: ``"uniform_fan_in"`` (default) draws weights and biases
    from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, PyTorch's `nn.Linear` default,
    under which the usual DQN hyperparameters (RL-Zoo, SB3, CleanRL) were tuned.
    ``"haiku"`` is Haiku's default (truncated normal with stddev
    ``1/sqrt(fan_in)``, zero biases): weights ~1.7x larger and activations 2-3x
    larger per layer, which with Adam makes each update move Q faster; with the
    RL-Zoo CartPole config it ended at >= 475 on 3 of 10 seeds, against 19 of
    30 with the default.
    """

    def __init__(
        self,
        num_actions: int,
        *,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        dueling: bool = False,
        init: Init = "uniform_fan_in",
        name: str | None = None,
    ):
        """Builds the module.

        Args:
          num_actions: number of discrete actions `A`, positive.
          hidden: hidden layer sizes (may be empty: a linear Q-function).
          activation: activation name (see `nets.activation_names()`).
          dueling: use a dueling head.
          init: ``"uniform_fan_in"`` or ``"haiku"`` (see the class docstring).
          name: module name.

        Raises:
          ValueError: for a non-positive `num_actions` or hidden size, or an
            unknown activation or init.
        """
        super().__init__(name=name)
        self.hidden = _check_args(num_actions, hidden, init)
        self.num_actions = num_actions
        self.activation = get_activation(activation)
        self.dueling = bool(dueling)
        self.init = init

    def __call__(self, obs: jax.Array) -> jax.Array:
        """Q-values `[B, A]` of observations `[B, ...]`."""
        x = jnp.reshape(obs, (obs.shape[0], -1)).astype(jnp.float32)  # [B, F]
        for i, size in enumerate(self.hidden):
            layer = _linear(size, x.shape[-1], self.init, f"linear_{i}")
            x = self.activation(layer(x))  # [B, H]
        fan_in = x.shape[-1]
        if not self.dueling:
            return _linear(self.num_actions, fan_in, self.init, "q")(x)  # [B, A]
        value = _linear(1, fan_in, self.init, "value")(x)  # [B, 1]
        advantage = _linear(self.num_actions, fan_in, self.init, "advantage")(x)
        return value + advantage - jnp.mean(advantage, axis=-1, keepdims=True)


def q_network(
    num_actions: int,
    *,
    hidden: Sequence[int] = (64, 64),
    activation: str = "relu",
    dueling: bool = False,
    init: Init = "uniform_fan_in",
) -> hk.Transformed:
    """A transformed `QNetwork`: ``init(key, obs[B, ...])``, ``apply(params, obs)``.

    `apply` needs no random key (`hk.without_apply_rng`) and returns `[B, A]`.
    Arguments are validated here, before any tracing.
    """
    hidden = _check_args(num_actions, hidden, init)
    get_activation(activation)

    def forward(obs: jax.Array) -> jax.Array:
        net = QNetwork(
            num_actions,
            hidden=hidden,
            activation=activation,
            dueling=dueling,
            init=init,
        )
        return net(obs)

    return hk.without_apply_rng(hk.transform(forward))
