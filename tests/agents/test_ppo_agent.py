"""PPO agent: truncation-aware GAE, act, update, networks and config."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pydantic
import pytest

from agents import envs
from agents.losses import ppo_loss
from agents.ppo import PPOConfig, Trajectory, ppo, truncation_aware_gae
from agents.ppo.networks import actor_critic
from jaxlab.config import parse_yaml
from jaxlab.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
TINY = PPOConfig(
    hidden=(16,), num_steps=8, update_epochs=2, num_minibatches=2, anneal_lr=False
)


def _np_gae(r, term, trunc, v, v_final, gamma, lam):
    """Reference: per-env backward recursion with explicit next-state values."""
    T, B = r.shape
    adv = np.zeros((T, B))
    for b in range(B):
        a_next = 0.0
        for t in reversed(range(T)):
            done = term[t, b] or trunc[t, b]
            # True next state: final_obs; worth nothing if terminal.
            next_v = 0.0 if term[t, b] else v_final[t, b]
            delta = r[t, b] + gamma * next_v - v[t, b]
            a_next = delta + (0.0 if done else gamma * lam * a_next)
            adv[t, b] = a_next
    return adv, adv + v


@pytest.mark.parametrize("jit", [False, True])
def test_truncation_aware_gae_matches_numpy(jit):
    rng = np.random.default_rng(0)
    T, B, gamma, lam = 12, 3, 0.9, 0.8
    r = rng.normal(size=(T, B)).astype(np.float32)
    v = rng.normal(size=(T, B)).astype(np.float32)
    term = rng.random((T, B)) < 0.15
    trunc = rng.random((T, B)) < 0.15
    trunc[-1, 0], term[-1, 0] = True, False  # truncated at the rollout's end
    trunc[4, 1], term[4, 1] = True, True  # both: terminal wins
    # Where no episode ended, final_obs is the next obs, so v_final = v[t + 1].
    v_final = np.concatenate([v[1:], rng.normal(size=(1, B))]).astype(np.float32)
    v_final = np.where(term | trunc, rng.normal(size=(T, B)), v_final)
    v_final = v_final.astype(np.float32)

    fn = lambda *a: truncation_aware_gae(*a, gamma=gamma, lambda_=lam)
    fn = jax.jit(fn) if jit else fn
    adv, ret = fn(r, term, trunc, v, v_final)
    want_adv, want_ret = _np_gae(r, term, trunc, v, v_final, gamma, lam)
    np.testing.assert_allclose(adv, want_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, want_ret, rtol=1e-5, atol=1e-5)


def test_truncation_bootstraps_where_termination_does_not():
    r = np.ones((1, 2), np.float32)
    v = np.zeros((1, 2), np.float32)
    v_final = np.full((1, 2), 10.0, np.float32)
    term = np.array([[True, False]])
    trunc = np.array([[False, True]])
    adv, _ = truncation_aware_gae(r, term, trunc, v, v_final, gamma=0.5, lambda_=1.0)
    np.testing.assert_allclose(adv, [[1.0, 6.0]])


def _agent(env, config=TINY, lr=3e-3):
    return ppo(config, env.observation_spec, env.action_spec, optax.adam(lr))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_act_jit_matches_no_jit_and_deterministic_is_mode(env_id):
    env = envs.make(env_id)
    agent = _agent(env)
    obs, _ = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), 5))
    state = jax.jit(agent.init)(jax.random.PRNGKey(1), obs)
    key = jax.random.PRNGKey(2)
    eager = agent.act(state, key, obs)
    jitted = jax.jit(agent.act)(state, key, obs)
    for a, b in zip(eager, jitted, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    action, log_prob, value = eager
    assert log_prob.shape == value.shape == (5,)

    greedy, _, _ = agent.act(state, key, obs, deterministic=True)
    out = agent.networks.policy(state.params, obs)
    if env.action_spec.is_discrete:
        assert action.dtype == jnp.int32 and action.shape == (5,)
        np.testing.assert_array_equal(greedy, jnp.argmax(out, axis=-1))
    else:
        assert action.shape == (5, 1)
        np.testing.assert_array_equal(greedy, out[0])
        assert not np.allclose(action, greedy)  # sampling adds noise


def test_separate_orthogonally_initialised_networks():
    env = envs.make("CartPole-v1")
    nets = actor_critic(env.observation_spec, env.action_spec, hidden=(16,))
    params = jax.jit(nets.init)(jax.random.PRNGKey(0), jnp.zeros((1, 4)))
    assert set(params) == {"actor", "critic"}
    for net in ("actor", "critic"):
        w = np.asarray(params[net]["linear_0"]["w"])  # [4, 16]: orthogonal rows
        np.testing.assert_allclose(w @ w.T, 2.0 * np.eye(4), atol=1e-5)
        assert not np.any(np.asarray(params[net]["linear_0"]["b"]))
    actor_head = np.asarray(params["actor"]["head"]["w"])  # [16, 2], gain 0.01
    np.testing.assert_allclose(actor_head.T @ actor_head, 1e-4 * np.eye(2), atol=1e-9)
    critic_head = np.asarray(params["critic"]["head"]["w"])  # [16, 1], gain 1
    np.testing.assert_allclose(np.linalg.norm(critic_head), 1.0, rtol=1e-5)
    assert not np.allclose(params["actor"]["linear_0"]["w"], w)


def test_gaussian_log_prob_and_entropy_are_consistent():
    spec = envs.box_spec((2,), minimum=-1.0, maximum=1.0)
    nets = actor_critic(spec, spec, hidden=(8,), log_std_init=-0.5)
    obs = jax.random.normal(jax.random.PRNGKey(0), (3, 2))
    a = jnp.array([[0.3, -0.2], [1.0, 0.0], [-2.0, 0.5]])

    @jax.jit
    def compute(key):
        params = nets.init(key, obs)
        out = nets.policy(params, obs)
        # Entropy = E[-log p(a)] under the policy's own samples.
        keys = jax.random.split(key, 4000)
        samples = jax.vmap(lambda k: nets.dist.sample(k, out))(keys)
        mc = -jnp.mean(jax.vmap(lambda x: nets.dist.log_prob(out, x))(samples), 0)
        return out, nets.dist.log_prob(out, a), nets.dist.entropy(out), mc

    (mean, log_std), log_prob, entropy, mc_entropy = compute(jax.random.PRNGKey(1))
    np.testing.assert_allclose(log_std, [-0.5, -0.5])
    std = np.exp(-0.5)
    want = np.sum(
        -0.5 * ((np.asarray(a) - np.asarray(mean)) / std) ** 2
        - np.log(std)
        - 0.5 * np.log(2 * np.pi),
        axis=-1,
    )
    np.testing.assert_allclose(log_prob, want, rtol=1e-5)
    np.testing.assert_allclose(entropy, 2 * (0.5 + 0.5 * math.log(2 * math.pi) - 0.5))
    np.testing.assert_allclose(mc_entropy, entropy, atol=0.06)


def _fixed_trajectory(env, agent, state, T=8, B=4, seed=0):
    """A rollout of the initial policy (one jitted scan), with forced episode
    ends: every environment terminates at t = 3 and is truncated at t = 5."""

    def step(carry, inputs):
        key, t = inputs
        obs, env_state = carry
        k1, k2 = jax.random.split(key)
        action, log_prob, value = agent.act(state, k1, obs)
        ts = jax.vmap(env.step)(jax.random.split(k2, B), env_state, action)
        transition = Trajectory(
            obs,
            action,
            log_prob,
            value,
            ts.reward,
            ts.terminated | (t == 3),
            ts.truncated | (t == 5),
            ts.info["final_obs"],
        )
        return (ts.obs, ts.state), transition

    @jax.jit
    def rollout(key):
        reset_key, key = jax.random.split(key)
        carry = jax.vmap(env.reset)(jax.random.split(reset_key, B))
        inputs = (jax.random.split(key, T), jnp.arange(T))
        return jax.lax.scan(step, carry, inputs)[1]

    return rollout(jax.random.PRNGKey(seed))


def _full_batch_loss(agent, config, params, trajectory, advantage, returns):
    """PPO's loss on the whole batch, with the targets fixed before the update."""
    flat = lambda x: x.reshape(-1, *x.shape[2:])
    out = agent.networks.policy(params, flat(trajectory.obs))
    values = agent.networks.value(params, flat(trajectory.obs))
    return ppo_loss(
        agent.networks.dist.log_prob(out, flat(trajectory.action)),
        flat(trajectory.log_prob),
        flat(advantage),
        values,
        flat(trajectory.value),
        flat(returns),
        agent.networks.dist.entropy(out),
        clip_eps=config.clip_eps,
        value_clip_eps=config.clip_eps,
        value_coef=config.vf_coef,
        entropy_coef=config.ent_coef,
    )


def test_update_on_fixed_data_reduces_the_loss():
    env = envs.make("CartPole-v1")
    config = PPOConfig(
        hidden=(16,), update_epochs=10, num_minibatches=2, anneal_lr=False
    )
    agent = _agent(env, config, lr=3e-3)
    state = jax.jit(agent.init)(jax.random.PRNGKey(0), jnp.zeros((1, 4)))
    trajectory = _fixed_trajectory(env, agent, state)

    @jax.jit
    def loss(params_0, params):
        """The full-batch loss at `params`, with targets from `params_0`."""
        v_final = jax.vmap(agent.networks.value, in_axes=(None, 0))(
            params_0, trajectory.final_obs
        )
        advantage, returns = truncation_aware_gae(
            trajectory.reward,
            trajectory.terminated,
            trajectory.truncated,
            trajectory.value,
            v_final,
            gamma=config.gamma,
            lambda_=config.gae_lambda,
        )
        return _full_batch_loss(agent, config, params, trajectory, advantage, returns)

    loss0, metrics0 = loss(state.params, state.params)
    # One update = 10 epochs of minibatch steps on the same data.
    new_state, metrics = jax.jit(agent.update)(state, trajectory, jax.random.PRNGKey(1))
    loss1, metrics1 = loss(state.params, new_state.params)
    assert float(loss1) < float(loss0) - 1e-3
    assert float(metrics1["policy_loss"]) < float(metrics0["policy_loss"])
    assert float(metrics1["value_loss"]) < float(metrics0["value_loss"])
    assert int(new_state.update_count) == 1
    assert set(metrics) >= {
        "loss",
        "policy_loss",
        "value_loss",
        "entropy",
        "approx_kl",
        "clip_fraction",
        "grad_norm",
        "learning_rate",
        "clip_eps",
    }
    # A plain optax optimizer stores no learning rate to report.
    assert np.isnan(metrics.pop("learning_rate"))
    assert all(np.isfinite(float(v)) for v in metrics.values())


def test_update_rejects_indivisible_minibatches():
    env = envs.make("CartPole-v1")
    agent = _agent(env, PPOConfig(hidden=(8,), num_minibatches=3, anneal_lr=False))
    T, B = 4, 2
    zeros = jnp.zeros((T, B))
    flags = jnp.zeros((T, B), bool)
    obs = jnp.zeros((T, B, 4))
    trajectory = Trajectory(
        obs, zeros.astype(jnp.int32), zeros, zeros, zeros, flags, flags, obs
    )
    with pytest.raises(ValueError, match="num_minibatches"):
        agent.update(None, trajectory, jax.random.PRNGKey(0))


def test_annealing_needs_the_run_length():
    env = envs.make("CartPole-v1")
    with pytest.raises(ValueError, match="anneal_lr"):
        ppo(PPOConfig(), env.observation_spec, env.action_spec, optax.adam(1e-3))
    with pytest.raises(ValueError, match="clip_eps_schedule"):
        config = PPOConfig(anneal_lr=False, clip_eps_schedule="linear")
        ppo(config, env.observation_spec, env.action_spec, optax.adam(1e-3))


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("num_steps", 0, "num_steps"),
        ("gamma", 1.5, "gamma"),
        ("clip_eps_schedule", "cosine", "clip_eps_schedule"),
        ("hidden", [64, -1], "hidden"),
        ("activation", "nope", "activation"),
        ("value_clip", "yes", "value_clip"),
        ("bogus", 1, "bogus"),
    ],
)
def test_config_errors_name_the_field(field, value, match):
    with pytest.raises(pydantic.ValidationError, match=match):
        PPOConfig(**{field: value})


def test_dict_configs_are_validated_with_the_agent_prefix():
    from agents.ppo import make_train

    with pytest.raises(ConfigError, match=r"agent\.clip_eps: "):
        make_train(
            "CartPole-v1", {"clip_eps": -1.0}, {}, num_envs=4, total_env_steps=1e4
        )


def test_config_is_frozen_and_hashable():
    config = PPOConfig(hidden=[32, 32])
    assert config.hidden == (32, 32)
    hash(config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.num_steps = 3


@pytest.mark.parametrize(
    "name", ["cartpole_ppo", "cartpole_ppo_zoo", "pendulum_ppo", "cartpole_a2c"]
)
def test_yaml_configs_validate(name):
    from agents.a2c import A2CConfig

    raw = parse_yaml((REPO / "configs" / f"{name}.yaml").read_text())
    assert raw["kind"] == "rl"
    agent = dict(raw["agent"])
    config = {"ppo": PPOConfig, "a2c": A2CConfig}[agent["name"]](**agent)
    batch = raw["env"]["num_envs"] * config.num_steps
    assert batch % getattr(config, "num_minibatches", 1) == 0


@pytest.mark.parametrize(
    "env_id, critic", [("CartPole-v1", True), ("Pendulum-v1", True), ("Catch", False)]
)
def test_init_makes_haikus_parameter_tree(env_id, critic):
    # `init` builds the parameters itself (one normal draw, cheap to compile);
    # they must be what the Haiku networks it applies expect.
    import haiku as hk

    from agents.ppo import networks

    env = envs.make(env_id)
    spec = env.action_spec
    nets = actor_critic(env.observation_spec, spec, hidden=(16, 8), critic=critic)
    obs = jnp.zeros((3, *env.observation_spec.shape))  # Catch: [3, 10, 5] images
    params = jax.jit(nets.init)(jax.random.PRNGKey(0), obs)
    num_out = spec.num_values if spec.is_discrete else spec.shape[0]

    def haiku_actor(o):
        out = networks._mlp(o, (16, 8), "tanh", num_out, 0.01)
        if not spec.is_discrete:
            hk.get_parameter("log_std", (num_out,), init=jnp.zeros)
        return out

    key = jax.random.PRNGKey(1)
    reference = {"actor": hk.transform(haiku_actor).init(key, obs), "critic": {}}
    if critic:
        reference["critic"] = hk.transform(
            lambda o: networks._mlp(o, (16, 8), "tanh", 1, 1.0)
        ).init(key, obs)
    shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)
    assert shapes(params) == shapes(reference)
    nets.policy(params, obs), nets.value(params, obs)  # applies


def test_orthogonal_init_has_haikus_distribution():
    # Same law as hk.initializers.Orthogonal: compare moments over many draws.
    from agents.ppo.networks import orthogonal_from_normal

    def ours(key):
        return orthogonal_from_normal(jax.random.normal(key, (12,)), (4, 3), 2.0)

    def haiku(key):
        import haiku as hk

        init = hk.transform(
            lambda: hk.initializers.Orthogonal(2.0)((4, 3), jnp.float32)
        )
        return init.apply({}, key)

    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    a, b = np.asarray(jax.vmap(ours)(keys)), np.asarray(jax.vmap(haiku)(keys))
    np.testing.assert_allclose(
        np.einsum("nij,nik->njk", a, a)[0], 4 * np.eye(3), atol=1e-4
    )
    # Entries: mean 0, E[w^2] = gain^2 / 4 (columns of norm 2 over 4 rows).
    np.testing.assert_allclose(a.mean(0), 0.0, atol=0.06)
    np.testing.assert_allclose((a**2).mean(0), 1.0, atol=0.06)
    np.testing.assert_allclose((a**2).mean(0), (b**2).mean(0), atol=0.08)
    np.testing.assert_allclose((a**4).mean(0), (b**4).mean(0), atol=0.15)
