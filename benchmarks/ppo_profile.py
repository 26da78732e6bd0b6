"""Profile of PPO at PureJaxRL's defaults: where jaxlab's time goes, against the
PureJaxRL reference, phase by phase.

For each variant (a fresh child process each, alternating), per update of 512
env steps: the whole update (``lax.scan`` over updates, as in training), the
learner alone (``agent.update`` on a fixed rollout: 4 epochs x 4 minibatches),
and so the rollout (128 vectorised steps: acting, environment, bookkeeping) as
the difference; plus the number of HLO instructions XLA executes per minibatch
step and per environment step (instructions outside fused computations in the
compiled loop bodies: each is one kernel launch on the CPU runtime).

Variants: jaxlab as shipped (optimizer from the config, i.e. wrapped in
``optax.inject_hyperparams`` by `jaxlab.optim.make_optimizer`); jaxlab with a
plain ``optax.adam`` passed in; the reference; and both with the ``unsafe_rbg``
PRNG (``jax_default_prng_impl``) instead of threefry.

    python -m benchmarks.ppo_profile
"""

from __future__ import annotations

import re
import sys
import time
from typing import Any

from benchmarks import common
from benchmarks.common import Job

UPDATES = 40


def _count_kernels(hlo: str) -> dict[str, int]:
    """Instructions per computation of optimized HLO text, fusion bodies excluded."""
    counts: dict[str, int] = {}
    name = None
    for line in hlo.splitlines():
        m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if m:
            name = m.group(1)
            counts[name] = 0
        elif line.startswith("}"):
            name = None
        elif name is not None and " = " in line:
            counts[name] += 1
    return {k: v for k, v in counts.items() if "fused" not in k and "fusion" not in k}


def _body_sizes(compiled: Any) -> list[int]:
    """Instruction counts of the while-loop bodies, largest first."""
    counts = _count_kernels(compiled.as_text())
    bodies = [v for k, v in counts.items() if "body" in k or "region" in k]
    return sorted(bodies, reverse=True)


def profile(seed: int, impl: str, prng: str = "threefry2x32") -> dict[str, Any]:
    import jax

    jax.config.update("jax_default_prng_impl", prng)
    import jax.numpy as jnp
    import optax

    if impl == "rejax":
        from benchmarks.rejax_ppo import _make

        algo = _make(500_000)
        runner = jax.jit(algo.init_state)(jax.random.PRNGKey(seed))
        many = jax.jit(
            lambda ts: jax.lax.scan(
                lambda ts, _: (algo.train_iteration(ts), None), ts, None, UPDATES
            )[0]
        )
        # rejax exposes the rollout, not the learner: time the rollout here.
        learn = jax.jit(
            lambda ts: jax.lax.scan(
                lambda ts, _: (algo.collect_trajectories(ts)[0], None),
                ts,
                None,
                UPDATES,
            )[0]
        )
        learn_args = (runner,)
    elif impl == "reference":
        from benchmarks import purejaxrl_ppo

        train = purejaxrl_ppo.make_train()
        runner = jax.jit(train.init)(jax.random.PRNGKey(seed))
        many = jax.jit(lambda r: jax.lax.scan(train.update_step, r, None, UPDATES)[0])
        runner2, traj = jax.jit(train.rollout)(runner)
        learn = jax.jit(train.learn)
        learn_args = (runner2, traj)
    else:
        from agents import ppo
        from benchmarks.rl_jobs import load_config

        raw = load_config("cartpole_ppo")
        optimizer = raw["optimizer"]
        if impl == "jaxlab_plain_adam":
            optimizer = optax.adam(2.5e-4, eps=1e-5)
        trainer = ppo.make_train(
            raw["env"]["id"], raw["agent"], optimizer, num_envs=4,
            total_env_steps=raw["train"]["env_steps"],
        )  # fmt: skip
        runner = trainer.init(jax.random.PRNGKey(seed))
        many = jax.jit(lambda r: trainer.run(r, UPDATES)[0])
        shape = (128, 4)
        traj = ppo.Trajectory(
            obs=jnp.zeros((*shape, 4)), action=jnp.zeros(shape, jnp.int32),
            log_prob=jnp.zeros(shape), value=jnp.zeros(shape),
            reward=jnp.ones(shape), terminated=jnp.zeros(shape, bool),
            truncated=jnp.zeros(shape, bool), final_obs=jnp.zeros((*shape, 4)),
        )  # fmt: skip
        learn = jax.jit(trainer.agent.update)
        learn_args = (runner.agent, traj, jax.random.PRNGKey(1))

    t = time.perf_counter()
    many_c = many.lower(runner).compile()
    learn_c = learn.lower(*learn_args).compile()
    compile_s = time.perf_counter() - t
    jax.block_until_ready(many_c(runner))
    best_total = best_learn = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        jax.block_until_ready(many_c(runner))
        best_total = min(best_total, (time.perf_counter() - t) / UPDATES)
        t = time.perf_counter()
        for _ in range(1 if impl == "rejax" else UPDATES):
            out = learn_c(*learn_args)
        jax.block_until_ready(out)
        best_learn = min(best_learn, (time.perf_counter() - t) / UPDATES)
    bodies = _body_sizes(many_c)
    rollout = best_total - best_learn
    if impl == "rejax":  # what was timed as "learn" is the rollout
        best_learn, rollout = rollout, best_learn
    return {
        "update_ms": 1e3 * best_total,
        "learn_ms": 1e3 * best_learn,
        "rollout_ms": 1e3 * rollout,
        "steps_per_s": 512 / best_total,
        "compile_s": compile_s,
        "loop_bodies": bodies[:6],
        "hlo_instructions": sum(_count_kernels(many_c.as_text()).values()),
    }


def jaxlab_rollout(seed: int, unroll: int = 1) -> dict[str, Any]:
    """jaxlab's rollout alone (its training loop's ``env_step``, rebuilt from the
    public ``agent.act`` and ``env.step``), with ``lax.scan(..., unroll=unroll)``:
    ms per 128-step rollout and compile seconds."""
    import jax
    import jax.numpy as jnp

    from agents import envs, ppo
    from benchmarks.rl_jobs import load_config

    raw = load_config("cartpole_ppo")
    trainer = ppo.make_train(
        raw["env"]["id"], raw["agent"], raw["optimizer"], num_envs=4,
        total_env_steps=raw["train"]["env_steps"],
    )  # fmt: skip
    env, agent, n = envs.make("CartPole-v1"), trainer.agent, 4
    rs = trainer.init(jax.random.PRNGKey(seed))

    def env_step(carry, _):
        env_state, obs, rng, last = carry
        rng, act_key, step_key = jax.random.split(rng, 3)
        action, log_prob, value = agent.act(rs.agent, act_key, obs)
        ts = jax.vmap(env.step)(jax.random.split(step_key, n), env_state, action)
        done = ts.terminated | ts.truncated
        last = jnp.where(done, ts.info["episode_return"], last)
        traj = ppo.Trajectory(
            obs, action, log_prob, value, ts.reward, ts.terminated, ts.truncated,
            ts.info["final_obs"],
        )  # fmt: skip
        info = (done, ts.info["episode_return"], ts.info["episode_length"])
        return (ts.state, ts.obs, rng, last), (traj, info)

    def rollouts(carry):
        def one(carry, _):
            return jax.lax.scan(env_step, carry, None, 128, unroll=unroll)[0], None

        return jax.lax.scan(one, carry, None, UPDATES)[0]

    carry = (rs.env_state, rs.obs, rs.rng, rs.episode_return)
    t = time.perf_counter()
    compiled = jax.jit(rollouts).lower(carry).compile()
    compile_s = time.perf_counter() - t
    jax.block_until_ready(compiled(carry))
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        jax.block_until_ready(compiled(carry))
        best = min(best, (time.perf_counter() - t) / UPDATES)
    return {"rollout_ms": 1e3 * best, "compile_s": compile_s}


VARIANTS = {
    "jaxlab (as shipped)": {"impl": "jaxlab"},
    "jaxlab, plain optax.adam": {"impl": "jaxlab_plain_adam"},
    "PureJaxRL (reference)": {"impl": "reference"},
    "jaxlab, plain adam, unsafe_rbg": {
        "impl": "jaxlab_plain_adam",
        "prng": "unsafe_rbg",
    },
    "PureJaxRL (reference), unsafe_rbg": {"impl": "reference", "prng": "unsafe_rbg"},
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = common.parser("ppo_profile", __doc__)
    args = p.parse_args(argv)
    jobs = [Job(k, "benchmarks.ppo_profile:profile", v) for k, v in VARIANTS.items()]
    rejax = common.VENVS / "rejax" / "bin" / "python"
    if rejax.exists():
        jobs.append(Job("rejax 0.1.3", "benchmarks.ppo_profile:profile",
                        {"impl": "rejax"}, python=str(rejax)))  # fmt: skip
    if args.quick:
        jobs = jobs[:1]
    repeats = 1 if args.quick else args.repeats
    runs = common.alternate(jobs, repeats)
    unroll_jobs = [
        Job(f"unroll {u}", "benchmarks.ppo_profile:jaxlab_rollout", {"unroll": u})
        for u in ((1,) if args.quick else (1, 2, 4))
    ]
    unrolls = common.alternate(unroll_jobs, repeats)
    rows = []
    summary = {}
    for name, rs in runs.items():
        s = {
            k: common.stats(r[k] for r in rs)
            for k in ("update_ms", "rollout_ms", "learn_ms", "steps_per_s", "compile_s")
        }
        summary[name] = {**s, "runs": rs}
        rows.append(
            (name, *(common.fmt_stats(s[k], ".2f") for k in
                     ("update_ms", "rollout_ms", "learn_ms")),
             common.fmt_stats(s["steps_per_s"]),
             common.fmt_stats(s["compile_s"], ".1f"),
             rs[0]["hlo_instructions"] if rs else "-",
             " ".join(str(b) for b in rs[0]["loop_bodies"]) if rs else "-")
        )  # fmt: skip
    header = (
        "variant", "ms / update", "rollout ms", "learner ms", "env steps/s",
        "compile s", "HLO instructions (unfused)", "largest loop bodies",
    )  # fmt: skip
    unroll_rows = [
        (name, common.fmt_stats(common.stats(r["rollout_ms"] for r in rs), ".2f"),
         common.fmt_stats(common.stats(r["compile_s"] for r in rs), ".1f"))
        for name, rs in unrolls.items()
    ]  # fmt: skip
    tables = (
        common.markdown_table(header, rows)
        + "\n\njaxlab's rollout alone (128 steps x 4 envs) by `lax.scan` unroll:\n\n"
        + common.markdown_table(("unroll", "ms / rollout", "compile s"), unroll_rows)
    )
    common.report(
        "ppo_profile", "PPO (PureJaxRL defaults), per update of 512 env steps",
        tables, {"variants": summary, "unroll": unrolls}, args.json,
    )  # fmt: skip
    print(file=sys.stderr)
    return summary


if __name__ == "__main__":
    main()
