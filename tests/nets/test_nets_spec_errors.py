"""Spec validation errors: each names the layer index or node and the argument."""

import re

import pytest

import nets


def _node(node_name, layer="Linear", inputs="x", **args):
    args = args or ({"output_size": 2} if layer == "Linear" else {})
    return {"name": node_name, "layer": layer, "args": args, "inputs": inputs}


def _graph(*nodes, inputs="x", outputs=None):
    return {
        "inputs": inputs,
        "nodes": list(nodes),
        "outputs": outputs or nodes[-1].get("name", "a"),
    }


LIST_ERRORS = [
    (
        [["Linear", {"output_size": 3}], ["MaxPool", {"window_shape": -2}]],
        "[1] (MaxPool).window_shape: expected a positive int or list of positive "
        "ints, got -2",
    ),
    (
        [["Flatten"]] * 3 + [["Linear", {"outputsize": 3}]],
        "[3] (Linear): unknown argument 'outputsize' (did you mean 'output_size'?)",
    ),
    ([["Conv3x", {}]], "[0]: unknown layer 'Conv3x'"),
    ([["Flatten"], [7, {}]], "[1]: layer name must be a string, got 7"),
    ([["Flatten"], 5], "[1]: expected [name, {args}], [name] or {name: {args}}, got 5"),
    ([{"Flatten": {}, "Linear": {}}], "[0]: expected [name, {args}]"),
    ([["Linear", [3]]], "[0] (Linear): expected a mapping of arguments, got [3]"),
    (
        [["Conv2d", {"num_filter": "32", "filter_size": 5}]],
        "[0] (Conv2d).num_filter: expected a positive int, got '32'",
    ),
    (
        [["Dense", {"units": 3, "activation": "relu6"}]],
        "[0] (Dense).activation: unknown activation 'relu6' (known: elu, gelu, ",
    ),
    (
        [["Conv2D", {"filters": 2, "kernel_size": 3, "padding": "same2"}]],
        "[0] (Conv2D).padding: expected 'SAME' or 'VALID', got 'same2'",
    ),
    ([["Flatten"], ["Concat"]], "[1] (Concat): a merge layer needs several inputs"),
    (
        [
            ["Linear", {"output_size": 2}],
            ["Linear", {"output_size": 2, "name": "linear_0"}],
        ],
        "[1] (Linear).name: duplicate layer name 'linear_0' (also used by [0])",
    ),  # fmt: skip
    ([], "network: the layer list is empty"),
    ("Flatten", "network: expected a layer list, a graph"),
    ({"layers": []}, "network: expected a layer list, a graph"),
]

GRAPH_ERRORS = [
    (
        _graph(
            _node("a", inputs="b"),
            _node("b", inputs="a"),
            _node("c", "Add", inputs=["a", "x"]),
        ),
        "graph: cycle through nodes 'a' -> 'b' -> 'a'",
    ),
    (
        _graph(
            _node("a", inputs="c"),
            _node("b", inputs="a"),
            _node("c", inputs="b"),
            _node("d", "Add", inputs=["c", "x"]),
        ),
        "graph: cycle through nodes 'a' -> 'b' -> 'c' -> 'a'",
    ),
    (_graph(_node("h1"), _node("h2", inputs="h9")), "node 'h2': unknown input 'h9'"),
    (_graph(_node("h1", "Conv3x")), "node 'h1': unknown layer 'Conv3x'"),
    (
        _graph(_node("conv1", "Conv2D", output_channels=2, kernel_shape=0)),
        "node 'conv1' (Conv2D).kernel_shape: expected a positive int or list of 2 "
        "positive ints, got 0",
    ),
    (
        _graph(_node("h1", output_size=2, units=3)),
        "node 'h1' (Linear).units: same argument as 'output_size'; give only one",
    ),
    (_graph(_node("a"), _node("a")), "graph: duplicate node name 'a'"),
    (_graph(_node("x")), "node 'x': name already used by a graph input"),
    (_graph(_node("a"), outputs="out"), "graph: unknown output 'out'"),
    (_graph(_node("a"), outputs=["a", "a"]), "graph: output 'a' listed twice"),
    (
        _graph(_node("a"), _node("b"), outputs="a"),
        "graph: node 'b' is not used by any output",
    ),
    (
        _graph(_node("a"), inputs=["x", "y"]),
        "graph: input 'y' is not used by any node or output",
    ),
    (
        _graph(_node("a", "Add", inputs="x")),
        "node 'a' (Add): expected at least 2 inputs, got 1",
    ),
    (
        _graph(_node("a", inputs=["x", "x"])),
        "node 'a' (Linear): expected 1 input, got 2",
    ),
    (
        _graph(_node("a", output_size=2, name="b")),
        "node 'a' (Linear).name: a graph node's module name is the node name",
    ),
    (
        _graph({"name": "a", "layer": "Linear", "input": "x"}),
        "node 'a': unknown key 'input' (did you mean 'inputs'?)",
    ),
    (_graph({"name": "a", "layer": "Flatten"}), "node 'a': missing 'inputs'"),
    (_graph({"layer": "Flatten", "inputs": "x"}), "nodes[0]: missing 'name'"),
    (_graph(_node("my-node")), "nodes[0].name: expected a name made of letters"),
    (
        {"inputs": "x", "nodes": [_node("a")], "output": "a"},
        "graph: unknown key 'output' (did you mean 'outputs'?)",
    ),
    ({"inputs": [], "nodes": [_node("a")], "outputs": "a"}, "graph.inputs: expected"),
]

MODULE_ERRORS = [
    ({"module": "LeNett"}, "module: unknown module 'LeNett' (known: MLP, ConvNet, "),
    (
        {"module": "LeNet", "num_classes": 0},
        "module (LeNet).num_classes: expected a positive int, got 0",
    ),
    ({"module": "LeNet", "classes": 3}, "module (LeNet): unknown argument 'classes'"),
    ({"module": "MLP"}, "module (MLP): missing required argument 'output_sizes'"),
    (
        {"module": "MLP", "output_sizes": [4, -1]},
        "module (MLP).output_sizes: expected a non-empty list of positive ints",
    ),
    (
        {"module": "ResNet", "channels": [8]},
        "module (ResNet).channels: expected as many stages",
    ),
    (
        {"module": "ResNet", "bn_decay": 1},
        "module (ResNet).bn_decay: expected a float in (0, 1), got 1",
    ),
    (
        {"module": "ConvNet", "channels": [2], "regularizer_scale": 0.1},
        "module (ConvNet).regularizer_scale: set without 'regularizer'",
    ),
]


@pytest.mark.parametrize(
    ("spec", "message"), LIST_ERRORS + GRAPH_ERRORS + MODULE_ERRORS
)
def test_spec_errors(spec, message):
    with pytest.raises(nets.SpecError, match=re.escape(message)) as info:
        nets.validate_network_spec(spec)
    assert str(info.value).startswith(message)
    with pytest.raises(nets.SpecError):  # build_network validates the same way.
        nets.build_network(spec)
