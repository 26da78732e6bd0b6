"""Tests for the ready-made modules, activations and activation statistics."""

import functools

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import nets


def _key(seed: int) -> jax.Array:
    # "rbg" keys compile much faster on CPU than the default threefry (parameter
    # init dominates these tests); the networks do not depend on the key type.
    return jax.random.key(seed, impl="rbg")


KEY = _key(0)


def _images(b=2, h=8, w=8, c=1, seed=1):
    return jax.random.normal(_key(seed), (b, h, w, c))


class ModuleForwardTest(chex.TestCase):
    """Forward passes under jit and without (chex variants)."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("mlp", lambda: nets.MLP([5, 3]), (2, 4), (2, 3), False),
        (
            "mlp_dropout",
            lambda: nets.MLP([5, 3], dropout_rate=0.5),
            (2, 4),
            (2, 3),
            True,
        ),
        (
            "convnet",
            lambda: nets.ConvNet([2, 3], output_size=3),
            (2, 8, 8, 1),
            (2, 3),
            False,
        ),
        ("convnet_maps", lambda: nets.ConvNet([2]), (2, 7, 7, 1), (2, 4, 4, 2), False),
        ("lenet", lambda: nets.LeNet(), (2, 8, 8, 1), (2, 10), False),
        ("resnet", lambda: nets.ResNet(channels=(2, 4)), (2, 4, 4, 1), (2, 10), True),
        ("lstm", lambda: nets.LSTM(3), (2, 5, 2), (2, 5, 3), False),
        (
            "gru_last",
            lambda: nets.GRU(3, return_sequences=False),
            (2, 5, 2),
            (2, 3),
            False,
        ),
    )
    def test_shapes(self, make, in_shape, out_shape, is_training):
        f = hk.transform_with_state(lambda x, is_training: make()(x, is_training))
        x = jax.random.normal(_key(1), in_shape)
        params, state = f.init(KEY, x, is_training)
        apply = self.variant(functools.partial(f.apply, is_training=is_training))
        out, _ = apply(params, state, _key(2), x)
        chex.assert_shape(out, out_shape)
        chex.assert_type(out, jnp.float32)
        chex.assert_tree_all_finite(out)


def test_lenet_params_and_shape():
    f = hk.transform(lambda x: nets.LeNet()(x))
    params = f.init(KEY, _images())
    shapes = jax.tree.map(jnp.shape, params)
    assert shapes["le_net/conv_0"]["w"] == (5, 5, 1, 32)
    assert shapes["le_net/conv_1"]["w"] == (5, 5, 32, 64)
    assert shapes["le_net/linear_0"]["w"] == (2 * 2 * 64, 1024)
    chex.assert_shape(f.apply(params, None, _images()), (2, 10))
    odd = hk.transform(lambda x: nets.LeNet(num_classes=3)(x))
    x = _images(h=7, w=7, c=3)
    chex.assert_shape(odd.apply(odd.init(KEY, x), None, x), (2, 3))


def test_resnet_batchnorm_state_updates_only_in_training():
    def forward(x, is_training):
        return nets.ResNet((1,), (2,), num_classes=3, bn_decay=0.5)(x, is_training)

    f = hk.transform_with_state(forward)
    x = _images(h=4, w=4)
    params, state = f.init(KEY, x, True)
    out_eval, state_eval = f.apply(params, state, None, x, False)
    chex.assert_trees_all_equal(state_eval, state)
    # A different batch: the first EMA update already holds `x`'s statistics.
    x2 = 2.0 * _images(h=4, w=4, seed=5) + 1.0
    _, state_train = f.apply(params, state, None, x2, is_training=True)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state, state_train)
    assert any(jax.tree.leaves(changed))
    # Eval uses the moving statistics, so it now gives different outputs.
    out_eval2, _ = f.apply(params, state_train, None, x, False)
    assert not np.allclose(out_eval, out_eval2)


def test_resnet_cross_replica_batchnorm_matches_global_batch():
    def forward(x, axis=None):
        return nets.ResNet((1,), (2,), cross_replica_axis=axis)(x, True)

    x = _images(h=4, w=4)  # [2, 4, 4, 1]
    plain = hk.transform_with_state(forward)
    params, state = plain.init(KEY, x)  # Same params with or without the axis.
    expected, _ = plain.apply(params, state, None, x)
    # One example per "replica": statistics averaged over the axis are the
    # statistics of the whole batch.
    replicated = hk.transform_with_state(lambda x: forward(x, axis="i"))
    apply = jax.vmap(replicated.apply, (None, None, None, 0), axis_name="i")
    out, _ = jax.jit(apply)(params, state, None, x[:, None])  # [2, 1, 10]
    chex.assert_trees_all_close(out[:, 0], expected, atol=1e-5)


def test_dropout_only_in_training_and_deterministic():
    f = hk.transform(lambda x, t: nets.Dropout(0.5)(x, is_training=t))
    x = jnp.ones((4, 16))
    params = f.init(KEY, x, True)
    chex.assert_trees_all_equal(f.apply(params, None, x, False), x)
    a = f.apply(params, _key(3), x, True)
    b = f.apply(params, _key(3), x, True)
    c = f.apply(params, _key(4), x, True)
    chex.assert_trees_all_equal(a, b)
    assert not np.array_equal(a, c)
    assert set(np.unique(np.asarray(a))) <= {0.0, 2.0}
    assert 0 < float(jnp.mean(a == 0)) < 1


def test_recurrent_matches_manual_unroll():
    x = jax.random.normal(_key(1), (2, 4, 3))

    def manual(x):
        core = hk.LSTM(5, name="lstm")
        state = core.initial_state(2)
        outs = []
        for t in range(x.shape[1]):
            out, state = core(x[:, t], state)
            outs.append(out)
        return jnp.stack(outs, axis=1)

    with_wrapper = hk.transform(lambda x: nets.LSTM(5, name="rnn")(x))
    params = with_wrapper.init(KEY, x)
    expected = hk.transform(manual).apply(
        {k.replace("rnn/", ""): v for k, v in params.items()}, None, x
    )
    chex.assert_trees_all_close(
        with_wrapper.apply(params, None, x), expected, atol=1e-6
    )


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: nets.MLP([]), "output_sizes"),
        (lambda: nets.MLP([4, 0]), "output_sizes"),
        (lambda: nets.MLP([4], activation="relu6"), "unknown activation 'relu6'"),
        (lambda: nets.MLP([4], dropout_rate=1.0), "dropout_rate"),
        (lambda: nets.ConvNet([4], kernel_shape=0), "kernel_shape"),
        (lambda: nets.ConvNet([4], output_size=-1), "output_size"),
        (lambda: nets.LeNet(num_classes=True), "num_classes"),
        (lambda: nets.ResNet((1, 1), (8,)), "same length"),
        (lambda: nets.ResNet(bn_decay=1.0), "bn_decay"),
        (lambda: nets.ResNet(cross_replica_axis=3), "cross_replica_axis"),
        (lambda: nets.LSTM(0), "hidden_size"),
        (lambda: nets.GRU(4, return_sequences=1), "return_sequences"),
        (lambda: nets.Dropout(-0.1), "rate"),
    ],
)
def test_module_argument_errors(make, match):
    with pytest.raises(ValueError, match=match):
        hk.transform(make).init(KEY)  # Modules are built inside a transform.


@pytest.mark.parametrize("name", nets.activation_names())
def test_activations(name):
    x = jnp.array([-2.0, -0.5, 0.0, 0.5, 2.0])
    y = nets.get_activation(name.upper())(x)
    chex.assert_shape(y, (5,))
    expected = {"relu": jax.nn.relu(x), "linear": x, "none": x, "tanh": jnp.tanh(x)}
    if name in expected:
        chex.assert_trees_all_close(y, expected[name])


def test_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation 'relu6'"):
        nets.get_activation("relu6")


def test_with_activation_stats_records_top_level_modules():
    def forward(x):
        x = jax.nn.relu(hk.Linear(4, name="first")(x))
        x = nets.MLP([3, 2], name="head")(x)
        return x

    f = hk.transform(nets.with_activation_stats(forward))
    x = jax.random.normal(KEY, (3, 5))
    params = f.init(KEY, x)
    out, stats = jax.jit(f.apply)(params, None, x)
    assert set(stats) == {"first", "head"}
    chex.assert_trees_all_close(stats["head"]["mean"], jnp.mean(out), rtol=1e-5)
    chex.assert_trees_all_close(stats["head"]["std"], jnp.std(out), rtol=1e-5)
    deep = hk.transform(nets.with_activation_stats(forward, depth=2))
    _, stats2 = deep.apply(params, None, x)
    assert set(stats2) == {"head/linear_0", "head/linear_1"}


def test_activation_stats_frac_zero():
    s = nets.activation_stats(jnp.array([0.0, 0.0, 1.0, 3.0]))
    chex.assert_trees_all_close(s["frac_zero"], 0.5)
    chex.assert_trees_all_close(s["mean"], 1.0)
