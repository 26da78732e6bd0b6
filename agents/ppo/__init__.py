"""PPO, and the on-policy machinery A2C and REINFORCE share.

```python
from agents import ppo

agent_state, metrics = ppo.train("CartPole-v1", 5e5, seed=0)   # notebook one-liner

trainer = ppo.make_train("CartPole-v1", ppo.PPOConfig(), {"name": "adam",
                         "learning_rate": 2.5e-4, "eps": 1e-5},
                         num_envs=4, total_env_steps=500_000)
runner_state, metrics = jax.jit(jax.vmap(trainer.train))(keys)  # seeds at once
trainer.evaluate(agent_state, key, num_episodes=10)             # greedy return

host = ppo.make_host_train("CartPole-v1", config, optimizer, num_envs=8,
                           total_env_steps=100_000)             # gymnasium
```

Modules: `config` (`PPOConfig`), `networks` (separate actor and critic MLPs,
categorical and Gaussian policies), `agent` (`ppo` -> `Agent(init, act, update)`,
truncation-aware GAE), `training` (the jitted loop on JAX-native environments,
`evaluate`, `train`), `host` (the loop on gymnasium environments).
"""

from agents.ppo.agent import Agent as Agent
from agents.ppo.agent import PPOState as PPOState
from agents.ppo.agent import Trajectory as Trajectory
from agents.ppo.agent import ppo as ppo
from agents.ppo.agent import truncation_aware_gae as truncation_aware_gae
from agents.ppo.config import PPOConfig as PPOConfig
from agents.ppo.host import HostRunnerState as HostRunnerState
from agents.ppo.host import HostTrainer as HostTrainer
from agents.ppo.host import evaluate_host as evaluate_host
from agents.ppo.host import make_host_train as make_host_train
from agents.ppo.networks import ActionDist as ActionDist
from agents.ppo.networks import ActorCritic as ActorCritic
from agents.ppo.networks import actor_critic as actor_critic
from agents.ppo.training import RunnerState as RunnerState
from agents.ppo.training import Trainer as Trainer
from agents.ppo.training import evaluate as evaluate
from agents.ppo.training import make_on_policy_train as make_on_policy_train
from agents.ppo.training import make_train as make_train
from agents.ppo.training import train as train

__all__ = [
    "ActionDist",
    "ActorCritic",
    "Agent",
    "HostRunnerState",
    "HostTrainer",
    "PPOConfig",
    "PPOState",
    "RunnerState",
    "Trainer",
    "Trajectory",
    "actor_critic",
    "evaluate",
    "evaluate_host",
    "make_host_train",
    "make_on_policy_train",
    "make_train",
    "ppo",
    "train",
    "truncation_aware_gae",
]
