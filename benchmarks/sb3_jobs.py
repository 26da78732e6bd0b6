"""Stable-Baselines3 (PyTorch) peers: PPO and DQN on gymnasium's CartPole-v1.

The presets translate the same hyperparameters jaxlab's configs use:

- ``purejaxrl``: PureJaxRL's PPO (4 envs x 128 steps, 4 epochs of minibatches
  of 128, Adam 2.5e-4 annealed linearly, clip 0.2 with value clipping 0.2,
  entropy 0.01, gae 0.95, gamma 0.99, 64-64 tanh actor and critic).
- ``zoo``: RL-Baselines3-Zoo's ``CartPole-v1`` PPO (hyperparams/ppo.yml: 8 envs
  x 32 steps, batch 256, 20 epochs, gamma 0.98, gae 0.8, lin_0.001, lin_0.2,
  no entropy bonus).
- DQN: RL-Zoo's ``CartPole-v1`` DQN (hyperparams/dqn.yml: lr 2.3e-3, batch 64,
  buffer 1e5, learning_starts 1000, gamma 0.99, target_update_interval 10,
  train_freq 256, gradient_steps 128, exploration 0.16 -> 0.04, 256-256).

PyTorch runs on `threads` threads (default 1). On this 2-core machine SB3 with
2 threads ran 10x slower than with 1 (3,860 vs 400 env steps/s at the zoo PPO
settings, load ~3): its networks are too small to split, and OpenMP workers
spin against the other processes. RL-Zoo's own runs usually pin 1 thread too.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.common import since_start


def _linear(start: float):
    return lambda progress_remaining: progress_remaining * start


def _ppo_kwargs(preset: str) -> tuple[int, dict[str, Any]]:
    if preset == "purejaxrl":
        return 4, dict(
            n_steps=128,
            batch_size=128,
            n_epochs=4,
            learning_rate=_linear(2.5e-4),
            clip_range=0.2,
            clip_range_vf=0.2,
            ent_coef=0.01,
            vf_coef=0.5,
            max_grad_norm=0.5,
            gae_lambda=0.95,
            gamma=0.99,
        )
    if preset == "zoo":
        return 8, dict(
            n_steps=32,
            batch_size=256,
            n_epochs=20,
            learning_rate=_linear(1e-3),
            clip_range=_linear(0.2),
            ent_coef=0.0,
            gae_lambda=0.8,
            gamma=0.98,
        )
    raise ValueError(f"unknown preset {preset!r}")


def _greedy_return(model, seed: int, episodes: int) -> list[float]:
    import gymnasium
    from stable_baselines3.common.evaluation import evaluate_policy

    env = gymnasium.make("CartPole-v1")
    env.reset(seed=10_000 + seed)
    rewards, _ = evaluate_policy(
        model,
        env,
        n_eval_episodes=episodes,
        deterministic=True,
        return_episode_rewards=True,
    )
    env.close()
    return rewards


def ppo(
    seed: int,
    preset: str,
    total_env_steps: int,
    eval_episodes: int = 20,
    threads: int = 1,
) -> dict[str, Any]:
    """SB3 PPO, DummyVecEnv of gymnasium CartPole-v1."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(threads)
    import_s = since_start()
    num_envs, kwargs = _ppo_kwargs(preset)
    t0 = time.perf_counter()
    env = make_vec_env("CartPole-v1", n_envs=num_envs, seed=seed)
    model = PPO(
        "MlpPolicy",
        env,
        seed=seed,
        device="cpu",
        policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64])),
        **kwargs,
    )
    t1 = time.perf_counter()
    model.learn(total_timesteps=total_env_steps)
    t2 = time.perf_counter()
    steps = int(model.num_timesteps)
    rewards = _greedy_return(model, seed, eval_episodes)
    return {
        "import_s": import_s,
        "compile_s": 0.0,
        "setup_s": t1 - t0,
        "run_s": t2 - t1,
        "env_steps": steps,
        "steps_per_s": steps / (t2 - t1),
        "returns": [sum(rewards) / len(rewards)],
        "threads": torch.get_num_threads(),
    }


def dqn(
    seed: int, total_env_steps: int, eval_episodes: int = 20, threads: int = 1
) -> dict[str, Any]:
    """SB3 DQN at RL-Zoo's CartPole-v1 settings."""
    import gymnasium
    import torch
    from stable_baselines3 import DQN

    torch.set_num_threads(threads)
    import_s = since_start()
    t0 = time.perf_counter()
    env = gymnasium.make("CartPole-v1")
    model = DQN(
        "MlpPolicy",
        env,
        seed=seed,
        device="cpu",
        learning_rate=2.3e-3,
        batch_size=64,
        buffer_size=100_000,
        learning_starts=1000,
        gamma=0.99,
        target_update_interval=10,
        train_freq=256,
        gradient_steps=128,
        exploration_fraction=0.16,
        exploration_final_eps=0.04,
        policy_kwargs=dict(net_arch=[256, 256]),
    )
    t1 = time.perf_counter()
    model.learn(total_timesteps=total_env_steps)
    t2 = time.perf_counter()
    steps = int(model.num_timesteps)
    rewards = _greedy_return(model, seed, eval_episodes)
    return {
        "import_s": import_s,
        "compile_s": 0.0,
        "setup_s": t1 - t0,
        "run_s": t2 - t1,
        "env_steps": steps,
        "steps_per_s": steps / (t2 - t1),
        "returns": [sum(rewards) / len(rewards)],
        "threads": torch.get_num_threads(),
    }
