"""Tests for jaxlab.optim: schedules, optimizers and the injected learning rate."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

from jaxlab import optim
from jaxlab.config import OptimizerConfig
from jaxlab.errors import ConfigError


def _cos(t, steps, lo, hi):
    return lo + (hi - lo) * 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps))


class ScheduleTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("none", None, {0: 0.1, 7: 0.1, 10_000: 0.1}, 0.1),
        ("constant", {"name": "constant"}, {0: 0.1, 50: 0.1}, 0.1),
        (
            "exponential",
            {"name": "exponential_decay", "transition_steps": 10, "decay_rate": 0.5},
            {0: 1.0, 5: 0.5**0.5, 10: 0.5, 30: 0.125},
            1.0,
        ),
        (
            "exponential_staircase",
            {
                "name": "exponential_decay",
                "transition_steps": 10,
                "decay_rate": 0.5,
                "staircase": True,
            },
            {0: 1.0, 9: 1.0, 10: 0.5, 15: 0.5, 20: 0.25},
            1.0,
        ),
        (
            "exponential_begin_end",
            {
                "name": "exponential_decay",
                "transition_steps": 10,
                "decay_rate": 0.5,
                "transition_begin": 5,
                "end_value": 0.3,
            },
            {0: 1.0, 5: 1.0, 15: 0.5, 35: 0.3, 100: 0.3},
            1.0,
        ),
        (
            "cosine",
            {"name": "cosine", "decay_steps": 10, "alpha": 0.1},
            {0: 1.0, 5: 0.55, 10: 0.1, 20: 0.1, 3: _cos(3, 10, 0.1, 1.0)},
            1.0,
        ),
        (
            "warmup_cosine",
            {
                "name": "warmup_cosine",
                "warmup_steps": 4,
                "decay_steps": 14,
                "end_value": 0.1,
            },
            {0: 0.0, 2: 0.5, 4: 1.0, 9: 0.55, 14: 0.1, 30: 0.1},
            1.0,
        ),
        (
            "linear",
            {"name": "linear", "transition_steps": 8, "end_value": 0.2},
            {0: 1.0, 4: 0.6, 8: 0.2, 12: 0.2},
            1.0,
        ),
        (
            "piecewise",
            {"name": "piecewise", "boundaries": [3, 6], "scales": [0.5, 0.1]},
            {0: 1.0, 2: 1.0, 3: 0.5, 5: 0.5, 6: 0.05, 100: 0.05},
            1.0,
        ),
    )
    def test_values(self, schedule, expected, lr):
        raw = {"name": "sgd", "learning_rate": lr, "schedule": schedule}
        for config in (raw, optim.as_optimizer_config(raw)):
            fn = optim.make_schedule(config)
            for step, value in expected.items():
                np.testing.assert_allclose(fn(step), value, rtol=1e-5, atol=1e-7)
                np.testing.assert_allclose(
                    jax.jit(fn)(jnp.int32(step)), value, rtol=1e-5, atol=1e-7
                )

    def test_warmup_longer_than_decay(self):
        schedule = {"name": "warmup_cosine", "warmup_steps": 5, "decay_steps": 5}
        with pytest.raises(ConfigError, match=r"^optimizer\.schedule\.warmup_steps"):
            optim.make_schedule({"schedule": schedule})


_PARAMS = {"w": jnp.array([[0.5, -1.0], [2.0, 0.1]]), "b": jnp.array([0.3, -0.2])}


def _grads(seed):
    key = jax.random.PRNGKey(seed)
    return jax.tree.map(lambda p: 3.0 * jax.random.normal(key, p.shape), _PARAMS)


_COSINE = optax.cosine_decay_schedule(0.1, decay_steps=3, alpha=0.2)


class OptimizerTest(chex.TestCase):
    @parameterized.named_parameters(
        ("adam", {"name": "adam", "learning_rate": 0.1}, optax.adam(0.1)),
        (
            "adam_custom",
            {"name": "Adam", "learning_rate": 0.1, "b1": 0.5, "b2": 0.9, "eps": 1e-3},
            optax.adam(0.1, b1=0.5, b2=0.9, eps=1e-3),
        ),
        (
            "adamw",
            {"name": "adamw", "learning_rate": 0.1, "weight_decay": 0.1},
            optax.adamw(0.1, weight_decay=0.1),
        ),
        ("sgd", {"name": "sgd", "learning_rate": 0.1}, optax.sgd(0.1)),
        (
            "sgd_nesterov",
            {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": True},
            optax.sgd(0.1, momentum=0.9, nesterov=True),
        ),
        (
            "rmsprop",
            {"name": "rmsprop", "learning_rate": 0.1, "decay": 0.8, "momentum": 0.5},
            optax.rmsprop(0.1, decay=0.8, momentum=0.5),
        ),
        ("adagrad", {"name": "adagrad", "learning_rate": 0.1}, optax.adagrad(0.1)),
        (
            "adam_cosine",
            {
                "learning_rate": 0.1,
                "schedule": {"name": "cosine", "decay_steps": 3, "alpha": 0.2},
            },
            optax.adam(_COSINE),
        ),
        (
            "sgd_clip",
            {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "clip_norm": 1.0},
            optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1, momentum=0.9)),
        ),
    )
    def test_matches_plain_optax(self, raw, reference):
        tx = optim.make_optimizer(raw)
        state, ref_state = tx.init(_PARAMS), reference.init(_PARAMS)
        params = ref_params = _PARAMS
        for i in range(4):  # the first update, and a few more through the schedule
            updates, state = tx.update(_grads(i), state, params)
            ref_updates, ref_state = reference.update(_grads(i), ref_state, ref_params)
            chex.assert_trees_all_equal(updates, ref_updates)
            params = optax.apply_updates(params, updates)
            ref_params = optax.apply_updates(ref_params, ref_updates)

    @parameterized.parameters((10.0, 0.1), (0.5, 1.0))
    def test_clip(self, grad_norm, factor):
        tx = optim.make_optimizer({"name": "sgd", "learning_rate": 1.0, "clip_norm": 1})
        grads = {"a": jnp.array([0.6, 0.0]) * grad_norm, "b": jnp.array([0.8])}
        grads["b"] = grads["b"] * grad_norm
        updates, _ = tx.update(grads, tx.init(grads))
        chex.assert_trees_all_close(
            updates, jax.tree.map(lambda g: -factor * g, grads), rtol=1e-6
        )
        np.testing.assert_allclose(
            optax.tree.norm(updates), min(grad_norm, 1.0), rtol=1e-6
        )

    @chex.variants(with_jit=True, without_jit=True)
    def test_learning_rate_tracks_schedule(self):
        raw = {
            "name": "adam",
            "learning_rate": 0.1,
            "clip_norm": 5.0,
            "schedule": {"name": "linear", "transition_steps": 4, "end_value": 0.02},
        }
        tx, schedule = optim.make_optimizer(raw), optim.make_schedule(raw)
        state = tx.init(_PARAMS)
        np.testing.assert_allclose(optim.learning_rate(state), 0.1)

        @self.variant
        def step(params, state, grads):
            lr_used = optim.learning_rate(state)
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state, lr_used

        params = _PARAMS
        for i in range(6):
            params, state, lr_used = step(params, state, _grads(i))
            np.testing.assert_allclose(lr_used, schedule(i), rtol=1e-6)
            np.testing.assert_allclose(
                optim.learning_rate(state), schedule(i + 1), rtol=1e-6
            )

    def test_learning_rate_in_scan_wrapped_and_replicated(self):
        raw = {
            "learning_rate": 1.0,
            "schedule": {"name": "linear", "end_value": 0.5, "transition_steps": 5},
        }
        tx = optax.MultiSteps(optim.make_optimizer(raw), every_k_schedule=1)

        def body(state, grads):
            _, state = tx.update(grads, state, _PARAMS)
            return state, optim.learning_rate(state)

        grads = jax.tree.map(lambda p: jnp.stack([p] * 3), _PARAMS)
        state, lrs = jax.jit(lambda s: jax.lax.scan(body, s, grads))(tx.init(_PARAMS))
        np.testing.assert_allclose(lrs, [0.9, 0.8, 0.7], rtol=1e-6)
        replicated = jax.tree.map(lambda x: jnp.stack([x, x]), state)
        np.testing.assert_allclose(optim.learning_rate(replicated), [0.7, 0.7])

    def test_learning_rate_missing(self):
        with pytest.raises(ValueError, match="holds no learning rate"):
            optim.learning_rate(optax.adam(1e-3).init(_PARAMS))
        inject = optax.inject_hyperparams(optax.sgd)
        twice = optax.chain(inject(0.1), inject(0.2))
        with pytest.raises(ValueError, match="several learning rates"):
            optim.learning_rate(twice.init(_PARAMS))

    def test_config_and_dict_inputs(self):
        config = OptimizerConfig(name="sgd", learning_rate=0.5)
        self.assertIs(optim.as_optimizer_config(config), config)
        tx = optim.make_optimizer(config)
        np.testing.assert_allclose(optim.learning_rate(tx.init(_PARAMS)), 0.5)
        tx = optim.make_optimizer({"name": "SGD", "learning_rate": 0.5})
        np.testing.assert_allclose(optim.learning_rate(tx.init(_PARAMS)), 0.5)

    @parameterized.parameters(
        ({"learning_rate": "1e-3"}, r"^optimizer\.learning_rate: input should be"),
        ({"learning_rate": -1.0}, r"^optimizer\.learning_rate: input should be"),
        ({"name": "lamb"}, r"^optimizer\.name: input should be 'adam'"),
        ({"lr": 0.1}, r"^optimizer\.lr: unknown field"),
        ({"name": "adam", "momentum": 0.9}, r"^optimizer\.momentum: not used"),
        ({"schedule": {"name": "cosine"}}, r"^optimizer\.schedule\.decay_steps: req"),
        ({"schedule": {"name": "step"}}, r"^optimizer\.schedule\.name: expected one"),
        ("adam", r"^optimizer: expected an OptimizerConfig or a mapping"),
    )
    def test_bad_dict(self, raw, pattern):
        with pytest.raises(ConfigError, match=pattern):
            optim.make_optimizer(raw)
