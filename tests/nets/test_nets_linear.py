"""`nets.Linear`: `hk.Linear` with a custom weight gradient on a CPU."""

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import nets
from nets.linear import matmul


def _pair(out_size, **kwargs):
    ours = hk.transform(lambda x: nets.Linear(out_size, name="l", **kwargs)(x))
    theirs = hk.transform(lambda x: hk.Linear(out_size, name="l", **kwargs)(x))
    return ours, theirs


class LinearTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(
        ((128, 4), 64), ((128, 64), 64), ((128, 64), 2), ((128, 64), 1), ((3, 5, 7), 4)
    )
    def test_values_and_gradients_match_hk_linear(self, in_shape, out_size):
        ours, theirs = _pair(out_size)
        x = jax.random.normal(jax.random.key(0), in_shape)
        params = theirs.init(jax.random.key(1), x)
        chex.assert_trees_all_equal(
            jax.tree.map(jnp.shape, ours.init(jax.random.key(1), x)),
            jax.tree.map(jnp.shape, params),
        )
        chex.assert_trees_all_equal(ours.init(jax.random.key(1), x), params)

        def loss(apply):
            return lambda p, x: jnp.sum(
                jnp.tanh(apply(p, None, x)) * x.sum(-1)[..., None]
            )

        @self.variant
        def grads(params, x):
            return (
                ours.apply(params, None, x),
                jax.grad(loss(ours.apply), argnums=(0, 1))(params, x),
                jax.grad(loss(theirs.apply), argnums=(0, 1))(params, x),
            )

        out, g_ours, g_theirs = grads(params, x)
        chex.assert_shape(out, (*in_shape[:-1], out_size))
        chex.assert_type(out, jnp.float32)
        chex.assert_trees_all_equal(out, theirs.apply(params, None, x))
        chex.assert_trees_all_close(g_ours, g_theirs, rtol=1e-5, atol=1e-5)

    def test_weight_gradient_against_numpy(self):
        x = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
        w = np.random.default_rng(1).normal(size=(3, 5)).astype(np.float32)
        g = np.random.default_rng(2).normal(size=(16, 5)).astype(np.float32)
        _, vjp = jax.vjp(matmul, x, w)
        dx, dw = jax.jit(vjp)(g)
        np.testing.assert_allclose(dw, x.T @ g, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(dx, g @ w.T, rtol=1e-5, atol=1e-5)

    def test_without_bias_and_with_precision(self):
        x = jax.random.normal(jax.random.key(2), (8, 6))
        for kwargs in ({"with_bias": False}, {}):
            ours, theirs = _pair(3, **kwargs)
            params = theirs.init(jax.random.key(3), x)
            assert set(params["l"]) == ({"w"} if kwargs else {"w", "b"})
            chex.assert_trees_all_equal(ours.init(jax.random.key(3), x), params)
        net = hk.transform(
            lambda x: nets.Linear(3)(x, precision=jax.lax.Precision.HIGHEST)
        )
        params = net.init(jax.random.key(4), x)
        chex.assert_shape(net.apply(params, None, x), (8, 3))
        with pytest.raises(ValueError, match="scalar"):
            hk.transform(lambda x: nets.Linear(3)(x)).init(
                jax.random.key(0), jnp.float32(1)
            )

    def test_cpu_weight_gradient_is_a_row_major_product(self):
        # The point of the layer: on a CPU no dot of the backward pass
        # contracts the batch (first) axis of both operands.
        x = jnp.ones((128, 64))
        w = jnp.ones((64, 64))
        grad = jax.jit(jax.grad(lambda w, x: jnp.sum(jnp.tanh(matmul(x, w))))).lower(
            w, x
        )
        hlo = grad.as_text()
        assert "optimization_barrier" in hlo
        plain = jax.jit(jax.grad(lambda w, x: jnp.sum(jnp.tanh(x @ w)))).lower(w, x)
        assert "optimization_barrier" not in plain.as_text()
