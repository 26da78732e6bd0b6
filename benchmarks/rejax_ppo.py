"""rejax's PPO (a PureJaxRL-style, whole-loop-jitted library on Flax and gymnax),
run as a peer in its own virtualenv (`benchmarks/.venvs/rejax`).

rejax 0.1.3 installs against jax 0.10.2 on Python 3.11, but its rollout unpacks
gymnax's pre-1.0 ``step`` (5 values), so gymnax is pinned below 1.0. Set to
PureJaxRL's CartPole hyperparameters (4 envs x 128 steps, 4 epochs x 4
minibatches, Adam 2.5e-4 eps 1e-5, clip 0.2, entropy 0.01, 64-64 tanh). What
rejax cannot be told: it clips gradients per element (``optax.clip``), not by
global norm, keeps the learning rate constant (PureJaxRL anneals it), and keeps
two Adam states (actor and critic separately; the same arithmetic per step).
Its periodic evaluation is switched off (``eval_callback`` replaced), so the
timed program is training only; the greedy return is measured after it, on
gymnax's CartPole-v1, like the other contestants'.

Nothing here imports jaxlab: the module only needs jax, rejax and gymnax.
"""

from __future__ import annotations

import time
from typing import Any

REQUIREMENTS = ("rejax==0.1.3", "gymnax<1.0")


def _make(total_env_steps: int, **overrides: Any):
    from rejax import PPO

    config = dict(
        env="CartPole-v1",
        num_envs=4,
        num_steps=128,
        num_epochs=4,
        num_minibatches=4,
        learning_rate=2.5e-4,
        max_grad_norm=0.5,
        gamma=0.99,
        gae_lambda=0.95,
        clip_eps=0.2,
        ent_coef=0.01,
        vf_coef=0.5,
        agent_kwargs={"activation": "tanh", "hidden_layer_sizes": (64, 64)},
        total_timesteps=total_env_steps,
        eval_freq=total_env_steps,
        skip_initial_evaluation=True,
    )
    config.update(overrides)
    algo = PPO.create(**config)
    # No evaluation inside the timed program (returns an empty pytree).
    return algo.replace(eval_callback=lambda algo, ts, rng: ())


def _greedy_return(algo, ts, key, num_episodes: int) -> float:
    import jax
    import jax.numpy as jnp

    env, params = algo.env, algo.env_params
    actor, actor_params = algo.actor, ts.actor_ts.params
    reset_key, key = jax.random.split(key)
    obs, state = jax.vmap(env.reset, (0, None))(
        jax.random.split(reset_key, num_episodes), params
    )
    max_steps = params.max_steps_in_episode

    def cond(carry):
        t, *_, active = carry
        return (t < max_steps) & jnp.any(active)

    def body(carry):
        t, obs, state, returns, active = carry
        logits = actor.apply(actor_params, obs, method="_action_dist").logits
        action = jnp.argmax(logits, axis=-1)
        keys = jax.random.split(jax.random.fold_in(key, t), num_episodes)
        obs, state, reward, done, _ = jax.vmap(env.step, (0, 0, 0, None))(
            keys, state, action, params
        )
        returns = returns + jnp.where(active, reward, 0.0)
        return t + 1, obs, state, returns, active & ~done

    carry = (0, obs, state, jnp.zeros(num_episodes), jnp.ones(num_episodes, bool))
    return float(jax.jit(lambda c: jax.lax.while_loop(cond, body, c))(carry)[3].mean())


def throughput(
    seed: int, total_env_steps: int = 500_000, eval_episodes: int = 20
) -> dict[str, Any]:
    """Benchmark job: compile, train one seed, greedy evaluation."""
    import jax

    from benchmarks.common import since_start

    import_s = since_start()
    algo = _make(total_env_steps)
    key = jax.random.PRNGKey(seed)
    t0 = time.perf_counter()
    compiled = jax.jit(algo.train).lower(key).compile()
    t1 = time.perf_counter()
    ts, _ = jax.block_until_ready(compiled(key))
    t2 = time.perf_counter()
    steps = (total_env_steps // 512) * 512
    ret = _greedy_return(algo, ts, jax.random.PRNGKey(10_000 + seed), eval_episodes)
    return {
        "import_s": import_s,
        "compile_s": t1 - t0,
        "run_s": t2 - t1,
        "env_steps": steps,
        "steps_per_s": steps / (t2 - t1),
        "returns": [ret],
    }


def time_to_solve(
    seed: int,
    threshold: float = 475.0,
    eval_episodes: int = 20,
    total_env_steps: int = 500_000,
) -> dict[str, Any]:
    """Benchmark job: process start to a greedy return, as a rejax user runs it
    (the whole budget in one call, then evaluate)."""
    import jax
    import rejax  # noqa: F401

    from benchmarks.common import since_start

    imported = since_start()
    algo = _make(total_env_steps)
    key = jax.random.PRNGKey(seed)
    compiled = jax.jit(algo.train).lower(key).compile()
    compiled_at = since_start()
    ts, _ = jax.block_until_ready(compiled(key))
    trained_at = since_start()
    ret = _greedy_return(algo, ts, jax.random.PRNGKey(10_000 + seed), eval_episodes)
    done_at = since_start()
    return {
        "import_s": imported,
        "compile_s": compiled_at - imported,
        "run_s": trained_at - compiled_at,
        "eval_s": done_at - trained_at,
        "env_steps": (total_env_steps // 512) * 512,
        "final_return": ret,
        "solved": ret >= threshold,
        "solved_s": done_at if ret >= threshold else float("nan"),
    }
