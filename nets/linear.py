"""`Linear`: `hk.Linear` whose weight gradient XLA:CPU computes with its fast matmul.

The gradient of ``x @ w`` with respect to ``w`` is ``x.T @ g``: a product that
contracts the batch axis, the first axis of both operands. JAX emits it as one
``dot_general`` with those dimension numbers, and XLA:CPU (jaxlib 0.10) runs such
a dot with Eigen, while it hands row-major ``[M, K] @ [K, N]`` products to
YNNPACK. On the sizes of RL networks the Eigen form is 1.1-4.8x slower (a
[128, 64] batch into 64 units: 10.6 against 9.4 us; into 2 units: 5.6 against
3.4 us; 1 unit: 2.3 against 0.5 us). `matmul` has a custom gradient that, on a
CPU, first lays ``x.T`` out in memory (an ``optimization_barrier`` keeps XLA
from folding the transpose back into the dot), so that the weight gradient is a
plain row-major product; for one output unit it computes ``(g.T @ x).T``.
Elsewhere (GPU, TPU) the gradient is JAX's own; the choice is made by
`jax.lax.platform_dependent` when the program is lowered.

PPO at PureJaxRL's defaults (`agents.ppo`, whose actor and critic use `Linear`):
2.86 -> 2.63 ms per update on a CPU (`benchmarks/README.md`).

The values are those of `hk.Linear` (same parameters, same forward product);
gradients agree up to float rounding. Limitation: a `jax.custom_vjp` has no
forward-mode derivative, so `jax.jvp` / `jax.jacfwd` through `Linear` fail; use
`hk.Linear` where forward-mode differentiation is needed.
"""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def _weight_grad_cpu(x: jax.Array, g: jax.Array) -> jax.Array:
    """``x.T @ g`` for x [B, K], g [B, N] as a row-major product."""
    if g.shape[1] == 1:
        return jnp.dot(lax.optimization_barrier(g.T), x).T
    return jnp.dot(lax.optimization_barrier(x.T), g)


def _weight_grad(x: jax.Array, g: jax.Array) -> jax.Array:
    return jnp.dot(x.T, g)


@jax.custom_vjp
def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """``jnp.dot(x, w)`` for x [..., K] and w [K, N]; on a CPU its weight
    gradient runs as a row-major product (see the module docstring)."""
    return jnp.dot(x, w)


def _matmul_fwd(x, w):
    return jnp.dot(x, w), (x, w)


def _matmul_bwd(res, g):
    x, w = res
    dx = jnp.dot(g, w.T).astype(x.dtype)
    x2 = x.reshape(-1, x.shape[-1])
    g2 = g.reshape(-1, g.shape[-1])
    dw = lax.platform_dependent(x2, g2, cpu=_weight_grad_cpu, default=_weight_grad)
    return dx, dw.astype(w.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


class Linear(hk.Linear):
    """`hk.Linear` (same arguments, parameters and initialisation) computed with
    `matmul`: a faster weight gradient on a CPU, no forward-mode derivative."""

    def __call__(
        self, inputs: jax.Array, *, precision: lax.Precision | None = None
    ) -> jax.Array:
        if precision is not None:  # `matmul` has no precision argument.
            return super().__call__(inputs, precision=precision)
        if not inputs.shape:
            raise ValueError("Input must not be scalar.")
        inputs = jnp.asarray(inputs)
        # As `hk.Linear.__call__`, which offers no hook for its product.
        input_size = self.input_size = inputs.shape[-1]
        dtype = inputs.dtype
        w_init = self.w_init
        if w_init is None:
            w_init = hk.initializers.TruncatedNormal(stddev=1.0 / np.sqrt(input_size))
        w = hk.get_parameter("w", [input_size, self.output_size], dtype, init=w_init)
        out = matmul(inputs, w)
        if self.with_bias:
            b = hk.get_parameter("b", [self.output_size], dtype, init=self.b_init)
            out = out + jnp.broadcast_to(b, out.shape)
        return out
