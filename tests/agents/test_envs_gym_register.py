"""Catch, a JAX-only environment, also runs as a gymnasium environment."""

from __future__ import annotations

import gymnasium
import numpy as np

import agents  # noqa: F401  (registers the ids)
from agents.envs import GymnasiumVecEnv


def test_catch_as_a_gymnasium_env_plays_whole_episodes():
    env = gymnasium.make("Catch")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (10, 5) and obs.dtype == np.float32
    assert env.observation_space.contains(obs)
    rewards, steps, done = [], 0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(1)  # stay
        rewards.append(reward)
        steps += 1
        done = terminated or truncated
    assert steps == 9 and terminated and not truncated
    assert rewards[:-1] == [0.0] * 8 and rewards[-1] in (-1.0, 1.0)
    # The last observation shows the ball in the bottom row.
    assert obs[-1].sum() >= 1.0


def test_catch_vectorized_through_the_adapter():
    with GymnasiumVecEnv("Catch", 3, seed=1) as env:
        env.reset()
        finished = 0
        for _ in range(9):
            _, reward, terminated, _, info = env.step(np.ones(3, np.int32))
            finished += int(terminated.sum())
        assert finished == 3
        assert set(np.abs(info["episode_return"]).tolist()) == {1.0}
