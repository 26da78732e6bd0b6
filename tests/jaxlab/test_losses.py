"""Tests for jaxlab.losses: each loss against a NumPy reference, jit and no-jit."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from jaxlab import losses
from jaxlab.errors import ConfigError

B, C = 8, 5


def _np_log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _np_weighted_mean(per_example, weights):
    if weights is None:
        return per_example.mean()
    total = weights.sum()
    return 0.0 if total == 0 else (per_example * weights).sum() / total


def _weights(kind, rng):
    if kind == "none":
        return None
    if kind == "mask":
        w = (rng.random(B) < 0.6).astype(np.float32)
        w[0] = 1.0
        return w
    if kind == "float":
        return rng.random(B).astype(np.float32)
    return np.zeros(B, np.float32)  # "zeros"


_WEIGHT_KINDS = [("none", "none"), ("mask", "mask"), ("float", "float")]
_WEIGHT_KINDS += [("zeros", "zeros")]


class LossesTest(chex.TestCase):
    def setUp(self):
        super().setUp()
        self.rng = np.random.default_rng(0)
        self.logits = self.rng.normal(size=(B, C)).astype(np.float32) * 3

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*_WEIGHT_KINDS)
    def test_softmax_cross_entropy_int_labels(self, kind):
        labels = self.rng.integers(0, C, B)
        w = _weights(kind, self.rng)
        out = self.variant(losses.softmax_cross_entropy)(self.logits, labels, w)
        chex.assert_shape(out, ())
        chex.assert_type(out, jnp.float32)
        per = -_np_log_softmax(self.logits)[np.arange(B), labels]
        np.testing.assert_allclose(out, _np_weighted_mean(per, w), rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*_WEIGHT_KINDS)
    def test_softmax_cross_entropy_prob_labels(self, kind):
        probs = self.rng.dirichlet(np.ones(C), size=B).astype(np.float32)
        w = _weights(kind, self.rng)
        out = self.variant(losses.softmax_cross_entropy)(self.logits, probs, w)
        per = -(probs * _np_log_softmax(self.logits)).sum(-1)
        np.testing.assert_allclose(out, _np_weighted_mean(per, w), rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(kind=["none", "mask", "zeros"], shape=[(B,), (B, 3), (B, 1)])
    def test_sigmoid_binary_cross_entropy(self, kind, shape):
        x = self.rng.normal(size=shape).astype(np.float32) * 3
        z = self.rng.integers(0, 2, shape)
        w = _weights(kind, self.rng)
        out = self.variant(losses.sigmoid_binary_cross_entropy)(x, z, w)
        per = np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x)))
        per = per.reshape(B, -1).mean(1)
        np.testing.assert_allclose(out, _np_weighted_mean(per, w), rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_sigmoid_single_logit_column_with_flat_labels(self):
        x = self.rng.normal(size=(B, 1)).astype(np.float32)
        z = self.rng.random(B).astype(np.float32)  # probabilities
        out = self.variant(losses.sigmoid_binary_cross_entropy)(x, z)
        x = x[:, 0]
        per = np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x)))
        np.testing.assert_allclose(out, per.mean(), rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(
        kind=["none", "mask", "float", "zeros"], shape=[(B,), (B, 3, 2)]
    )
    def test_mean_squared_error(self, kind, shape):
        p = self.rng.normal(size=shape).astype(np.float32)
        t = self.rng.normal(size=shape).astype(np.float32)
        w = _weights(kind, self.rng)
        out = self.variant(losses.mean_squared_error)(p, t, w)
        per = ((p - t) ** 2).reshape(B, -1).mean(1)
        np.testing.assert_allclose(out, _np_weighted_mean(per, w), rtol=1e-5)
        if w is None:
            np.testing.assert_allclose(out, ((p - t) ** 2).mean(), rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(kind=["none", "mask", "zeros"], delta=[1.0, 0.3])
    def test_huber(self, kind, delta):
        p = self.rng.normal(size=(B, 2)).astype(np.float32) * 2
        t = self.rng.normal(size=(B, 2)).astype(np.float32)
        w = _weights(kind, self.rng)
        fn = self.variant(lambda p, t, w: losses.huber(p, t, w, delta=delta))
        out = fn(p, t, w)
        e = np.abs(p - t)
        per = np.where(e <= delta, 0.5 * e**2, delta * (e - 0.5 * delta))
        per = per.reshape(B, -1).mean(1)
        np.testing.assert_allclose(out, _np_weighted_mean(per, w), rtol=1e-5)

    def test_single_output_column_is_not_broadcast(self):
        p = self.rng.normal(size=(B, 1)).astype(np.float32)
        t = self.rng.normal(size=(B,)).astype(np.float32)
        np.testing.assert_allclose(
            losses.mean_squared_error(p, t), ((p[:, 0] - t) ** 2).mean(), rtol=1e-5
        )

    def test_zero_weights_give_finite_zero_gradient(self):
        labels = jnp.zeros(B, jnp.int32)
        grad = jax.grad(losses.softmax_cross_entropy)(
            jnp.asarray(self.logits), labels, jnp.zeros(B)
        )
        np.testing.assert_array_equal(grad, np.zeros((B, C)))

    def test_masked_garbage_rows_are_ignored(self):
        p = jnp.array([1.0, jnp.inf, 2.0])
        t = jnp.array([0.0, 0.0, 0.0])
        out = losses.mean_squared_error(p, t, jnp.array([1.0, 0.0, 1.0]))
        np.testing.assert_allclose(out, 2.5)

    def test_shape_errors(self):
        with pytest.raises(AssertionError):
            losses.softmax_cross_entropy(self.logits, np.zeros(B, np.float32))
        with pytest.raises(AssertionError):
            losses.mean_squared_error(np.zeros((B, 2)), np.zeros((B, 3)))


class L2RegularizationTest(chex.TestCase):
    def test_vs_hand_computation(self):
        params = {
            "mlp/~/linear_0": {"w": jnp.array([[1.0, 2.0]]), "b": jnp.array([5.0])},
            "mlp/~/linear_1": {"w": jnp.array([3.0])},
            "mlp_head": {"w": jnp.array([100.0])},  # not under "mlp/"
            "batch_norm": {"scale": jnp.array([7.0]), "offset": jnp.array([1.0])},
            "conv": {"w": jnp.array([1.0, 1.0]), "b": jnp.array([9.0])},
        }
        out = losses.l2_regularization(params, {"mlp": 0.1, "conv": 2.0})
        expected = 0.1 * 0.5 * (1 + 4 + 9) + 2.0 * 0.5 * 2
        np.testing.assert_allclose(out, expected, rtol=1e-6)
        jitted = jax.jit(lambda p: losses.l2_regularization(p, {"mlp_head": 1.0}))
        np.testing.assert_allclose(jitted(params), 5000.0)
        chex.assert_shape(out, ())

    def test_empty_and_unknown(self):
        params = {"linear": {"w": jnp.ones(3)}}
        self.assertEqual(float(losses.l2_regularization(params, {})), 0.0)
        with pytest.raises(ValueError, match="no module 'lin'"):
            losses.l2_regularization(params, {"lin": 1.0})


class GetLossTest(parameterized.TestCase):
    @parameterized.parameters(
        ("softmax_cross_entropy", "softmax_cross_entropy", True),
        ("Cross_Entropy", "softmax_cross_entropy", True),
        ("categorical_crossentropy", "softmax_cross_entropy", True),
        ("softmax_cross_entropy_with_logits", "softmax_cross_entropy", True),
        ("sigmoid_cross_entropy", "sigmoid_cross_entropy", True),
        ("sigmoid_binary_cross_entropy", "sigmoid_cross_entropy", True),
        ("binary_crossentropy", "sigmoid_cross_entropy", True),
        ("BCE", "sigmoid_cross_entropy", True),
        ("mse", "mean_squared_error", False),
        ("l2", "mean_squared_error", False),
        ("MeanSquaredError", "mean_squared_error", False),
        ("huber_loss", "huber", False),
        ({"name": "Huber"}, "huber", False),
    )
    def test_names(self, spec, canonical, classification):
        self.assertIs(losses.get_loss(spec), losses.LOSSES[canonical])
        self.assertEqual(losses.is_classification(spec), classification)

    def test_kwargs(self):
        fn = losses.get_loss({"name": "huber", "delta": 0.5})
        p, t = jnp.array([2.0]), jnp.array([0.0])
        np.testing.assert_allclose(fn(p, t), 0.5 * (2.0 - 0.25))
        np.testing.assert_allclose(fn(p, t, jnp.array([0.0])), 0.0)

    @parameterized.parameters(
        ("hinge", r"^model\.loss: unknown loss 'hinge' \(known: softmax_cross"),
        ({"name": "nope"}, r"^model\.loss: unknown loss 'nope'.*huber"),
        ({"delta": 1.0}, r"^model\.loss\.name: required"),
        ({"name": "huber", "alpha": 1.0}, r"^model\.loss\.alpha: unknown argument"),
        ({"name": "mse", "delta": 1.0}, r"^model\.loss\.delta: unknown argument"),
        ({"name": "huber", "delta": "x"}, r"^model\.loss\.delta: expected a pos"),
        ({"name": "huber", "delta": -1}, r"^model\.loss\.delta: expected a pos"),
        (3, r"^model\.loss: expected a loss name"),
    )
    def test_errors(self, spec, pattern):
        with pytest.raises(ConfigError, match=pattern):
            losses.get_loss(spec)
