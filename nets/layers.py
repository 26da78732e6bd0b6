"""The layer registry: layer names and arguments usable in network specs.

`LAYERS` maps canonical names to `LayerDef`s; lookup is case-insensitive and
accepts aliases (``LAYERS["dense"] is LAYERS["Linear"]``). Arguments use Haiku's
names; Keras/polyaxon names are accepted as aliases (``units``/``num_units`` ->
``output_size``, ``filters``/``num_filter`` -> ``output_channels``,
``kernel_size``/``filter_size`` -> ``kernel_shape``, for pools ``pool_size``/
``kernel_size`` -> ``window_shape``).

Every layer takes ``activation`` (a name, applied after the layer) and ``name``
(its Haiku module name). Linear and Conv layers also take ``with_bias`` and
``regularizer: l2`` with ``regularizer_scale`` (default 1e-3, the coefficient
`jaxlab.losses.l2_regularization` applies to the layer's weights ``w``).

Defaults: convolutions stride 1 and SAME padding; pools a window of 2, strides
equal to the window (as in Keras/polyaxon) and SAME padding, so 8x8 -> 4x4 -> 2x2
and 7x7 -> 4x4. Pools take inputs [B, spatial..., C]; an int window applies to
every spatial axis.

A `LayerDef` is also a factory for use inside your own `hk.transform`:
``LAYERS["Conv2D"](filters=8, kernel_size=3, activation="relu")(x)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import haiku as hk
import jax
import jax.numpy as jnp

from nets import args as A
from nets import conv
from nets.activations import get_activation
from nets.args import Arg, SpecError
from nets.modules import Dropout
from nets.recurrent import GRU, LSTM

# (inputs, is_training) -> output; single-input layers take a one-element list.
LayerFn = Callable[[list[jax.Array], bool], jax.Array]
DEFAULT_REGULARIZER_SCALE = 1e-3

_COMMON = {
    "activation": Arg(A.optional(A.activation), None),
    "name": Arg(A.optional(A.identifier), None),
}
_WEIGHTED = {
    "with_bias": Arg(A.bool_, True, aliases=("use_bias",)),
    "regularizer": Arg(A.regularizer, None, aliases=("kernel_regularizer",)),
    "regularizer_scale": Arg(A.number(low=0, high=math.inf), None),
}


@dataclasses.dataclass(frozen=True)
class LayerDef:
    """A layer usable in specs: its names, argument schema and builder.

    Attributes:
      name: canonical name, e.g. ``"Conv2D"``.
      aliases: other accepted names.
      args: argument schema (canonical name -> `Arg`), common arguments included.
      make: `(args, module_name) -> LayerFn`; `args` are validated.
      merge: whether the layer combines several inputs (graph specs only).
      regularizable: whether ``regularizer: l2`` is accepted.
    """

    name: str
    aliases: tuple[str, ...]
    args: Mapping[str, Arg]
    make: Callable[[dict[str, Any], str], LayerFn]
    merge: bool = False
    regularizable: bool = False

    @property
    def default_name(self) -> str:
        """The module-name stem, e.g. ``"conv2d"`` (specs append ``_<index>``)."""
        return self.name.lower()

    def validate(
        self, args: Any, *, where: str = "", label: str | None = None
    ) -> dict[str, Any]:
        """Checks `args` and returns them complete (defaults filled in).

        Raises:
          SpecError: e.g. ``[1] (MaxPool).window_shape: expected ...``.
        """
        label = self.name if label is None else label
        values, given = A.check_args(args, self.args, where=where, label=label)
        if self.regularizable:
            if values["regularizer"] is None and "regularizer_scale" in given:
                raise SpecError(
                    f"{A.location(where, label)}.regularizer_scale: set without "
                    "'regularizer'"
                )
            if values["regularizer_scale"] is None:
                values["regularizer_scale"] = DEFAULT_REGULARIZER_SCALE
        if "strides" in self.args and values["strides"] is None:
            values["strides"] = values["window_shape"]
        return values

    def build(self, args: dict[str, Any], module_name: str) -> LayerFn:
        """Returns the layer function for validated `args`, activation included."""
        fn = self.make(args, module_name)
        act = get_activation(args["activation"])
        if args["activation"] is None:
            return fn
        return lambda inputs, is_training: act(fn(inputs, is_training))

    def __call__(self, **args: Any) -> Callable[..., jax.Array]:
        """Validates `args` and returns `layer(x, is_training=False)`.

        Call the result inside a Haiku transform; `x` is an array, or a list of
        arrays for merge layers.
        """
        values = self.validate(args)
        fn = self.build(values, values["name"] or self.default_name)

        def layer(x, is_training: bool = False) -> jax.Array:
            return fn(list(x) if self.merge else [x], is_training)

        return layer


class _Registry(Mapping[str, LayerDef]):
    """Canonical name -> LayerDef; lookups are case-insensitive and take aliases."""

    def __init__(self, defs: Sequence[LayerDef]):
        self._canonical = {d.name: d for d in defs}
        self._lookup = {}
        for d in defs:
            for key in (d.name, *d.aliases):
                if key.lower() in self._lookup:
                    raise ValueError(f"layer name {key!r} registered twice")
                self._lookup[key.lower()] = d

    def __getitem__(self, key: str) -> LayerDef:
        if isinstance(key, str) and key.lower() in self._lookup:
            return self._lookup[key.lower()]
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._lookup

    def __iter__(self) -> Iterator[str]:
        return iter(self._canonical)

    def __len__(self) -> int:
        return len(self._canonical)

    def all_names(self) -> list[str]:
        """Canonical names and aliases."""
        return [n for d in self._canonical.values() for n in (d.name, *d.aliases)]


def _layer(name, aliases, args, make, *, merge=False, regularizable=False):
    # Layer-specific arguments win (Activation makes `activation` required).
    schema = {**(_WEIGHTED if regularizable else {}), **_COMMON, **args}
    return LayerDef(name, tuple(aliases), schema, make, merge, regularizable)


# ------------------------------------------------------------------ builders


def _linear(a, name):
    return lambda xs, _: hk.Linear(
        a["output_size"], with_bias=a["with_bias"], name=name
    )(xs[0])


def _conv(cls):
    def make(a, name):
        return lambda xs, _: cls(
            a["output_channels"],
            a["kernel_shape"],
            stride=a["stride"],
            rate=a["rate"],
            padding=a["padding"],
            with_bias=a["with_bias"],
            lowering=a["lowering"],
            name=name,
        )(xs[0])

    return make


def _full_shape(x: jax.Array, size: int | tuple[int, ...]) -> tuple[int, ...]:
    """Window/stride over [B, spatial..., C]: (1, *spatial, 1)."""
    spatial = x.ndim - 2
    if spatial < 1:
        raise ValueError(f"pools expect inputs [B, spatial..., C], got {x.shape}")
    if isinstance(size, int):
        size = (size,) * spatial
    if len(size) != spatial:
        raise ValueError(
            f"window/strides {size} do not match the {spatial} spatial axes of "
            f"an input of shape {x.shape}"
        )
    return (1, *size, 1)


def _pool(pool_fn):
    def make(a, name):
        del name

        def apply(xs, _):
            x = xs[0]
            window = _full_shape(x, a["window_shape"])
            strides = _full_shape(x, a["strides"])
            return pool_fn(x, window, strides, a["padding"])

        return apply

    return make


def _dropout(a, name):
    return lambda xs, is_training: Dropout(a["rate"], name=name)(xs[0], is_training)


def _batch_norm(a, name):
    def apply(xs, is_training):
        bn = hk.BatchNorm(
            create_scale=a["create_scale"],
            create_offset=a["create_offset"],
            decay_rate=a["decay_rate"],
            eps=a["eps"],
            cross_replica_axis=a["cross_replica_axis"],
            name=name,
        )
        return bn(xs[0], is_training)

    return apply


def _layer_norm(a, name):
    return lambda xs, _: hk.LayerNorm(
        axis=a["axis"],
        create_scale=a["create_scale"],
        create_offset=a["create_offset"],
        eps=a["eps"],
        name=name,
    )(xs[0])


def _recurrent(cls):
    def make(a, name):
        return lambda xs, _: cls(
            a["hidden_size"], return_sequences=a["return_sequences"], name=name
        )(xs[0])

    return make


_POS = A.pos_int
_RATE = A.number(low=0, high=1)
_POOL_ARGS = {
    "window_shape": Arg(A.pos_ints(), 2, aliases=("kernel_size", "pool_size")),
    "strides": Arg(A.optional(A.pos_ints()), None, aliases=("stride",)),
    "padding": Arg(A.padding, "SAME"),
}


def _conv_args(n: int) -> dict[str, Arg]:
    return {
        "output_channels": Arg(_POS, aliases=("filters", "num_filter")),
        "kernel_shape": Arg(
            A.pos_ints(length=n), aliases=("kernel_size", "filter_size")
        ),
        "stride": Arg(A.pos_ints(length=n), 1, aliases=("strides",)),
        "rate": Arg(A.pos_ints(length=n), 1, aliases=("dilation_rate",)),
        "padding": Arg(A.padding, "SAME"),
        # How XLA computes it (nets.conv): patches + matmul on CPU by default.
        "lowering": Arg(A.choice(*conv.LOWERINGS), "auto"),
    }


_NORM_FLAGS = {
    "create_scale": Arg(A.bool_, True, aliases=("scale",)),
    "create_offset": Arg(A.bool_, True, aliases=("center",)),
    "eps": Arg(A.number(low=0, high=math.inf, low_open=True), 1e-5, ("epsilon",)),
}
_RNN_ARGS = {
    "hidden_size": Arg(_POS, aliases=("units", "num_units")),
    "return_sequences": Arg(A.bool_, True),
}

_DEFS = [
    _layer(
        "Linear",
        ["Dense", "FullyConnected", "fc"],
        {"output_size": Arg(_POS, aliases=("units", "num_units"))},
        _linear,
        regularizable=True,
    ),
    _layer(
        "Conv1D",
        ["Convolution1D"],
        _conv_args(1),
        _conv(conv.Conv1D),
        regularizable=True,
    ),
    _layer(
        "Conv2D",
        ["Convolution2D"],
        _conv_args(2),
        _conv(conv.Conv2D),
        regularizable=True,
    ),
    _layer(
        "MaxPool",
        ["MaxPool2d", "MaxPooling2D", "MaxPool1d", "MaxPooling1D"],
        _POOL_ARGS,
        _pool(hk.max_pool),
    ),
    _layer(
        "AvgPool",
        ["AvgPool2d", "AveragePooling2D", "AvgPool1d", "AveragePooling1D"],
        _POOL_ARGS,
        _pool(hk.avg_pool),
    ),
    _layer(
        "Flatten",
        [],
        {"preserve_dims": Arg(_POS, 1)},
        lambda a, name: lambda xs, _: hk.Flatten(a["preserve_dims"], name=name)(xs[0]),
    ),
    _layer("Dropout", [], {"rate": Arg(_RATE)}, _dropout),
    _layer(
        "BatchNorm",
        ["BatchNormalization", "BatchNorm2d"],
        {
            "decay_rate": Arg(
                A.number(low=0, high=1, low_open=True),
                0.9,
                aliases=("momentum", "decay"),
            ),
            "cross_replica_axis": Arg(A.optional(A.identifier), None),
            **_NORM_FLAGS,
        },
        _batch_norm,
    ),
    _layer(
        "LayerNorm",
        ["LayerNormalization"],
        {"axis": Arg(A.ints_or_int, -1), **_NORM_FLAGS},
        _layer_norm,
    ),
    _layer(
        "Activation",
        [],
        {"activation": Arg(A.activation)},
        lambda a, name: lambda xs, _: xs[0],
    ),
    _layer(
        "Reshape",
        [],
        {
            "output_shape": Arg(A.shape, aliases=("target_shape", "shape")),
            "preserve_dims": Arg(_POS, 1),
        },
        lambda a, name: (
            lambda xs, _: hk.Reshape(
                a["output_shape"], preserve_dims=a["preserve_dims"], name=name
            )(xs[0])
        ),
    ),
    _layer("LSTM", [], _RNN_ARGS, _recurrent(LSTM)),
    _layer("GRU", [], _RNN_ARGS, _recurrent(GRU)),
    _layer(
        "Embed",
        ["Embedding"],
        {
            "vocab_size": Arg(_POS, aliases=("input_dim",)),
            "embed_dim": Arg(_POS, aliases=("output_dim",)),
        },
        lambda a, name: (
            lambda xs, _: hk.Embed(a["vocab_size"], a["embed_dim"], name=name)(xs[0])
        ),
    ),
    _layer(
        "Concat",
        ["Concatenate"],
        {"axis": Arg(A.int_, -1)},
        lambda a, name: lambda xs, _: jnp.concatenate(xs, axis=a["axis"]),
        merge=True,
    ),
    _layer("Add", [], {}, lambda a, name: lambda xs, _: sum(xs[1:], xs[0]), merge=True),
]

LAYERS = _Registry(_DEFS)
