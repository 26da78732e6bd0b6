"""Tests for `build_network`: layer lists, graphs, builtin modules, subclasses."""

import functools

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

POLYAXON_LENET = [
    ["Conv2d", {"num_filter": 32, "filter_size": 5, "regularizer": "l2"}],
    ["MaxPool2d", {"kernel_size": 2}],
    ["Conv2d", {"num_filter": 64, "filter_size": 5, "regularizer": "l2"}],
    ["MaxPool2d", {"kernel_size": 2}],
    ["Flatten", {}],
    ["FullyConnected", {"num_units": 1024, "activation": "tanh"}],
    ["FullyConnected", {"num_units": 10}],
]

# One small network written three ways (plus a hand-written module below).
SMALL_LIST = [
    ["Conv2D", {"output_channels": 3, "kernel_shape": 3, "activation": "relu",
                "name": "conv"}],
    ["MaxPool", {"name": "pool"}],
    ["Flatten", {"name": "flat"}],
    ["Linear", {"output_size": 4, "activation": "tanh", "name": "hidden"}],
    ["Linear", {"output_size": 2, "name": "out"}],
]  # fmt: skip
SMALL_GRAPH = {
    "inputs": "x",
    "nodes": [  # Deliberately out of order: sorted at build time.
        {"name": "out", "layer": "Linear", "args": {"output_size": 2},
         "inputs": "hidden"},
        {"name": "flat", "layer": "Flatten", "inputs": ["pool"]},
        {"name": "conv", "layer": "Conv2D", "inputs": ["x"],
         "args": {"output_channels": 3, "kernel_shape": 3, "activation": "relu"}},
        {"name": "hidden", "layer": "Dense", "inputs": ["flat"],
         "args": {"units": 4, "activation": "tanh"}},
        {"name": "pool", "layer": "MaxPool", "inputs": ["conv"]},
    ],
    "outputs": "out",
}  # fmt: skip


class SmallNet(hk.Module):
    """The third way: a plain `hk.Module` subclass, used with the same flow."""

    def __call__(self, x: jax.Array, is_training: bool) -> jax.Array:
        del is_training
        x = jax.nn.relu(hk.Conv2D(3, 3, name="conv")(x))  # [B, 8, 8, 3]
        x = hk.max_pool(x, (1, 2, 2, 1), (1, 2, 2, 1), "SAME")  # [B, 4, 4, 3]
        x = hk.Flatten()(x)  # [B, 48]
        x = jnp.tanh(hk.Linear(4, name="hidden")(x))
        return hk.Linear(2, name="out")(x)  # [B, 2]


def _x(shape=(2, 8, 8, 1), seed=1):
    return jax.random.normal(_key(seed), shape)


def _init_apply(net, x, is_training=False):
    params, state = net.transformed.init(KEY, x, is_training)
    out, _ = net.transformed.apply(params, state, _key(1), x, is_training)
    return params, state, out


def test_polyaxon_lenet_spec():
    net = nets.build_network(POLYAXON_LENET)
    assert net.regularizers == {"conv2d_0": 1e-3, "conv2d_2": 1e-3}
    x = _x((3, 8, 8, 1))
    params, _, out = _init_apply(net, x)
    chex.assert_shape(out, (3, 10))
    assert set(params) == {"conv2d_0", "conv2d_2", "linear_5", "linear_6"}
    chex.assert_shape(params["linear_5"]["w"], (2 * 2 * 64, 1024))
    # With relu after the convolutions it is the LeNet module.
    spec = [list(entry) for entry in POLYAXON_LENET]
    for i in (0, 2):
        spec[i] = [spec[i][0], {**spec[i][1], "activation": "relu"}]
    out = nets.build_network(spec).transformed.apply(params, {}, None, x, False)[0]
    lenet = hk.transform(lambda x: nets.LeNet()(x))
    renamed = {
        "le_net/conv_0": params["conv2d_0"],
        "le_net/conv_1": params["conv2d_2"],
        "le_net/linear_0": params["linear_5"],
        "le_net/linear_1": params["linear_6"],
    }
    chex.assert_trees_all_close(lenet.apply(renamed, None, x), out, atol=1e-5)


class EquivalentFormsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_list_graph_and_module_agree(self):
        x = _x()
        list_net = nets.build_network(SMALL_LIST)
        graph_net = nets.build_network(SMALL_GRAPH)
        module = hk.transform_with_state(lambda x, t: SmallNet(name="small")(x, t))
        params, state = list_net.transformed.init(KEY, x, False)
        graph_params, _ = graph_net.transformed.init(KEY, x, False)
        chex.assert_trees_all_equal_shapes(params, graph_params)
        apply = functools.partial(list_net.transformed.apply, is_training=False)
        out_list, _ = self.variant(apply)(params, state, None, x)
        apply = functools.partial(graph_net.transformed.apply, is_training=False)
        out_graph, _ = self.variant(apply)(params, state, None, x)
        module_params = {f"small/{k}": v for k, v in params.items()}
        out_module, _ = self.variant(module.apply)(module_params, {}, None, x, False)
        chex.assert_shape(out_list, (2, 2))
        chex.assert_trees_all_equal(out_list, out_graph)
        chex.assert_trees_all_close(out_list, out_module, atol=1e-6)


def test_alias_names_build_the_same_params():
    canonical = [
        ["Conv2D", {"output_channels": 2, "kernel_shape": 3}],
        ["MaxPool", {"window_shape": 2}],
        ["Flatten", {}],
        ["Linear", {"output_size": 3}],
    ]
    aliased = [
        {"Convolution2D": {"filters": 2, "kernel_size": 3}},
        {"MaxPooling2D": {"pool_size": 2}},
        "flatten",
        ["Dense", {"units": 3}],
    ]
    x = _x()
    p1, _, y1 = _init_apply(nets.build_network(canonical), x)
    p2, _, y2 = _init_apply(nets.build_network(aliased), x)
    chex.assert_trees_all_equal(p1, p2)
    chex.assert_trees_all_equal(y1, y2)


def test_entry_forms_and_is_training_positional_or_keyword():
    spec = [
        {"Flatten": None},  # YAML `- Flatten:`
        {"Dense": {"units": 3}},
        ["Activation", {"activation": "relu"}],
    ]
    assert nets.validate_network_spec([["Flatten"], "Flatten"]) is None
    net = nets.build_network(spec)
    x = _x((2, 2, 2, 1))
    params, state = net.transformed.init(KEY, x, is_training=False)
    a, _ = net.transformed.apply(params, state, None, x, False)
    b, _ = net.transformed.apply(params, state, None, x, is_training=False)
    chex.assert_trees_all_equal(a, b)
    assert bool(jnp.all(a >= 0))
    with pytest.raises(TypeError, match="is_training must be a Python bool"):
        net.transformed.apply(params, state, None, x, jnp.array(True))


def test_graph_several_inputs_and_outputs():
    spec = {
        "inputs": ["image", "extra"],
        "nodes": [
            {"name": "flat", "layer": "Flatten", "inputs": "image"},
            {"name": "joined", "layer": "Concat", "inputs": ["flat", "extra"]},
            {"name": "h", "layer": "Linear", "args": {"output_size": 3},
             "inputs": "joined"},
            {"name": "skip", "layer": "Linear", "args": {"output_size": 3},
             "inputs": "extra"},
            {"name": "sum", "layer": "Add", "args": {"activation": "relu"},
             "inputs": ["h", "skip"]},
        ],
        "outputs": ["sum", "h"],
    }  # fmt: skip
    net = nets.build_network(spec)
    x = {"image": _x((2, 2, 2, 1)), "extra": jnp.ones((2, 5))}
    params, state = net.transformed.init(KEY, x, False)
    chex.assert_shape(params["h"]["w"], (4 + 5, 3))
    out, _ = jax.jit(net.transformed.apply, static_argnums=4)(
        params, state, None, x, False
    )
    assert set(out) == {"sum", "h"}
    chex.assert_shape(out["sum"], (2, 3))
    skip = x["extra"] @ params["skip"]["w"] + params["skip"]["b"]
    chex.assert_trees_all_close(out["sum"], jax.nn.relu(out["h"] + skip), atol=1e-6)
    with pytest.raises(ValueError, match="graph: missing input 'extra'"):
        net.transformed.apply(params, state, None, {"image": x["image"]}, False)


def test_builtin_modules_and_num_classes():
    x = _x()
    net = nets.build_network({"module": "LeNet"}, num_classes=3)
    chex.assert_shape(_init_apply(net, x)[2], (2, 3))
    net = nets.build_network({"module": "lenet", "num_classes": 4}, num_classes=3)
    chex.assert_shape(_init_apply(net, x)[2], (2, 4))
    net = nets.build_network({"module": "ConvNet", "channels": [2]}, num_classes=5)
    chex.assert_shape(_init_apply(net, x)[2], (2, 5))
    net = nets.build_network(
        {"module": "MLP", "output_sizes": [4, 3], "regularizer": "l2",
         "regularizer_scale": 0.01}, num_classes=7,
    )  # fmt: skip
    assert net.regularizers == {"mlp": 0.01}
    params, _, out = _init_apply(net, jnp.ones((2, 5)))
    chex.assert_shape(out, (2, 3))
    assert all(k.startswith("mlp/") for k in params)
    with pytest.raises(nets.SpecError, match="^num_classes: expected a positive int"):
        nets.build_network({"module": "LeNet"}, num_classes=0)


def test_builtin_resnet_batchnorm_state():
    spec = {"module": "ResNet", "blocks_per_stage": [1], "channels": [2],
            "num_classes": 3}  # fmt: skip
    net = nets.build_network(spec)
    x = _x((2, 4, 4, 1))
    params, state = net.transformed.init(KEY, x, True)
    _, eval_state = net.transformed.apply(params, state, None, x, False)
    chex.assert_trees_all_equal(eval_state, state)
    _, train_state = net.transformed.apply(params, state, None, x * 2 + 1, True)
    diff = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state, train_state)
    assert any(jax.tree.leaves(diff))
    (out, stats), _ = net.stats_transformed.apply(params, state, None, x, False)
    chex.assert_shape(out, (2, 3))
    assert {"res_net/stem", "res_net/stem_bn", "res_net/logits"} <= set(stats)


def test_spec_with_dropout_and_batchnorm():
    spec = [
        ["Linear", {"output_size": 8}],
        ["BatchNorm", {"momentum": 0.5}],
        ["Dropout", {"rate": 0.5}],
    ]
    net = nets.build_network(spec)
    x = _x((4, 3))
    params, state = net.transformed.init(KEY, x, True)
    apply = jax.jit(net.transformed.apply, static_argnames="is_training")
    y_eval, s_eval = apply(params, state, None, x, is_training=False)
    chex.assert_trees_all_equal(s_eval, state)
    assert float(jnp.mean(y_eval == 0)) == 0.0
    y1, s1 = apply(params, state, _key(5), x + 1, is_training=True)
    y2, _ = apply(params, state, _key(5), x + 1, is_training=True)
    chex.assert_trees_all_equal(y1, y2)
    assert 0 < float(jnp.mean(y1 == 0)) < 1
    assert not np.allclose(
        s1["batchnorm_1/~/mean_ema"]["average"],
        state["batchnorm_1/~/mean_ema"]["average"],
    )


def test_stats_transformed_shares_params():
    net = nets.build_network(SMALL_LIST)
    x = _x()
    params, state, out = _init_apply(net, x)
    (out2, stats), _ = net.stats_transformed.apply(params, state, None, x, False)
    chex.assert_trees_all_equal(out, out2)
    assert list(stats) == ["conv", "pool", "flat", "hidden", "out"]
    chex.assert_trees_all_close(stats["out"]["mean"], jnp.mean(out), rtol=1e-5)
    assert 0 < float(stats["conv"]["frac_zero"]) < 1  # After the relu.
    assert float(stats["hidden"]["frac_zero"]) == 0.0


def test_shape_errors_name_the_layer():
    net = nets.build_network([["Linear", {"output_size": 3}], ["Conv2D", {
        "filters": 2, "kernel_size": 3}]])  # fmt: skip
    with pytest.raises(nets.SpecError, match=r"^\[1\] \(Conv2D\): cannot apply to"):
        net.transformed.init(KEY, jnp.ones((2, 5)), False)
    graph = {
        "inputs": "x",
        "nodes": [{"name": "p", "layer": "MaxPool", "args": {"window_shape": [2, 2]},
                   "inputs": "x"}],
        "outputs": "p",
    }  # fmt: skip
    net = nets.build_network(graph)
    with pytest.raises(nets.SpecError, match=r"^node 'p' \(MaxPool\): cannot apply"):
        net.transformed.init(KEY, jnp.ones((2, 5, 3)), False)  # 1 spatial axis.


def test_validate_network_spec_accepts_valid_specs():
    for spec in (POLYAXON_LENET, SMALL_LIST, SMALL_GRAPH, {"module": "ResNet"}):
        assert nets.validate_network_spec(spec) is None
