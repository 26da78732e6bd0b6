"""PPO training loops: resumability, seeds under vmap, metrics, host trainer.

Compiling is most of the cost here, so the tests share a few small programs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import agents.ppo
from agents.envs import GymnasiumVecEnv
from agents.ppo import (
    HostRunnerState,
    HostTrainer,
    PPOConfig,
    RunnerState,
    make_host_train,
    make_train,
)
from agents.ppo.training import make_on_policy_train

OPT = {"name": "adam", "learning_rate": 1e-3, "eps": 1e-5}
# Tiny: 2 envs x 8 steps, annealed learning rate and clip range.
CONFIG = PPOConfig(
    num_steps=8,
    update_epochs=2,
    num_minibatches=2,
    hidden=(8,),
    clip_eps_schedule="linear",
)
NUM_UPDATES = 4


@pytest.fixture(scope="module")
def trainer():
    return make_train(
        "CartPole-v1", CONFIG, OPT, num_envs=2, total_env_steps=16 * NUM_UPDATES
    )


@pytest.fixture(scope="module")
def host_trainer():
    with make_host_train(
        "CartPole-v1", CONFIG, OPT, num_envs=2, total_env_steps=16 * NUM_UPDATES
    ) as trainer:
        yield trainer


def _assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_chunked_runs_equal_one_run(trainer):
    state = trainer.init(jax.random.PRNGKey(0))
    assert isinstance(state, RunnerState)
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(state))
    whole, metrics = trainer.run(state, NUM_UPDATES)
    part, m1 = trainer.run(state, 2)
    part, m2 = trainer.run(part, 2)
    _assert_trees_equal(whole, part)
    joined = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), m1, m2)
    _assert_trees_equal(metrics, joined)
    # `train` is `init` then `run` over the whole budget.
    trained, train_metrics = trainer.train(jax.random.PRNGKey(0))
    _assert_trees_equal(trained, whole)
    _assert_trees_equal(train_metrics, metrics)


def test_metrics_and_schedules(trainer):
    state, metrics = trainer.train(jax.random.PRNGKey(1))
    for key in ("loss", "entropy", "approx_kl", "episode_return", "episodes"):
        assert metrics[key].shape == (NUM_UPDATES,)
    np.testing.assert_array_equal(metrics["env_steps"], 16 * np.arange(1, 5))
    assert trainer.num_updates == NUM_UPDATES and trainer.steps_per_update == 16
    assert int(state.update) == int(state.agent.update_count) == NUM_UPDATES
    # Linear annealing over the run, from the global update count.
    frac = 1.0 - np.arange(NUM_UPDATES) / NUM_UPDATES
    np.testing.assert_allclose(metrics["learning_rate"], 1e-3 * frac, rtol=1e-5)
    np.testing.assert_allclose(metrics["clip_eps"], 0.2 * frac, rtol=1e-5)
    # Episodes of a random policy: some end within 64 steps, each >= 8 steps.
    finite = np.isfinite(metrics["episode_return"])
    assert metrics["episodes"].sum() > 0
    assert np.all(metrics["episode_return"][finite] >= 8)
    assert np.all(metrics["episodes"][~finite] == 0)
    done_returns = np.asarray(state.episode_return)
    assert np.all(np.isnan(done_returns) | (done_returns >= 8))


def test_vmap_over_seeds_equals_single_seed_runs(trainer):
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    batched = jax.jit(jax.vmap(trainer.train))(keys)
    for i in range(2):
        single = trainer.train(keys[i])
        for x, y in zip(jax.tree.leaves(batched), jax.tree.leaves(single), strict=True):
            np.testing.assert_allclose(x[i], y, rtol=2e-5, atol=1e-6)


def test_evaluate_greedy_return(trainer):
    state = trainer.init(jax.random.PRNGKey(0))
    value = trainer.evaluate(state.agent, jax.random.PRNGKey(1), num_episodes=4)
    assert value.shape == () and 8 <= float(value) <= 500
    again = trainer.evaluate(state.agent, jax.random.PRNGKey(1), num_episodes=4)
    assert float(again) == float(value)
    # Compiled with less optimisation at the top level (`jit_rarely_run`), it
    # still nests in another jit (where XLA takes no per-function options).
    nested = jax.jit(lambda a, k: trainer.evaluate(a, k, num_episodes=4))
    assert 8 <= float(nested(state.agent, jax.random.PRNGKey(1))) <= 500
    jax.jit(trainer.init)(jax.random.PRNGKey(0))


def test_notebook_one_liner_learns_catch():
    config = dict(num_steps=16, num_minibatches=4, hidden=[32], ent_coef=0.0)
    agent_state, metrics = agents.ppo.train(
        "Catch", 16_000, seed=0, num_envs=8, learning_rate=3e-3, **config
    )
    assert isinstance(metrics["loss"], np.ndarray)
    assert metrics["loss"].shape == (125,)
    assert int(agent_state.update_count) == 125
    # Random play catches 1 ball in 5 (mean return -0.6); PPO learns to catch.
    assert np.nanmean(metrics["episode_return"][:5]) < 0
    assert np.nanmean(metrics["episode_return"][-10:]) > 0.5


def test_unrolled_rollout_gives_the_same_run(trainer):
    # 3 steps per trip of an 8-step rollout: two full trips and a remainder.
    unrolled = make_train(
        "CartPole-v1",
        CONFIG,
        OPT,
        num_envs=2,
        total_env_steps=16 * NUM_UPDATES,
        rollout_unroll=3,
    )
    state = trainer.init(jax.random.PRNGKey(3))
    _assert_trees_equal(unrolled.init(jax.random.PRNGKey(3)), state)
    expected = trainer.run(state, NUM_UPDATES)
    got = unrolled.run(state, NUM_UPDATES)
    assert got[1]["loss"].shape == (NUM_UPDATES,)
    _assert_trees_equal(got, expected)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="rollout_unroll"):
            make_train(
                "CartPole-v1",
                CONFIG,
                OPT,
                num_envs=2,
                total_env_steps=16 * NUM_UPDATES,
                rollout_unroll=bad,
            )


def test_bad_budgets_and_minibatches_name_the_field():
    with pytest.raises(ValueError, match="agent.num_minibatches"):
        make_train(
            "CartPole-v1",
            PPOConfig(num_minibatches=3),
            OPT,
            num_envs=4,
            total_env_steps=1e4,
        )
    with pytest.raises(ValueError, match="env_steps"):
        make_train("CartPole-v1", PPOConfig(), OPT, num_envs=4, total_env_steps=100)


def test_host_trainer_on_gymnasium(host_trainer, trainer):
    state = host_trainer.init(jax.random.PRNGKey(0))
    assert isinstance(state, HostRunnerState)
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(state))
    state, m1 = host_trainer.run(state, 2)
    state, m2 = host_trainer.run(state, 2)
    assert int(state.env_steps) == 64 and int(state.agent.update_count) == 4
    _, jax_metrics = trainer.train(jax.random.PRNGKey(0))
    assert set(m1) == set(jax_metrics)
    assert m1["loss"].shape == (2,)
    np.testing.assert_allclose(m2["learning_rate"], 1e-3 * np.array([0.5, 0.25]))
    assert m1["episodes"].sum() + m2["episodes"].sum() > 0
    value = host_trainer.evaluate(state.agent, jax.random.PRNGKey(0), num_episodes=3)
    assert 8 <= value <= 500


def test_host_trainer_resets_environments_for_a_restored_state(
    host_trainer, monkeypatch
):
    state = host_trainer.init(jax.random.PRNGKey(0))
    state, _ = host_trainer.run(state, 1)
    resets = []
    reset = host_trainer.env.reset
    monkeypatch.setattr(
        host_trainer.env, "reset", lambda **kw: resets.append(kw) or reset(**kw)
    )
    state, _ = host_trainer.run(state, 1)  # The live state: same episodes.
    assert resets == []
    restored = jax.tree.map(np.array, state)  # As if read from a checkpoint.
    restored, metrics = host_trainer.run(HostRunnerState(*restored), 1)
    assert len(resets) == 1
    assert int(restored.update) == 3 and metrics["loss"].shape == (1,)


def test_host_trainer_rollout_is_what_the_environments_and_policy_gave(
    host_trainer, monkeypatch
):
    """The host trainer acts with the policy alone and computes log pi(a|s) and
    v(s) of the whole rollout in its update: they must equal the per-step
    values of the params it acted with; the transitions are the environments'
    own, and each environment's last finished return is kept."""
    seen, steps = [], []
    agent = host_trainer.agent

    def recording_update(agent_state, trajectory, key, **kw):
        jax.debug.callback(
            lambda *a: seen.append(a), agent_state.params, trajectory, ordered=True
        )
        return agent.update(agent_state, trajectory, key, **kw)

    env = GymnasiumVecEnv("CartPole-v1", 2)
    step = env.step

    def recording_step(action):
        out = step(action)
        steps.append((np.array(action), *(np.array(x) for x in out[:4]), out[4]))
        return out

    monkeypatch.setattr(env, "step", recording_step)
    recorder = HostTrainer(
        env,
        agent._replace(update=recording_update),
        num_steps=host_trainer.num_steps,
        num_updates=host_trainer.num_updates,
    )
    state = recorder.init(jax.random.PRNGKey(3))
    first_obs = recorder._obs.copy()
    num_updates = 3
    with recorder:
        state, _ = recorder.run(state, num_updates)
    net = agent.networks
    t_len = recorder.num_steps
    assert len(seen) == num_updates and len(steps) == num_updates * t_len
    obs = first_obs
    for u, (params, traj) in enumerate(seen):
        chex_shapes = {k: np.shape(v) for k, v in traj._asdict().items()}
        assert chex_shapes["log_prob"] == chex_shapes["value"] == (t_len, 2)
        for t in range(t_len):
            action, next_obs, reward, term, trunc, info = steps[u * t_len + t]
            np.testing.assert_array_equal(traj.obs[t], obs)
            np.testing.assert_array_equal(traj.action[t], action)
            np.testing.assert_array_equal(traj.reward[t], reward)
            np.testing.assert_array_equal(traj.terminated[t], term)
            np.testing.assert_array_equal(traj.truncated[t], trunc)
            np.testing.assert_array_equal(traj.final_obs[t], info["final_obs"])
            out = net.policy(params, obs)
            np.testing.assert_allclose(
                traj.log_prob[t], net.dist.log_prob(out, action), rtol=1e-5, atol=1e-6
            )
            np.testing.assert_allclose(
                traj.value[t], net.value(params, obs), rtol=1e-5, atol=1e-6
            )
            obs = next_obs
    # Last finished episode's return per environment (NaN: none yet).
    want = np.full(2, np.nan, np.float32)
    for _, _, _, term, trunc, info in steps:
        want = np.where(term | trunc, info["episode_return"], want)
    assert np.isfinite(want).any()
    np.testing.assert_array_equal(np.asarray(state.episode_return), want)


def test_jax_loop_rollout_values_are_the_acting_params_values():
    """The JAX-env loop computes v(obs) of a rollout in one batched pass after
    its steps: the values (and log pi(a|s)) must be those of the params it
    acted with, step by step, as the per-step critic would give them."""
    seen = []
    env = agents.envs.make("CartPole-v1", max_episode_steps=10)  # Resets inside.
    agent = agents.ppo.ppo(
        CONFIG, env.observation_spec, env.action_spec, optax.adam(1e-3), num_updates=3
    )

    def recording_update(agent_state, trajectory, key, **kw):
        jax.debug.callback(
            lambda *a: seen.append(a), agent_state.params, trajectory, ordered=True
        )
        return agent.update(agent_state, trajectory, key, **kw)

    recorder = make_on_policy_train(
        env,
        agent._replace(update=recording_update),
        num_envs=2,
        num_steps=CONFIG.num_steps,
        num_updates=3,
    )
    state, metrics = recorder.train(jax.random.PRNGKey(5))
    assert len(seen) == 3 and int(metrics["episodes"].sum()) > 0
    net = agent.networks
    for params, traj in seen:
        assert np.shape(traj.value) == np.shape(traj.log_prob) == (CONFIG.num_steps, 2)
        for t in range(CONFIG.num_steps):
            out = net.policy(params, traj.obs[t])
            np.testing.assert_allclose(
                traj.log_prob[t],
                net.dist.log_prob(out, traj.action[t]),
                rtol=1e-5,
                atol=1e-6,
            )
            np.testing.assert_allclose(
                traj.value[t], net.value(params, traj.obs[t]), rtol=1e-5, atol=1e-6
            )
    # Successive updates see successive params (the rollout acted with the
    # state the update then started from).
    first, second = (jax.tree.leaves(p)[0] for p, _ in seen[:2])
    assert not np.array_equal(first, second)


def test_host_evaluation_compiles_its_greedy_policy_once(host_trainer):
    from agents.ppo import host

    state = host_trainer.init(jax.random.PRNGKey(0))
    host_trainer.evaluate(state.agent, jax.random.PRNGKey(1), num_episodes=3)
    compiled = host._greedy_action._cache_size()
    host_trainer.evaluate(state.agent, jax.random.PRNGKey(2), num_episodes=3)
    assert host._greedy_action._cache_size() == compiled
    # One evaluation environment per episode (all episodes in one round).
    assert host_trainer._eval_env.num_envs == 3


# ------------------------------------------------------------------ early stop


def _scripted(trainer, returns):
    """`trainer` whose greedy evaluations return `returns`, one per call."""
    calls = iter(returns)

    def evaluate(agent_state, key, *, num_episodes=10):
        assert num_episodes == 3
        return jnp.float32(next(calls))

    return trainer._replace(evaluate=evaluate)


def test_train_until_stops_at_the_first_evaluation_reaching_the_target(trainer):
    key = jax.random.PRNGKey(0)
    scripted = _scripted(trainer, [10.0, 30.0, 20.0, 40.0])
    state, metrics = scripted.train_until(
        key, target_return=25.0, eval_every=1, eval_episodes=3
    )
    assert int(state.update) == 2
    np.testing.assert_array_equal(metrics["eval_return"], [10.0, 30.0])
    assert all(v.shape == (2,) for v in metrics.values())
    # The updates done are the first ones of the whole run, bit for bit.
    whole, whole_metrics = trainer.run(trainer.init(key), 2)
    _assert_trees_equal(state, whole)
    for k, v in whole_metrics.items():
        np.testing.assert_array_equal(metrics[k], v)


def test_train_until_runs_the_budget_when_the_target_is_not_reached(trainer):
    key = jax.random.PRNGKey(0)
    state, metrics = trainer.train_until(
        key, target_return=1e9, eval_every=3, eval_episodes=3
    )
    # Chunks of 3 and 1 updates, a real greedy evaluation after each.
    assert int(state.update) == NUM_UPDATES
    evals = metrics["eval_return"]
    assert evals.shape == (NUM_UPDATES,)
    assert np.isnan(evals[:2]).all() and np.all((evals[2:] >= 8) & (evals[2:] <= 500))
    expected = trainer.evaluate(
        state.agent, jax.random.fold_in(key, NUM_UPDATES), num_episodes=3
    )
    assert evals[-1] == float(expected)
    trained, train_metrics = trainer.train(key)
    _assert_trees_equal(state, trained)
    np.testing.assert_array_equal(metrics["loss"], train_metrics["loss"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"target_return": float("nan")}, "target_return"),
        ({"target_return": float("inf")}, "target_return"),
        ({"target_return": None}, "target_return"),
        ({"eval_every": 0}, "eval_every"),
        ({"eval_every": 1.5}, "eval_every"),
        ({"eval_every": True}, "eval_every"),
        ({"eval_episodes": 0}, "eval_episodes"),
    ],
)
def test_train_until_rejects_bad_arguments(trainer, kwargs, match):
    args = {"target_return": 100.0, "eval_every": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        trainer.train_until(jax.random.PRNGKey(0), **args)


def test_notebook_one_liner_early_stop():
    small = dict(num_envs=2, num_steps=8, num_minibatches=2, hidden=[8])
    agent_state, metrics = agents.ppo.train(
        "CartPole-v1", 64, target_return=0.0, eval_every=16, eval_episodes=2, **small
    )
    assert int(agent_state.update_count) == 1  # stops after the first evaluation
    assert metrics["eval_return"].shape == metrics["loss"].shape == (1,)
    assert metrics["eval_return"][0] >= 8
    with pytest.raises(ValueError, match="eval_every"):
        agents.ppo.train("CartPole-v1", 64, eval_every=16, **small)
    with pytest.raises(ValueError, match="eval_every"):
        agents.ppo.train("CartPole-v1", 64, target_return=1, eval_every=8, **small)


def test_train_until_and_train_compile_run_and_evaluate_while_init_runs(compiles):
    """`run` (and `evaluate`) compile on background threads while `init` runs,
    once each: the later calls reuse them (`jaxlab.compile`)."""
    config = PPOConfig(num_steps=8, update_epochs=1, num_minibatches=2, hidden=(4,))
    fresh = make_train("CartPole-v1", config, OPT, num_envs=2, total_env_steps=64)
    key = jax.random.PRNGKey(3)
    state, metrics = fresh.train_until(
        key, target_return=1e9, eval_every=2, eval_episodes=2
    )
    assert int(state.update) == fresh.num_updates == 4
    (run_thread,) = compiles.of("run_local")
    (eval_thread,) = compiles.of("evaluate_fn")
    (init_thread,) = compiles.of("init")
    assert run_thread.startswith("jaxlab-compile"), compiles.events
    assert eval_thread.startswith("jaxlab-compile"), compiles.events
    assert not init_thread.startswith("jaxlab-compile")
    # The whole budget in one call: its own `run` program, compiled ahead too.
    trained, _ = fresh.train(key)
    whole = compiles.of("run_local")
    assert len(whole) == 2 and whole[1].startswith("jaxlab-compile"), whole
    _assert_trees_equal(state, trained)


def test_cpu_compile_options_yield_to_xla_flags(monkeypatch):
    from jaxlab.compile import rarely_run_options, training_options

    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    assert training_options() == {"xla_backend_optimization_level": 1}
    assert rarely_run_options() == {"xla_backend_optimization_level": 0}
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=3")
    assert training_options() is None and rarely_run_options() is None
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.delenv("XLA_FLAGS")
    assert training_options() is None and rarely_run_options() is None
