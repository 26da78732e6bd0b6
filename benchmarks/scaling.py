"""Scaling: throughput against the number of devices, and N vmapped seeds vs 1.

Two tables:

1. **Devices.** PPO on CartPole (the jax environment; the whole loop jitted, envs
   split across devices, gradients `pmean`-ed) and the supervised MLP train step,
   on 1, 2, 4 and 8 devices, under ``pmap`` and ``shard_map``. Without
   accelerators the devices are forced CPU devices
   (``--xla_force_host_platform_device_count=8``) that share this machine's
   cores: the table then shows what data parallelism costs, not a speed-up.
   With several GPUs/TPUs the real devices are used.
2. **Seeds.** PPO at PureJaxRL's CartPole defaults, ``jax.vmap`` over N seeds in
   one program (what ``jaxlab train --seeds N`` runs), against one seed: total
   env steps/s, per-seed env steps/s and compile time.

Every configuration is measured in its own child process, alternating.

    python -m benchmarks.scaling            # --quick: a smoke test
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks import common

FORCED = "--xla_force_host_platform_device_count=8"


def _ppo_trainer(num_envs: int, num_steps: int, updates: int, **parallel: Any):
    import agents

    config = agents.ppo.PPOConfig(num_steps=num_steps)
    optimizer = {"name": "adam", "learning_rate": 2.5e-4, "eps": 1e-5}
    return agents.ppo.make_train(
        "CartPole-v1",
        config,
        optimizer,
        num_envs=num_envs,
        total_env_steps=num_envs * num_steps * updates,
        **parallel,
    )


def _timed(fn, *args) -> tuple[Any, float]:
    import jax

    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - start


def ppo_devices_job(
    devices: int, backend: str, num_envs: int, updates: int, seed: int = 0
) -> dict[str, Any]:
    """PPO CartPole on `devices` devices: compile time and env steps/s."""
    import jax

    clock = common.CompileClock()
    chosen = jax.devices()[:devices] if devices > 1 else None
    trainer = _ppo_trainer(num_envs, 128, 2 * updates, devices=chosen, backend=backend)
    state, _ = _timed(trainer.init, jax.random.key(seed))
    (state, _), first = _timed(trainer.run, state, updates)  # compiles
    compile_s = clock.seconds
    (state, _), steady = _timed(trainer.run, state, updates)
    steps = updates * trainer.steps_per_update
    return {
        "steps_per_s": steps / steady,
        "compile_s": compile_s,
        "first_call_s": first,
        "platform": jax.devices()[0].platform,
    }


def supervised_devices_job(
    devices: int, backend: str, batch_size: int, steps: int, seed: int = 0
) -> dict[str, Any]:
    """The MLP-on-digits train step on `devices` devices: steps/s."""
    import jax
    import optax

    import nets
    from jaxlab import data, losses, parallel
    from jaxlab.config import DataConfig
    from jaxlab.train import init_train_state, make_train_step, supervised_loss

    splits = data.load_dataset(DataConfig(dataset="digits"), seed=seed)
    network = nets.build_network(
        [["Flatten", {}], ["Linear", {"output_size": 256, "activation": "relu"}],
         ["Linear", {"output_size": 256, "activation": "relu"}],
         ["Linear", {"output_size": 10}]],
        num_classes=10,
    ).transformed  # fmt: skip
    optimizer = optax.adam(1e-3)
    loss_fn = supervised_loss(
        network,
        losses.get_loss("softmax_cross_entropy"),
        apply_kwargs={"is_training": True},
    )
    state = init_train_state(
        network, optimizer, jax.random.key(seed), splits.train.x[:1], is_training=True
    )
    batcher = data.Batcher(splits.train, batch_size=batch_size, seed=seed)
    batches = [batcher.batch(i) for i in range(8)]
    chosen = jax.devices()[:devices]
    if devices > 1:
        step = parallel.data_parallel(
            make_train_step(loss_fn, optimizer, axis_name=parallel.AXIS),
            chosen,
            backend=backend,
        )
        state = parallel.replicate(state, chosen)
        batches = [parallel.shard(b, chosen) for b in batches]
    else:
        step = jax.jit(make_train_step(loss_fn, optimizer))
        batches = [jax.device_put(b) for b in batches]
    state, _ = jax.block_until_ready(step(state, batches[0]))  # compiles
    start = time.perf_counter()
    for i in range(steps):
        state, metrics = step(state, batches[i % len(batches)])
    jax.block_until_ready(state)
    return {"steps_per_s": steps / (time.perf_counter() - start)}


def ppo_seeds_job(seeds: int, updates: int, seed: int = 0) -> dict[str, Any]:
    """PPO CartPole at PureJaxRL's defaults, `seeds` seeds vmapped in one program."""
    import jax

    clock = common.CompileClock()
    trainer = _ppo_trainer(4, 128, 2 * updates)
    keys = jax.random.split(jax.random.key(seed), seeds)
    # Init seed by seed (as `jaxlab train --seeds` does): a vmapped orthogonal
    # init batches QR factorisations, which can deadlock XLA's CPU thread pool.
    states = [trainer.init(k) for k in keys]
    state = jax.tree.map(lambda *xs: jax.numpy.stack(xs), *states)
    run = jax.jit(jax.vmap(lambda s: trainer.run(s, updates)))
    (state, _), _ = _timed(run, state)
    compile_s = clock.seconds
    (state, _), steady = _timed(run, state)
    steps = seeds * updates * trainer.steps_per_update
    return {"steps_per_s": steps / steady, "compile_s": compile_s}


def main(argv: list[str] | None = None) -> None:
    args = common.parser("scaling", __doc__, repeats=3).parse_args(argv)
    import jax

    accel = [d for d in jax.devices() if d.platform != "cpu"]
    counts = [1, 2, 4, 8]
    env = None
    if len(accel) >= 2:
        counts = [n for n in counts if n <= len(accel)]
    else:
        env = {"XLA_FLAGS": FORCED}
    updates = 2 if args.quick else 20
    sup_steps = 20 if args.quick else 300
    repeats = 1 if args.quick else args.repeats

    jobs = []
    for n in counts:
        for backend in ("pmap", "shard_map") if n > 1 else ("pmap",):
            label = f"{n}" if n == 1 else f"{n} {backend}"
            jobs.append(
                common.Job(
                    f"ppo {label}",
                    "benchmarks.scaling:ppo_devices_job",
                    {
                        "devices": n,
                        "backend": backend,
                        "num_envs": 16,
                        "updates": updates,
                    },
                    env=env,
                )  # fmt: skip
            )
            jobs.append(
                common.Job(
                    f"mlp {label}",
                    "benchmarks.scaling:supervised_devices_job",
                    {
                        "devices": n,
                        "backend": backend,
                        "batch_size": 256,
                        "steps": sup_steps,
                    },
                    env=env,
                )  # fmt: skip
            )
    seed_counts = [1, 2, 4, 8]
    for n in seed_counts:
        jobs.append(
            common.Job(
                f"seeds {n}",
                "benchmarks.scaling:ppo_seeds_job",
                {"seeds": n, "updates": updates},
            )
        )
    results = common.alternate(jobs, repeats, timeout=900)
    st = {name: common.stats(r["steps_per_s"] for r in runs)
          for name, runs in results.items()}  # fmt: skip
    comp = {name: common.stats(r["compile_s"] for r in runs if "compile_s" in r)
            for name, runs in results.items()}  # fmt: skip

    rows = []
    for n in counts:
        for backend in ("pmap", "shard_map") if n > 1 else ("pmap",):
            label = f"{n}" if n == 1 else f"{n} {backend}"
            rows.append([
                n, backend if n > 1 else "(jit)",
                common.fmt_stats(st[f"ppo {label}"]),
                common.fmt_ratio(common.ratio(st[f"ppo {label}"], st["ppo 1"])),
                common.fmt_stats(comp[f"ppo {label}"], ".1f"),
                common.fmt_stats(st[f"mlp {label}"]),
                common.fmt_ratio(common.ratio(st[f"mlp {label}"], st["mlp 1"])),
            ])  # fmt: skip
    devices_table = common.markdown_table(
        ["devices", "backend", "PPO env steps/s", "vs 1", "PPO compile s",
         "MLP steps/s (batch 256)", "vs 1"],
        rows,
    )  # fmt: skip
    rows = []
    for n in seed_counts:
        s = st[f"seeds {n}"]
        per_seed = {k: (v / n if k != "n" else v) for k, v in s.items()}
        rows.append([
            n, common.fmt_stats(s), common.fmt_stats(per_seed),
            common.fmt_ratio(common.ratio(s, st["seeds 1"])),
            common.fmt_stats(comp[f"seeds {n}"], ".1f"),
        ])  # fmt: skip
    seeds_table = common.markdown_table(
        ["seeds (vmapped)", "env steps/s (all seeds)", "per seed",
         "throughput vs 1 seed", "compile s"],
        rows,
    )  # fmt: skip
    platform = "forced CPU devices" if env else f"{len(accel)} {accel[0].platform}"
    tables = (
        f"Devices ({platform}; PPO: 16 envs x 128 steps per update):\n\n"
        f"{devices_table}\n\nSeeds (PPO, PureJaxRL CartPole defaults, one program):"
        f"\n\n{seeds_table}"
    )
    common.report(
        "scaling", "Scaling", tables, {"results": results, "quick": args.quick},
        args.json,
    )  # fmt: skip


if __name__ == "__main__":
    main()
