"""Supervised training steps/s: jaxlab's trainer, a hand-written loop, PyTorch.

Two tasks, batch 64, Adam 1e-3, softmax cross-entropy:

- ``mlp``: scikit-learn's digits (8x8, flattened to 64), MLP 256-256 ReLU.
- ``lenet``: the digits upscaled to 28x28 (3x pixel repeat, 2-pixel border),
  LeNet as configs/lenet_digits.yaml (conv 5x5x32, max-pool 2, conv 5x5x64,
  max-pool 2, dense 1024 tanh, dense 10; no L2 here, so every contestant does
  the same arithmetic).

Contestants, each in a fresh child process, alternating:

- jaxlab trainer: ``jaxlab.experiment.train(config, run_dir)``, the path a user
  of ``jaxlab train`` gets (host batching, non-finite guard, per-layer gradient
  norms, logging every 50 steps; evaluation and checkpoint only at the end).
  Steps/s comes from the ``time`` stamps of its own ``metrics.jsonl`` between
  the first logged row after warm-up and the last training row, so compilation,
  final evaluation and checkpoint are excluded.
- hand-written: a jitted Haiku + optax step and a NumPy loop (per-epoch
  permutation, slicing), the "no framework" ceiling; for LeNet also the same
  loop with `nets.Conv2D` in place of `hk.Conv2D` (what jaxlab's convolution
  gives a step called alone).
- PyTorch: the same network as ``torch.nn`` on CPU, ``threads`` = cores (and
  1 thread, which can win on a loaded 2-core machine).

    python -m benchmarks.supervised_step             # ~5 min
    python -m benchmarks.supervised_step --quick --no-torch
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from benchmarks.common import Job

TASKS = ("mlp", "lenet")
BATCH = 64
LR = 1e-3
JAXLAB = "jaxlab trainer"
HAND = "hand-written jit loop"
HAND_NETS = "hand-written jit loop, nets.Conv2D"


def digits(task: str) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, H, W, 1] float32 in [0, 1] and labels [N] int32."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images[..., None].astype(np.float32) / 16.0  # [N, 8, 8, 1]
    if task == "lenet":
        x = np.repeat(np.repeat(x, 3, axis=1), 3, axis=2)  # [N, 24, 24, 1]
        x = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))  # [N, 28, 28, 1]
    return x, bunch.target.astype(np.int32)


def network_spec(task: str) -> list[Any]:
    if task == "mlp":
        return [
            ["Flatten", {}],
            ["Linear", {"output_size": 256, "activation": "relu"}],
            ["Linear", {"output_size": 256, "activation": "relu"}],
            ["Linear", {"output_size": 10}],
        ]
    pool = {"window_shape": 2, "strides": 2, "padding": "VALID"}
    return [
        ["Conv2D", {"output_channels": 32, "kernel_shape": 5, "padding": "SAME"}],
        ["MaxPool", pool],
        ["Conv2D", {"output_channels": 64, "kernel_shape": 5, "padding": "SAME"}],
        ["MaxPool", pool],
        ["Flatten", {}],
        ["Linear", {"output_size": 1024, "activation": "tanh"}],
        ["Linear", {"output_size": 10}],
    ]


def experiment_config(task: str, steps: int, log_every: int, data_dir: Path) -> dict:
    """A jaxlab supervised config for `task` (writes the 28x28 data as npz)."""
    if task == "mlp":
        data = {"dataset": "digits"}
    else:
        path = data_dir / "digits28.npz"
        x, y = digits(task)
        np.savez(path, x=x, y=y)
        data = {"dataset": "npz", "path": str(path), "normalize": False}
    return {
        "name": f"bench-{task}",
        "kind": "supervised",
        "seed": 0,
        "data": {**data, "batch_size": BATCH, "test_split": 0.2, "shuffle": True},
        "model": {
            "network": network_spec(task),
            "loss": "softmax_cross_entropy",
            "metrics": ["accuracy"],
        },
        "optimizer": {"name": "adam", "learning_rate": LR},
        "train": {
            "steps": steps,
            "log_every": log_every,
            "eval_every": steps,
            "checkpoint_every": steps,
        },
    }


def steps_per_s_from_log(run_dir: Path, warmup: int) -> tuple[float, int]:
    """Training steps/s between the first row logged at or after `warmup` and
    the last training row, from the ``time`` stamps of ``metrics.jsonl``."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    rows = [r for r in rows if "train/loss" in r]
    first = next(r for r in rows if r["step"] >= warmup)
    last = rows[-1]
    steps = last["step"] - first["step"]
    return steps / (last["time"] - first["time"]), steps


# ------------------------------------------------------------------ child jobs


def jaxlab_trainer(
    seed: int, task: str, steps: int, warmup: int, log_every: int = 50
) -> dict[str, Any]:
    from jaxlab import experiment
    from jaxlab.config import validate_config

    with tempfile.TemporaryDirectory() as tmp:
        raw = experiment_config(task, steps, log_every, Path(tmp))
        raw["seed"] = seed
        t = time.perf_counter()
        experiment.train(validate_config(raw), Path(tmp) / "run", quiet=True)
        wall = time.perf_counter() - t
        sps, timed = steps_per_s_from_log(Path(tmp) / "run", warmup)
    return {"steps_per_s": sps, "timed_steps": timed, "wall_s": wall}


def _haiku_net(task: str, conv: str = "hk"):
    """The network written with Haiku; ``conv="nets"`` takes `nets.Conv2D`
    (patches and a matmul on a CPU) for `hk.Conv2D`."""
    import haiku as hk
    import jax

    import nets

    Conv2D = nets.Conv2D if conv == "nets" else hk.Conv2D

    def forward(x):
        if task == "mlp":
            x = hk.Flatten()(x)
            x = jax.nn.relu(hk.Linear(256)(x))
            x = jax.nn.relu(hk.Linear(256)(x))
            return hk.Linear(10)(x)
        x = Conv2D(32, 5, padding="SAME")(x)
        x = hk.max_pool(x, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        x = Conv2D(64, 5, padding="SAME")(x)
        x = hk.max_pool(x, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        x = hk.Flatten()(x)
        x = jax.numpy.tanh(hk.Linear(1024)(x))
        return hk.Linear(10)(x)

    return hk.without_apply_rng(hk.transform(forward))


def _epochs(n: int, seed: int):
    """Yields index batches forever: a fresh permutation each epoch."""
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(n)
        for i in range(n // BATCH):
            yield perm[i * BATCH : (i + 1) * BATCH]


def handwritten(
    seed: int, task: str, steps: int, warmup: int, conv: str = "hk"
) -> dict[str, Any]:
    import jax
    import optax

    x, y = digits(task)
    n = int(0.8 * len(x))
    x, y = x[:n], y[:n]
    net = _haiku_net(task, conv)
    tx = optax.adam(LR)
    params = net.init(jax.random.PRNGKey(seed), x[:1])
    opt_state = tx.init(params)

    def loss_fn(params, xb, yb):
        logits = net.apply(params, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @jax.jit
    def step(params, opt_state, xb, yb):
        loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    batches = _epochs(n, seed)
    for _ in range(warmup):
        idx = next(batches)
        params, opt_state, loss = step(params, opt_state, x[idx], y[idx])
    jax.block_until_ready(loss)
    t = time.perf_counter()
    for _ in range(steps):
        idx = next(batches)
        params, opt_state, loss = step(params, opt_state, x[idx], y[idx])
    jax.block_until_ready(loss)
    return {"steps_per_s": steps / (time.perf_counter() - t), "loss": float(loss)}


def pytorch(
    seed: int, task: str, steps: int, warmup: int, threads: int = 0
) -> dict[str, Any]:
    import torch
    from torch import nn

    torch.set_num_threads(threads or os.cpu_count() or 1)
    torch.manual_seed(seed)
    x, y = digits(task)
    n = int(0.8 * len(x))
    if task == "mlp":
        model = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256),
            nn.ReLU(), nn.Linear(256, 10),
        )  # fmt: skip
        x = x[:n]
    else:
        model = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(7 * 7 * 64, 1024), nn.Tanh(), nn.Linear(1024, 10),
        )  # fmt: skip
        x = np.ascontiguousarray(x[:n].transpose(0, 3, 1, 2))  # NCHW
    y = y[:n].astype(np.int64)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    batches = _epochs(n, seed)

    def step():
        idx = next(batches)
        xb, yb = torch.from_numpy(x[idx]), torch.from_numpy(y[idx])
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    for _ in range(warmup):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        loss = step()
    return {
        "steps_per_s": steps / (time.perf_counter() - t),
        "loss": float(loss),
        "threads": torch.get_num_threads(),
    }


# ------------------------------------------------------------------ report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = common.parser("supervised_step", __doc__)
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    args = p.parse_args(argv)
    if not args.no_torch and not _has("torch"):
        print("# torch missing: pip install -e '.[bench]'", file=sys.stderr)
        args.no_torch = True
    repeats = 1 if args.quick else args.repeats
    cores = os.cpu_count() or 1
    payload: dict[str, Any] = {"quick": args.quick, "tasks": {}}
    tables = []
    for task in args.tasks:
        if args.quick:
            steps, warmup = 60, 20
        else:
            steps, warmup = (3000, 200) if task == "mlp" else (400, 50)
        kw = {"task": task, "steps": steps, "warmup": warmup}
        jobs = [
            Job(JAXLAB, "benchmarks.supervised_step:jaxlab_trainer",
                {"task": task, "steps": steps + warmup, "warmup": warmup,
                 "log_every": 10 if args.quick else 50}),
            Job(HAND, "benchmarks.supervised_step:handwritten", kw),
        ]  # fmt: skip
        if task == "lenet":
            # The same loop with jaxlab's convolution: what the conv alone gives.
            jobs.append(
                Job(HAND_NETS, "benchmarks.supervised_step:handwritten",
                    {**kw, "conv": "nets"})
            )  # fmt: skip
        if not args.no_torch:
            jobs.append(
                Job(f"PyTorch, {cores} threads", "benchmarks.supervised_step:pytorch",
                    {**kw, "threads": cores})
            )  # fmt: skip
            if cores > 1:
                jobs.append(
                    Job("PyTorch, 1 thread", "benchmarks.supervised_step:pytorch",
                        {**kw, "threads": 1})
                )  # fmt: skip
        print(f"# {task}: {repeats} alternating runs", file=sys.stderr)
        runs = common.alternate(jobs, repeats)
        summary = {
            name: {
                "steps_per_s": common.stats(r["steps_per_s"] for r in rs),
                "load": [round(r["load"], 2) for r in rs],
                "runs": rs,
            }
            for name, rs in runs.items()
        }
        payload["tasks"][task] = summary
        ref = summary[JAXLAB]["steps_per_s"]
        fmt = ",.0f" if ref.get("median", 0) >= 100 else ".1f"
        rows = [
            (
                name,
                common.fmt_stats(s["steps_per_s"], fmt),
                common.fmt_ratio(common.ratio(ref, s["steps_per_s"])),
                " ".join(f"{x:.1f}" for x in s["load"]),
            )
            for name, s in summary.items()
        ]
        header = ("contestant", "steps/s median [range]", "jaxlab trainer is", "load")
        title = "MLP 256-256 on digits" if task == "mlp" else "LeNet on 28x28 digits"
        tables.append(
            f"#### {title}, batch {BATCH}\n\n" + common.markdown_table(header, rows)
        )
    common.report(
        "supervised_step", "Supervised training steps/s (runs alternate)",
        "\n\n".join(tables), payload, args.json,
    )  # fmt: skip
    return payload


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    main()
