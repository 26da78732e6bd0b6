"""Tests for agents.losses: hand-computed numbers and NumPy references."""

import functools
import math
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import rlax
from absl.testing import parameterized

from agents import losses

_F = np.float32


def _np_log_softmax(logits):
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _np_entropy(logits):
    log_p = _np_log_softmax(logits)
    return -(np.exp(log_p) * log_p).sum(-1)


def _np_huber(x, delta):
    ax = np.abs(x)
    return np.where(ax <= delta, 0.5 * x**2, 0.5 * delta**2 + delta * (ax - delta))


def _rlax_quietly(fn, *args, **kwargs):
    """Calls an rlax operator that uses rlax's deprecated distribution helpers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return fn(*args, **kwargs)


# Two transitions: action 0 then action 1; the second has a large q_t[0] that
# Q-learning bootstraps from but the double-Q selector does not pick.
_Q_TM1 = np.array([[1.0, 2.0], [0.0, 3.0]], _F)
_A_TM1 = np.array([0, 1], np.int32)
_R_T = np.array([1.0, -1.0], _F)
_DISCOUNT_T = np.array([0.5, 0.9], _F)
_Q_T = np.array([[2.0, 4.0], [10.0, 0.0]], _F)
_Q_T_SELECTOR = np.array([[5.0, 1.0], [0.0, 1.0]], _F)


class ValueLossTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        # td = [1 + 0.5 * 4 - 1, -1 + 0.9 * 10 - 3] = [2, 5].
        ("huber", "huber", 1.0, (1.5 + 4.5) / 2),
        ("huber_delta2", "huber", 2.0, (2.0 + 8.0) / 2),
        ("l2", "l2", 1.0, (2.0 + 12.5) / 2),
    )
    def test_q_learning_hand_numbers(self, kind, delta, expected):
        fn = functools.partial(losses.q_learning_loss, loss=kind, huber_delta=delta)
        loss, td = self.variant(fn)(_Q_TM1, _A_TM1, _R_T, _DISCOUNT_T, _Q_T)
        np.testing.assert_allclose(td, [2.0, 5.0], rtol=1e-6)
        np.testing.assert_allclose(loss, expected, rtol=1e-6)
        chex.assert_shape([loss, td], [(), (2,)])
        chex.assert_type([loss, td], jnp.float32)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        # Selector picks a=0 (value 2) then a=1 (value 0): td = [1, -4].
        ("huber", "huber", (0.5 + 3.5) / 2),
        ("l2", "l2", (0.5 + 8.0) / 2),
    )
    def test_double_q_uses_selector(self, kind, expected):
        fn = functools.partial(losses.double_q_learning_loss, loss=kind)
        loss, td = self.variant(fn)(
            _Q_TM1, _A_TM1, _R_T, _DISCOUNT_T, _Q_T, _Q_T_SELECTOR
        )
        np.testing.assert_allclose(td, [1.0, -4.0], rtol=1e-6)
        np.testing.assert_allclose(loss, expected, rtol=1e-6)

    def test_double_q_with_own_selector_is_q_learning(self):
        _, td_q = losses.q_learning_loss(_Q_TM1, _A_TM1, _R_T, _DISCOUNT_T, _Q_T)
        _, td_dq = losses.double_q_learning_loss(
            _Q_TM1, _A_TM1, _R_T, _DISCOUNT_T, _Q_T, _Q_T
        )
        np.testing.assert_allclose(td_q, td_dq)

    def test_q_learning_gradients_and_weights(self):
        weights = np.array([1.0, 0.0], _F)

        def f(q_tm1, q_t):
            return losses.q_learning_loss(
                q_tm1, _A_TM1, _R_T, _DISCOUNT_T, q_t, loss="l2", weights=weights
            )[0]

        g_tm1, g_t = jax.grad(f, argnums=(0, 1))(_Q_TM1, _Q_T)
        # d/dq 0.5 * w * td^2 / B = -w * td / B at the taken action only.
        np.testing.assert_allclose(g_tm1, [[-1.0, 0.0], [0.0, 0.0]], rtol=1e-6)
        np.testing.assert_array_equal(g_t, np.zeros_like(_Q_T))  # target stopped

    @chex.variants(with_jit=True, without_jit=True)
    def test_categorical_double_q(self):
        rng = np.random.default_rng(0)
        b, a, n = 4, 3, 5
        atoms = np.linspace(-2.0, 2.0, n).astype(_F)
        logits_tm1 = rng.normal(size=(b, a, n)).astype(_F)
        logits_t = rng.normal(size=(b, a, n)).astype(_F)
        selector = rng.normal(size=(b, a)).astype(_F)
        a_tm1 = rng.integers(0, a, size=b).astype(np.int32)
        r_t = rng.normal(size=b).astype(_F)
        discount_t = np.array([0.9, 0.0, 0.5, 0.9], _F)
        fn = functools.partial(losses.categorical_double_q_loss, atoms=atoms)
        loss, ce = self.variant(fn)(
            logits_tm1, a_tm1, r_t, discount_t, logits_t, selector
        )
        in_axes = (None, 0, 0, 0, 0, None, 0, 0)
        expected = _rlax_quietly(
            jax.vmap(rlax.categorical_double_q_learning, in_axes),
            atoms,
            logits_tm1,
            a_tm1,
            r_t,
            discount_t,
            atoms,
            logits_t,
            selector,
        )
        np.testing.assert_allclose(ce, expected, rtol=1e-5)
        np.testing.assert_allclose(loss, expected.mean(), rtol=1e-5)

    def test_categorical_hand_number(self):
        # Terminal transition with r = 1 on atoms [0, 1, 2]: target is a delta on 1.
        atoms = np.array([0.0, 1.0, 2.0], _F)
        logits_tm1 = np.array([[[0.0, 1.0, 2.0]]], _F)
        zeros = np.zeros((1, 1, 3), _F)
        loss, _ = losses.categorical_double_q_loss(
            logits_tm1,
            np.array([0], np.int32),
            np.array([1.0], _F),
            np.array([0.0], _F),
            zeros,
            np.zeros((1, 1), _F),
            atoms=atoms,
        )
        np.testing.assert_allclose(
            loss, -_np_log_softmax(logits_tm1[0, 0])[1], rtol=1e-6
        )

    def test_categorical_q_values(self):
        atoms = np.array([-1.0, 0.0, 3.0], _F)
        logits = np.log(np.array([[[0.5, 0.25, 0.25]]], _F))
        np.testing.assert_allclose(
            losses.categorical_q_values(logits, atoms), [[0.25]], rtol=1e-6
        )

    def test_elementwise_losses(self):
        x = np.array([-3.0, -0.5, 0.0, 0.2, 2.5], _F)
        np.testing.assert_allclose(losses.huber_loss(x, 1.0), _np_huber(x, 1.0))
        np.testing.assert_allclose(losses.huber_loss(x, 2.0), _np_huber(x, 2.0))
        np.testing.assert_allclose(losses.l2_loss(x), 0.5 * x**2)

    def test_bad_inputs_raise(self):
        with self.assertRaises(AssertionError):  # q_tm1 rank 1
            losses.q_learning_loss(_Q_TM1[0], _A_TM1, _R_T, _DISCOUNT_T, _Q_T)
        with self.assertRaises(AssertionError):  # float actions
            losses.q_learning_loss(_Q_TM1, _R_T, _R_T, _DISCOUNT_T, _Q_T)
        with self.assertRaises(AssertionError):  # batch sizes differ
            losses.q_learning_loss(_Q_TM1, _A_TM1[:1], _R_T[:1], _DISCOUNT_T[:1], _Q_T)
        with self.assertRaises(ValueError):
            losses.q_learning_loss(_Q_TM1, _A_TM1, _R_T, _DISCOUNT_T, _Q_T, loss="l1")


def _np_n_step(r, d, v, n):
    t_len = len(r)
    out = np.zeros(t_len)
    for t in range(t_len):
        m = min(n, t_len - t)
        g, disc = 0.0, 1.0
        for k in range(m):
            g += disc * r[t + k]
            disc *= d[t + k]
        out[t] = g + disc * v[t + m - 1]
    return out


def _np_gae(r, d, values, lam):
    adv = np.zeros(len(r))
    acc = 0.0
    for t in reversed(range(len(r))):
        delta = r[t] + d[t] * values[t + 1] - values[t]
        acc = delta + d[t] * lam * acc
        adv[t] = acc
    return adv


def _random_sequence(rng, shape):
    r = rng.normal(size=shape).astype(_F)
    d = np.full(shape, 0.9, _F)
    d[3] = 0.0  # an episode ends in the middle
    return r, d


class ReturnsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(1, 3, 7, 10)
    def test_n_step_targets(self, n):
        rng = np.random.default_rng(n)
        r, d = _random_sequence(rng, 7)
        v = rng.normal(size=7).astype(_F)
        out = self.variant(functools.partial(losses.n_step_targets, n=n))(r, d, v)
        np.testing.assert_allclose(out, _np_n_step(r, d, v, n), rtol=1e-5, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_n_step_targets_batch(self):
        rng = np.random.default_rng(1)
        r, d = _random_sequence(rng, (7, 3))
        v = rng.normal(size=(7, 3)).astype(_F)
        out = self.variant(functools.partial(losses.n_step_targets_batch, n=3))(r, d, v)
        chex.assert_shape(out, (7, 3))
        for b in range(3):
            expected = _np_n_step(r[:, b], d[:, b], v[:, b], 3)
            np.testing.assert_allclose(out[:, b], expected, rtol=1e-5, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_n_step_transition(self):
        rng = np.random.default_rng(2)
        r, d = _random_sequence(rng, (5, 4))
        d[1, 0] = 0.0  # one window ends early
        reward, discount = self.variant(losses.n_step_transition)(r, d)
        chex.assert_shape([reward, discount], (4,))
        for b in range(4):
            g, disc = 0.0, 1.0
            for k in range(5):
                g += disc * r[k, b]
                disc *= d[k, b]
            np.testing.assert_allclose(reward[b], g, rtol=1e-5)
            np.testing.assert_allclose(discount[b], disc, rtol=1e-6)
        # Unbatched [n] input, and agreement with the n-step targets.
        reward0, discount0 = losses.n_step_transition(r[:, 1], d[:, 1])
        v = np.full(5, 2.0, _F)
        np.testing.assert_allclose(
            reward0 + discount0 * 2.0,
            losses.n_step_targets(r[:, 1], d[:, 1], v, n=5)[0],
            rtol=1e-5,
        )

    @chex.variants(with_jit=True, without_jit=True)
    def test_discounted_returns(self):
        rng = np.random.default_rng(3)
        r, d = _random_sequence(rng, 6)
        out = self.variant(losses.discounted_returns)(r, d, 1.5)
        expected, acc = np.zeros(6), 1.5
        for t in reversed(range(6)):
            acc = r[t] + d[t] * acc
            expected[t] = acc
        np.testing.assert_allclose(out, expected, rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(0.0, 0.95, 1.0)
    def test_gae(self, lam):
        rng = np.random.default_rng(4)
        r, d = _random_sequence(rng, 8)
        values = rng.normal(size=9).astype(_F)
        out = self.variant(functools.partial(losses.gae, lambda_=lam))(r, d, values)
        expected = _np_gae(r, d, values, lam)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
        # The episode end at t=3 cuts the recursion: A_3 is the one-step error.
        np.testing.assert_allclose(out[3], r[3] - values[3], rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_gae_batch(self):
        rng = np.random.default_rng(5)
        r, d = _random_sequence(rng, (8, 3))
        values = rng.normal(size=(9, 3)).astype(_F)
        fn = functools.partial(losses.gae_batch, lambda_=0.9)
        adv, ret = self.variant(fn)(r, d, values)
        chex.assert_shape([adv, ret], (8, 3))
        for b in range(3):
            expected = _np_gae(r[:, b], d[:, b], values[:, b], 0.9)
            np.testing.assert_allclose(adv[:, b], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ret, adv + values[:-1], rtol=1e-6)

    def test_bad_inputs_raise(self):
        r = np.zeros(4, _F)
        with self.assertRaises(AssertionError):  # values must have T + 1 entries
            losses.gae(r, r, r)
        with self.assertRaises(AssertionError):  # batch variant needs [T, B]
            losses.gae_batch(r, r, np.zeros(5, _F))
        with self.assertRaises(ValueError):
            losses.n_step_targets(r, r, r, n=0)


def _np_vtrace(values, r, d, rho, lam, clip_rho, clip_pg_rho):
    """The V-trace recursion of Espeholt et al. (2018), eq. (1) and section 4.2."""
    t_len = len(r)
    v_tm1, v_t = values[:-1], values[1:]
    vs = np.zeros(t_len + 1)
    vs[t_len] = values[t_len]
    for s in reversed(range(t_len)):
        delta = min(clip_rho, rho[s]) * (r[s] + d[s] * v_t[s] - v_tm1[s])
        c = lam * min(1.0, rho[s])
        vs[s] = v_tm1[s] + delta + d[s] * c * (vs[s + 1] - v_t[s])
    # rlax mixes the bootstrap with lambda; lambda = 1 is the paper's r + g vs_{s+1}.
    q_boot = np.append(lam * vs[1:-1] + (1 - lam) * v_t[:-1], v_t[-1])
    q = r + d * q_boot
    pg_adv = np.minimum(clip_pg_rho, rho) * (q - v_tm1)
    return vs[:-1] - v_tm1, pg_adv, q


class VTraceTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((1.0, 1.0, 1.0), (0.9, 2.0, 1.5))
    def test_vtrace_targets(self, lam, clip_rho, clip_pg_rho):
        rng = np.random.default_rng(6)
        r, d = _random_sequence(rng, 7)
        values = rng.normal(size=8).astype(_F)
        rho = rng.uniform(0.2, 3.0, size=7).astype(_F)
        fn = functools.partial(
            losses.vtrace_targets,
            lambda_=lam,
            clip_rho=clip_rho,
            clip_pg_rho=clip_pg_rho,
        )
        out = self.variant(fn)(values[:-1], values[1:], r, d, rho)
        errors, pg_adv, q = _np_vtrace(values, r, d, rho, lam, clip_rho, clip_pg_rho)
        np.testing.assert_allclose(out.errors, errors, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out.pg_advantage, pg_adv, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out.q_estimate, q, rtol=1e-5, atol=1e-5)

    def test_on_policy_vtrace_is_n_step(self):
        # rho = 1, lambda = 1: V-trace targets are the on-policy n-step returns.
        rng = np.random.default_rng(7)
        r, d = _random_sequence(rng, 6)
        values = rng.normal(size=7).astype(_F)
        out = losses.vtrace_targets(values[:-1], values[1:], r, d, np.ones(6, _F))
        expected = losses.discounted_returns(r, d, values[-1])
        np.testing.assert_allclose(out.errors + values[:-1], expected, rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_vtrace_loss(self):
        rng = np.random.default_rng(8)
        t_len, b = 5, 3
        r, d = _random_sequence(rng, (t_len, b))
        values = rng.normal(size=(t_len + 1, b)).astype(_F)
        log_prob = rng.normal(-1.0, 0.5, size=(t_len, b)).astype(_F)
        mu_log_prob = rng.normal(-1.0, 0.5, size=(t_len, b)).astype(_F)
        entropy = rng.uniform(0.5, 1.0, size=(t_len, b)).astype(_F)
        fn = functools.partial(losses.vtrace_loss, value_coef=0.5, entropy_coef=0.1)
        loss, metrics = self.variant(fn)(log_prob, mu_log_prob, entropy, values, r, d)

        rho = np.exp(log_prob - mu_log_prob)
        cols = [
            _np_vtrace(values[:, i], r[:, i], d[:, i], rho[:, i], 1.0, 1.0, 1.0)
            for i in range(b)
        ]
        errors = np.stack([c[0] for c in cols], 1)
        pg_adv = np.stack([c[1] for c in cols], 1)
        policy_loss = -np.mean(log_prob * pg_adv)
        value_loss = 0.5 * np.mean(errors**2)
        np.testing.assert_allclose(metrics["policy_loss"], policy_loss, rtol=1e-4)
        np.testing.assert_allclose(metrics["value_loss"], value_loss, rtol=1e-4)
        np.testing.assert_allclose(metrics["mean_rho"], rho.mean(), rtol=1e-5)
        np.testing.assert_allclose(
            loss, policy_loss + 0.5 * value_loss - 0.1 * entropy.mean(), rtol=1e-4
        )

        # Gradients: values get -coef * errors / N, the bootstrap row nothing; the
        # importance ratios and advantages carry no gradient.
        def f(lp, mu, v):
            return losses.vtrace_loss(lp, mu, entropy, v, r, d, value_coef=0.5)[0]

        g_lp, g_mu, g_v = jax.grad(f, argnums=(0, 1, 2))(log_prob, mu_log_prob, values)
        n = t_len * b
        np.testing.assert_allclose(g_lp, -pg_adv / n, rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(g_mu, np.zeros_like(g_mu))
        np.testing.assert_allclose(g_v[:-1], -0.5 * errors / n, rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(g_v[-1], np.zeros(b, _F))


class PolicyLossTest(chex.TestCase):
    def _data(self, seed=0, b=6, a=4):
        rng = np.random.default_rng(seed)
        logits = rng.normal(size=(b, a)).astype(_F)
        actions = rng.integers(0, a, size=b).astype(np.int32)
        adv = rng.normal(size=b).astype(_F)
        return logits, actions, adv

    @chex.variants(with_jit=True, without_jit=True)
    def test_distributions(self):
        logits, actions, _ = self._data()
        log_p = self.variant(losses.categorical_log_prob)(logits, actions)
        expected = _np_log_softmax(logits)[np.arange(6), actions]
        np.testing.assert_allclose(log_p, expected, rtol=1e-5)
        ent = self.variant(losses.categorical_entropy)(logits)
        np.testing.assert_allclose(ent, _np_entropy(logits), rtol=1e-5)
        np.testing.assert_allclose(
            losses.categorical_entropy(np.zeros((2, 4), _F)),
            [math.log(4)] * 2,
            rtol=1e-6,
        )

        rng = np.random.default_rng(1)
        mean = rng.normal(size=(5, 3)).astype(_F)
        log_std = rng.normal(scale=0.3, size=(3,)).astype(_F)  # state-independent
        a = rng.normal(size=(5, 3)).astype(_F)
        std = np.exp(log_std)
        density = np.exp(-0.5 * ((a - mean) / std) ** 2) / (
            std * math.sqrt(2 * math.pi)
        )
        log_density = self.variant(losses.gaussian_log_prob)(mean, log_std, a)
        chex.assert_shape(log_density, (5,))
        np.testing.assert_allclose(log_density, np.log(density.prod(-1)), rtol=1e-5)
        # Entropy of N(0, diag(std^2)): 0.5 * log det(2 pi e Sigma).
        expected = 0.5 * math.log(np.prod(2 * math.pi * math.e * std**2))
        out = self.variant(losses.gaussian_entropy)(np.broadcast_to(log_std, (5, 3)))
        np.testing.assert_allclose(out, [expected] * 5, rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_policy_gradient_and_entropy_loss(self):
        logits, actions, adv = self._data()
        w = np.array([1.0, 0.5, 0.0, 1.0, 2.0, 1.0], _F)
        pg = self.variant(losses.policy_gradient_loss)(logits, actions, adv, w)
        log_p = _np_log_softmax(logits)[np.arange(6), actions]
        np.testing.assert_allclose(pg, -np.mean(log_p * adv * w), rtol=1e-5)
        reference = _rlax_quietly(rlax.policy_gradient_loss, logits, actions, adv, w)
        np.testing.assert_allclose(pg, reference, rtol=1e-5)
        ent = self.variant(losses.entropy_loss)(logits)
        np.testing.assert_allclose(ent, -_np_entropy(logits).mean(), rtol=1e-5)
        reference = _rlax_quietly(rlax.entropy_loss, logits, np.ones(6, _F))
        np.testing.assert_allclose(ent, reference, rtol=1e-5)
        # Advantages are not differentiated.
        g = jax.grad(losses.policy_gradient_loss, argnums=2)(logits, actions, adv)
        np.testing.assert_array_equal(g, np.zeros_like(adv))

    @chex.variants(with_jit=True, without_jit=True)
    def test_reinforce(self):
        logits, actions, _ = self._data(seed=1)
        r = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 1.0], _F)
        returns = losses.discounted_returns(r, np.full(6, 0.9, _F))
        out = self.variant(losses.reinforce_loss)(logits, actions, returns)
        log_p = _np_log_softmax(logits)[np.arange(6), actions]
        np.testing.assert_allclose(out, -np.mean(log_p * returns), rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_a2c(self):
        logits, actions, _ = self._data(seed=2)
        rng = np.random.default_rng(3)
        values = rng.normal(size=6).astype(_F)
        returns = rng.normal(size=6).astype(_F)
        fn = functools.partial(losses.a2c_loss, value_coef=0.5, entropy_coef=0.01)
        loss, metrics = self.variant(fn)(logits, values, actions, returns)
        log_p = _np_log_softmax(logits)[np.arange(6), actions]
        policy_loss = -np.mean(log_p * (returns - values))
        value_loss = 0.5 * np.mean((returns - values) ** 2)
        entropy = _np_entropy(logits).mean()
        np.testing.assert_allclose(metrics["policy_loss"], policy_loss, rtol=1e-5)
        np.testing.assert_allclose(metrics["value_loss"], value_loss, rtol=1e-5)
        np.testing.assert_allclose(metrics["entropy"], entropy, rtol=1e-5)
        np.testing.assert_allclose(
            loss, policy_loss + 0.5 * value_loss - 0.01 * entropy, rtol=1e-5
        )
        # The policy term does not push on the values: d/dv = -0.5 (R - v) / B.
        g = jax.grad(lambda v: fn(logits, v, actions, returns)[0])(values)
        np.testing.assert_allclose(g, -0.5 * (returns - values) / 6, rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("clipped_value_normalized", 0.2, True),
        ("clipped_value", 0.2, False),
        ("plain_value", None, True),
    )
    def test_ppo_matches_numpy(self, value_clip_eps, normalize):
        rng = np.random.default_rng(9)
        b = 32
        log_prob = rng.normal(-1.0, 0.3, size=b).astype(_F)
        old_log_prob = (log_prob + rng.normal(0.0, 0.3, size=b)).astype(_F)
        adv = rng.normal(0.5, 2.0, size=b).astype(_F)
        values = rng.normal(size=b).astype(_F)
        old_values = (values + rng.normal(0.0, 0.3, size=b)).astype(_F)
        returns = rng.normal(size=b).astype(_F)
        entropy = rng.uniform(0.5, 1.5, size=b).astype(_F)
        fn = functools.partial(
            losses.ppo_loss,
            clip_eps=0.2,
            value_clip_eps=value_clip_eps,
            value_coef=0.5,
            entropy_coef=0.01,
            normalize_advantages=normalize,
        )
        loss, m = self.variant(fn)(
            log_prob, old_log_prob, adv, values, old_values, returns, entropy
        )

        a = (adv - adv.mean()) / (adv.std() + 1e-8) if normalize else adv
        ratio = np.exp(log_prob - old_log_prob)
        surrogate = np.minimum(ratio * a, np.clip(ratio, 0.8, 1.2) * a)
        policy_loss = -surrogate.mean()
        sq = (values - returns) ** 2
        if value_clip_eps is not None:
            v_clip = old_values + np.clip(values - old_values, -0.2, 0.2)
            sq = np.maximum(sq, (v_clip - returns) ** 2)
        value_loss = 0.5 * sq.mean()
        approx_kl = np.mean(ratio - 1 - np.log(ratio))
        clip_fraction = np.mean(np.abs(ratio - 1) > 0.2)
        self.assertGreater(clip_fraction, 0.0)  # the data exercises the clipping
        np.testing.assert_allclose(m["policy_loss"], policy_loss, rtol=1e-4)
        np.testing.assert_allclose(m["value_loss"], value_loss, rtol=1e-5)
        np.testing.assert_allclose(m["entropy"], entropy.mean(), rtol=1e-5)
        np.testing.assert_allclose(m["approx_kl"], approx_kl, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(m["clip_fraction"], clip_fraction, rtol=1e-6)
        np.testing.assert_allclose(
            loss, policy_loss + 0.5 * value_loss - 0.01 * entropy.mean(), rtol=1e-4
        )
        chex.assert_shape([loss, *m.values()], ())

    @chex.variants(with_jit=True, without_jit=True)
    def test_ppo_gradient_zero_where_clipped(self):
        logits = np.random.default_rng(10).normal(size=(6, 3)).astype(_F)
        actions = np.array([0, 1, 2, 0, 1, 2], np.int32)
        # log ratios and advantages: (+, +) and (-, -) are clipped in the direction
        # of the advantage (no gradient); the rest keep their gradient.
        log_ratio = np.array([0.5, 0.5, -0.5, -0.5, 0.1, -0.1], _F)
        adv = np.array([1.0, -1.0, -1.0, 1.0, 1.0, -1.0], _F)
        log_prob = np.asarray(losses.categorical_log_prob(logits, actions))
        old_log_prob = log_prob - log_ratio
        zeros = np.zeros(6, _F)

        def f(lg):
            lp = losses.categorical_log_prob(lg, actions)
            loss, _ = losses.ppo_loss(
                lp,
                old_log_prob,
                adv,
                zeros,
                zeros,
                zeros,
                zeros,
                normalize_advantages=False,
            )
            return loss

        g = self.variant(jax.grad(f))(logits)
        row_norm = np.abs(np.asarray(g)).sum(-1)
        np.testing.assert_array_equal(row_norm[[0, 2]], [0.0, 0.0])
        self.assertTrue(np.all(row_norm[[1, 3, 4, 5]] > 1e-3))

    def test_ppo_gaussian_policy(self):
        rng = np.random.default_rng(11)
        mean = rng.normal(size=(8, 2)).astype(_F)
        log_std = np.full(2, -0.5, _F)
        a = (mean + np.exp(log_std) * rng.normal(size=(8, 2))).astype(_F)
        old_log_prob = losses.gaussian_log_prob(mean, log_std, a)
        zeros = np.zeros(8, _F)
        adv = rng.normal(size=8).astype(_F)

        def f(mu):
            lp = losses.gaussian_log_prob(mu, log_std, a)
            ent = jnp.broadcast_to(losses.gaussian_entropy(log_std), (8,))
            return losses.ppo_loss(lp, old_log_prob, adv, zeros, zeros, zeros, ent)

        (loss, m), g = jax.value_and_grad(f, has_aux=True)(mean)
        # On-policy (ratio 1): no clipping, no KL, finite gradient.
        np.testing.assert_allclose(m["approx_kl"], 0.0, atol=1e-6)
        np.testing.assert_allclose(m["clip_fraction"], 0.0)
        self.assertTrue(np.all(np.isfinite(g)) and np.any(g != 0))
        chex.assert_shape(g, (8, 2))

    def test_bad_inputs_raise(self):
        logits, actions, adv = self._data()
        with self.assertRaises(AssertionError):  # ppo takes flattened [B]
            x = np.zeros((2, 3), _F)
            losses.ppo_loss(x, x, x, x, x, x, x)
        with self.assertRaises(AssertionError):  # logits must be [B, A]
            losses.a2c_loss(logits[0], adv, actions, adv)
        with self.assertRaises(AssertionError):  # float actions
            losses.policy_gradient_loss(logits, adv, adv)
        with self.assertRaises(AssertionError):  # values need the bootstrap row
            x = np.zeros((4, 2), _F)
            losses.vtrace_loss(x, x, x, x, x, x)
