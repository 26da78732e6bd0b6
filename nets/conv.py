"""Convolutions whose lowering suits the machine: `Conv1D`, `Conv2D`, `Conv3D`.

Drop-in `hk.ConvND` subclasses: the same arguments, parameter names, shapes and
initialisation (params of one load into the other), and the same function up to
float reassociation. What differs is how XLA computes them on a CPU.

XLA:CPU runs ``lax.conv_general_dilated`` well when it is called alone, but
inside a compiled loop (``fori_loop``, ``scan``: many train steps per call) the
same convolution runs 15-25x slower (LeNet on 28x28 digits, batch 64, train
step: ~90 ms called one by one, ~2 s per step inside a ``fori_loop``). On a CPU
these modules compute a convolution as *patches and one matmul* instead
(im2col): the kernel's ``prod(kernel_shape)`` shifted, strided slices of the
padded input are concatenated along the channels and multiplied by the kernel
reshaped to ``[prod(kernel_shape) * C_in, C_out]``. The slices are data movement
and the matmul is what XLA:CPU does best, in a loop or not (the same step: ~90 ms
alone, ~70 ms per step inside a loop). On other platforms (GPU, TPU) they lower to
``lax.conv_general_dilated`` as `hk.ConvND` does; the choice is made by
`jax.lax.platform_dependent` when the program is lowered, so one traced function
serves both and the compiler never sees a conditional.

``lowering="auto"`` (the default) does the above, except for a layer whose
patches would exceed `PATCHES_MAX_BYTES` (256 MiB: large image batches), which
keeps XLA's convolution on a CPU too; ``"patches"`` or ``"xla"`` force one form
everywhere. The patches form covers channels-last inputs with
``feature_group_count=1`` (what `nets` builds); anything else uses XLA's
convolution. Patches hold ``prod(kernel_shape)`` times the input's activations
(LeNet on 28x28, batch 64: 45 MB in all), hence the size limit.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

LOWERINGS = ("auto", "patches", "xla")
# "auto" takes XLA's convolution, on a CPU too, where one layer's patches would
# exceed this many bytes (they live until the backward pass): a big image
# batch (e.g. 32 x 224 x 224 x 64 through a 3x3 kernel: 3.7 GB of patches)
# trades speed for memory it may not have.
PATCHES_MAX_BYTES = 256 << 20


def _geometry(
    spatial: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    rate: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """(pads, padded spatial shape, output spatial shape) of a convolution."""
    dilated = [(k - 1) * r + 1 for k, r in zip(kernel, rate, strict=True)]
    if isinstance(padding, str):
        pads = list(lax.padtype_to_pads(spatial, dilated, stride, padding))
    else:
        pads = [tuple(p) for p in padding]
    padded = [n + lo + hi for n, (lo, hi) in zip(spatial, pads, strict=True)]
    out = [(p - d) // s + 1 for p, d, s in zip(padded, dilated, stride, strict=True)]
    return pads, padded, out


def patch_bytes(
    x_shape: Sequence[int],
    kernel: Sequence[int],
    *,
    stride: Sequence[int],
    rate: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    itemsize: int = 4,
) -> int:
    """Bytes of the patches `patch_conv` builds for channels-last `x_shape`."""
    _, _, out = _geometry(x_shape[1:-1], kernel, stride, rate, padding)
    return x_shape[0] * math.prod(out) * math.prod(kernel) * x_shape[-1] * itemsize


def patch_conv(
    x: jax.Array,
    w: jax.Array,
    *,
    stride: Sequence[int],
    rate: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    precision: lax.Precision | None = None,
) -> jax.Array:
    """``lax.conv_general_dilated`` for channels-last ``x`` as patches and a matmul.

    Args:
      x: inputs ``[B, *spatial, C_in]``.
      w: kernel ``[*kernel_shape, C_in, C_out]`` (Haiku's layout).
      stride: window strides, one per spatial axis.
      rate: kernel dilation, one per spatial axis.
      padding: ``"SAME"``, ``"VALID"`` or one ``(low, high)`` pair per spatial axis.
      precision: passed to the matmul.

    Returns:
      ``[B, *out_spatial, C_out]``, what ``lax.conv_general_dilated(x, w, stride,
      padding, rhs_dilation=rate, dimension_numbers=("N...C", "...IO", "N...C"))``
      returns.
    """
    n = x.ndim - 2
    kernel = w.shape[:n]
    if w.ndim != n + 2 or w.shape[n] != x.shape[-1]:
        raise ValueError(
            f"kernel of shape {w.shape} does not fit inputs of shape {x.shape} "
            f"(expected [*kernel_shape, {x.shape[-1]}, C_out])"
        )
    pads, padded, out = _geometry(x.shape[1:-1], kernel, stride, rate, padding)
    if min(out) < 1:
        raise ValueError(
            f"a kernel of shape {tuple(kernel)} (rate {tuple(rate)}) does not fit "
            f"inputs of spatial shape {x.shape[1:-1]} padded to {tuple(padded)}"
        )
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    # One strided slice per kernel offset, in the kernel's row-major order, so
    # that the channels of `patches` are ordered (offset..., C_in) as w's rows.
    slices = []
    for offset in itertools.product(*(range(k) for k in kernel)):
        start = [o * r for o, r in zip(offset, rate, strict=True)]
        limit = [
            s0 + (o - 1) * s + 1 for s0, o, s in zip(start, out, stride, strict=True)
        ]
        slices.append(
            lax.slice(
                xp,
                (0, *start, 0),
                (xp.shape[0], *limit, xp.shape[-1]),
                (1, *stride, 1),
            )
        )
    patches = slices[0] if len(slices) == 1 else jnp.concatenate(slices, axis=-1)
    w_matrix = w.reshape(math.prod(kernel) * w.shape[n], w.shape[-1])
    return jnp.dot(patches, w_matrix, precision=precision)


class ConvND(hk.ConvND):
    """`hk.ConvND` that computes as patches and a matmul on a CPU (module doc).

    Takes every argument of `hk.ConvND`, and ``lowering``: ``"auto"`` (patches on
    a CPU, XLA's convolution elsewhere), ``"patches"`` or ``"xla"``.
    """

    def __init__(self, *args, lowering: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        if lowering not in LOWERINGS:
            raise ValueError(
                f"lowering: expected one of {', '.join(LOWERINGS)}, got {lowering!r}"
            )
        self.lowering = lowering

    def _patches_apply(self) -> bool:
        return (
            self.lowering != "xla"
            and self.channel_index == -1
            and self.feature_group_count == 1
            and all(d == 1 for d in self.lhs_dilation)
        )

    def __call__(
        self, inputs: jax.Array, *, precision: lax.Precision | None = None
    ) -> jax.Array:
        if not self._patches_apply():
            return super().__call__(inputs, precision=precision)
        inputs = jnp.asarray(inputs)
        unbatched_rank = self.num_spatial_dims + 1
        if inputs.ndim not in (unbatched_rank, unbatched_rank + 1):
            raise ValueError(
                f"Input to ConvND needs to have rank in "
                f"{[unbatched_rank, unbatched_rank + 1]}, but input has shape "
                f"{inputs.shape}."
            )
        unbatched = inputs.ndim == unbatched_rank
        if unbatched:
            inputs = inputs[None]
        # Parameters exactly as hk.ConvND creates them.
        w_shape = (*self.kernel_shape, inputs.shape[-1], self.output_channels)
        if self.mask is not None and self.mask.shape != w_shape:
            raise ValueError(
                "Mask needs to have the same shape as weights. "
                f"Shapes are: {self.mask.shape}, {w_shape}"
            )
        w_init = self.w_init
        if w_init is None:
            stddev = 1.0 / np.sqrt(np.prod(w_shape[:-1]))
            w_init = hk.initializers.TruncatedNormal(stddev=stddev)
        w = hk.get_parameter("w", w_shape, inputs.dtype, init=w_init)
        if self.mask is not None:
            w = w * self.mask

        def patches(x, w):
            return patch_conv(
                x,
                w,
                stride=self.stride,
                rate=self.kernel_dilation,
                padding=self.padding,
                precision=precision,
            )

        def xla(x, w):
            return lax.conv_general_dilated(
                x,
                w,
                window_strides=self.stride,
                padding=self.padding,
                rhs_dilation=self.kernel_dilation,
                dimension_numbers=self.dimension_numbers,
                precision=precision,
            )

        too_big = (
            patch_bytes(
                inputs.shape,
                self.kernel_shape,
                stride=self.stride,
                rate=self.kernel_dilation,
                padding=self.padding,
                itemsize=inputs.dtype.itemsize,
            )
            > PATCHES_MAX_BYTES
        )
        if self.lowering == "patches":
            out = patches(inputs, w)
        elif too_big:
            out = xla(inputs, w)
        else:
            out = lax.platform_dependent(inputs, w, cpu=patches, default=xla)
        if self.with_bias:
            b = hk.get_parameter(
                "b", (self.output_channels,), inputs.dtype, init=self.b_init
            )
            out = out + b
        if unbatched:
            out = out[0]
        return out


class Conv1D(ConvND):
    """One-dimensional `ConvND` (inputs ``[B, W, C]``), as `hk.Conv1D`."""

    def __init__(self, output_channels, kernel_shape, **kwargs):
        super().__init__(1, output_channels, kernel_shape, **kwargs)


class Conv2D(ConvND):
    """Two-dimensional `ConvND` (inputs ``[B, H, W, C]``), as `hk.Conv2D`."""

    def __init__(self, output_channels, kernel_shape, **kwargs):
        super().__init__(2, output_channels, kernel_shape, **kwargs)


class Conv3D(ConvND):
    """Three-dimensional `ConvND` (inputs ``[B, D, H, W, C]``), as `hk.Conv3D`."""

    def __init__(self, output_channels, kernel_shape, **kwargs):
        super().__init__(3, output_channels, kernel_shape, **kwargs)
