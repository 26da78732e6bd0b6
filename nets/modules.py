"""Ready-made Haiku modules: MLP, ConvNet, LeNet, ResNet and Dropout.

Every module validates its arguments in ``__init__`` (raising `ValueError`) and
takes ``__call__(x, is_training=False)`` so that all of them can be driven the
same way under `hk.transform_with_state`. `is_training` must be a Python bool.
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import haiku as hk
import jax
import jax.numpy as jnp

from nets.activations import get_activation
from nets.conv import Conv2D


def _check_positive_ints(name: str, values: Sequence[int], *, allow_empty=False):
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise ValueError(
            f"{name}: expected a sequence of positive ints, got {values!r}"
        )
    if not values and not allow_empty:
        raise ValueError(f"{name}: expected at least one size, got {values!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name}: expected positive ints, got {values!r}")


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")


def _check_rate(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}: expected a float in [0, 1), got {value!r}")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name}: expected a float in [0, 1), got {value!r}")


class Dropout(hk.Module):
    """Inverted dropout, active only when ``is_training`` is True.

    Uses ``hk.next_rng_key()``, so the transformed function needs an rng when
    training; in evaluation it is the identity and needs none.
    """

    def __init__(self, rate: float, *, name: str | None = None):
        """Builds the module.

        Args:
          rate: probability of zeroing an element, in [0, 1).
          name: module name.
        """
        super().__init__(name=name)
        _check_rate("rate", rate)
        self.rate = float(rate)

    def __call__(self, x: jax.Array, is_training: bool = False) -> jax.Array:
        """Applies dropout to `x` (any shape), scaling kept values by 1/(1-rate)."""
        if not is_training or self.rate == 0.0:
            return x
        return hk.dropout(hk.next_rng_key(), self.rate, x)


class MLP(hk.Module):
    """A multi-layer perceptron: Linear layers with an activation in between."""

    def __init__(
        self,
        output_sizes: Sequence[int],
        *,
        activation: str = "relu",
        activate_final: bool = False,
        dropout_rate: float = 0.0,
        name: str | None = None,
    ):
        """Builds the module.

        Args:
          output_sizes: sizes of the Linear layers; the last is the output size.
          activation: activation name (see `nets.activation_names()`).
          activate_final: whether to apply the activation (and dropout) after
            the last layer too.
          dropout_rate: dropout after each activation when training, in [0, 1).
          name: module name.
        """
        super().__init__(name=name)
        _check_positive_ints("output_sizes", output_sizes)
        _check_rate("dropout_rate", dropout_rate)
        self.activation = get_activation(activation)
        self.output_sizes = tuple(output_sizes)
        self.activate_final = bool(activate_final)
        self.dropout_rate = float(dropout_rate)

    def __call__(self, x: jax.Array, is_training: bool = False) -> jax.Array:
        """Maps `x` [B, F] (or [..., F]) to [B, output_sizes[-1]] (or [..., O])."""
        num_layers = len(self.output_sizes)
        for i, size in enumerate(self.output_sizes):
            x = hk.Linear(size, name=f"linear_{i}")(x)
            if i < num_layers - 1 or self.activate_final:
                x = self.activation(x)
                if self.dropout_rate > 0:
                    x = Dropout(self.dropout_rate, name=f"dropout_{i}")(x, is_training)
        return x


class ConvNet(hk.Module):
    """A stack of [Conv2D -> activation -> (MaxPool)] blocks, then an optional head.

    Convolutions use SAME padding and stride 1; pools use a 2x2 window, stride 2,
    SAME padding (so 8x8 -> 4x4 -> 2x2, and 7x7 -> 4x4).
    """

    def __init__(
        self,
        channels: Sequence[int],
        *,
        kernel_shape: int = 3,
        pool: bool = True,
        activation: str = "relu",
        output_size: int | None = None,
        name: str | None = None,
    ):
        """Builds the module.

        Args:
          channels: output channels of each convolution.
          kernel_shape: square kernel size of every convolution.
          pool: whether to max-pool after each block.
          activation: activation name.
          output_size: if set, flatten and add a Linear layer of this size.
          name: module name.
        """
        super().__init__(name=name)
        _check_positive_ints("channels", channels)
        _check_positive_int("kernel_shape", kernel_shape)
        if output_size is not None:
            _check_positive_int("output_size", output_size)
        self.channels = tuple(channels)
        self.kernel_shape = kernel_shape
        self.pool = bool(pool)
        self.activation = get_activation(activation)
        self.output_size = output_size

    def __call__(self, x: jax.Array, is_training: bool = False) -> jax.Array:
        """Maps images `x` [B, H, W, C] to [B, output_size], or to feature maps
        [B, H', W', channels[-1]] without a head. `is_training` is unused."""
        del is_training
        chex.assert_rank(x, 4)
        for i, c in enumerate(self.channels):
            x = Conv2D(c, self.kernel_shape, name=f"conv_{i}")(x)
            x = self.activation(x)
            if self.pool:
                x = hk.max_pool(x, (1, 2, 2, 1), (1, 2, 2, 1), "SAME")
        if self.output_size is not None:
            x = hk.Flatten()(x)
            x = hk.Linear(self.output_size, name="head")(x)
        return x


class LeNet(hk.Module):
    """LeNet-5 style classifier (as in the TensorFlow/polyaxon MNIST examples).

    Conv 32 5x5 SAME -> relu -> MaxPool 2 -> Conv 64 5x5 SAME -> relu -> MaxPool 2
    -> Flatten -> Linear 1024 -> tanh -> Linear num_classes. Pools are 2x2,
    stride 2, SAME padding.
    """

    def __init__(self, num_classes: int = 10, *, name: str | None = None):
        """Builds the module.

        Args:
          num_classes: number of output logits.
          name: module name.
        """
        super().__init__(name=name)
        _check_positive_int("num_classes", num_classes)
        self.num_classes = num_classes

    def __call__(self, x: jax.Array, is_training: bool = False) -> jax.Array:
        """Maps images `x` [B, H, W, C] (NHWC) to logits [B, num_classes].

        `is_training` is accepted for a uniform interface and unused.
        """
        del is_training
        chex.assert_rank(x, 4)
        x = jax.nn.relu(Conv2D(32, 5, name="conv_0")(x))
        x = hk.max_pool(x, (1, 2, 2, 1), (1, 2, 2, 1), "SAME")
        x = jax.nn.relu(Conv2D(64, 5, name="conv_1")(x))
        x = hk.max_pool(x, (1, 2, 2, 1), (1, 2, 2, 1), "SAME")
        x = hk.Flatten()(x)
        x = jnp.tanh(hk.Linear(1024, name="linear_0")(x))
        return hk.Linear(self.num_classes, name="linear_1")(x)


class _ResidualBlock(hk.Module):
    """ResNet v1 basic block: two 3x3 convs with BatchNorm and a shortcut."""

    def __init__(self, channels, stride, bn_config, name=None):
        super().__init__(name=name)
        self.channels = channels
        self.stride = stride
        self.bn_config = bn_config

    def __call__(self, x: jax.Array, is_training: bool) -> jax.Array:
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.channels:
            shortcut = Conv2D(
                self.channels, 1, stride=self.stride, with_bias=False, name="proj"
            )(x)
            shortcut = hk.BatchNorm(name="proj_bn", **self.bn_config)(
                shortcut, is_training
            )
        y = Conv2D(
            self.channels, 3, stride=self.stride, with_bias=False, name="conv_0"
        )(x)
        y = jax.nn.relu(hk.BatchNorm(name="bn_0", **self.bn_config)(y, is_training))
        y = Conv2D(self.channels, 3, with_bias=False, name="conv_1")(y)
        y = hk.BatchNorm(name="bn_1", **self.bn_config)(y, is_training)
        return jax.nn.relu(y + shortcut)


class ResNet(hk.Module):
    """A small ResNet v1 (He et al. 2016, arXiv:1512.03385) with BatchNorm.

    Stem: Conv 3x3 channels[0] -> BN -> relu. Stage `s` has
    `blocks_per_stage[s]` basic blocks with `channels[s]` channels; every stage
    after the first starts with stride 2. Head: global average pool -> Linear.
    BatchNorm moving statistics live in Haiku state: use
    `hk.transform_with_state`; they are updated when ``is_training=True`` and used
    when False.
    """

    def __init__(
        self,
        blocks_per_stage: Sequence[int] = (1, 1),
        channels: Sequence[int] = (16, 32),
        num_classes: int = 10,
        *,
        bn_decay: float = 0.9,
        cross_replica_axis: str | None = None,
        name: str | None = None,
    ):
        """Builds the module.

        Args:
          blocks_per_stage: number of residual blocks in each stage.
          channels: channels of each stage (same length as `blocks_per_stage`).
          num_classes: number of output logits.
          bn_decay: BatchNorm moving-average decay, in (0, 1).
          cross_replica_axis: if set, BatchNorm averages batch statistics over
            this `pmap`/`shard_map` axis name.
          name: module name.
        """
        super().__init__(name=name)
        _check_positive_ints("blocks_per_stage", blocks_per_stage)
        _check_positive_ints("channels", channels)
        if len(blocks_per_stage) != len(channels):
            raise ValueError(
                "blocks_per_stage and channels must have the same length, got "
                f"{len(blocks_per_stage)} and {len(channels)}"
            )
        _check_positive_int("num_classes", num_classes)
        if isinstance(bn_decay, bool) or not isinstance(bn_decay, int | float):
            raise ValueError(f"bn_decay: expected a float in (0, 1), got {bn_decay!r}")
        if not 0.0 < bn_decay < 1.0:
            raise ValueError(f"bn_decay: expected a float in (0, 1), got {bn_decay!r}")
        if cross_replica_axis is not None and not isinstance(cross_replica_axis, str):
            raise ValueError(
                "cross_replica_axis: expected a str or None, "
                f"got {cross_replica_axis!r}"
            )
        self.blocks_per_stage = tuple(blocks_per_stage)
        self.channels = tuple(channels)
        self.num_classes = num_classes
        self.bn_config = dict(
            decay_rate=float(bn_decay),
            create_scale=True,
            create_offset=True,
            cross_replica_axis=cross_replica_axis,
        )

    def __call__(self, x: jax.Array, is_training: bool) -> jax.Array:
        """Maps images `x` [B, H, W, C] to logits [B, num_classes]."""
        chex.assert_rank(x, 4)
        x = Conv2D(self.channels[0], 3, with_bias=False, name="stem")(x)
        x = jax.nn.relu(hk.BatchNorm(name="stem_bn", **self.bn_config)(x, is_training))
        for s, (blocks, c) in enumerate(
            zip(self.blocks_per_stage, self.channels, strict=True)
        ):
            for b in range(blocks):
                stride = 2 if s > 0 and b == 0 else 1
                x = _ResidualBlock(c, stride, self.bn_config, name=f"block_{s}_{b}")(
                    x, is_training
                )
        x = jnp.mean(x, axis=(1, 2))  # [B, C]
        return hk.Linear(self.num_classes, name="logits")(x)
