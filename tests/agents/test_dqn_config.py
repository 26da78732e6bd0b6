"""Tests for agents.dqn.config: validation errors name the field."""

import dataclasses
from pathlib import Path

import pytest

from agents.dqn import DQNConfig, ExplorationConfig, ReplayConfig, as_dqn_config
from jaxlab.config import read_config_file
from jaxlab.errors import ConfigError
from jaxlab.optim import as_optimizer_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_defaults():
    config = as_dqn_config()
    assert config == DQNConfig()
    assert config.name == "dqn" and config.double and not config.dueling
    assert config.hidden == [64, 64] and config.loss == "huber"
    assert config.discount == 0.99 and config.n_step == 1
    assert config.target_tau is None
    assert config.exploration == ExplorationConfig()
    assert config.replay == ReplayConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.double = False


def test_from_dict_with_overrides():
    config = as_dqn_config(
        {"hidden": [32], "replay": {"capacity": 100, "min_size": 10}},
        activation="TANH",
        exploration={"schedule": "exponential", "decay_rate": 0.5},
    )
    assert config.hidden == [32] and config.activation == "tanh"
    assert config.replay.capacity == 100 and config.replay.batch_size == 64
    assert config.exploration.decay_rate == 0.5
    assert as_dqn_config(config, double=False).double is False


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"discount": 1.5}, "agent.discount: input should be less than or equal to 1"),
        ({"hidden": ["64"]}, "agent.hidden[0]: input should be a valid integer"),
        ({"hidden": [0]}, "agent.hidden[0]: input should be greater than 0"),
        ({"loss": "l1"}, "agent.loss: input should be 'huber' or 'l2'"),
        ({"lr": 1.0}, "agent.lr: unknown field"),
        ({"name": "ppo"}, "agent.name: input should be 'dqn'"),
        ({"activation": "relu6"}, "agent.activation: unknown activation 'relu6'"),
        ({"target_tau": 0.0}, "agent.target_tau: input should be greater than 0"),
        ({"train_freq": 0}, "agent.train_freq: input should be greater than 0"),
        ({"double": "yes"}, "agent.double: input should be a valid boolean"),
        (
            {"replay": {"prioritized": True}},
            "agent.replay.prioritized: prioritized replay is not implemented",
        ),
        (
            {"replay": {"capacity": 10, "min_size": 20}},
            "agent.replay.min_size: must be <= capacity (10), got 20",
        ),
        (
            {"exploration": {"schedule": "exponential"}},
            "agent.exploration.decay_rate: required for the exponential schedule",
        ),
        (
            {"exploration": {"decay_rate": 0.5}},
            "agent.exploration.decay_rate: only used by the exponential schedule",
        ),
        (
            {"exploration": {"start": 0.1, "end": 0.5}},
            "agent.exploration.end: must be <= start",
        ),
        ({"exploration": {"steps": 1.5}}, "agent.exploration.steps: input should be"),
    ],
)
def test_errors_name_the_field(raw, message):
    with pytest.raises(ConfigError) as info:
        as_dqn_config(raw)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "name", ["cartpole_ddqn.yaml", "cartpole_dqn_zoo.yaml", "catch_dqn.yaml"]
)
def test_shipped_configs_validate(name):
    raw = read_config_file(CONFIGS / name)
    assert raw["kind"] == "rl"
    assert set(raw) == {"name", "kind", "seed", "env", "agent", "optimizer", "train"}
    assert set(raw["env"]) == {"id", "backend", "num_envs"}
    assert set(raw["train"]) == {
        "env_steps",
        "eval_every",
        "eval_episodes",
        "log_every",
        "checkpoint_every",
    }
    as_dqn_config(raw["agent"])
    as_optimizer_config(raw["optimizer"])
