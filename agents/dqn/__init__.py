"""DQN (Mnih et al. 2015) with double, dueling, n-step and Polyak-target options.

- `dqn(network, optimizer, config) -> Agent(init, act, update)`: pure functions.
- `make_train(env, config, optimizer, num_envs=..., total_env_steps=...)`: the
  whole run on a JAX-native env as one jitted, vmappable program (`Trainer`).
- `HostTrainer`: the same interface on gymnasium environments.
- `train(env="CartPole-v1", total_steps=..., seed=..., **overrides)`: one call.
- `replay`: a jittable circular buffer (`init`, `add`, `sample`).
"""

from agents.dqn import replay as replay
from agents.dqn.agent import Agent as Agent
from agents.dqn.agent import DQNState as DQNState
from agents.dqn.agent import dqn as dqn
from agents.dqn.agent import epsilon_greedy as epsilon_greedy
from agents.dqn.config import DQNConfig as DQNConfig
from agents.dqn.config import ExplorationConfig as ExplorationConfig
from agents.dqn.config import ReplayConfig as ReplayConfig
from agents.dqn.config import as_dqn_config as as_dqn_config
from agents.dqn.exploration import epsilon_schedule as epsilon_schedule
from agents.dqn.exploration import exponential_epsilon as exponential_epsilon
from agents.dqn.exploration import linear_epsilon as linear_epsilon
from agents.dqn.host import HostTrainer as HostTrainer
from agents.dqn.host import evaluate_host as evaluate_host
from agents.dqn.loops import Trainer as Trainer
from agents.dqn.loops import evaluate as evaluate
from agents.dqn.loops import make_train as make_train
from agents.dqn.networks import QNetwork as QNetwork
from agents.dqn.networks import q_network as q_network
from agents.dqn.notebook import train as train
from agents.dqn.replay import ReplayState as ReplayState
from agents.dqn.replay import Transition as Transition
from agents.dqn.rollout import NStepWindow as NStepWindow
from agents.dqn.rollout import RunnerState as RunnerState
from agents.dqn.rollout import n_step_transitions as n_step_transitions

__all__ = [
    "Agent",
    "DQNConfig",
    "DQNState",
    "ExplorationConfig",
    "HostTrainer",
    "NStepWindow",
    "QNetwork",
    "ReplayConfig",
    "ReplayState",
    "RunnerState",
    "Trainer",
    "Transition",
    "as_dqn_config",
    "dqn",
    "epsilon_greedy",
    "epsilon_schedule",
    "evaluate",
    "evaluate_host",
    "exponential_epsilon",
    "linear_epsilon",
    "make_train",
    "n_step_transitions",
    "q_network",
    "replay",
    "train",
]
