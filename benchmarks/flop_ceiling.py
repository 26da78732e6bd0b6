"""FLOPs per environment step of each RL config, and the machine's matmul rate.

Counts the multiply-adds of the networks (2 FLOPs each; biases, activations
and the optimizer's elementwise work listed apart) per environment step:

- PPO: acting (actor + critic forward on each observation), the critic on each
  transition's true next observation (jaxlab's truncation-aware GAE), and
  ``update_epochs`` passes of forward + backward over the whole rollout (the
  backward of a dense layer is two matmuls of the forward's size, except the
  first layer's input gradient, which is not needed), plus Adam per minibatch.
- DQN: acting (online forward), then per learner phase ``gradient_steps``
  minibatches of online forward + backward and target forward (plus the online
  forward on the next observations for double DQN), plus Adam.

The matmul rate is measured in a child process: a chain of dependent float32
matmuls at 1024^3 (the machine's ceiling) and at the shapes these configs use.
Each RL run in ``benchmarks/results/rl_throughput.json`` (if present) is then
reported as a fraction of the ceiling: FLOPs per step x env steps/s / rate. The
analytic forward count is checked against XLA's cost analysis of the compiled
jaxlab networks.

    python -m benchmarks.flop_ceiling
    python -m benchmarks.flop_ceiling --throughput other/rl_throughput.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.common import Job

# (section in rl_throughput, config)
CONFIGS = {
    "ppo_purejaxrl": "cartpole_ppo",
    "ppo_zoo": "cartpole_ppo_zoo",
    "dqn_zoo": "cartpole_dqn_zoo",
}
ADAM_FLOPS_PER_PARAM = 18  # clip-by-norm (3) + Adam moments, bias fix, step (~15)


def layer_sizes(obs: int, hidden: list[int], out: int) -> list[int]:
    return [obs, *hidden, out]


def matmul_flops(sizes: list[int]) -> int:
    """FLOPs of one sample through a dense MLP (2 per multiply-add)."""
    return 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


def backward_flops(sizes: list[int]) -> int:
    """Weight and input gradients; the first layer needs no input gradient."""
    return 2 * matmul_flops(sizes) - 2 * sizes[0] * sizes[1]


def num_params(sizes: list[int]) -> int:
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


def ppo_flops(raw: dict[str, Any], obs: int = 4, actions: int = 2) -> dict[str, float]:
    a = raw["agent"]
    hidden = list(a["hidden"])
    actor, critic = layer_sizes(obs, hidden, actions), layer_sizes(obs, hidden, 1)
    fwd = matmul_flops(actor) + matmul_flops(critic)
    bwd = backward_flops(actor) + backward_flops(critic)
    batch = raw["env"]["num_envs"] * a["num_steps"]
    sgd_steps = a["update_epochs"] * a["num_minibatches"]
    params = num_params(actor) + num_params(critic)
    out = {
        "act": fwd,
        "bootstrap_value": matmul_flops(critic),
        "train_fwd_bwd": a["update_epochs"] * (fwd + bwd),
        "optimizer": sgd_steps * params * ADAM_FLOPS_PER_PARAM / batch,
    }
    out["total"] = sum(out.values())
    out["params"] = params
    return out


def dqn_flops(raw: dict[str, Any], obs: int = 4, actions: int = 2) -> dict[str, float]:
    a = raw["agent"]
    sizes = layer_sizes(obs, list(a["hidden"]), actions)
    fwd, bwd = matmul_flops(sizes), backward_flops(sizes)
    batch = a["replay"]["batch_size"]
    steps_per_phase = raw["env"]["num_envs"] * a["train_freq"]
    per_update = batch * (fwd + bwd + fwd * (2 if a["double"] else 1))
    updates_per_step = a["gradient_steps"] / steps_per_phase
    params = num_params(sizes)
    out = {
        "act": fwd,
        "train_fwd_bwd": updates_per_step * per_update,
        "optimizer": updates_per_step * params * ADAM_FLOPS_PER_PARAM,
    }
    out["total"] = sum(out.values())
    out["params"] = params
    return out


def config_flops(name: str) -> dict[str, float]:
    from benchmarks.rl_jobs import load_config

    raw = load_config(name)
    return dqn_flops(raw) if raw["agent"]["name"] == "dqn" else ppo_flops(raw)


# ------------------------------------------------------------------ child jobs


def matmul_rates(seed: int = 0, quick: bool = False) -> dict[str, Any]:
    """GFLOP/s of chains of dependent float32 matmuls ``x = tanh(x @ w) * c``."""
    import jax
    import jax.numpy as jnp

    shapes = {
        "1024x1024 @ 1024x1024 (ceiling)": (1024, 1024, 1024),
        "128x64 @ 64x64 (PPO minibatch)": (128, 64, 64),
        "256x64 @ 64x64 (PPO zoo batch)": (256, 64, 64),
        "4x64 @ 64x64 (PPO acting, 4 envs)": (4, 64, 64),
        "64x256 @ 256x256 (DQN batch)": (64, 256, 256),
        "1x256 @ 256x256 (DQN acting)": (1, 256, 256),
    }
    budget = 2e8 if quick else 4e9  # FLOPs per timed call
    out = {}
    for label, (m, k, n) in shapes.items():
        key = jax.random.PRNGKey(seed)
        x = jax.random.normal(key, (m, k), jnp.float32)
        w = jax.random.normal(key, (k, n), jnp.float32) / jnp.sqrt(k)
        reps = max(1, int(budget / (2 * m * k * n)))

        @jax.jit
        def chain(x, w, reps=reps):
            body = lambda i, x: jnp.tanh(x @ w) * 1.5
            return jax.lax.fori_loop(0, reps, body, x)

        chain(x, w).block_until_ready()
        best = float("inf")
        for _ in range(1 if quick else 3):
            t = time.perf_counter()
            chain(x, w).block_until_ready()
            best = min(best, time.perf_counter() - t)
        out[label] = 2 * m * k * n * reps / best / 1e9
    return out


def xla_forward_check(seed: int = 0) -> dict[str, Any]:
    """XLA's FLOP count of jaxlab's compiled networks vs `matmul_flops`."""
    import jax
    import jax.numpy as jnp

    from agents import dqn, ppo
    from agents.envs import make

    env = make("CartPole-v1")
    out = {}
    batch = 256
    obs = jnp.zeros((batch, 4), jnp.float32)
    net = ppo.actor_critic(env.observation_spec, env.action_spec)
    params = net.init(jax.random.PRNGKey(seed), obs)
    both = lambda p, o: (net.policy(p, o), net.value(p, o))
    flops = jax.jit(both).lower(params, obs).compile().cost_analysis()["flops"]
    out["ppo_actor_critic"] = {
        "xla": flops / batch,
        "analytic": matmul_flops([4, 64, 64, 2]) + matmul_flops([4, 64, 64, 1]),
    }
    q = dqn.q_network(2, hidden=(256, 256))
    qp = q.init(jax.random.PRNGKey(seed), obs)
    flops = jax.jit(q.apply).lower(qp, obs).compile().cost_analysis()["flops"]
    out["dqn_q"] = {"xla": flops / batch, "analytic": matmul_flops([4, 256, 256, 2])}
    return out


def measure(seed: int = 0, quick: bool = False) -> dict[str, Any]:
    """Child job: the matmul rates and the XLA check, in one process."""
    return {"rates": matmul_rates(seed, quick), "xla_check": xla_forward_check(seed)}


# ------------------------------------------------------------------ report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = common.parser("flop_ceiling", __doc__, repeats=1)
    p.add_argument(
        "--throughput",
        type=Path,
        default=common.RESULTS / "rl_throughput.json",
        help="rl_throughput results to express as fractions of the ceiling",
    )
    args = p.parse_args(argv)
    flops = {section: config_flops(cfg) for section, cfg in CONFIGS.items()}
    measured = common.run_job(
        Job("measure", "benchmarks.flop_ceiling:measure", {"quick": args.quick})
    )
    rates, check = measured["rates"], measured["xla_check"]
    labels = list(rates)
    ceiling = rates[labels[0]]

    rows = []
    for section, f in flops.items():
        rows.append(
            (
                f"{section} ({CONFIGS[section]})",
                f"{f['params']:,}",
                *(f"{f.get(k, 0) / 1e3:,.1f}" for k in
                  ("act", "bootstrap_value", "train_fwd_bwd", "optimizer", "total")),
                f"{ceiling * 1e9 / f['total']:,.0f}",
            )
        )  # fmt: skip
    header = (
        "config", "params", "act kFLOP", "bootstrap value kFLOP",
        "train fwd+bwd kFLOP", "Adam kFLOP", "total kFLOP / env step",
        "env steps/s at the ceiling",
    )  # fmt: skip
    tables = [
        "FLOPs per environment step:\n\n" + common.markdown_table(header, rows),
        "Matmul rate (float32, dependent chain, best of 3):\n\n"
        + common.markdown_table(
            ("shape", "GFLOP/s"), [(k, f"{rates[k]:.1f}") for k in labels]
        ),
        "Check of the forward count against XLA's cost analysis (FLOPs per "
        "sample; XLA adds biases and activations):\n\n"
        + common.markdown_table(
            ("network", "analytic (matmuls)", "XLA"),
            [(k, f"{v['analytic']:,}", f"{v['xla']:,.0f}") for k, v in check.items()],
        ),  # fmt: skip
    ]
    fractions: dict[str, Any] = {}
    if args.throughput.exists():
        data = json.loads(args.throughput.read_text())
        rows = []
        for section, contestants in data.get("sections", {}).items():
            f = flops.get(section)
            if f is None:
                continue
            for name, s in contestants.items():
                sps = s["steps_per_s"]["median"]
                gflops = f["total"] * sps / 1e9
                fractions[f"{section}/{name}"] = gflops / ceiling
                rows.append(
                    (section, name, f"{sps:,.0f}", f"{gflops:.2f}",
                     f"{100 * gflops / ceiling:.1f}%")
                )  # fmt: skip
        quick = " (from a --quick run: not a result)" if data.get("quick") else ""
        tables.append(
            f"Runs of {args.throughput.name}{quick} as a fraction of the "
            f"{ceiling:.0f} GFLOP/s ceiling:\n\n"
            + common.markdown_table(
                ("config", "contestant", "env steps/s", "GFLOP/s", "of ceiling"), rows
            )
        )
    else:
        print(f"# no {args.throughput}: run benchmarks.rl_throughput", file=sys.stderr)
    payload = {
        "flops_per_env_step": flops,
        "matmul_gflops": rates,
        "ceiling_gflops": ceiling,
        "xla_check": check,
        "fractions": fractions,
    }
    title = "FLOPs per env step and the matmul ceiling"
    common.report("flop_ceiling", title, "\n\n".join(tables), payload, args.json)
    return payload


if __name__ == "__main__":
    main()
