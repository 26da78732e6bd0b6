"""The pure core: train state, train step, supervised loss, eval step."""

from __future__ import annotations

import functools

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import parameterized

import jaxlab
import nets
from jaxlab import losses

_X = np.random.RandomState(0).randn(16, 5).astype(np.float32)
_Y = (np.arange(16) % 3).astype(np.int32)
_BATCH = {"x": _X, "y": _Y}
_NET = hk.transform(lambda x: hk.nets.MLP([8, 3])(x))
_LOSS = jaxlab.supervised_loss(_NET, losses.softmax_cross_entropy)


def _state(optimizer):
    return jaxlab.init_train_state(_NET, optimizer, jax.random.key(0), _X[:1])


def _resnet(opt):
    """A train state, loss and images for a network with Haiku state (BatchNorm)."""
    network = nets.build_network({"module": "ResNet", "num_classes": 3}).transformed
    images = np.random.RandomState(1).randn(8, 8, 8, 1).astype(np.float32)
    state = jaxlab.init_train_state(
        network, opt, jax.random.key(0), images, is_training=True
    )
    loss_fn = jaxlab.supervised_loss(
        network, losses.softmax_cross_entropy, apply_kwargs={"is_training": True}
    )
    return state, loss_fn, images


class TrainStepTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_step_equals_a_hand_written_optax_update(self):
        opt = optax.adam(1e-2)
        state = _state(opt)
        step = self.variant(jaxlab.make_train_step(_LOSS, opt))
        new, metrics = step(state, _BATCH)

        # Independent reference: plain jax.grad + optax on the same params.
        def ref_loss(params):
            logits = _NET.apply(params, None, _X)
            return optax.softmax_cross_entropy_with_integer_labels(logits, _Y).mean()

        loss, grads = jax.value_and_grad(ref_loss)(state.params)
        updates, _ = opt.update(grads, opt.init(state.params), state.params)
        expected = optax.apply_updates(state.params, updates)
        chex.assert_trees_all_close(new.params, expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-6)
        np.testing.assert_allclose(
            metrics["grad_norm"], optax.tree.norm(grads), rtol=1e-5
        )
        assert int(new.step) == 1
        assert not np.array_equal(
            jax.random.key_data(new.rng), jax.random.key_data(state.rng)
        )
        chex.assert_shape(metrics["loss"], ())
        chex.assert_type(metrics["loss"], jnp.float32)
        assert metrics["nonfinite"] == 0.0

    @chex.variants(with_jit=True, without_jit=True)
    def test_repeated_steps_reduce_the_loss(self):
        opt = optax.adam(3e-2)
        step = self.variant(jaxlab.make_train_step(_LOSS, opt))
        state, first = step(_state(opt), _BATCH)
        for _ in range(30):
            state, metrics = step(state, _BATCH)
        assert metrics["loss"] < 0.5 * first["loss"]

    @chex.variants(with_jit=True, without_jit=True)
    def test_nonfinite_step_is_skipped(self):
        opt = optax.sgd(0.1)
        state = _state(opt)
        step = self.variant(jaxlab.make_train_step(_LOSS, opt, skip_nonfinite=True))
        bad_x = _X.copy()
        bad_x[0, 0] = np.nan
        bad = {"x": bad_x, "y": _Y}
        new, metrics = step(state, bad)
        assert metrics["nonfinite"] == 1.0
        chex.assert_trees_all_equal(new.params, state.params)
        chex.assert_trees_all_equal(new.opt_state, state.opt_state)
        assert int(new.step) == 1

    def test_nonfinite_step_keeps_the_haiku_state(self):
        opt = optax.sgd(0.01)
        state, loss_fn, images = _resnet(opt)
        step = jax.jit(jaxlab.make_train_step(loss_fn, opt, skip_nonfinite=True))
        images[0, 0, 0, 0] = np.inf
        new, metrics = step(state, {"x": images, "y": _Y[:8]})
        assert metrics["nonfinite"] == 1.0
        chex.assert_trees_all_equal(new.net_state, state.net_state)
        chex.assert_trees_all_equal(new.params, state.params)

    def test_per_layer_grad_norms(self):
        opt = optax.sgd(0.1)
        step = jaxlab.make_train_step(_LOSS, opt, per_layer_grad_norms=True)
        _, metrics = jax.jit(step)(_state(opt), _BATCH)
        layers = {k for k in metrics if k.startswith("grad_norm/")}
        assert layers == {"grad_norm/mlp/~/linear_0", "grad_norm/mlp/~/linear_1"}
        total = np.sqrt(sum(float(metrics[k]) ** 2 for k in layers))
        np.testing.assert_allclose(total, metrics["grad_norm"], rtol=1e-5)

    def test_named_axis_averages_like_one_big_batch(self):
        """Under a mapped axis (vmap here, pmap on devices) 4 shards of 4 == 16."""
        opt = optax.sgd(0.1)
        state = _state(opt)
        single = jax.jit(jaxlab.make_train_step(_LOSS, opt))(state, _BATCH)[0]
        step = jaxlab.make_train_step(_LOSS, opt, axis_name="i")
        shards = jax.tree.map(lambda x: x.reshape(4, 4, *x.shape[1:]), _BATCH)
        replicated = jax.tree.map(lambda x: jnp.broadcast_to(x, (4, *x.shape)), state)
        mapped = jax.jit(jax.vmap(step, axis_name="i"))(replicated, shards)[0]
        chex.assert_trees_all_close(
            jax.tree.map(lambda x: x[0], mapped.params), single.params, atol=1e-6
        )

    def test_haiku_state_flows_through_the_step(self):
        """BatchNorm statistics (Haiku state) are updated by training steps."""
        opt = optax.sgd(0.01)
        state, loss_fn, images = _resnet(opt)
        step = jax.jit(jaxlab.make_train_step(loss_fn, opt))
        new, _ = step(state, {"x": images, "y": _Y[:8]})
        changed = jax.tree.map(
            lambda a, b: not np.array_equal(a, b), state.net_state, new.net_state
        )
        assert any(jax.tree.leaves(changed))

    def test_regularizer_is_added_and_reported(self):
        opt = optax.sgd(0.1)
        reg = functools.partial(
            losses.l2_regularization, regularizers={"mlp/~/linear_0": 0.5}
        )
        loss_fn = jaxlab.supervised_loss(
            _NET, losses.softmax_cross_entropy, regularizer=reg
        )
        state = _state(opt)
        _, metrics = jaxlab.make_train_step(loss_fn, opt)(state, _BATCH)
        w = state.params["mlp/~/linear_0"]["w"]
        np.testing.assert_allclose(metrics["reg_loss"], 0.25 * np.sum(w**2), rtol=1e-5)
        np.testing.assert_allclose(
            metrics["loss"], metrics["data_loss"] + metrics["reg_loss"], rtol=1e-6
        )


def _stack(batches):
    return jax.tree.map(lambda *xs: np.stack(xs), *batches)


def _batches(n, seed=0):
    rs = np.random.RandomState(seed)
    return [{"x": rs.randn(16, 5).astype(np.float32), "y": _Y.copy()} for _ in range(n)]


class TrainLoopTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_loop_equals_the_same_steps_one_by_one(self):
        opt = optax.adam(1e-2)
        kwargs = {"per_layer_grad_norms": True, "skip_nonfinite": True}
        step = jax.jit(jaxlab.make_train_step(_LOSS, opt, **kwargs))
        loop = self.variant(jaxlab.make_train_loop(_LOSS, opt, **kwargs))
        batches = _batches(5)
        state = ref = _state(opt)
        for batch in batches[:3]:
            ref, ref_metrics = step(ref, batch)
        # Five stacked batches, only the first three used: the rest is padding.
        new, metrics = loop(state, _stack(batches), 3)
        chex.assert_trees_all_close(new.params, ref.params, rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close(new.opt_state, ref.opt_state, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(
            jax.random.key_data(new.rng), jax.random.key_data(ref.rng)
        )
        assert int(new.step) == 3
        assert set(metrics) == set(ref_metrics) | {"first_nonfinite"}
        for name, value in ref_metrics.items():
            np.testing.assert_allclose(metrics[name], value, rtol=1e-5, err_msg=name)
        chex.assert_shape(metrics["first_nonfinite"], ())
        chex.assert_type(metrics["first_nonfinite"], jnp.int32)
        assert int(metrics["first_nonfinite"]) == -1

    @chex.variants(with_jit=True, without_jit=True)
    def test_loop_reports_and_skips_the_first_nonfinite_step(self):
        opt = optax.sgd(0.1)
        loop = self.variant(jaxlab.make_train_loop(_LOSS, opt, skip_nonfinite=True))
        step = jax.jit(jaxlab.make_train_step(_LOSS, opt, skip_nonfinite=True))
        batches = _batches(4)
        for bad in (1, 2):
            batches[bad]["x"][0, 0] = np.nan
        new, metrics = loop(_state(opt), _stack(batches), 4)
        assert int(metrics["first_nonfinite"]) == 1
        assert metrics["nonfinite"] == 0.0  # the last step was fine
        ref = _state(opt)
        for batch in (batches[0], batches[3]):  # the bad steps change nothing
            ref = step(ref, batch)[0]
        chex.assert_trees_all_close(new.params, ref.params, rtol=1e-6)
        # A bad last step (outside the loop body: the select guard, not the
        # cond) is reported and skipped too.
        new, metrics = loop(_state(opt), _stack(batches), 2)
        assert int(metrics["first_nonfinite"]) == 1
        assert metrics["nonfinite"] == 1.0
        ref = step(_state(opt), batches[0])[0]
        chex.assert_trees_all_close(new.params, ref.params, rtol=1e-6)
        chex.assert_trees_all_close(new.opt_state, ref.opt_state, rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_lean_loop_trains_alike_and_reports_only_the_bad_step(self):
        opt = optax.adam(1e-2)
        kwargs = {"per_layer_grad_norms": True, "skip_nonfinite": True}
        full = jax.jit(jaxlab.make_train_loop(_LOSS, opt, **kwargs))
        lean = self.variant(
            jaxlab.make_train_loop(_LOSS, opt, full_metrics=False, **kwargs)
        )
        batches = _batches(3)
        batches[2]["x"][0, 0] = np.inf
        ref, _ = full(_state(opt), _stack(batches), 3)
        new, metrics = lean(_state(opt), _stack(batches), 3)
        assert set(metrics) == {"first_nonfinite"}
        assert int(metrics["first_nonfinite"]) == 2
        chex.assert_trees_all_close(new.params, ref.params, rtol=1e-6)
        chex.assert_trees_all_close(new.opt_state, ref.opt_state, rtol=1e-6)

    def test_one_compiled_loop_serves_every_count(self):
        opt = optax.sgd(0.1)
        loop = jax.jit(jaxlab.make_train_loop(_LOSS, opt))
        stacked = _stack(_batches(4))
        for count in (1, 4, 2):
            new, _ = loop(_state(opt), stacked, np.int32(count))
            assert int(new.step) == count
        assert loop._cache_size() == 1

    def test_loop_under_a_named_axis_averages_like_one_big_batch(self):
        opt = optax.sgd(0.1)
        state = _state(opt)
        batches = _batches(3)
        single = jax.jit(jaxlab.make_train_loop(_LOSS, opt))(state, _stack(batches), 3)
        loop = jaxlab.make_train_loop(_LOSS, opt, axis_name="i")
        # [K, 16] -> [4 devices, K, 4]
        shards = jax.tree.map(
            lambda x: np.moveaxis(x.reshape(3, 4, 4, *x.shape[2:]), 1, 0),
            _stack(batches),
        )
        replicated = jax.tree.map(lambda x: jnp.broadcast_to(x, (4, *x.shape)), state)
        mapped = jax.jit(jax.vmap(loop, axis_name="i"))(
            replicated, shards, jnp.full((4,), 3)
        )
        chex.assert_trees_all_close(
            jax.tree.map(lambda x: x[0], mapped[0].params), single[0].params, atol=1e-6
        )
        np.testing.assert_allclose(mapped[1]["loss"][0], single[1]["loss"], rtol=1e-5)


def test_eval_step_accumulates_streaming_metrics():
    metric_set = jaxlab.make_metrics(["accuracy"], num_classes=3)
    state = _state(optax.sgd(0.1))
    eval_step = jax.jit(jaxlab.make_eval_step(_NET, metric_set.update))
    carry = metric_set.init()
    mask = np.ones(8, np.float32)
    for i in (0, 8):
        batch = {"x": _X[i : i + 8], "y": _Y[i : i + 8], "mask": mask}
        carry = eval_step(state.params, state.net_state, carry, batch)
    predictions = np.argmax(_NET.apply(state.params, None, _X), axis=-1)
    expected = np.mean(predictions == _Y)
    np.testing.assert_allclose(metric_set.compute(carry)["accuracy"], expected)


def test_learning_rate_is_readable_from_the_state():
    opt = jaxlab.make_optimizer(
        {
            "name": "sgd",
            "learning_rate": 0.1,
            "schedule": {"name": "piecewise", "boundaries": [2], "scales": [0.5]},
        }
    )
    state = _state(opt)
    step = jax.jit(jaxlab.make_train_step(_LOSS, opt))
    rates = []
    for _ in range(3):
        rates.append(float(jaxlab.learning_rate(state.opt_state)))
        state, _ = step(state, _BATCH)
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.05])


class SumSquaresTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_small_and_large_leaves_match_numpy(self):
        """Per-leaf float32 sums of squares, bf16 and a 1M-element leaf included."""
        from jaxlab import train as train_lib

        rs = np.random.RandomState(0)
        tree = {
            "small": rs.randn(3, 4).astype(np.float32),
            "large": rs.randn(2048, 512).astype(np.float32),
            "half": rs.randn(8).astype(jnp.bfloat16),
        }
        got = self.variant(train_lib._sum_squares)(tree)
        for name, x in tree.items():
            chex.assert_type(got[name], jnp.float32)
            chex.assert_shape(got[name], ())
            want = np.sum(np.square(np.asarray(x, np.float64)))
            np.testing.assert_allclose(got[name], want, rtol=1e-5, err_msg=name)
