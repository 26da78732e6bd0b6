"""Actor-critic networks and action distributions of the on-policy agents.

Haiku is used only here, where the networks are transformed: the agents see
`ActorCritic`, a `NamedTuple` of pure functions over a params pytree
``{"actor": ..., "critic": ...}``, and `ActionDist`, a `NamedTuple` of pure
functions over the policy's output. The actor and the critic are two separate
MLPs (as PureJaxRL and CleanRL), orthogonally initialised: hidden layers with
gain sqrt(2), the policy head with 0.01 (near-uniform initial policy), the value
head with 1.0; biases zero.

`ActorCritic.init` builds the parameters itself rather than through Haiku's
``init``: the same distribution (``hk.initializers.Orthogonal``: QR of a standard
normal matrix, signs fixed by ``diag(R)``), but every weight matrix of both
networks is cut from one ``jax.random.normal`` draw. Each random draw is a
threefry hash in the compiled program, which XLA takes ~0.1-0.2 s of CPU to
compile; the six draws of the two [64, 64] MLPs cost 1.35 s of compile, one 0.54 s
(PPO's whole `init` program, environment resets included: 1.8-2.0 -> 1.0 s of CPU).
Compile time is what a notebook user waits for: it is most of the time to solve
CartPole (benchmarks/README.md, "Time to solve").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import chex
import haiku as hk
import jax
import jax.numpy as jnp

from agents.envs import Spec
from agents.losses import (
    categorical_entropy,
    categorical_log_prob,
    gaussian_entropy,
    gaussian_log_prob,
)
from nets import Linear, get_activation

Params = Any
# Logits [B, A] for a discrete policy; (mean [B, D], log_std [D]) for a Gaussian.
PolicyOutput = Any


class ActionDist(NamedTuple):
    """Pure functions of a policy's output (`PolicyOutput`).

    Attributes:
      sample: ``(key, out) -> actions`` [B] int32 or [B, D] float32; `key` is
        one key, or one key per row (a batch of keys: [B] typed or [B, 2] raw),
        so that row ``i`` depends on its own key only (`is_key_batch`).
      mode: ``(out) -> actions``: argmax (discrete) or the mean (Gaussian).
      log_prob: ``(out, actions) -> [B]``.
      entropy: ``(out) -> [B]``, in nats.
      draw: ``(key) -> noise`` of one row's sample (Gumbel [A], or standard
        normal [D]), or None where the size is unknown.
      sample_drawn: ``(out, noise [B, ...]) -> actions``, with ``sample(keys,
        out) == sample_drawn(out, jax.vmap(draw)(keys))`` bit for bit for a batch
        of keys. A training loop draws a whole rollout's noise in one batched
        call before its loop of steps (`agents.ppo.training`): inside a loop
        each random draw is several small kernels on a CPU.
    """

    sample: Callable[[jax.Array, PolicyOutput], jax.Array]
    mode: Callable[[PolicyOutput], jax.Array]
    log_prob: Callable[[PolicyOutput, jax.Array], jax.Array]
    entropy: Callable[[PolicyOutput], jax.Array]
    draw: Callable[[jax.Array], jax.Array] | None = None
    sample_drawn: Callable[[PolicyOutput, jax.Array], jax.Array] | None = None


def is_key_batch(key: jax.Array) -> bool:
    """True for a batch of keys ([B] typed keys or [B, 2] raw key data)."""
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    return key.ndim == (1 if typed else 2)


def categorical(num_actions: int | None = None) -> ActionDist:
    """A softmax policy over logits [B, A] (`num_actions` = A enables `draw`)."""

    def sample(key: jax.Array, logits: jax.Array) -> jax.Array:
        if is_key_batch(key):
            return jax.vmap(jax.random.categorical)(key, logits).astype(jnp.int32)
        return jax.random.categorical(key, logits).astype(jnp.int32)

    def draw(key: jax.Array) -> jax.Array:
        # What `jax.random.categorical(key, logits [A])` draws: Gumbel noise [A].
        return jax.random.gumbel(key, (num_actions,), jnp.float32)

    def sample_drawn(logits: jax.Array, noise: jax.Array) -> jax.Array:
        chex.assert_equal_shape([logits, noise])
        return jnp.argmax(noise + logits, axis=-1).astype(jnp.int32)

    return ActionDist(
        sample=sample,
        mode=lambda logits: jnp.argmax(logits, axis=-1).astype(jnp.int32),
        log_prob=categorical_log_prob,
        entropy=categorical_entropy,
        draw=None if num_actions is None else draw,
        sample_drawn=sample_drawn,
    )


def gaussian(action_dim: int | None = None) -> ActionDist:
    """A diagonal Gaussian policy over ``(mean [B, D], log_std [D])``
    (`action_dim` = D enables `draw`).

    Actions are not squashed or clipped here: environments clip them to their
    bounds (as gymnasium's Pendulum does), and log-probabilities are those of the
    unclipped samples, as in PureJaxRL, CleanRL and SB3.
    """

    def sample(key: jax.Array, out: PolicyOutput) -> jax.Array:
        mean, log_std = out
        if is_key_batch(key):
            normal = lambda k: jax.random.normal(k, mean.shape[1:])
            noise = jax.vmap(normal)(key)  # [B, D]
        else:
            noise = jax.random.normal(key, mean.shape)
        return mean + jnp.exp(log_std) * noise

    def draw(key: jax.Array) -> jax.Array:
        return jax.random.normal(key, (action_dim,), jnp.float32)

    def sample_drawn(out: PolicyOutput, noise: jax.Array) -> jax.Array:
        mean, log_std = out
        chex.assert_equal_shape([mean, noise])
        return mean + jnp.exp(log_std) * noise

    def entropy(out: PolicyOutput) -> jax.Array:
        mean, log_std = out
        return gaussian_entropy(jnp.broadcast_to(log_std, mean.shape))

    return ActionDist(
        sample=sample,
        mode=lambda out: out[0],
        log_prob=lambda out, a: gaussian_log_prob(out[0], out[1], a),
        entropy=entropy,
        draw=None if action_dim is None else draw,
        sample_drawn=sample_drawn,
    )


def action_dist(action_spec: Spec) -> ActionDist:
    """`categorical` for a discrete spec, `gaussian` for a [D] box spec."""
    if action_spec.is_discrete:
        return categorical(action_spec.num_values)
    if len(action_spec.shape) != 1:
        raise ValueError(
            f"action_spec: expected a discrete or a 1-D box spec, got shape "
            f"{action_spec.shape}"
        )
    return gaussian(action_spec.shape[0])


class ActorCritic(NamedTuple):
    """Separate actor and critic networks as pure functions.

    Attributes:
      init: ``(key, obs [B, ...]) -> params`` with ``params = {"actor": ...,
        "critic": ...}``.
      policy: ``(params, obs [B, ...]) -> PolicyOutput`` (logits [B, A], or
        ``(mean [B, D], log_std [D])``).
      value: ``(params, obs [B, ...]) -> values [B]``.
      dist: the `ActionDist` matching `policy`'s output.
    """

    init: Callable[[jax.Array, jax.Array], Params]
    policy: Callable[[Params, jax.Array], PolicyOutput]
    value: Callable[[Params, jax.Array], jax.Array]
    dist: ActionDist


def _mlp(
    x: jax.Array, hidden: Sequence[int], activation: str, out_size: int, gain: float
) -> jax.Array:
    act = get_activation(activation)
    x = x.reshape(x.shape[0], -1).astype(jnp.float32)  # [B, F]: flattens images
    for i, size in enumerate(hidden):
        w_init = hk.initializers.Orthogonal(math.sqrt(2.0))
        x = act(Linear(size, w_init=w_init, name=f"linear_{i}")(x))
    w_init = hk.initializers.Orthogonal(gain)
    return Linear(out_size, w_init=w_init, name="head")(x)  # [B, out_size]


def _mlp_layers(
    in_features: int, hidden: Sequence[int], out_size: int, gain: float
) -> list[tuple[str, tuple[int, int], float]]:
    """``(name, (in, out), gain)`` of each `_mlp` layer, in Haiku's names."""
    sizes = [in_features, *hidden, out_size]
    names = [f"linear_{i}" for i in range(len(hidden))] + ["head"]
    gains = [math.sqrt(2.0)] * len(hidden) + [gain]
    return [
        (name, (sizes[i], sizes[i + 1]), g)
        for i, (name, g) in enumerate(zip(names, gains, strict=True))
    ]


def orthogonal_from_normal(z: jax.Array, shape: tuple[int, int], gain: float):
    """An orthogonal [in, out] matrix times `gain` from standard normal draws.

    `z` holds ``in * out`` draws. Same distribution as
    ``hk.initializers.Orthogonal(gain)`` (and ``jax.nn.initializers.orthogonal``):
    Q of the QR decomposition of a [max, min] standard normal matrix, its columns'
    signs fixed by ``sign(diag(R))`` (uniform over orthogonal matrices), laid out
    as [in, out].
    """
    n_in, n_out = shape
    q, r = jnp.linalg.qr(z.reshape(max(n_in, n_out), min(n_in, n_out)))
    q = q * jnp.sign(jnp.diag(r))
    return gain * (q if n_in >= n_out else q.T)


def actor_critic(
    obs_spec: Spec,
    action_spec: Spec,
    *,
    hidden: Sequence[int] = (64, 64),
    activation: str = "tanh",
    log_std_init: float = 0.0,
    critic: bool = True,
) -> ActorCritic:
    """Builds separate actor and critic MLPs for `obs_spec` and `action_spec`.

    Args:
      obs_spec: spec of one observation (any shape; flattened).
      action_spec: discrete spec (logits head), or a [D] box spec (mean head
        plus a state-independent, learned ``log_std`` [D]).
      hidden: hidden layer sizes of each network.
      activation: hidden activation name (see `nets.activation_names()`).
      log_std_init: initial ``log_std`` of a Gaussian policy.
      critic: build the critic too (``False`` for REINFORCE: ``value`` then
        returns zeros and ``params["critic"]`` is empty).

    Returns:
      An `ActorCritic`.
    """
    dist = action_dist(action_spec)
    hidden = tuple(hidden)
    get_activation(activation)  # Fails early on an unknown name.
    discrete = action_spec.is_discrete
    num_out = action_spec.num_values if discrete else action_spec.shape[0]

    def actor_fn(obs: jax.Array) -> PolicyOutput:
        out = _mlp(obs, hidden, activation, num_out, gain=0.01)
        if discrete:
            return out  # [B, A]
        log_std = hk.get_parameter(
            "log_std", (num_out,), init=hk.initializers.Constant(log_std_init)
        )
        return out, log_std  # [B, D], [D]

    def critic_fn(obs: jax.Array) -> jax.Array:
        return _mlp(obs, hidden, activation, 1, gain=1.0)[:, 0]  # [B]

    actor_t = hk.without_apply_rng(hk.transform(actor_fn))
    critic_t = hk.without_apply_rng(hk.transform(critic_fn))

    in_features = math.prod(obs_spec.shape)
    layers = [("actor", *x) for x in _mlp_layers(in_features, hidden, num_out, 0.01)]
    if critic:
        layers += [("critic", *x) for x in _mlp_layers(in_features, hidden, 1, 1.0)]

    def init(key: jax.Array, obs: jax.Array) -> Params:
        # The parameters `actor_t.init` / `critic_t.init` would make (same tree,
        # same distribution), from one normal draw (see the module docstring).
        chex.assert_shape(obs, (None, *obs_spec.shape))  # [B, ...]
        sizes = [n_in * n_out for _, _, (n_in, n_out), _ in layers]
        z = jax.random.normal(key, (sum(sizes),), jnp.float32)
        params: dict[str, dict[str, Any]] = {"actor": {}, "critic": {}}
        start = 0
        for (net, name, shape, gain), size in zip(layers, sizes, strict=True):
            params[net][name] = {
                "w": orthogonal_from_normal(z[start : start + size], shape, gain),
                "b": jnp.zeros((shape[1],), jnp.float32),
            }
            start += size
        if not discrete:
            log_std = jnp.full((num_out,), log_std_init, jnp.float32)
            params["actor"]["~"] = {"log_std": log_std}
        return params

    def value(params: Params, obs: jax.Array) -> jax.Array:
        if not critic:
            return jnp.zeros(obs.shape[:1], jnp.float32)
        return critic_t.apply(params["critic"], obs)

    return ActorCritic(
        init=init,
        policy=lambda params, obs: actor_t.apply(params["actor"], obs),
        value=value,
        dist=dist,
    )
