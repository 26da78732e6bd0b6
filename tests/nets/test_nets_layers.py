"""Tests for the layer registry: names, aliases, defaults and argument errors."""

import re

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nets


def _key(seed: int) -> jax.Array:
    # "rbg" keys compile much faster on CPU than the default threefry (parameter
    # init dominates these tests); the networks do not depend on the key type.
    return jax.random.key(seed, impl="rbg")


KEY = _key(0)
_INTS = "expected a positive int or list of positive ints"
_INTS2 = "expected a positive int or list of 2 positive ints"


def _run(layer_fn, x, is_training=False):
    """Runs `layer_fn(x, is_training)` (built inside the transform)."""
    f = hk.transform_with_state(lambda x: layer_fn()(x, is_training))
    params, state = f.init(KEY, x)
    out, _ = f.apply(params, state, _key(1), x)
    return params, out


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("Dense", "Linear"),
        ("FullyConnected", "Linear"),
        ("fc", "Linear"),
        ("dense", "Linear"),
        ("Conv2d", "Conv2D"),
        ("Convolution2D", "Conv2D"),
        ("conv1d", "Conv1D"),
        ("MaxPool2d", "MaxPool"),
        ("MaxPooling2D", "MaxPool"),
        ("AvgPool2d", "AvgPool"),
        ("AveragePooling2D", "AvgPool"),
        ("BatchNormalization", "BatchNorm"),
        ("Embedding", "Embed"),
        ("Concatenate", "Concat"),
        ("LAYERNORM", "LayerNorm"),
    ],
)
def test_lookup_is_case_insensitive_with_aliases(alias, canonical):
    assert alias in nets.LAYERS
    assert nets.LAYERS[alias] is nets.LAYERS[canonical]
    assert nets.LAYERS[alias].name == canonical


def test_registry_lists_canonical_names():
    required = {"Linear", "Conv1D", "Conv2D", "MaxPool", "AvgPool", "Flatten"}
    required |= {"Dropout", "BatchNorm", "LayerNorm", "Activation", "Reshape"}
    required |= {"LSTM", "GRU", "Embed", "Concat", "Add"}
    assert required <= set(nets.LAYERS)
    assert "Dense" not in set(nets.LAYERS)  # Iteration gives canonical names.
    with pytest.raises(KeyError):
        nets.LAYERS["Conv3x"]


def test_linear_aliases_and_activation():
    x = jnp.arange(6.0).reshape(2, 3) - 2.0
    p1, y1 = _run(lambda: nets.LAYERS["Linear"](output_size=4, activation="relu"), x)
    p2, y2 = _run(lambda: nets.LAYERS["dense"](units=4, activation="RELU"), x)
    chex.assert_trees_all_equal(p1, p2)
    chex.assert_trees_all_equal(y1, y2)
    assert set(p1) == {"linear"}
    expected = jax.nn.relu(x @ p1["linear"]["w"] + p1["linear"]["b"])
    chex.assert_trees_all_close(y1, expected)
    p3, _ = _run(lambda: nets.LAYERS["fc"](num_units=4, with_bias=False), x)
    assert set(p3["linear"]) == {"w"}


def test_conv_aliases_and_defaults():
    x = jnp.ones((2, 8, 8, 1))
    p1, y1 = _run(lambda: nets.LAYERS["Conv2D"](output_channels=3, kernel_shape=5), x)
    p2, y2 = _run(lambda: nets.LAYERS["Conv2d"](num_filter=3, filter_size=5), x)
    p3, _ = _run(lambda: nets.LAYERS["Convolution2D"](filters=3, kernel_size=5), x)
    chex.assert_trees_all_equal(p1, p2, p3)
    chex.assert_trees_all_equal(y1, y2)
    chex.assert_shape(y1, (2, 8, 8, 3))  # SAME padding, stride 1.
    _, y4 = _run(lambda: nets.LAYERS["Conv2D"](filters=3, kernel_size=3, strides=2), x)
    chex.assert_shape(y4, (2, 4, 4, 3))
    _, y5 = _run(lambda: nets.LAYERS["Conv1D"](filters=2, kernel_size=3), x[..., 0])
    chex.assert_shape(y5, (2, 8, 2))


@pytest.mark.parametrize("name", ["MaxPool", "AvgPool"])
def test_pool_defaults_halve_with_same_padding(name):
    x = jax.random.normal(KEY, (2, 8, 8, 3))
    pool = nets.LAYERS[name]
    _, y = _run(lambda: pool(), x)
    chex.assert_shape(y, (2, 4, 4, 3))
    _, y = _run(lambda: pool(), y)
    chex.assert_shape(y, (2, 2, 2, 3))
    _, y = _run(lambda: pool(pool_size=2), x[:, :7, :7])
    chex.assert_shape(y, (2, 4, 4, 3))
    _, y = _run(lambda: pool(kernel_size=[2, 2], padding="valid"), x[:, :7, :7])
    chex.assert_shape(y, (2, 3, 3, 3))
    _, y = _run(lambda: pool(window_shape=3, strides=1), x)
    chex.assert_shape(y, (2, 8, 8, 3))
    _, y = _run(lambda: pool(), x[:, :, 0])  # 1-D: [B, L, C].
    chex.assert_shape(y, (2, 4, 3))


def test_maxpool_values():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    _, y = _run(lambda: nets.LAYERS["MaxPool"](), x)
    np.testing.assert_array_equal(y[0, :, :, 0], [[5.0, 7.0], [13.0, 15.0]])


def test_misc_layers_shapes():
    x = jax.random.normal(KEY, (2, 4, 6))
    _, y = _run(lambda: nets.LAYERS["Flatten"](), x)
    chex.assert_shape(y, (2, 24))
    _, y = _run(lambda: nets.LAYERS["Reshape"](target_shape=[3, -1]), x)
    chex.assert_shape(y, (2, 3, 8))
    _, y = _run(lambda: nets.LAYERS["LayerNorm"](), x)
    chex.assert_trees_all_close(jnp.mean(y, -1), jnp.zeros((2, 4)), atol=1e-5)
    _, y = _run(lambda: nets.LAYERS["Activation"](activation="tanh"), x)
    chex.assert_trees_all_close(y, jnp.tanh(x))
    _, y = _run(lambda: nets.LAYERS["LSTM"](units=5), x)
    chex.assert_shape(y, (2, 4, 5))
    _, y = _run(lambda: nets.LAYERS["GRU"](hidden_size=5, return_sequences=False), x)
    chex.assert_shape(y, (2, 5))
    ids = jnp.array([[0, 3], [2, 1]])
    p, y = _run(lambda: nets.LAYERS["Embedding"](input_dim=4, output_dim=3), ids)
    chex.assert_shape(y, (2, 2, 3))
    chex.assert_trees_all_equal(y[0, 1], p["embed"]["embeddings"][3])


def test_merge_layers():
    a = jnp.ones((2, 3))
    b = 2 * jnp.ones((2, 3))

    def run(layer):
        return hk.transform(lambda: layer()([a, b])).apply({}, None)

    chex.assert_shape(run(lambda: nets.LAYERS["Concat"]()), (2, 6))
    chex.assert_shape(run(lambda: nets.LAYERS["Concatenate"](axis=0)), (4, 3))
    chex.assert_trees_all_equal(run(lambda: nets.LAYERS["Add"]()), 3 * a)


def test_batchnorm_layer_state():
    x = jax.random.normal(KEY, (4, 3))
    f = hk.transform_with_state(
        lambda x, t: nets.LAYERS["BatchNormalization"](momentum=0.5)(x, t)
    )
    params, state = f.init(KEY, x, True)
    _, eval_state = f.apply(params, state, None, x, False)
    chex.assert_trees_all_equal(eval_state, state)
    y, train_state = f.apply(params, state, None, x + 1.0, True)
    chex.assert_trees_all_close(jnp.mean(y, 0), jnp.zeros(3), atol=1e-5)
    assert not np.allclose(
        train_state["batchnorm/~/mean_ema"]["average"],
        state["batchnorm/~/mean_ema"]["average"],
    )


def test_dropout_layer():
    x = jnp.ones((3, 8))
    f = hk.transform(lambda x, t: nets.LAYERS["Dropout"](rate=0.5)(x, t))
    chex.assert_trees_all_equal(f.apply({}, None, x, False), x)
    y = f.apply({}, _key(2), x, True)
    chex.assert_trees_all_equal(y, f.apply({}, _key(2), x, True))
    assert 0 < float(jnp.mean(y == 0)) < 1


@pytest.mark.parametrize(
    ("layer", "args", "message"),
    [
        (
            "Linear",
            {"outputsize": 3},
            "(Linear): unknown argument 'outputsize' (did you mean 'output_size'?)",
        ),
        ("Linear", {}, "(Linear): missing required argument 'output_size'"),
        (
            "Linear",
            {"output_size": "3"},
            "(Linear).output_size: expected a positive int, got '3'",
        ),
        (
            "Linear",
            {"output_size": True},
            "(Linear).output_size: expected a positive int, got True",
        ),
        ("Linear", {"units": 0}, "(Linear).units: expected a positive int, got 0"),
        (
            "Linear",
            {"units": 3, "output_size": 3},
            "(Linear).output_size: same argument as 'units'",
        ),
        (
            "Linear",
            {"output_size": 3, "activation": "relu6"},
            "(Linear).activation: unknown activation 'relu6'",
        ),
        (
            "Linear",
            {"output_size": 3, "regularizer": "l1"},
            "(Linear).regularizer: expected 'l2' or null, got 'l1'",
        ),
        (
            "Linear",
            {"output_size": 3, "regularizer_scale": 0.1},
            "(Linear).regularizer_scale: set without 'regularizer'",
        ),
        (
            "Linear",
            {"output_size": 3, "regularizer": "l2", "regularizer_scale": -1},
            "(Linear).regularizer_scale: expected a non-negative float, got -1",
        ),
        (
            "Linear",
            {"output_size": 3, "with_bias": 1},
            "(Linear).with_bias: expected a bool, got 1",
        ),
        (
            "Linear",
            {"output_size": 3, "name": "a/b"},
            "(Linear).name: expected a name made of letters",
        ),
        (
            "MaxPool",
            {"window_shape": -2},
            f"(MaxPool).window_shape: {_INTS}, got -2",
        ),
        (
            "MaxPool",
            {"pool_size": [2, 0]},
            f"(MaxPool).pool_size: {_INTS}, got [2, 0]",
        ),
        (
            "MaxPool",
            {"padding": "full"},
            "(MaxPool).padding: expected 'SAME' or 'VALID', got 'full'",
        ),
        (
            "MaxPool",
            {"strides": 1.5},
            f"(MaxPool).strides: {_INTS}, got 1.5",
        ),
        (
            "Conv2D",
            {"filters": 3},
            "(Conv2D): missing required argument 'kernel_shape'",
        ),
        (
            "Conv2D",
            {"filters": 3, "kernel_size": [3, 3, 3]},
            f"(Conv2D).kernel_size: {_INTS2}, got [3, 3, 3]",
        ),
        (
            "Conv2D",
            {"filters": 3, "kernel_size": 3, "stride": 0},
            f"(Conv2D).stride: {_INTS2}, got 0",
        ),
        (
            "Dropout",
            {"rate": 1.0},
            "(Dropout).rate: expected a float in [0, 1), got 1.0",
        ),
        (
            "Dropout",
            {"rate": "0.5"},
            "(Dropout).rate: expected a float in [0, 1), got '0.5'",
        ),
        (
            "BatchNorm",
            {"decay_rate": 0.0},
            "(BatchNorm).decay_rate: expected a float in (0, 1), got 0.0",
        ),
        (
            "Reshape",
            {"output_shape": [-1, -1]},
            "(Reshape).output_shape: expected a non-empty list of positive ints",
        ),
        ("Activation", {}, "(Activation): missing required argument 'activation'"),
        ("Concat", {"axis": "last"}, "(Concat).axis: expected an int, got 'last'"),
        ("Flatten", {"regularizer": "l2"}, "(Flatten): unknown argument 'regularizer'"),
    ],
)
def test_argument_errors(layer, args, message):
    """Messages name the layer and the argument as written (prefix match)."""
    with pytest.raises(nets.SpecError, match=re.escape(message)) as info:
        nets.LAYERS[layer](**args)
    assert str(info.value).startswith(message)


def test_spec_error_is_config_error():
    from jaxlab.errors import ConfigError

    assert issubclass(nets.SpecError, ConfigError)
    assert issubclass(nets.SpecError, ValueError)
