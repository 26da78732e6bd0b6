"""Data-parallel ("Anakin") RL training: PPO, A2C and DQN on several devices.

The multi-device checks run in subprocesses with 8 forced CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8), since the device count is
fixed when JAX starts; the rest runs here on the one default device.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO

from agents import a2c, data_parallel, dqn, envs, ppo
from agents.ppo.networks import categorical, gaussian

PRELUDE = """
import jax, numpy as np, chex

def assert_params_close(a, b, rtol=1e-5):
    # Relative to each leaf's largest entry, as tests/jaxlab/test_data_parallel.
    chex.assert_trees_all_equal_shapes_and_dtypes(a, b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        np.testing.assert_array_equal(np.isnan(x), np.isnan(y))
        x, y = np.nan_to_num(x), np.nan_to_num(y)
        scale = max(np.max(np.abs(x), initial=0.0), 1e-12)
        assert np.max(np.abs(x - y), initial=0.0) <= rtol * scale, (x, y)

def assert_metrics_close(a, b):
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)

def assert_replicas_in_sync(tree):
    # Replicated leaves keep one buffer per device: all must be identical.
    for x in jax.tree.leaves(tree):
        shards = [np.asarray(s.data) for s in x.addressable_shards]
        assert len(shards) > 1 and all(np.array_equal(s, shards[0]) for s in shards)

def concat(chunks):
    return jax.tree.map(lambda *xs: np.concatenate(xs), *jax.device_get(chunks))

def expect_error(fn, message):
    try:
        fn()
    except ValueError as e:
        assert message in str(e), str(e)
    else:
        raise AssertionError("no error: " + message)
"""

ON_POLICY = """
import sys
assert jax.device_count() == 8, jax.devices()
from agents import a2c, ppo
name = sys.argv[1]
# Every device count and backend; each compile costs seconds on CPU, so A2C
# (whose update shares PPO's loop and backends) takes a subset.
if name == "ppo":
    module = ppo
    config = ppo.PPOConfig(num_steps=16, num_minibatches=4, update_epochs=2)
    setups = [(2, "pmap"), (4, "shard_map"), (8, "pmap"), (8, "shard_map")]
else:
    module = a2c
    config = a2c.A2CConfig(num_steps=16, normalize_advantages=True)
    setups = [(2, "shard_map"), (4, "pmap"), (8, "shard_map")]
optimizer = {"name": "adam", "learning_rate": 1e-3}
key = jax.random.key(0)

def make(num_devices, backend="pmap", num_envs=8):
    devices = None if num_devices is None else jax.devices()[:num_devices]
    return module.make_train("CartPole-v1", config, optimizer, num_envs=num_envs,
                             total_env_steps=num_envs * 16 * 6, devices=devices,
                             backend=backend)

expect_error(lambda: make(4, num_envs=6),
             "env.num_envs: 6 environments cannot be split evenly across 4 devices")
expect_error(lambda: make(2, backend="pjit"), "parallel.backend")
if name == "ppo":  # 8 envs * 16 steps / 4 minibatches = 32 rows per minibatch
    config = ppo.PPOConfig(num_steps=16, num_minibatches=32, update_epochs=2)
    expect_error(lambda: make(8), "agent.num_minibatches")
    config = ppo.PPOConfig(num_steps=16, num_minibatches=4, update_epochs=2)

# One device, in two chunks of 3 updates (== one run of 6, tested elsewhere).
one = make(None)
assert one.num_devices == 1
init = one.init(key)
mid, m1 = one.run(init, 3)
end, m2 = one.run(mid, 3)
ref = one.to_host(end)
ref_metrics = concat((m1, m2))
assert len(ref_metrics["loss"]) == 6 and int(ref.update) == 6
halfway = {1: one.to_host(mid)}
trainers = {}
for num_devices, backend in setups:
    trainer = make(num_devices, backend)
    assert trainer.num_devices == num_devices
    state = trainer.init(key)
    # The same canonical global state as on one device.
    assert_params_close(one.to_host(init), trainer.to_host(state), rtol=1e-6)
    mid, m1 = trainer.run(state, 3)
    end, m2 = trainer.run(mid, 3)
    assert_replicas_in_sync(end.agent)
    host = trainer.to_host(end)
    chex.assert_trees_all_equal_shapes_and_dtypes(host, ref)
    chex.assert_shape(host.obs, (8, 4))
    assert_params_close(ref.agent, host.agent)
    assert_params_close(ref.obs, host.obs)
    assert_metrics_close(ref_metrics, concat((m1, m2)))
    halfway[num_devices] = trainer.to_host(mid)
    trainers[num_devices] = trainer
    print(name, num_devices, backend, "ok", flush=True)

# Resume across device counts from host (checkpointed) states:
# 3 updates on 4 devices, then 3 on 1 == 6 on 8 (== 6 on 1), and so on.
resumed, _ = one.run(halfway[4], 3)
assert_params_close(ref.agent, one.to_host(resumed).agent)
resumed, _ = trainers[8].run(halfway[1], 3)
assert_params_close(ref.agent, one.to_host(resumed).agent)
resumed, _ = trainers[2].run(halfway[8], 3)
assert_params_close(ref.agent, one.to_host(resumed).agent)
print(name, "resume ok", flush=True)
if name == "ppo":
    # The RL runner jits `run` once more: jax.jit(trainer.run, static_argnums=1).
    resumed, _ = jax.jit(trainers[8].run, static_argnums=1)(halfway[1], 3)
    assert_params_close(ref.agent, jax.device_get(resumed.agent))
    print(name, "outer jit ok", flush=True)
"""

DQN = """
import optax
assert jax.device_count() == 8, jax.devices()
from agents import dqn, envs
env = envs.make("Catch", rows=5, columns=3)
config = dqn.DQNConfig(
    hidden=(32,), target_update_period=10, exploration={"steps": 1000},
    replay={"capacity": 1024, "batch_size": 32, "min_size": 64})

def make(num_devices, backend, config=config, num_envs=8):
    return dqn.make_train(env, config, optax.adam(3e-3), num_envs=num_envs,
                          total_env_steps=2000, backend=backend,
                          devices=jax.devices()[:num_devices])

expect_error(lambda: make(4, "pmap", num_envs=6), "env.num_envs: 6 environments")
bad = dqn.DQNConfig(replay={"capacity": 1022, "batch_size": 32, "min_size": 64})
expect_error(lambda: make(4, "pmap", bad), "agent.replay.capacity")
bad = dqn.DQNConfig(replay={"capacity": 1024, "batch_size": 30, "min_size": 64})
expect_error(lambda: make(4, "pmap", bad), "agent.replay.batch_size")

results = {}
for num_devices in (2, 4):
    for backend in ("pmap", "shard_map"):
        trainer = make(num_devices, backend)
        state = trainer.init(jax.random.key(0))
        state, metrics = trainer.run(state, trainer.num_iterations)
        assert_replicas_in_sync(state.agent)
        host, metrics = trainer.to_host(state), jax.device_get(metrics)
        # Canonical global state: the whole replay and all environments.
        chex.assert_shape(host.replay.data.obs, (1024, 5, 3))
        chex.assert_shape([host.obs, host.window.obs[0]], (8, 5, 3))
        chex.assert_type(host.replay.data.action, np.int32)
        # Each shard was filled equally: 2000 steps -> 1000 / 500 per shard.
        assert int(host.replay.size) == 1024 // num_devices
        assert int(host.env_steps) == 2000 and metrics["env_steps"][-1] == 2000
        for k, v in metrics.items():
            assert np.all(np.isfinite(v)), k
        assert metrics["learning"][-1] == 1 and metrics["updates"][-1] > 100
        # Mean return of the last 500 steps' episodes (epsilon 0.05 by then).
        late = slice(-500 // 8, None)
        episodes = metrics["episodes"][late]
        score = np.sum(metrics["episode_return"][late] * episodes) / np.sum(episodes)
        results[num_devices, backend] = (host, score, trainer)
        print("dqn", num_devices, backend, score, flush=True)
for num_devices in (2, 4):
    (pmap_host, score, _), (shmap_host, _, _) = (
        results[num_devices, "pmap"], results[num_devices, "shard_map"])
    assert_params_close(pmap_host.agent, shmap_host.agent)  # the backends agree
    # A uniformly random policy scores about -0.34 on this Catch.
    assert score > 0.5, (num_devices, score)
# The same state structure as on one device (typed keys stay typed keys).
single = make(1, "pmap")
assert single.num_devices == 1
host, _, _ = results[4, "pmap"]
chex.assert_trees_all_equal_shapes_and_dtypes(
    jax.eval_shape(single.init, jax.random.key(0)), host)
# A checkpoint restores on another device count (the replay read as one buffer).
trainer = results[2, "shard_map"][2]
state, metrics = trainer.run(host, trainer.num_iterations)
assert int(state.env_steps) == 4000 and np.all(np.isfinite(metrics["loss"]))
print("dqn ok", flush=True)
"""


MULTI_PROCESS = """
import os, sys
process_id, port = int(sys.argv[1]), sys.argv[2]
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize("localhost:" + port, num_processes=2, process_id=process_id)
assert jax.process_count() == 2 and len(jax.local_devices()) == 2
import numpy as np
from agents import ppo
config = ppo.PPOConfig(num_steps=16, num_minibatches=4, update_epochs=2)
optimizer = {"name": "adam", "learning_rate": 1e-3}

def make(devices, backend="pmap"):
    return ppo.make_train("CartPole-v1", config, optimizer, num_envs=8,
                          total_env_steps=8 * 16 * 4, devices=devices,
                          backend=backend)

# One device of this process alone: the reference.
one = make(None)
ref, _ = one.run(one.init(jax.random.key(0)), 4)
ref = jax.device_get(ref)
for backend in ("pmap", "shard_map"):
    trainer = make(jax.devices(), backend)  # 4 devices of 2 processes
    state = trainer.init(jax.random.key(0))
    state, _ = trainer.run(state, 2)
    host = trainer.to_host(state)  # full NumPy arrays on every process
    assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(host))
    state, metrics = trainer.run(host, 2)  # resumes from host arrays
    host = trainer.to_host(state)
    chex.assert_trees_all_equal_shapes_and_dtypes(host, ref)
    assert_params_close(ref.agent, host.agent)
    assert np.all(np.isfinite(trainer.to_host(metrics)["loss"]))
    score = trainer.evaluate(state.agent, jax.random.key(1), num_episodes=2)
    assert np.isfinite(float(score))
    print(process_id, backend, "ok", flush=True)
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _run(script: str, *args: str) -> str:
    env = {
        **os.environ,
        # Compiling dominates these tiny runs: halve it with fewer LLVM passes.
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8 "
        "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PRELUDE + script), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.parametrize("name", ["ppo", "a2c"])
def test_on_policy_runs_match_one_device(name):
    """1 vs 2/4/8 devices x pmap/shard_map: same params and metrics; the state
    is canonical and resumes across device counts."""
    out = _run(ON_POLICY, name)
    assert "resume ok" in out and ("outer jit ok" in out or name != "ppo"), out


@pytest.mark.skipif(
    not os.environ.get("JAXLAB_MULTIPROCESS_TESTS"),
    reason="about a minute on 2 cores; set JAXLAB_MULTIPROCESS_TESTS=1",
)
def test_two_processes_match_one_device():
    """jax.distributed with 2 processes x 2 CPU devices (gloo collectives):
    global states in and out, to_host gathers, run resumes from host arrays."""
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2 "
        "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
    }
    script = textwrap.dedent(PRELUDE + MULTI_PROCESS)
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(i), port],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=REPO,
        )
        for i in range(2)
    ]
    try:
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for i, (p, out) in enumerate(zip(procs, outs, strict=True)):
        assert p.returncode == 0, out
        assert f"{i} pmap ok" in out and f"{i} shard_map ok" in out, out


def test_dqn_replicated_learner_with_replay_shards():
    out = _run(DQN)
    assert "dqn ok" in out, out


# ------------------------------------------------------------ one device


def test_split_errors_name_the_field():
    with pytest.raises(ValueError, match="env.num_envs: 6 environments cannot be "
                       "split evenly across 4 devices"):  # fmt: skip
        data_parallel.split_evenly(6, 4, "env.num_envs", "environments")
    assert data_parallel.split_evenly(8, 4, "env.num_envs", "environments") == 2
    with pytest.raises(ValueError, match="parallel.backend"):
        data_parallel.resolve_devices(None, "pjit")
    device = jax.devices()[0]
    with pytest.raises(ValueError, match="parallel.devices: repeated"):
        data_parallel.resolve_devices([device, device], "pmap")
    assert data_parallel.resolve_devices([device], "shard_map") is None


def test_per_row_keys_make_each_action_depend_on_its_own_key():
    keys = jax.random.split(jax.random.key(0), 6)
    raw = jax.random.key_data(keys)  # [6, 2] uint32, as the training loops pass
    logits = jax.random.normal(jax.random.key(1), (6, 3))
    mean, log_std = jax.random.normal(jax.random.key(2), (6, 2)), jnp.ones(2)

    @jax.jit
    def check(raw, keys, logits, mean, log_std):
        # References: row i sampled alone with its own key.
        cat_ref = jnp.stack(
            [jax.random.categorical(raw[i], logits[i]) for i in range(6)]
        )
        noise = jnp.stack([jax.random.normal(raw[i], (2,)) for i in range(6)])
        return (
            categorical().sample(raw, logits),
            categorical().sample(keys, logits),
            cat_ref,
            gaussian().sample(raw, (mean, log_std)),
            mean + jnp.exp(log_std) * noise,
            gaussian().sample(raw[0], (mean, log_std)),
        )

    cat, cat_typed, cat_ref, gauss, gauss_ref, one_key = check(
        raw, keys, logits, mean, log_std
    )
    chex.assert_shape(cat, (6,))
    chex.assert_type(cat, jnp.int32)
    np.testing.assert_array_equal(cat, cat_ref)
    np.testing.assert_array_equal(cat_typed, cat_ref)
    np.testing.assert_allclose(gauss, gauss_ref, rtol=1e-6)
    chex.assert_shape(one_key, (6, 2))  # one key still samples the whole batch


@pytest.mark.parametrize("module", [ppo, a2c])
def test_single_device_program_has_no_collectives(module):
    config = (
        ppo.PPOConfig(num_steps=4, num_minibatches=2)
        if module is ppo
        else a2c.A2CConfig(num_steps=4)
    )
    for devices in (None, jax.devices()[:1]):
        trainer = module.make_train(
            "CartPole-v1",
            config,
            {"name": "adam", "learning_rate": 1e-3},
            num_envs=2,
            total_env_steps=8,
            devices=devices,
        )
        assert trainer.num_devices == 1
        state = jax.eval_shape(trainer.init, jax.random.key(0))
        jaxpr = str(jax.make_jaxpr(trainer.run, static_argnums=1)(state, 1))
        for collective in ("all_gather", "psum", "pmean", "shard_map", "pmap"):
            assert collective not in jaxpr


def test_dqn_single_device_is_the_plain_program():
    config = {"hidden": [8], "replay": {"capacity": 64, "batch_size": 4,
              "min_size": 8}}  # fmt: skip
    jaxprs = []
    for devices in (None, jax.devices()[:1]):
        trainer = dqn.make_train(
            envs.make("Catch"),
            config,
            {"name": "sgd", "learning_rate": 0.1},
            num_envs=2,
            total_env_steps=12,
            devices=devices,
        )
        assert trainer.num_devices == 1
        jaxprs.append(str(jax.make_jaxpr(trainer.train)(jax.random.key(0))))
    assert jaxprs[0] == jaxprs[1]
    for collective in ("psum", "pmean", "shard_map", "pmap"):
        assert collective not in jaxprs[0]


def test_registry_passes_devices_through():
    from agents import AGENTS
    from jaxlab.errors import ConfigError

    kwargs = dict(num_envs=2, total_env_steps=512, devices=jax.devices()[:1])
    optimizer = {"name": "adam", "learning_rate": 1e-3}
    trainer = AGENTS["ppo"].make_train("CartPole-v1", {"name": "ppo"}, optimizer,
                                       backend="shard_map", **kwargs)  # fmt: skip
    assert trainer.num_devices == 1
    with pytest.raises(ConfigError, match="parallel.devices: agents.reinforce"):
        AGENTS["reinforce"].make_train(
            "CartPole-v1",
            {"name": "reinforce"},
            optimizer,
            num_envs=2,
            total_env_steps=4000,
            devices=[jax.devices()[0]] * 2,
        )
    with pytest.raises(ValueError, match="parallel.backend"):
        AGENTS["dqn"].make_train("Catch", {"name": "dqn"}, optimizer,
                                 backend="pjit", **kwargs)  # fmt: skip
