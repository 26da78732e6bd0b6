"""Parsing network specs into plans, with full validation and no tracing.

Three spec forms (see `nets.build_network`):

* a layer list: ``[[name, {args}], [name], {name: {args}}, "Flatten", ...]``;
* a functional graph: ``{"inputs": [...], "nodes": [{"name", "layer", "args",
  "inputs"}, ...], "outputs": [...]}``, sorted topologically here (declaration
  order is kept where the dependencies allow);
* a builtin module: ``{"module": "LeNet", <constructor args>}``.

A layer list becomes a chain-shaped `GraphPlan`, so one code path runs both.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from nets import args as A
from nets.args import Arg, SpecError
from nets.layers import DEFAULT_REGULARIZER_SCALE, LAYERS, LayerDef
from nets.modules import MLP, ConvNet, LeNet, ResNet

_LIST_INPUT = "<input>"  # Not an identifier, so no node can share it.


class Node(NamedTuple):
    """One layer application in a plan.

    Attributes:
      name: Haiku module name and the key of its output value.
      where: location for messages (``"[3]"`` or ``"node 'h1'"``).
      label: the layer name as written in the spec.
      layer: the registry entry.
      args: validated arguments.
      inputs: names of the values it consumes.
    """

    name: str
    where: str
    label: str
    layer: LayerDef
    args: dict[str, Any]
    inputs: tuple[str, ...]


class GraphPlan(NamedTuple):
    """A validated layer list or graph; `nodes` are in execution order."""

    inputs: tuple[str, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[str, ...]
    single_input: bool
    single_output: bool


class ModulePlan(NamedTuple):
    """A validated builtin module: `cls(**kwargs, name=name)`."""

    cls: type
    kwargs: dict[str, Any]
    name: str
    regularizer_scale: float | None


Plan = GraphPlan | ModulePlan


def parse_spec(spec: Any, *, num_classes: int | None = None) -> Plan:
    """Validates `spec` and returns its plan.

    Args:
      spec: a layer list, a graph mapping or a builtin-module mapping.
      num_classes: fills a builtin module's `num_classes` (LeNet, ResNet) or
        `output_size` (ConvNet) when the spec leaves it out; ignored otherwise.

    Raises:
      SpecError: naming the layer, node or argument at fault.
    """
    if num_classes is not None:
        try:
            A.pos_int(num_classes)
        except A._Invalid as e:
            raise SpecError(f"num_classes: {e}") from None
    if isinstance(spec, Mapping):
        if "module" in spec:
            return _parse_module(spec, num_classes)
        if "nodes" in spec:
            return _parse_graph(spec)
        raise SpecError(
            "network: expected a layer list, a graph {inputs, nodes, outputs} or a "
            f"builtin {{module: ...}}, got a mapping with keys {sorted(map(str, spec))}"
        )
    if isinstance(spec, Sequence) and not isinstance(spec, str | bytes):
        return _parse_list(spec)
    raise SpecError(
        "network: expected a layer list, a graph {inputs, nodes, outputs} or a "
        f"builtin {{module: ...}}, got {spec!r}"
    )


def _lookup(name: Any, where: str) -> LayerDef:
    if not isinstance(name, str):
        raise SpecError(f"{where}: layer name must be a string, got {name!r}")
    if name not in LAYERS:
        raise SpecError(
            f"{where}: unknown layer {name!r}{A.suggest(name, LAYERS.all_names())}"
        )
    return LAYERS[name]


# ---------------------------------------------------------------- layer lists


def _split_entry(entry: Any, where: str) -> tuple[Any, Any]:
    if isinstance(entry, str):
        return entry, None
    if isinstance(entry, list | tuple) and len(entry) in (1, 2):
        return entry[0], entry[1] if len(entry) == 2 else None
    if isinstance(entry, Mapping) and len(entry) == 1:
        return next(iter(entry.items()))
    raise SpecError(
        f"{where}: expected [name, {{args}}], [name] or {{name: {{args}}}}, "
        f"got {entry!r}"
    )


def _parse_list(spec: Sequence[Any]) -> GraphPlan:
    if not spec:
        raise SpecError("network: the layer list is empty")
    nodes: list[Node] = []
    owner: dict[str, str] = {}
    previous = _LIST_INPUT
    for i, entry in enumerate(spec):
        where = f"[{i}]"
        label, raw_args = _split_entry(entry, where)
        layer = _lookup(label, where)
        if layer.merge:
            raise SpecError(
                f"{where} ({label}): a merge layer needs several inputs; "
                "use a graph spec"
            )
        args = layer.validate(raw_args, where=where, label=label)
        name = args["name"] or f"{layer.default_name}_{i}"
        if name in owner:
            raise SpecError(
                f"{where} ({label}).name: duplicate layer name {name!r} "
                f"(also used by {owner[name]})"
            )
        owner[name] = where
        nodes.append(Node(name, where, label, layer, args, (previous,)))
        previous = name
    return GraphPlan((_LIST_INPUT,), tuple(nodes), (previous,), True, True)


# --------------------------------------------------------------------- graphs

_GRAPH_KEYS = ("inputs", "nodes", "outputs")
_NODE_KEYS = ("name", "layer", "args", "inputs")


def _names(value: Any, what: str) -> tuple[str, ...]:
    """A name or a non-empty list of unique names."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not names:
        raise SpecError(
            f"{what}: expected a name or a non-empty list of names, got {value!r}"
        )
    for n in names:
        try:
            A.identifier(n)
        except A._Invalid as e:
            raise SpecError(f"{what}: {e}") from None
    return tuple(names)


def _parse_node(i: int, raw: Any, graph_inputs: set[str]) -> Node:
    if not isinstance(raw, Mapping):
        raise SpecError(
            f"nodes[{i}]: expected a mapping with keys {list(_NODE_KEYS)}, got {raw!r}"
        )
    if "name" not in raw:
        raise SpecError(f"nodes[{i}]: missing 'name'")
    try:
        name = A.identifier(raw["name"])
    except A._Invalid as e:
        raise SpecError(f"nodes[{i}].name: {e}") from None
    where = f"node {name!r}"
    for key in raw:
        if key not in _NODE_KEYS:
            raise SpecError(
                f"{where}: unknown key {key!r}{A.suggest(str(key), _NODE_KEYS)}"
            )
    if name in graph_inputs:
        raise SpecError(f"{where}: name already used by a graph input")
    if "layer" not in raw:
        raise SpecError(f"{where}: missing 'layer'")
    layer = _lookup(raw["layer"], where)
    label = raw["layer"]
    raw_args = raw.get("args")
    if isinstance(raw_args, Mapping) and "name" in raw_args:
        raise SpecError(
            f"{where} ({label}).name: a graph node's module name is the node name"
        )
    args = layer.validate(raw_args, where=where, label=label)
    if "inputs" not in raw:
        raise SpecError(f"{where}: missing 'inputs'")
    inputs = _names(raw["inputs"], f"{where}.inputs")
    if layer.merge and len(inputs) < 2:
        raise SpecError(
            f"{where} ({label}): expected at least 2 inputs, got {len(inputs)}"
        )
    if not layer.merge and len(inputs) != 1:
        raise SpecError(f"{where} ({label}): expected 1 input, got {len(inputs)}")
    return Node(name, where, label, layer, args, inputs)


def _find_cycle(nodes: Mapping[str, Node], order: Sequence[str]) -> list[str]:
    """A cycle among `nodes` (each has an input among them), in data-flow order."""
    walk, seen = [], {}
    current = order[0]
    while current not in seen:
        seen[current] = len(walk)
        walk.append(current)
        current = next(i for i in nodes[current].inputs if i in nodes)
    cycle = walk[seen[current] :][::-1]  # Inputs were followed backwards.
    first = min(range(len(cycle)), key=lambda k: order.index(cycle[k]))
    cycle = cycle[first:] + cycle[:first]
    return [*cycle, cycle[0]]


def _toposort(nodes: Sequence[Node], inputs: tuple[str, ...]) -> list[Node]:
    """Kahn's algorithm, taking the earliest-declared ready node first."""
    index = {n.name: k for k, n in enumerate(nodes)}
    pending = {n.name: {i for i in n.inputs if i not in inputs} for n in nodes}
    users: dict[str, list[str]] = {n.name: [] for n in nodes}
    for n in nodes:
        for i in set(n.inputs) - set(inputs):
            users[i].append(n.name)
    ready = [index[name] for name, deps in pending.items() if not deps]
    heapq.heapify(ready)
    ordered: list[Node] = []
    while ready:
        node = nodes[heapq.heappop(ready)]
        ordered.append(node)
        for user in users[node.name]:
            pending[user].discard(node.name)
            if not pending[user]:
                heapq.heappush(ready, index[user])
    if len(ordered) < len(nodes):
        done = {n.name for n in ordered}
        rest = {n.name: n for n in nodes if n.name not in done}
        cycle = _find_cycle(rest, [n.name for n in nodes if n.name in rest])
        raise SpecError(
            "graph: cycle through nodes " + " -> ".join(repr(c) for c in cycle)
        )
    return ordered


def _parse_graph(spec: Mapping[str, Any]) -> GraphPlan:
    for key in spec:
        if key not in _GRAPH_KEYS:
            raise SpecError(
                f"graph: unknown key {key!r}{A.suggest(str(key), _GRAPH_KEYS)}"
            )
    for key in _GRAPH_KEYS:
        if key not in spec:
            raise SpecError(f"graph: missing {key!r}")
    inputs = _names(spec["inputs"], "graph.inputs")
    if len(set(inputs)) != len(inputs):
        raise SpecError(f"graph.inputs: duplicate names in {list(inputs)}")
    raw_nodes = spec["nodes"]
    if not isinstance(raw_nodes, list | tuple):
        raise SpecError(f"graph.nodes: expected a list of nodes, got {raw_nodes!r}")
    nodes = [_parse_node(i, raw, set(inputs)) for i, raw in enumerate(raw_nodes)]
    known = set(inputs)
    for n in nodes:
        if n.name in known:
            raise SpecError(f"graph: duplicate node name {n.name!r}")
        known.add(n.name)
    for n in nodes:
        for i in n.inputs:
            if i not in known:
                hint = A.suggest(i, sorted(known))
                raise SpecError(f"{n.where}: unknown input {i!r}{hint}")
    outputs = _names(spec["outputs"], "graph.outputs")
    for o in outputs:
        if o not in known:
            raise SpecError(f"graph: unknown output {o!r}{A.suggest(o, sorted(known))}")
        if outputs.count(o) > 1:
            raise SpecError(f"graph: output {o!r} listed twice")
    ordered = _toposort(nodes, inputs)
    by_name = {n.name: n for n in nodes}
    used, stack = set(), list(outputs)
    while stack:
        name = stack.pop()
        if name not in used:
            used.add(name)
            stack.extend(by_name[name].inputs if name in by_name else ())
    for n in nodes:
        if n.name not in used:
            raise SpecError(f"graph: node {n.name!r} is not used by any output")
    for i in inputs:
        if i not in used:
            raise SpecError(f"graph: input {i!r} is not used by any node or output")
    single_input = isinstance(spec["inputs"], str) or len(inputs) == 1
    single_output = isinstance(spec["outputs"], str) or len(outputs) == 1
    return GraphPlan(inputs, tuple(ordered), outputs, single_input, single_output)


# ------------------------------------------------------------ builtin modules

_ACT = Arg(A.activation, "relu")
_MODULES: dict[str, tuple[type, str, dict[str, Arg]]] = {
    "MLP": (
        MLP,
        "mlp",
        {
            "output_sizes": Arg(A.pos_int_list),
            "activation": _ACT,
            "activate_final": Arg(A.bool_, False),
            "dropout_rate": Arg(A.number(low=0, high=1), 0.0),
        },
    ),
    "ConvNet": (
        ConvNet,
        "conv_net",
        {
            "channels": Arg(A.pos_int_list),
            "kernel_shape": Arg(A.pos_int, 3, aliases=("kernel_size",)),
            "pool": Arg(A.bool_, True),
            "activation": _ACT,
            "output_size": Arg(A.optional(A.pos_int), None),
        },
    ),
    "LeNet": (LeNet, "le_net", {"num_classes": Arg(A.pos_int, 10)}),
    "ResNet": (
        ResNet,
        "res_net",
        {
            "blocks_per_stage": Arg(A.pos_int_list, (1, 1)),
            "channels": Arg(A.pos_int_list, (16, 32)),
            "num_classes": Arg(A.pos_int, 10),
            "bn_decay": Arg(A.number(low=0, high=1, low_open=True), 0.9),
            "cross_replica_axis": Arg(A.optional(A.identifier), None),
        },
    ),
}
_MODULE_COMMON = {
    "name": Arg(A.optional(A.identifier), None),
    "regularizer": Arg(A.regularizer, None),
    "regularizer_scale": Arg(A.number(low=0, high=math.inf), None),
}


def _parse_module(spec: Mapping[str, Any], num_classes: int | None) -> ModulePlan:
    label = spec["module"]
    lowered = {k.lower(): k for k in _MODULES}
    if not isinstance(label, str) or label.lower() not in lowered:
        raise SpecError(
            f"module: unknown module {label!r} (known: {', '.join(_MODULES)})"
        )
    cls, default_name, schema = _MODULES[lowered[label.lower()]]
    raw = {k: v for k, v in spec.items() if k != "module"}
    values, given = A.check_args(
        raw, {**schema, **_MODULE_COMMON}, where="module", label=label
    )
    if num_classes is not None:
        if "num_classes" in schema and "num_classes" not in given:
            values["num_classes"] = num_classes
        if "output_size" in schema and "output_size" not in given:
            values["output_size"] = num_classes
    name = values.pop("name") or default_name
    reg = values.pop("regularizer")
    scale = values.pop("regularizer_scale")
    if reg is None and scale is not None:
        raise SpecError(
            f"module ({label}).regularizer_scale: set without 'regularizer'"
        )
    if reg is not None and scale is None:
        scale = DEFAULT_REGULARIZER_SCALE
    if cls is ResNet and len(values["blocks_per_stage"]) != len(values["channels"]):
        raise SpecError(
            f"module ({label}).channels: expected as many stages as "
            f"blocks_per_stage ({len(values['blocks_per_stage'])}), "
            f"got {list(values['channels'])}"
        )
    return ModulePlan(cls, values, name, scale if reg is not None else None)
