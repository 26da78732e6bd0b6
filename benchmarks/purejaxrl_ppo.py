"""A minimal, faithful re-implementation of PureJaxRL's PPO, the speed to beat.

Origin: PureJaxRL (Lu et al. 2022, "Discovered Policy Optimisation";
github.com/luchris429/purejaxrl, ``purejaxrl/ppo.py``) is not a package; its
training script builds the whole run as one function, a ``lax.scan`` over
updates, each a ``lax.scan`` over ``NUM_STEPS`` vectorised gymnax steps, GAE by a
reverse ``lax.scan`` that treats every ``done`` (time limits included) as
terminal, and ``UPDATE_EPOCHS`` scans over ``NUM_MINIBATCHES`` shuffled
minibatches of the flattened rollout (the per-step ``info`` dict is shuffled
along with it). Its network is one Flax module holding a separate actor
(64-64 tanh, logits head) and critic (64-64 tanh, value head), orthogonally
initialised (gain sqrt(2), policy head 0.01, value head 1.0, zero biases); one
Adam (eps 1e-5) over both, after global-norm clipping, with the learning rate
annealed linearly per update; the loss is the clipped surrogate on advantages
standardised per minibatch, plus ``VF_COEF`` times the clipped value loss,
minus ``ENT_COEF`` times the entropy. The environment is gymnax's CartPole-v1
(reward ``1 - previous_terminal``, episode end at 500 steps counted as a
termination, reset computed at every step and selected with ``where``) under
PureJaxRL's ``LogWrapper``, whose episode statistics come back as the
per-step metrics of the run.

This file re-states that program from its description, without Flax, distrax
or gymnax (they do not install beside jaxlab's pins; `benchmarks.rejax_ppo`
runs the real third-party peer in its own virtualenv). The arithmetic per step
is the same: same layers, same environment dynamics and bookkeeping, same
scans, same optimizer chain. Only jax, optax and numpy are imported, so it runs
in either virtualenv.

    python -m benchmarks.purejaxrl_ppo        # one seed at PureJaxRL's defaults
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

# PureJaxRL's CartPole-v1 defaults (its ppo.py ``config``).
DEFAULTS = {
    "lr": 2.5e-4,
    "num_envs": 4,
    "num_steps": 128,
    "total_timesteps": 500_000,
    "update_epochs": 4,
    "num_minibatches": 4,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "clip_eps": 0.2,
    "ent_coef": 0.01,
    "vf_coef": 0.5,
    "max_grad_norm": 0.5,
    "anneal_lr": True,
    "hidden": 64,
}

# ------------------------------------------------------------------ CartPole-v1
# gymnax's CartPole-v1 (its classic_control/cartpole.py), float32.

GRAVITY, MASS_CART, MASS_POLE, LENGTH = 9.8, 1.0, 0.1, 0.5
TOTAL_MASS, POLE_MASS_LENGTH = MASS_POLE + MASS_CART, MASS_POLE * LENGTH
FORCE_MAG, TAU, MAX_STEPS = 10.0, 0.02, 500
THETA_THRESHOLD, X_THRESHOLD = 12 * 2 * math.pi / 360, 2.4


class CartPoleState(NamedTuple):
    x: jax.Array
    x_dot: jax.Array
    theta: jax.Array
    theta_dot: jax.Array
    time: jax.Array


class LogState(NamedTuple):
    """PureJaxRL's LogWrapper state around the environment's."""

    env_state: CartPoleState
    episode_returns: jax.Array
    episode_lengths: jax.Array
    returned_episode_returns: jax.Array
    returned_episode_lengths: jax.Array
    timestep: jax.Array


def _is_terminal(s: CartPoleState) -> jax.Array:
    out_x = (s.x < -X_THRESHOLD) | (s.x > X_THRESHOLD)
    out_theta = (s.theta < -THETA_THRESHOLD) | (s.theta > THETA_THRESHOLD)
    return out_x | out_theta | (s.time >= MAX_STEPS)


def _obs(s: CartPoleState) -> jax.Array:
    return jnp.array([s.x, s.x_dot, s.theta, s.theta_dot])  # [4]


def cartpole_reset(key: jax.Array) -> tuple[jax.Array, LogState]:
    x = jax.random.uniform(key, (4,), minval=-0.05, maxval=0.05)
    s = CartPoleState(x[0], x[1], x[2], x[3], jnp.zeros((), jnp.int32))
    zero_f, zero_i = jnp.zeros(()), jnp.zeros((), jnp.int32)
    return _obs(s), LogState(s, zero_f, zero_i, zero_f, zero_i, zero_i)


def _step_env(s: CartPoleState, action: jax.Array):
    prev_terminal = _is_terminal(s)
    force = FORCE_MAG * action - FORCE_MAG * (1 - action)
    cos, sin = jnp.cos(s.theta), jnp.sin(s.theta)
    temp = (force + POLE_MASS_LENGTH * s.theta_dot**2 * sin) / TOTAL_MASS
    theta_acc = (GRAVITY * sin - cos * temp) / (
        LENGTH * (4.0 / 3.0 - MASS_POLE * cos**2 / TOTAL_MASS)
    )
    x_acc = temp - POLE_MASS_LENGTH * theta_acc * cos / TOTAL_MASS
    s = CartPoleState(
        s.x + TAU * s.x_dot,
        s.x_dot + TAU * x_acc,
        s.theta + TAU * s.theta_dot,
        s.theta_dot + TAU * theta_acc,
        s.time + 1,
    )
    reward = 1.0 - prev_terminal.astype(jnp.float32)
    return _obs(s), s, reward, _is_terminal(s)


def cartpole_step(key: jax.Array, ls: LogState, action: jax.Array):
    """gymnax's auto-resetting step under PureJaxRL's LogWrapper."""
    key, reset_key = jax.random.split(key)
    del key  # CartPole's dynamics are deterministic.
    obs_st, s_st, reward, done = _step_env(ls.env_state, action)
    obs_re, ls_re = cartpole_reset(reset_key)
    s = jax.tree.map(lambda a, b: jnp.where(done, a, b), ls_re.env_state, s_st)
    obs = jnp.where(done, obs_re, obs_st)
    new_return = ls.episode_returns + reward
    new_length = ls.episode_lengths + 1
    ls = LogState(
        env_state=s,
        episode_returns=new_return * (1 - done),
        episode_lengths=new_length * (1 - done),
        returned_episode_returns=jnp.where(
            done, new_return, ls.returned_episode_returns
        ),
        returned_episode_lengths=jnp.where(
            done, new_length, ls.returned_episode_lengths
        ),
        timestep=ls.timestep + 1,
    )
    info = {
        "discount": 1.0 - done.astype(jnp.float32),
        "returned_episode_returns": ls.returned_episode_returns,
        "returned_episode_lengths": ls.returned_episode_lengths,
        "timestep": ls.timestep,
        "returned_episode": done,
    }
    return obs, ls, reward, done, info


# ------------------------------------------------------------------ network


def _dense(key: jax.Array, n_in: int, n_out: int, gain: float) -> dict[str, jax.Array]:
    w = jax.nn.initializers.orthogonal(gain)(key, (n_in, n_out), jnp.float32)
    return {"w": w, "b": jnp.zeros((n_out,), jnp.float32)}


def init_network(key: jax.Array, obs_size: int, num_actions: int, hidden: int):
    k = jax.random.split(key, 6)
    s2 = math.sqrt(2.0)
    return {
        "actor": [
            _dense(k[0], obs_size, hidden, s2),
            _dense(k[1], hidden, hidden, s2),
            _dense(k[2], hidden, num_actions, 0.01),
        ],
        "critic": [
            _dense(k[3], obs_size, hidden, s2),
            _dense(k[4], hidden, hidden, s2),
            _dense(k[5], hidden, 1, 1.0),
        ],
    }


def _mlp(layers: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
    for layer in layers[:-1]:
        x = jnp.tanh(x @ layer["w"] + layer["b"])
    return x @ layers[-1]["w"] + layers[-1]["b"]


def apply_network(params: Any, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Logits [..., A] and values [...] of observations [..., 4]."""
    return _mlp(params["actor"], obs), _mlp(params["critic"], obs)[..., 0]


def _log_prob(logits: jax.Array, action: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits)
    return jnp.take_along_axis(logp, action[..., None], axis=-1)[..., 0]


def _entropy(logits: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


# ------------------------------------------------------------------ training


class Transition(NamedTuple):
    done: jax.Array
    action: jax.Array
    value: jax.Array
    reward: jax.Array
    log_prob: jax.Array
    obs: jax.Array
    info: dict[str, jax.Array]


class Runner(NamedTuple):
    params: Any
    opt_state: Any
    env_state: LogState
    last_obs: jax.Array
    rng: jax.Array


def make_train(**overrides: Any):
    """``train(key) -> (Runner, metrics)``: PureJaxRL's PPO as one function."""
    c = {**DEFAULTS, **overrides}
    num_envs, num_steps = c["num_envs"], c["num_steps"]
    num_updates = c["total_timesteps"] // num_steps // num_envs
    num_mb, epochs = c["num_minibatches"], c["update_epochs"]
    batch_size = num_envs * num_steps
    gamma, lam, clip_eps = c["gamma"], c["gae_lambda"], c["clip_eps"]

    def schedule(count: jax.Array) -> jax.Array:
        frac = 1.0 - (count // (num_mb * epochs)) / num_updates
        return c["lr"] * frac

    lr = schedule if c["anneal_lr"] else c["lr"]
    tx = optax.chain(
        optax.clip_by_global_norm(c["max_grad_norm"]),
        optax.adam(learning_rate=lr, eps=1e-5),
    )

    def loss_fn(params, traj: Transition, gae, targets):
        logits, value = apply_network(params, traj.obs)
        log_prob = _log_prob(logits, traj.action)
        value_clipped = traj.value + (value - traj.value).clip(-clip_eps, clip_eps)
        value_loss = (
            0.5
            * jnp.maximum(
                jnp.square(value - targets), jnp.square(value_clipped - targets)
            ).mean()
        )
        ratio = jnp.exp(log_prob - traj.log_prob)
        gae = (gae - gae.mean()) / (gae.std() + 1e-8)
        actor_loss = -jnp.minimum(
            ratio * gae, jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps) * gae
        ).mean()
        entropy = _entropy(logits).mean()
        total = actor_loss + c["vf_coef"] * value_loss - c["ent_coef"] * entropy
        return total, (value_loss, actor_loss, entropy)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def env_step(r: Runner, _):
        rng, act_key = jax.random.split(r.rng)
        logits, value = apply_network(r.params, r.last_obs)
        action = jax.random.categorical(act_key, logits)
        log_prob = _log_prob(logits, action)
        rng, step_key = jax.random.split(rng)
        step_keys = jax.random.split(step_key, num_envs)
        obs, env_state, reward, done, info = jax.vmap(cartpole_step)(
            step_keys, r.env_state, action
        )
        t = Transition(done, action, value, reward, log_prob, r.last_obs, info)
        return r._replace(env_state=env_state, last_obs=obs, rng=rng), t

    def gae_step(carry, t: Transition):
        gae, next_value = carry
        not_done = 1.0 - t.done
        delta = t.reward + gamma * next_value * not_done - t.value
        gae = delta + gamma * lam * not_done * gae
        return (gae, t.value), gae

    def minibatch_step(carry, mb):
        params, opt_state = carry
        traj, gae, targets = mb
        (loss, _), grads = grad_fn(params, traj, gae, targets)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    def rollout(r: Runner) -> tuple[Runner, Transition]:
        return jax.lax.scan(env_step, r, None, num_steps)

    def learn(r: Runner, traj: Transition) -> Runner:
        _, last_val = apply_network(r.params, r.last_obs)
        init = (jnp.zeros_like(last_val), last_val)
        _, adv = jax.lax.scan(gae_step, init, traj, reverse=True, unroll=16)
        targets = adv + traj.value

        def epoch(carry, _):
            params, opt_state, rng = carry
            rng, perm_key = jax.random.split(rng)
            perm = jax.random.permutation(perm_key, batch_size)
            batch = jax.tree.map(
                lambda x: x.reshape((batch_size, *x.shape[2:])), (traj, adv, targets)
            )
            batch = jax.tree.map(lambda x: jnp.take(x, perm, axis=0), batch)
            mbs = jax.tree.map(lambda x: x.reshape((num_mb, -1, *x.shape[1:])), batch)
            (params, opt_state), loss = jax.lax.scan(
                minibatch_step, (params, opt_state), mbs
            )
            return (params, opt_state, rng), loss

        (params, opt_state, rng), _ = jax.lax.scan(
            epoch, (r.params, r.opt_state, r.rng), None, epochs
        )
        return Runner(params, opt_state, r.env_state, r.last_obs, rng)

    def update_step(r: Runner, _):
        r, traj = rollout(r)
        return learn(r, traj), traj.info

    def init(key: jax.Array) -> Runner:
        key, net_key = jax.random.split(key)
        params = init_network(net_key, 4, 2, c["hidden"])
        key, reset_key = jax.random.split(key)
        obs, env_state = jax.vmap(cartpole_reset)(jax.random.split(reset_key, num_envs))
        key, run_key = jax.random.split(key)
        return Runner(params, tx.init(params), env_state, obs, run_key)

    def train(key: jax.Array):
        return jax.lax.scan(update_step, init(key), None, num_updates)

    # The pieces, for profiling (benchmarks.ppo_profile).
    train.init, train.rollout, train.learn = init, rollout, learn
    train.update_step = update_step
    train.num_updates = num_updates
    train.env_steps = num_updates * batch_size
    return train


def evaluate(params: Any, key: jax.Array, num_episodes: int = 20) -> jax.Array:
    """Mean greedy (argmax) return of `num_episodes` fresh episodes; jittable."""
    obs, ls = jax.vmap(cartpole_reset)(jax.random.split(key, num_episodes))

    def cond(carry):
        t, _, _, _, active = carry
        return (t < MAX_STEPS) & jnp.any(active)

    def body(carry):
        t, obs, ls, returns, active = carry
        action = jnp.argmax(apply_network(params, obs)[0], axis=-1)
        keys = jax.random.split(jax.random.fold_in(key, t), num_episodes)
        obs, ls, reward, done, _ = jax.vmap(cartpole_step)(keys, ls, action)
        return t + 1, obs, ls, returns + jnp.where(active, reward, 0.0), active & ~done

    zeros = jnp.zeros(num_episodes)
    carry = (0, obs, ls, zeros, jnp.ones(num_episodes, bool))
    return jnp.mean(jax.lax.while_loop(cond, body, carry)[3])


# ------------------------------------------------------------------ jobs


def throughput(
    seed: int, total_env_steps: int = 500_000, eval_episodes: int = 20, **config: Any
) -> dict[str, Any]:
    """Benchmark job: compile, run one seed, greedy evaluation."""
    from benchmarks.common import since_start

    import_s = since_start()
    train = make_train(total_timesteps=total_env_steps, **config)
    key = jax.random.PRNGKey(seed)
    t0 = time.perf_counter()
    compiled = jax.jit(train).lower(key).compile()
    t1 = time.perf_counter()
    runner, _ = jax.block_until_ready(compiled(key))
    t2 = time.perf_counter()
    eval_key = jax.random.PRNGKey(10_000 + seed)
    ret = float(
        jax.jit(evaluate, static_argnums=2)(runner.params, eval_key, eval_episodes)
    )
    return {
        "import_s": import_s,
        "compile_s": t1 - t0,
        "run_s": t2 - t1,
        "env_steps": train.env_steps,
        "steps_per_s": train.env_steps / (t2 - t1),
        "returns": [ret],
    }


def time_to_solve(
    seed: int,
    threshold: float = 475.0,
    eval_episodes: int = 20,
    purejaxrl_imports: bool = False,
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """Benchmark job: what a PureJaxRL user waits for, from process start.

    PureJaxRL trains its whole budget in one call, then one looks at the
    policy: import, compile, run 5e5 steps, evaluate greedily. With
    `purejaxrl_imports` the modules its script imports (flax, distrax, gymnax)
    are imported first, as its script does (in the rejax virtualenv, where
    they are installed).
    """
    from benchmarks.common import enable_compilation_cache, since_start

    if purejaxrl_imports:
        import distrax  # noqa: F401
        import flax.linen  # noqa: F401
        import gymnax  # noqa: F401
    if cache_dir:
        enable_compilation_cache(cache_dir)
    imported = since_start()
    train = make_train()
    key = jax.random.PRNGKey(seed)
    compiled = jax.jit(train).lower(key).compile()
    compiled_at = since_start()
    runner, _ = jax.block_until_ready(compiled(key))
    trained_at = since_start()
    eval_key = jax.random.PRNGKey(10_000 + seed)
    ret = float(
        jax.jit(evaluate, static_argnums=2)(runner.params, eval_key, eval_episodes)
    )
    done_at = since_start()
    return {
        "import_s": imported,
        "compile_s": compiled_at - imported,
        "run_s": trained_at - compiled_at,
        "eval_s": done_at - trained_at,
        "env_steps": train.env_steps,
        "final_return": ret,
        "solved": ret >= threshold,
        "solved_s": done_at if ret >= threshold else float("nan"),
    }


if __name__ == "__main__":
    print(throughput(0))
