"""Build Haiku networks from specs: layer lists, functional graphs, builtin modules.

    net = build_network([["Conv2D", {"filters": 8, "kernel_size": 3}],
                         ["Flatten"], ["Dense", {"units": 10}]])
    params, state = net.transformed.init(rng, x, is_training=True)
    logits, state = net.transformed.apply(params, state, rng, x, True)
    loss += jaxlab.losses.l2_regularization(params, net.regularizers)

`is_training` is a Python bool (mark it static under `jax.jit`). Outside this
module only `init`/`apply` functions and params pytrees are needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import haiku as hk
import jax
import numpy as np

from nets.args import SpecError
from nets.spec import GraphPlan, ModulePlan, Node, parse_spec
from nets.stats import Stats, activation_stats, with_activation_stats


class Network(NamedTuple):
    """A network built from a spec.

    Attributes:
      transformed: ``init(rng, x, is_training) -> (params, state)`` and
        ``apply(params, state, rng, x, is_training) -> (outputs, state)``. `x` is
        an array, or a dict name -> array for a graph with several inputs;
        `outputs` an array, or a dict name -> array for several outputs.
      regularizers: top-level Haiku module name -> L2 scale, for layers with
        ``regularizer: l2``. The module's params are the keys of `params` equal
        to the name or starting with ``name + "/"``; only their ``w`` leaves are
        meant to be penalised (`jaxlab.losses.l2_regularization`).
      stats_transformed: like `transformed` (same params and state) but `apply`
        returns ``((outputs, stats), state)`` with ``stats[layer_name] =
        {"mean", "std", "frac_zero"}`` of each layer's output after its
        activation (for builtin modules: each direct submodule's output).
    """

    transformed: hk.TransformedWithState
    regularizers: dict[str, float]
    stats_transformed: hk.TransformedWithState


def validate_network_spec(spec: Any, *, num_classes: int | None = None) -> None:
    """Fully validates `spec` without tracing anything (cheap; for config loading).

    Checks layer and module names, every argument (names, types, ranges), layer
    names, and for graphs the node names, inputs, outputs, arities and cycles.
    Shape compatibility needs an input and is checked when the network is first
    traced (`init`), where errors also name the layer.

    Raises:
      SpecError: naming the layer (``[i] (Name)``), node (``node 'n' (Name)``),
        graph (``graph:``) or module (``module (Name)``) and the argument.
    """
    parse_spec(spec, num_classes=num_classes)


def build_network(spec: Any, *, num_classes: int | None = None) -> Network:
    """Builds a network from a spec.

    Args:
      spec: one of
        - a layer list: ``[[name, {args}], ...]``; entries may also be ``[name]``,
          ``name`` or ``{name: {args}}`` (polyaxon YAML style). Layers are named
          ``<layer>_<index>`` (``conv2d_0``, ``linear_3``) unless ``name`` is set.
        - a graph: ``{"inputs": ["x"] | "x", "nodes": [{"name": "h1", "layer":
          "Linear", "args": {...}, "inputs": ["x"]}, ...], "outputs": [...] |
          "out"}``; node names are module names. Nodes may be listed in any
          order; they run in topological order.
        - a builtin module: ``{"module": "MLP" | "ConvNet" | "LeNet" | "ResNet",
          <constructor args>, "name"?, "regularizer"?, "regularizer_scale"?}``;
          a regularizer there applies to all the module's weights.
        See `nets.LAYERS` for layer names and arguments.
      num_classes: for a builtin module whose spec leaves out `num_classes`
        (LeNet, ResNet) or `output_size` (ConvNet), use this; ignored otherwise.

    Returns:
      A `Network`.

    Raises:
      SpecError: if the spec is invalid (see `validate_network_spec`).
    """
    plan = parse_spec(spec, num_classes=num_classes)
    if isinstance(plan, ModulePlan):
        forward = _module_forward(plan)
        stats_forward = with_activation_stats(forward, depth=2)
        regularizers = (
            {}
            if plan.regularizer_scale is None
            else {plan.name: plan.regularizer_scale}
        )
    else:
        forward = _graph_forward(plan, with_stats=False)
        stats_forward = _graph_forward(plan, with_stats=True)
        regularizers = {
            n.name: n.args["regularizer_scale"]
            for n in plan.nodes
            if n.layer.regularizable and n.args["regularizer"] is not None
        }
    return Network(
        transformed=hk.transform_with_state(forward),
        regularizers=regularizers,
        stats_transformed=hk.transform_with_state(stats_forward),
    )


def _check_is_training(is_training: Any) -> None:
    if not isinstance(is_training, bool | np.bool_):
        raise TypeError(
            "is_training must be a Python bool (pass it as a static argument under "
            f"jax.jit), got {type(is_training).__name__}"
        )


def _module_forward(plan: ModulePlan):
    def forward(x: jax.Array, is_training: bool) -> jax.Array:
        _check_is_training(is_training)
        module = plan.cls(**plan.kwargs, name=plan.name)
        return module(x, is_training=bool(is_training))

    return forward


def _bind_inputs(plan: GraphPlan, x: Any) -> dict[str, jax.Array]:
    if plan.single_input and not isinstance(x, Mapping):
        return {plan.inputs[0]: x}
    if not isinstance(x, Mapping):
        raise TypeError(
            f"this network has inputs {list(plan.inputs)}: pass a dict name -> "
            f"array, got {type(x).__name__}"
        )
    for name in plan.inputs:
        if name not in x:
            raise ValueError(f"graph: missing input {name!r} (got {sorted(x)})")
    for name in x:
        if name not in plan.inputs:
            raise ValueError(f"graph: unexpected input {name!r}")
    return dict(x)


def _run_node(node: Node, inputs: list[jax.Array], is_training: bool) -> jax.Array:
    fn = node.layer.build(node.args, node.name)
    try:
        return fn(inputs, is_training)
    except (ValueError, TypeError) as e:
        if isinstance(e, SpecError):
            raise
        shapes = ", ".join(str(getattr(v, "shape", "?")) for v in inputs)
        raise SpecError(
            f"{node.where} ({node.label}): cannot apply to input shape(s) {shapes}: {e}"
        ) from e


def _graph_forward(plan: GraphPlan, *, with_stats: bool):
    def forward(x: Any, is_training: bool):
        _check_is_training(is_training)
        values = _bind_inputs(plan, x)
        stats: Stats = {}
        for node in plan.nodes:
            out = _run_node(node, [values[i] for i in node.inputs], bool(is_training))
            values[node.name] = out
            if with_stats:
                stats[node.name] = activation_stats(out)
        if plan.single_output:
            outputs = values[plan.outputs[0]]
        else:
            outputs = {name: values[name] for name in plan.outputs}
        return (outputs, stats) if with_stats else outputs

    return forward
