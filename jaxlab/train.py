"""The pure core of training: a train state, a train step, supervised losses.

Everything here is a pure function of arrays and pytrees: `jit` it, `pmap` it
(set `axis_name`), `vmap` it or `lax.scan` it. No clock, file or config object
is read here.

A *loss function* has the signature::

    loss_fn(params, net_state, batch, rng) -> (loss, (net_state, metrics))

where `net_state` is Haiku state (e.g. BatchNorm statistics; ``{}`` if none) and
`metrics` a dict of scalars. `supervised_loss` builds one from a Haiku network
and a loss from `jaxlab.losses`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import optax

PyTree = Any
Metrics = dict[str, jax.Array]
LossFn = Callable[
    [PyTree, PyTree, Mapping[str, jax.Array], jax.Array],
    tuple[jax.Array, tuple[PyTree, Metrics]],
]


class TrainState(NamedTuple):
    """Everything a training run carries from one step to the next.

    Attributes:
      params: network parameters (a Haiku params dict).
      net_state: Haiku state, e.g. BatchNorm moving averages (``{}`` if none).
      opt_state: optax optimizer state.
      step: number of optimizer steps taken, int32 scalar.
      rng: PRNG key for the next step (typed key array).
    """

    params: PyTree
    net_state: PyTree
    opt_state: optax.OptState
    step: jax.Array
    rng: jax.Array


def as_stateful(network: hk.Transformed | hk.TransformedWithState):
    """Returns `network` as an `hk.TransformedWithState` (empty state if none)."""
    if isinstance(network, hk.TransformedWithState):
        return network
    if isinstance(network, hk.Transformed):
        return hk.with_empty_state(network)
    raise TypeError(
        "expected a network made by hk.transform or hk.transform_with_state, "
        f"got {type(network).__name__}"
    )


def init_train_state(
    network: hk.Transformed | hk.TransformedWithState,
    optimizer: optax.GradientTransformation,
    rng: jax.Array,
    *example_inputs: Any,
    **init_kwargs: Any,
) -> TrainState:
    """Initialises params, Haiku state and optimizer state.

    Args:
      network: a Haiku-transformed network (with or without state).
      optimizer: an optax optimizer.
      rng: a PRNG key; split into the init key and the training key.
      *example_inputs: example inputs for `network.init` (e.g. ``x[:1]``).
      **init_kwargs: further keyword arguments of the network (e.g. is_training).
    """
    init_rng, train_rng = jax.random.split(rng)
    params, net_state = as_stateful(network).init(
        init_rng, *example_inputs, **init_kwargs
    )
    return TrainState(
        params=params,
        net_state=net_state,
        opt_state=optimizer.init(params),
        step=jnp.zeros((), jnp.int32),
        rng=train_rng,
    )


def _pmean_floats(tree: PyTree, axis_name: str) -> PyTree:
    """`lax.pmean` over float leaves; other leaves (counters) are left as they are."""

    def mean(x):
        if jnp.issubdtype(x.dtype, jnp.floating):
            return jax.lax.pmean(x, axis_name)
        return x

    return jax.tree.map(mean, tree)


def _sum_squares(tree: PyTree) -> PyTree:
    """``sum(x ** 2)`` of each leaf, as float32 scalars."""
    return jax.tree.map(lambda x: jnp.sum(jnp.square(x.astype(jnp.float32))), tree)


def _norm(sum_squares: PyTree) -> jax.Array:
    return jnp.sqrt(sum(jax.tree.leaves(sum_squares), jnp.zeros((), jnp.float32)))


def _varying(tree: PyTree, axis_name: str | None) -> PyTree:
    """Marks leaves as varying over `axis_name` (under `shard_map`, where a
    `pmean`ed update is device-invariant but the state passed in varies, the
    two `lax.cond` branches must agree); a no-op elsewhere."""
    if axis_name is None:
        return tree

    def cast(x):
        kind = getattr(jax.typeof(x), "manual_axis_type", None)
        if kind is None or axis_name in kind.varying:
            return x
        return jax.lax.pcast(x, (axis_name,), to="varying")

    return jax.tree.map(cast, tree)


def _core_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    axis_name: str | None,
    per_layer_grad_norms: bool,
    skip_nonfinite: bool,
):
    """``step(state, batch, full, in_loop=False) -> (state, metrics)``; with
    ``full=False`` the metrics hold only ``nonfinite`` (no norms, no
    loss-function metrics), which is what the steps between two logging steps
    need. `in_loop`: the step is the body of a compiled loop (picks the
    non-finite guard that is faster there)."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(
        state: TrainState,
        batch: Mapping[str, jax.Array],
        full: bool,
        in_loop: bool = False,
    ):
        rng, step_rng = jax.random.split(state.rng)
        if axis_name is not None:
            step_rng = jax.random.fold_in(step_rng, jax.lax.axis_index(axis_name))
        (loss, (net_state, metrics)), grads = grad_fn(
            state.params, state.net_state, batch, step_rng
        )
        metrics = {"loss": loss, **metrics} if full else {"loss": loss}
        if axis_name is not None:
            grads, metrics = jax.lax.pmean((grads, metrics), axis_name)
            net_state = _pmean_floats(net_state, axis_name)
        loss = metrics["loss"]
        grad_squares = _sum_squares(grads)
        grad_norm = _norm(grad_squares)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        def apply(operand):
            params, opt_state, new_net_state = operand
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, new_net_state

        operand = (state.params, state.opt_state, net_state)
        kept = (state.params, state.opt_state, state.net_state)
        if not skip_nonfinite:
            params, opt_state, net_state = apply(operand)
        elif in_loop:
            # Inside a loop body one `lax.cond` around the update: a skipped
            # step leaves params, optimizer and Haiku state untouched (MLP
            # chunks: ~10% faster than the select below, A/B on CPU).
            params, opt_state, net_state = jax.lax.cond(
                finite,
                lambda op: _varying(apply(op), axis_name),
                lambda _: _varying(kept, axis_name),
                operand,
            )
        else:
            # Alone, an elementwise select that XLA fuses into the optimizer's
            # own update: a `lax.cond` there cost LeNet 12-15% of its step on
            # CPU (the update's buffers copied in and out of the branch).
            params, opt_state, net_state = jax.tree.map(
                lambda new, old: jnp.where(finite, new, old), apply(operand), kept
            )
        metrics["nonfinite"] = 1.0 - finite.astype(jnp.float32)
        if full:
            metrics["grad_norm"] = grad_norm
            metrics["param_norm"] = optax.tree.norm(params)
            if per_layer_grad_norms and isinstance(grads, Mapping):
                for name in grads:
                    metrics[f"grad_norm/{name}"] = _norm(grad_squares[name])
        else:
            metrics = {"nonfinite": metrics["nonfinite"]}
        new_state = TrainState(
            params=params,
            net_state=net_state,
            opt_state=opt_state,
            step=state.step + 1,
            rng=rng,
        )
        return new_state, metrics

    return step


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    axis_name: str | None = None,
    per_layer_grad_norms: bool = False,
    skip_nonfinite: bool = False,
) -> Callable[[TrainState, Mapping[str, jax.Array]], tuple[TrainState, Metrics]]:
    """Builds a pure train step ``step(state, batch) -> (state, metrics)``.

    With `axis_name` set, the step must run inside a mapped axis of that name
    (`jax.pmap(step, axis_name=...)` or `shard_map`): gradients, metrics and float
    Haiku state are averaged with `lax.pmean`, so N devices with global batch B
    give the single-device result on batch B (up to float reassociation), and
    each device draws its own randomness (the key is folded with the device index).

    Args:
      loss_fn: ``(params, net_state, batch, rng) -> (loss, (net_state, metrics))``.
      optimizer: an optax optimizer.
      axis_name: name of the mapped device axis, or None on one device.
      per_layer_grad_norms: also report ``grad_norm/<module>`` for each
        top-level Haiku module.
      skip_nonfinite: when the loss or a gradient is NaN/Inf, keep params,
        optimizer and Haiku state unchanged for this step (the step count and
        rng still advance). Detected inside the step: no host sync.

    Returns:
      ``step(state, batch) -> (state, metrics)``; metrics hold ``loss``,
      ``grad_norm``, ``param_norm``, ``nonfinite`` (1.0 if the loss or a
      gradient was NaN/Inf) and whatever `loss_fn` reports.

    See `make_train_loop` for many steps in one call.
    """
    core = _core_step(
        loss_fn,
        optimizer,
        axis_name=axis_name,
        per_layer_grad_norms=per_layer_grad_norms,
        skip_nonfinite=skip_nonfinite,
    )
    return functools.partial(core, full=True)


def make_train_loop(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    full_metrics: bool = True,
    **step_options: Any,
) -> Callable[..., tuple[TrainState, Metrics]]:
    """Builds ``loop(state, batches, count) -> (state, metrics)``: `count` train
    steps in one call, as one compiled loop (no host round trip per step).

    `batches` holds ``max_steps`` stacked batches (leaves ``[max_steps, B, ...]``);
    the loop takes the first `count` of them (an int32 scalar, ``1 <= count <=
    max_steps``; the rest may be padding), so one compiled program serves every
    chunk length up to ``max_steps``. Step for step it computes exactly what
    `make_train_step` computes. The metrics are those of the last step (what a
    logger that logs every ``count`` steps shows), plus ``first_nonfinite``: the
    index in ``[0, count)`` of the first step whose loss or gradient was NaN/Inf,
    or -1. Norms are computed on the last step only.

    Arguments: those of `make_train_step` (`axis_name`, `per_layer_grad_norms`,
    `skip_nonfinite`); with `axis_name`, `count` is the same on every device.
    With ``full_metrics=False`` the metrics are ``first_nonfinite`` alone (no
    norms at all): the program for chunks whose end nothing logs.
    """
    core = make_train_step(loss_fn, optimizer, **step_options).func

    def loop(state: TrainState, batches: Mapping[str, jax.Array], count: jax.Array):
        def take(i):
            return jax.tree.map(
                lambda x: jax.lax.dynamic_index_in_dim(x, i, keepdims=False), batches
            )

        def body(i, carry):
            state, first_bad = carry
            state, metrics = core(state, take(i), False, in_loop=True)
            bad = (metrics["nonfinite"] > 0) & (first_bad < 0)
            return state, jnp.where(bad, i, first_bad)

        count = jnp.asarray(count, jnp.int32)
        last = count - 1
        first_bad = jnp.full((), -1, jnp.int32)
        if jax.tree.leaves(batches)[0].shape[0] > 1:  # else: no loop to compile
            state, first_bad = jax.lax.fori_loop(0, last, body, (state, first_bad))
        state, metrics = core(state, take(last), full_metrics)
        bad = (metrics["nonfinite"] > 0) & (first_bad < 0)
        metrics["first_nonfinite"] = jnp.where(bad, last, first_bad)
        if not full_metrics:
            del metrics["nonfinite"]
        return state, metrics

    return loop


def supervised_loss(
    network: hk.Transformed | hk.TransformedWithState,
    loss: Callable[..., jax.Array],
    *,
    regularizer: Callable[[PyTree], jax.Array] | None = None,
    apply_kwargs: Mapping[str, Any] | None = None,
) -> LossFn:
    """A `LossFn` for supervised learning on batches ``{"x": ..., "y": ...}``.

    Args:
      network: the Haiku network; ``apply(params, state, rng, x, **apply_kwargs)``.
      loss: ``loss(outputs, labels) -> scalar``, e.g.
        `jaxlab.losses.softmax_cross_entropy`.
      regularizer: ``params -> scalar`` added to the loss, e.g.
        ``functools.partial(jaxlab.losses.l2_regularization, regularizers=...)``.
      apply_kwargs: extra keyword arguments for apply (``{"is_training": True}``
        for networks built by `nets`).

    Returns:
      A loss function whose metrics include ``data_loss`` and ``reg_loss``
      when a regularizer is set.
    """
    apply = as_stateful(network).apply
    kwargs = dict(apply_kwargs or {})

    def loss_fn(params, net_state, batch, rng):
        outputs, net_state = apply(params, net_state, rng, batch["x"], **kwargs)
        data_loss = loss(outputs, batch["y"])
        metrics = {}
        if regularizer is not None:
            reg_loss = regularizer(params)
            metrics = {"data_loss": data_loss, "reg_loss": reg_loss}
            data_loss = data_loss + reg_loss
        return data_loss, (net_state, metrics)

    return loss_fn


def make_eval_step(
    network: hk.Transformed | hk.TransformedWithState,
    update_metrics: Callable[..., PyTree],
    *,
    apply_kwargs: Mapping[str, Any] | None = None,
) -> Callable[[PyTree, PyTree, PyTree, Mapping[str, jax.Array]], PyTree]:
    """Builds ``eval_step(params, net_state, metric_state, batch) -> metric_state``.

    Args:
      network: the Haiku network (run without an rng: no dropout at evaluation).
      update_metrics: ``(metric_state, outputs, labels, mask) -> metric_state``,
        e.g. a `jaxlab.metrics` MetricSet's update.
      apply_kwargs: extra keyword arguments for apply (``{"is_training": False}``).

    The batch holds ``x``, ``y`` and ``mask`` (1 for real examples, 0 for padding).
    """
    apply = as_stateful(network).apply
    kwargs = dict(apply_kwargs or {})

    def eval_step(params, net_state, metric_state, batch):
        outputs, _ = apply(params, net_state, None, batch["x"], **kwargs)
        return update_metrics(metric_state, outputs, batch["y"], batch["mask"])

    return eval_step
