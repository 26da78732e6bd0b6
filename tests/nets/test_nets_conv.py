"""`nets.conv`: convolutions as patches and a matmul on a CPU, against
`hk.ConvND` (XLA's convolution) and a NumPy convolution written out by hand."""

from __future__ import annotations

import itertools

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import nets
from nets import conv

KEY = jax.random.key(0)


def numpy_conv(x, w, b, stride, rate, pads):
    """Direct N-D cross-correlation, channels last: the textbook sum."""
    n = x.ndim - 2
    xp = np.pad(x, ((0, 0), *pads, (0, 0)))
    kernel = w.shape[:n]
    dilated = [(k - 1) * r + 1 for k, r in zip(kernel, rate, strict=True)]
    out_shape = [
        (p - d) // s + 1
        for p, d, s in zip(xp.shape[1:-1], dilated, stride, strict=True)
    ]
    out = np.zeros((x.shape[0], *out_shape, w.shape[-1]), np.float64)
    for pos in itertools.product(*(range(o) for o in out_shape)):
        for off in itertools.product(*(range(k) for k in kernel)):
            idx = tuple(
                p * s + o * r for p, s, o, r in zip(pos, stride, off, rate, strict=True)
            )
            patch = xp[(slice(None), *idx, slice(None))]  # [B, C_in]
            out[(slice(None), *pos, slice(None))] += patch @ w[off]
    return out + b


CASES = [
    # (spatial dims, kernel, stride, rate, padding, C_in, C_out, size)
    (2, 5, 1, 1, "SAME", 1, 4, 9),  # LeNet's first layer
    (2, 3, 2, 1, "SAME", 3, 2, 8),  # strided, even size
    (2, 4, 1, 1, "SAME", 2, 3, 6),  # even kernel: asymmetric SAME padding
    (2, 3, 2, 2, "VALID", 2, 3, 11),  # dilated and strided
    (2, 1, 1, 1, "SAME", 3, 5, 4),  # 1x1
    (2, 3, 1, 1, ((1, 2), (0, 1)), 2, 2, 6),  # explicit pads
    (1, 3, 1, 1, "SAME", 2, 4, 10),
    (1, 4, 3, 1, "VALID", 3, 2, 13),
    (3, 3, 1, 1, "SAME", 2, 3, 5),
    (3, 2, 2, 1, "VALID", 1, 2, 6),
]


def _modules(n, k, s, r, padding, cout):
    ref = hk.transform(
        lambda x: hk.ConvND(n, cout, k, stride=s, rate=r, padding=padding)(x)
    )
    ours = hk.transform(
        lambda x: conv.ConvND(
            n, cout, k, stride=s, rate=r, padding=padding, lowering="patches"
        )(x)
    )
    return ref, ours


class PatchesTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*CASES)
    def test_equal_hk_convnd_and_a_numpy_convolution(
        self, n, k, s, r, padding, cin, cout, size
    ):
        x = np.random.default_rng(1).normal(size=(2, *([size] * n), cin))
        x = x.astype(np.float32)
        ref, ours = _modules(n, k, s, r, padding, cout)
        params = ref.init(KEY, x)
        # Same names, shapes, dtypes and initial values as hk.ConvND.
        chex.assert_trees_all_equal(ours.init(KEY, x), params)
        got = self.variant(ours.apply)(params, None, x)
        want = ref.apply(params, None, x)
        chex.assert_equal_shape([got, want])
        chex.assert_type(got, jnp.float32)
        chex.assert_trees_all_close(got, want, atol=1e-5, rtol=1e-5)
        w, b = (np.asarray(params["conv_nd"][name], np.float64) for name in "wb")
        stride, rate = (s,) * n, (r,) * n
        if isinstance(padding, str):
            dilated = [(k - 1) * r + 1] * n
            pads = jax.lax.padtype_to_pads(x.shape[1:-1], dilated, stride, padding)
        else:
            pads = padding
        want_np = numpy_conv(x.astype(np.float64), w, b, stride, rate, pads)
        np.testing.assert_allclose(got, want_np, atol=1e-5)


@pytest.mark.parametrize("case", CASES[:6], ids=[str(c) for c in CASES[:6]])
def test_patches_gradients_equal_hk_convnd(case):
    n, k, s, r, padding, cin, cout, size = case
    x = np.random.default_rng(2).normal(size=(3, *([size] * n), cin))
    x = x.astype(np.float32)
    ref, ours = _modules(n, k, s, r, padding, cout)
    params = ref.init(KEY, x)

    def grads(net):
        loss = lambda p, x: jnp.sum(jnp.tanh(net.apply(p, None, x)))
        return jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)

    chex.assert_trees_all_close(grads(ours), grads(ref), atol=1e-5, rtol=1e-4)


def _compiled_hlo(lowering: str) -> str:
    net = hk.transform(lambda x: nets.Conv2D(4, 3, lowering=lowering)(x))
    x = jnp.ones((2, 8, 8, 3))
    params = net.init(KEY, x)
    step = jax.jit(jax.grad(lambda p: jnp.sum(net.apply(p, None, x))))
    return step.lower(params).compile().as_text()


def test_auto_lowering_leaves_no_convolution_or_conditional_on_cpu():
    hlo = _compiled_hlo("auto")
    assert "convolution(" not in hlo
    assert "conditional(" not in hlo  # platform_dependent resolved at lowering
    assert "convolution(" in _compiled_hlo("xla")


def test_patch_bytes_and_the_size_limit_of_auto(monkeypatch):
    # LeNet's second convolution, batch 64: [64, 14, 14, 5 * 5 * 32] floats.
    got = conv.patch_bytes(
        (64, 14, 14, 32), (5, 5), stride=(1, 1), rate=(1, 1), padding="SAME"
    )
    assert got == 64 * 14 * 14 * 25 * 32 * 4
    strided = conv.patch_bytes(
        (2, 9, 9, 3), (3, 3), stride=(2, 2), rate=(1, 1), padding="VALID"
    )
    assert strided == 2 * 4 * 4 * 9 * 3 * 4
    # Above the limit, "auto" keeps XLA's convolution on a CPU too.
    assert "convolution(" not in _compiled_hlo("auto")
    monkeypatch.setattr(conv, "PATCHES_MAX_BYTES", 2 * 8 * 8 * 9 * 3 * 4 - 1)
    assert "convolution(" in _compiled_hlo("auto")
    assert "convolution(" not in _compiled_hlo("patches")


def test_unbatched_inputs_mask_and_no_bias():
    x = np.random.default_rng(3).normal(size=(7, 7, 2)).astype(np.float32)
    mask = np.ones((3, 3, 2, 4), np.float32)
    mask[1, 1] = 0.0
    kw = dict(with_bias=False, mask=mask)
    ref = hk.transform(lambda x: hk.Conv2D(4, 3, **kw)(x))
    ours = hk.transform(lambda x: nets.Conv2D(4, 3, lowering="patches", **kw)(x))
    params = ref.init(KEY, x)
    assert set(params["conv2_d"]) == {"w"}
    got = ours.apply(params, None, x)
    chex.assert_shape(got, (7, 7, 4))
    chex.assert_trees_all_close(got, ref.apply(params, None, x), atol=1e-5)


def test_forms_patches_cannot_take_use_xla_convolution():
    """Channels-first inputs and grouped convolutions go to hk.ConvND."""
    x = np.random.default_rng(4).normal(size=(2, 4, 6, 6)).astype(np.float32)
    for kw in ({"data_format": "NCHW"}, {"feature_group_count": 2}):
        data = x if "data_format" in kw else x.transpose(0, 2, 3, 1)
        ref = hk.transform(lambda x, kw=kw: hk.Conv2D(4, 3, **kw)(x))
        ours = hk.transform(lambda x, kw=kw: nets.Conv2D(4, 3, **kw)(x))
        params = ref.init(KEY, data)
        chex.assert_trees_all_close(
            ours.apply(params, None, data), ref.apply(params, None, data), atol=1e-5
        )


def test_bad_lowering_and_shapes_are_named():
    with pytest.raises(ValueError, match="lowering: expected one of auto, patches"):
        hk.transform(lambda x: nets.Conv2D(4, 3, lowering="fast")(x)).init(
            KEY, jnp.ones((1, 4, 4, 1))
        )
    with pytest.raises(ValueError, match="does not fit inputs"):
        conv.patch_conv(
            jnp.ones((1, 3, 3, 1)), jnp.ones((5, 5, 1, 2)),
            stride=(1, 1), rate=(1, 1), padding="VALID",
        )  # fmt: skip
    with pytest.raises(nets.SpecError, match=r"\[0\] \(Conv2D\)\.lowering"):
        nets.build_network([["Conv2D", {"filters": 2, "kernel_size": 3,
                                        "lowering": "cudnn"}]])  # fmt: skip


def test_spec_conv_and_lenet_train_inside_a_loop_as_called_alone():
    """The point of the patches form: a scan of train steps with a conv net
    gives what the same steps called one by one give."""
    net = hk.transform(lambda x: nets.LeNet(10)(x))
    x = np.random.default_rng(5).random((4, 8, 16, 16, 1), dtype=np.float32)
    y = np.arange(32).reshape(4, 8) % 10
    params = net.init(KEY, x[0])

    def step(p, batch):
        def loss(p):
            logits = net.apply(p, None, batch[0])
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(8), batch[1]])

        value, g = jax.value_and_grad(loss)(p)
        return jax.tree.map(lambda a, b: a - 0.1 * b, p, g), value

    scanned, losses = jax.jit(lambda p: jax.lax.scan(step, p, (x, y)))(params)
    p, one_by_one = params, []
    jstep = jax.jit(step)
    for i in range(4):
        p, value = jstep(p, (x[i], y[i]))
        one_by_one.append(value)
    np.testing.assert_allclose(losses, np.stack(one_by_one), rtol=1e-5)
    chex.assert_trees_all_close(scanned, p, atol=1e-5)
