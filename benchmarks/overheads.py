"""Where a jaxlab training step's time goes outside XLA.

Supervised path (``jaxlab.experiment.train``, MLP 256-256 on digits, batch 64):

- trainer step: steady-state time per step of the real trainer (``time``
  stamps of its ``metrics.jsonl``), logging every 50 steps, no checkpoint
  before the end;
- XLA: the compiled loop the trainer runs (``make_train_loop``, 50 steps per
  call, one call per logging interval) called back to back on batches already
  on the device (what the trainer would cost with zero host work), per step;
- lean loop: the same network and Adam without the step's extras (per-layer
  gradient norms, parameter norm, non-finite guard, ``inject_hyperparams``);
- data pipeline: ``Batcher.batches(step, 50)``, per chunk;
- non-finite tracking: the one small jitted call per chunk
  (``jaxlab.chunks.note_first_bad``);
- logging: extra time per step with ``log_every: 1``, per logged row;
- checkpointing: extra time per step with ``checkpoint_every: 100``, per save.

Gymnasium RL path (PPO at RL-Zoo settings on gymnasium CartPole, 8 envs x 32
steps per update): time per update of ``HostTrainer.run``, split into the
trainer's jitted ``act`` calls (dispatch, compute, device-to-host copy),
gymnasium's vector ``step``, its jitted ``update`` (with log pi and v of the
rollout), and the rest (jaxlab's host glue: filling the rollout buffers,
episode returns, metrics); plus the experiment shell's logging,
evaluation and checkpoints (``jaxlab.experiment.train`` on the same config
with ``env.backend: gymnasium``), per env step.

    python -m benchmarks.overheads          # ~3 min
    python -m benchmarks.overheads --quick
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.common import Job
from benchmarks.supervised_step import experiment_config, steps_per_s_from_log


def _per_call(fn, n: int) -> float:
    """Median seconds per call of `fn` over 5 rounds of `n` calls."""
    times = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t) / n)
    return statistics.median(times)


def supervised(seed: int, steps: int = 2000, quick: bool = False) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from jaxlab import chunks, experiment
    from jaxlab import data as data_lib
    from jaxlab.config import validate_config
    from jaxlab.train import make_train_loop

    warmup = 100 if not quick else 20
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:

        def trainer_step_s(name: str, **train: Any) -> float:
            raw = experiment_config("mlp", steps + warmup, 50, Path(tmp))
            raw["train"].update(train)
            run_dir = Path(tmp) / name
            experiment.train(validate_config(raw), run_dir, quiet=True)
            return 1.0 / steps_per_s_from_log(run_dir, warmup)[0]

        out["trainer_step_s"] = trainer_step_s("base")
        out["trainer_log1_step_s"] = trainer_step_s("log1", log_every=1)
        out["trainer_ckpt_step_s"] = trainer_step_s("ckpt", checkpoint_every=100)
        config = validate_config(experiment_config("mlp", steps, 50, Path(tmp)))

    exp = experiment.build(config)
    state = experiment.initial_state(exp)
    batcher = data_lib.Batcher(exp.splits.train, batch_size=64, seed=0)
    # The program the trainer runs: a compiled loop of `chunk` steps (one
    # chunk per logging interval here), its batches already on the device.
    chunk = 50
    batches = jax.device_put(batcher.batches(0, chunk))
    count = np.int32(chunk)

    def timed_loop(loop_fn, state) -> float:
        loop_fn = jax.jit(loop_fn)
        s, m = loop_fn(state, batches, count)
        jax.block_until_ready(m)
        n = max(1, (200 if quick else steps) // chunk)
        t = time.perf_counter()
        for _ in range(n):
            s, m = loop_fn(s, batches, count)
        jax.block_until_ready(m)
        return (time.perf_counter() - t) / (n * chunk)

    full = make_train_loop(
        exp.loss_fn, exp.optimizer, per_layer_grad_norms=True, skip_nonfinite=True
    )
    out["xla_step_s"] = timed_loop(full, state)
    lean_tx = optax.adam(config.optimizer.learning_rate)
    lean_state = state._replace(opt_state=lean_tx.init(state.params))
    lean = make_train_loop(exp.loss_fn, lean_tx, full_metrics=False)
    out["lean_step_s"] = timed_loop(lean, lean_state)
    counter = iter(range(10**9))
    out["data_s"] = _per_call(lambda: batcher.batches(chunk * next(counter), chunk), 20)
    first_bad = jnp.asarray(-1, jnp.int32)
    index = jnp.asarray(-1, jnp.int32)
    out["guard_s"] = _per_call(
        lambda: chunks.note_first_bad(first_bad, index, count), 200
    )
    base = out["trainer_step_s"]
    out["log_row_s"] = (out["trainer_log1_step_s"] - base) / (1 - 1 / 50)
    out["checkpoint_s"] = (out["trainer_ckpt_step_s"] - base) * 100
    return out


def rl_gym(seed: int, updates: int = 40, quick: bool = False) -> dict[str, Any]:
    import jax
    import numpy as np

    from agents import ppo
    from benchmarks.rl_jobs import load_config
    from jaxlab import experiment
    from jaxlab.config import validate_config

    raw = load_config("cartpole_ppo_zoo")
    num_envs, num_steps = raw["env"]["num_envs"], raw["agent"]["num_steps"]
    trainer = ppo.make_host_train(
        raw["env"]["id"],
        raw["agent"],
        raw["optimizer"],
        num_envs=num_envs,
        total_env_steps=raw["train"]["env_steps"],
    )
    out: dict[str, Any] = {"steps_per_update": num_envs * num_steps}
    with trainer:
        state = trainer.init(jax.random.PRNGKey(seed))
        state, _ = trainer.run(state, 2)  # compiles
        t = time.perf_counter()
        state, _ = trainer.run(state, updates)
        out["update_total_s"] = (time.perf_counter() - t) / updates

        # The trainer's own jitted functions: its act returns the action alone
        # (log pi and v of the rollout are computed in its update).
        obs = np.zeros((num_envs, 4), np.float32)
        rng = jax.random.key_data(jax.random.PRNGKey(0))
        params = state.agent.params
        np.asarray(trainer._act(params, rng, obs)[1])
        out["act_s"] = _per_call(
            lambda: np.asarray(trainer._act(params, rng, obs)[1]), 200
        )
        actions = np.zeros(num_envs, np.int32)
        trainer.env.reset(seed=seed)
        out["env_step_s"] = _per_call(lambda: trainer.env.step(actions), 200)

        shape = (num_steps, num_envs)
        rollout = {
            "obs": np.zeros((*shape, 4), np.float32),
            "action": np.zeros(shape, np.int32),
            "reward": np.ones(shape, np.float32),
            "terminated": np.zeros(shape, bool),
            "truncated": np.zeros(shape, bool),
            "final_obs": np.zeros((*shape, 4), np.float32),
        }
        jax.block_until_ready(trainer._update(state, rollout))
        out["update_s"] = _per_call(
            lambda: jax.block_until_ready(trainer._update(state, rollout)), 10
        )
    out["glue_s"] = out["update_total_s"] - (
        num_steps * (out["act_s"] + out["env_step_s"]) + out["update_s"]
    )

    # The experiment shell on the same config (logging, evaluation, checkpoints).
    raw["env"]["backend"] = "gymnasium"
    if quick:
        raw["train"].update(env_steps=5120, log_every=512, eval_every=2560)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "rl"
        experiment.train(validate_config(raw), run_dir, quiet=True)
        rows = [r for r in _jsonl(run_dir / "metrics.jsonl") if "train/env_steps" in r]
        first, last = rows[1], rows[-1]
        out["shell_step_s"] = (last["time"] - first["time"]) / (
            last["step"] - first["step"]
        )
    out["run_step_s"] = out["update_total_s"] / out["steps_per_update"]
    return out


def _jsonl(path: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in path.open()]


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = common.parser("overheads", __doc__)
    args = p.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    jobs = [
        Job("supervised", "benchmarks.overheads:supervised",
            {"steps": 300 if args.quick else 2000, "quick": args.quick}),
        Job("rl_gym", "benchmarks.overheads:rl_gym",
            {"updates": 5 if args.quick else 40, "quick": args.quick}),
    ]  # fmt: skip
    runs = common.alternate(jobs, repeats)
    sup, rl = runs["supervised"], runs["rl_gym"]
    tables = []
    if sup:
        step = _median(sup, "trainer_step_s")
        items = [
            ("trainer step (all included)", "trainer_step_s", 1),
            ("XLA: the same compiled 50-step loop, batches on device", "xla_step_s", 1),
            ("lean loop: no grad/param norms, no guard, plain adam", "lean_step_s", 1),
            ("data pipeline: Batcher.batches, per 50-step chunk", "data_s", 50),
            ("non-finite tracking (note_first_bad), per chunk", "guard_s", 50),
            ("logging, per row (log_every 1: one step per call)", "log_row_s", 50),
            ("checkpoint, per save (every 100 steps here)", "checkpoint_s", 100),
        ]
        rows = []
        for label, key, every in items:
            v = _median(sup, key)
            rows.append(
                (label, f"{v * 1e6:,.0f}", f"{v / every * 1e6:,.1f}",
                 f"{100 * v / every / step:.1f}%")
            )  # fmt: skip
        outside = step - _median(sup, "xla_step_s")
        rows.append(
            ("outside XLA: trainer step - XLA step", f"{outside * 1e6:,.0f}",
             f"{outside * 1e6:,.1f}", f"{100 * outside / step:.1f}%")
        )  # fmt: skip
        tables.append(
            "#### Supervised (jaxlab.experiment.train, MLP on digits, batch 64)\n\n"
            + common.markdown_table(
                ("item", "µs per event", "µs per step", "of the trainer step"), rows
            )
        )
    if rl:
        upd = _median(rl, "update_total_s")
        n = rl[0]["steps_per_update"] // 8
        items = [
            ("HostTrainer.run, per update (all included)", upd),
            (f"{n} x jitted act (dispatch + compute + copy)", n * _median(rl, "act_s")),
            (f"{n} x gymnasium vector step (8 envs)", n * _median(rl, "env_step_s")),
            ("jitted update (20 epochs, XLA)", _median(rl, "update_s")),
            ("host glue: the rest", _median(rl, "glue_s")),
        ]
        rows = [(k, f"{v * 1e3:.2f}", f"{100 * v / upd:.1f}%") for k, v in items]
        shell, run = _median(rl, "shell_step_s"), _median(rl, "run_step_s")
        rows.append(
            ("experiment shell (log, eval, checkpoint) per update",
             f"{(shell - run) * 256 * 1e3:.2f}", f"{100 * (shell - run) / run:.1f}%")
        )  # fmt: skip
        tables.append(
            "#### Gymnasium RL (PPO, RL-Zoo settings, 256 env steps per update)\n\n"
            + common.markdown_table(("item", "ms per update", "of the update"), rows)
        )
    common.report(
        "overheads", "Time outside XLA per step", "\n\n".join(tables),
        {"quick": args.quick, "runs": runs}, args.json,
    )  # fmt: skip
    return runs


if __name__ == "__main__":
    main()
