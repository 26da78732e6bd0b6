"""Tests for jaxlab.metrics against scikit-learn, streamed, merged and masked."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from sklearn import metrics as skm

from jaxlab import metrics
from jaxlab.errors import ConfigError

N = 240
_ALL = [
    "accuracy",
    "precision",
    "recall",
    "f1",
    "auc",
    "true_positives",
    "true_negatives",
    "false_positives",
    "false_negatives",
]
# Observed error of the 200-bin histogram AUC on these data: 1e-4 to 2e-4.
AUC_ATOL = 2e-3


def _data(num_classes, seed=0, n=N, sigmoid=False):
    """Random logits with some signal, and int labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    logits = rng.normal(size=(n, num_classes)) + 1.2 * np.eye(num_classes)[labels]
    logits = logits.astype(np.float32)
    if sigmoid:  # one logit, positive-class score
        logits = logits[:, 1] - logits[:, 0]
    return logits, labels


def _sklearn(logits, labels, num_classes, k=2):
    if logits.ndim == 1:
        probs = 1 / (1 + np.exp(-logits.astype(np.float64)))
        preds = (logits > 0).astype(int)
        probs = np.stack([1 - probs, probs], axis=1)
    else:
        probs = np.exp(logits - logits.max(1, keepdims=True)).astype(np.float64)
        probs /= probs.sum(1, keepdims=True)
        preds = logits.argmax(1)
    binary = num_classes == 2
    avg = "binary" if binary else "macro"
    cm = skm.confusion_matrix(labels, preds, labels=range(num_classes))
    tp = np.diag(cm)
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    tn = cm.sum() - tp - fp - fn
    pick = (lambda x: x[1]) if binary else np.sum
    out = {
        "accuracy": skm.accuracy_score(labels, preds),
        "precision": skm.precision_score(labels, preds, average=avg, zero_division=0),
        "recall": skm.recall_score(labels, preds, average=avg, zero_division=0),
        "f1": skm.f1_score(labels, preds, average=avg, zero_division=0),
        "auc": (
            skm.roc_auc_score(labels, probs[:, 1])
            if binary
            else skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro")
        ),
        "true_positives": pick(tp),
        "true_negatives": pick(tn),
        "false_positives": pick(fp),
        "false_negatives": pick(fn),
    }
    if not binary:
        out[f"top_{k}_accuracy"] = skm.top_k_accuracy_score(
            labels, probs, k=k, labels=range(num_classes)
        )
    return out


def _assert_matches(values, expected):
    for name, ref in expected.items():
        atol = AUC_ATOL if name == "auc" else 1e-6
        np.testing.assert_allclose(values[name], ref, atol=atol, err_msg=name)


def _one_shot(metric_set, logits, labels, mask=None, **kw):
    state = metric_set.update(metric_set.init(), logits, labels, mask, **kw)
    return metric_set.compute(state)


_jit_one_shot = jax.jit(_one_shot, static_argnums=0)


_CASES = [
    ("binary", 2, False),
    ("binary_sigmoid", 2, True),
    ("five_class", 5, False),
]


class MetricsVsSklearnTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*_CASES)
    def test_vs_sklearn(self, num_classes, sigmoid):
        logits, labels = _data(num_classes, sigmoid=sigmoid)
        names = _ALL + ([] if num_classes == 2 else ["top_2"])
        ms = metrics.make_metrics(names, num_classes=num_classes)
        values = self.variant(lambda x, y: _one_shot(ms, x, y))(logits, labels)
        self.assertEqual(set(values), set(ms.names))
        for v in values.values():
            chex.assert_shape(v, ())
            chex.assert_type(v, jnp.float32)
        _assert_matches(values, _sklearn(logits, labels, num_classes))

    @parameterized.named_parameters(*_CASES[1:])
    def test_streaming_merge_and_mask(self, num_classes, sigmoid):
        # Under jit only (the no-jit path is covered above): equal chunk sizes
        # keep the number of compilations small.
        logits, labels = _data(num_classes, seed=1, sigmoid=sigmoid)
        ms = metrics.make_metrics(_ALL + ["top_2", "loss"], num_classes=num_classes)
        losses = np.random.default_rng(2).random(N).astype(np.float32)
        update, compute = jax.jit(ms.update), jax.jit(ms.compute)
        whole = update(ms.init(), logits, labels, loss=losses)
        expected = compute(whole)
        np.testing.assert_allclose(expected["loss"], losses.mean(), rtol=1e-6)

        # Several chunks streamed == one shot.
        chunks = [np.split(x, 4) for x in (logits, labels, losses)]
        state = ms.init()
        for x, y, loss in zip(*chunks, strict=True):
            state = update(state, x, y, loss=loss)
        chex.assert_trees_all_close(state, whole)
        chex.assert_trees_all_close(compute(state), expected, rtol=1e-6)

        # Merging per-chunk states == one shot: pairwise, stacked, and psum.
        parts = [
            update(ms.init(), x, y, loss=loss)
            for x, y, loss in zip(*chunks, strict=True)
        ]
        merge = jax.jit(ms.merge)
        halves = merge(merge(parts[0], parts[1]), merge(parts[2], parts[3]))
        chex.assert_trees_all_close(halves, whole)
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *parts)
        merge_stacked = jax.jit(lambda x: metrics.merge_stacked(ms, x))
        chex.assert_trees_all_close(merge_stacked(stacked), whole)

        def per_device(x, y, loss):
            state = ms.update(ms.init(), x, y, loss=loss)
            return jax.lax.psum(state, "devices")

        summed = jax.jit(jax.vmap(per_device, axis_name="devices"))(
            *[np.stack(c) for c in chunks]
        )
        chex.assert_trees_all_close(jax.tree.map(lambda x: x[0], summed), whole)

        # Masked (padding) entries are ignored, whatever they hold.
        pad_logits, pad_labels = _data(num_classes, seed=3, n=40, sigmoid=sigmoid)
        mask = np.r_[np.ones(N, bool), np.zeros(40, bool)]
        padded = update(
            ms.init(),
            np.concatenate([logits, pad_logits]),
            np.concatenate([labels, pad_labels]),
            mask,
            loss=np.r_[losses, np.full(40, np.nan, np.float32)],
        )
        chex.assert_trees_all_close(padded, whole)
        # A scalar batch loss is weighted by the number of unmasked examples.
        state = update(ms.init(), logits, labels, loss=losses.mean())
        state = update(state, logits[:120], labels[:120], loss=np.float32(3.0))
        np.testing.assert_allclose(
            compute(state)["loss"], (losses.mean() * 2 + 3.0) / 3, rtol=1e-6
        )

    def test_one_hot_labels_and_single_column_logits(self):
        logits, labels = _data(5, seed=4)
        ms = metrics.make_metrics(_ALL, num_classes=5)
        one_hot = np.eye(5, dtype=np.float32)[labels]
        one_shot = jax.jit(lambda x, y: _one_shot(ms, x, y))
        chex.assert_trees_all_close(one_shot(logits, one_hot), one_shot(logits, labels))
        z, y = _data(2, seed=5, sigmoid=True)
        ms = metrics.make_metrics(_ALL, num_classes=2)
        one_shot = jax.jit(lambda x, y: _one_shot(ms, x, y))
        chex.assert_trees_all_close(one_shot(z[:, None], y), one_shot(z, y))

    def test_auc_more_bins(self):
        logits, labels = _data(5, seed=6, n=600)
        ms = metrics.make_metrics(["auc"], num_classes=5, thresholds=5000)
        ref = _sklearn(logits, labels, 5)["auc"]
        np.testing.assert_allclose(
            _jit_one_shot(ms, logits, labels)["auc"], ref, atol=5e-5
        )

    def test_top_k(self):
        logits, labels = _data(5, seed=7)
        ms = metrics.make_metrics(["top_1", "top_3_accuracy", "top_k"], num_classes=5)
        self.assertEqual(
            ms.names, ("top_1_accuracy", "top_3_accuracy", "top_5_accuracy")
        )
        values = _jit_one_shot(ms, logits, labels)
        for k in (1, 3):
            ref = skm.top_k_accuracy_score(labels, logits, k=k, labels=range(5))
            np.testing.assert_allclose(values[f"top_{k}_accuracy"], ref, atol=1e-6)
        np.testing.assert_allclose(values["top_5_accuracy"], 1.0)


class ZeroDivisionTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(2, 5)
    def test_empty_state_is_zero(self, num_classes):
        ms = metrics.make_metrics(_ALL + ["top_2", "loss"], num_classes=num_classes)
        values = self.variant(ms.compute)(ms.init())
        for name, v in values.items():
            self.assertEqual(float(v), 0.0, name)
        # Everything masked out: still zeros.
        logits, labels = _data(num_classes, n=8)
        state = ms.update(ms.init(), logits, labels, np.zeros(8), loss=1.0)
        for name, v in self.variant(ms.compute)(state).items():
            self.assertEqual(float(v), 0.0, name)

    def test_no_positive_predictions(self):
        labels = np.array([0, 1, 1, 0])
        logits = np.full(4, -3.0, np.float32)  # always predicts 0
        ms = metrics.make_metrics(_ALL, num_classes=2)
        values = _jit_one_shot(ms, logits, labels)
        ref = _sklearn(logits, labels, 2)
        _assert_matches(values, {k: v for k, v in ref.items() if k != "auc"})
        self.assertEqual(float(values["precision"]), 0.0)
        # One class only: the AUC is undefined, reported as 0.
        values = _jit_one_shot(ms, logits, np.zeros(4, int))
        self.assertEqual(float(values["auc"]), 0.0)

    def test_macro_skips_absent_classes(self):
        # Class 3 of 4 never appears in labels nor predictions (as sklearn).
        labels = np.array([0, 1, 2, 2, 1])
        logits = np.eye(4, dtype=np.float32)[[0, 2, 2, 1, 1]]
        ms = metrics.make_metrics(["precision", "recall", "f1"], num_classes=4)
        values = _jit_one_shot(ms, logits, labels)
        preds = logits.argmax(1)
        for name, fn in [
            ("precision", skm.precision_score),
            ("recall", skm.recall_score),
            ("f1", skm.f1_score),
        ]:
            ref = fn(labels, preds, average="macro", zero_division=0)
            np.testing.assert_allclose(values[name], ref, atol=1e-6, err_msg=name)


class NamesTest(parameterized.TestCase):
    @parameterized.parameters(
        ("Accuracy", "accuracy"),
        ("acc", "accuracy"),
        ("TruePositives", "true_positives"),
        ("tp", "true_positives"),
        ("false-negatives", "false_negatives"),
        ("roc_auc", "auc"),
        ("F1", "f1"),
        ("mean_loss", "loss"),
        ("top_5", "top_5_accuracy"),
        ("top_k_accuracy", "top_5_accuracy"),
        ("Top_3_Accuracy", "top_3_accuracy"),
        ("sparse_top_k_categorical_accuracy", "top_5_accuracy"),
    )
    def test_aliases(self, name, canonical):
        ms = metrics.make_metrics([name, canonical], num_classes=5)
        self.assertEqual(ms.names, (canonical,))

    def test_shared_state(self):
        ms = metrics.make_metrics(
            ["accuracy", "precision", "tp", "top_2", "top_2_accuracy"], num_classes=3
        )
        self.assertEqual(set(ms.init()), {"confusion", "top_2"})

    @parameterized.parameters(
        (["accuracy", "bogus"], r"^model\.metrics\[1\]: unknown metric 'bogus'"),
        (["top_0"], r"^model\.metrics\[0\]: unknown metric 'top_0'"),
        ([3], r"^model\.metrics\[0\]: unknown metric 3 \(known: accuracy, "),
    )
    def test_unknown(self, names, pattern):
        with pytest.raises(ConfigError, match=pattern):
            metrics.make_metrics(names, num_classes=3)

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="num_classes"):
            metrics.make_metrics(["accuracy"], num_classes=1)
        with pytest.raises(ValueError, match="binary=True"):
            metrics.make_metrics(["accuracy"], num_classes=3, binary=True)
        ms = metrics.make_metrics(["loss"], num_classes=3)
        with pytest.raises(ValueError, match="loss="):
            ms.update(ms.init(), np.zeros((2, 3)), np.zeros(2, int))
        with pytest.raises(AssertionError):
            ms = metrics.make_metrics(["accuracy"], num_classes=3)
            ms.update(ms.init(), np.zeros((2, 4), np.float32), np.zeros(2, int))

    def test_make_metric(self):
        logits, labels = _data(5, seed=8)
        metric = metrics.make_metric("recall", num_classes=5)
        state = jax.jit(metric.update)(metric.init(), logits, labels)
        ref = skm.recall_score(labels, logits.argmax(1), average="macro")
        np.testing.assert_allclose(metric.compute(state), ref, atol=1e-6)
        binary = metrics.make_metric("f1", num_classes=2, binary=False)
        z, y = _data(2, seed=9)
        state = binary.update(binary.init(), z, y)
        ref = skm.f1_score(y, z.argmax(1), average="macro")
        np.testing.assert_allclose(binary.compute(state), ref, atol=1e-6)
