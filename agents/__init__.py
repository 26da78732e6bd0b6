"""jaxlab's RL: JAX-native environments, rlax-based loss operators, agents.

- `agents.envs`: functional environments (CartPole-v1, Catch, Pendulum-v1) and a
  gymnasium vector-env adapter with the same contract.
- `agents.losses`: batched, jittable loss operators built on rlax.
- Agents, each a factory of pure functions plus training loops: `agents.dqn`
  (DQN, double, dueling, n-step), `agents.ppo`, `agents.a2c`, `agents.reinforce`.
- `agents.data_parallel`: Anakin-style data parallelism of the jitted loops
  (each device steps its slice of the environments; `to_host` for checkpoints).
- `AGENTS` / `agent_config`: the registry the config-driven runner uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from agents import a2c as a2c
from agents import data_parallel as data_parallel
from agents import dqn as dqn
from agents import envs as envs
from agents import losses as losses
from agents import ppo as ppo
from agents import reinforce as reinforce
from jaxlab.config import validate
from jaxlab.errors import ConfigError


def _parallel_kwargs(devices: Any, backend: str | None) -> dict[str, Any]:
    """``devices`` / ``backend`` keyword arguments, only those given."""
    kwargs = {}
    if devices is not None:
        kwargs["devices"] = devices
    if backend is not None:
        kwargs["backend"] = backend
    return kwargs


def _dqn_make_train(
    env_id,
    config,
    optimizer,
    *,
    num_envs,
    total_env_steps,
    devices=None,
    backend=None,
    **kw,
):
    return dqn.make_train(
        envs.make(env_id, **kw),
        config,
        optimizer,
        num_envs=num_envs,
        total_env_steps=total_env_steps,
        **_parallel_kwargs(devices, backend),
    )


def _dqn_make_host_train(env_id, config, optimizer, *, num_envs, total_env_steps, **kw):
    return dqn.HostTrainer(
        env_id,
        config,
        optimizer,
        num_envs=num_envs,
        total_env_steps=total_env_steps,
        **kw,
    )


def _on_policy(
    module: Any, *, parallel_ok: bool = True
) -> tuple[Callable, Callable | None]:
    def make_train(
        env_id,
        config,
        optimizer,
        *,
        num_envs,
        total_env_steps,
        devices=None,
        backend=None,
        **kw,
    ):
        parallel = _parallel_kwargs(devices, backend)
        if "devices" in parallel and len(parallel["devices"]) > 1 and not parallel_ok:
            raise ConfigError(
                f"parallel.devices: {module.__name__} does not support "
                "data-parallel training; use one device"
            )
        if not parallel_ok:
            parallel = {}
        env = envs.make(env_id, **kw)
        return module.make_train(
            env,
            config,
            optimizer,
            num_envs=num_envs,
            total_env_steps=total_env_steps,
            **parallel,
        )

    host = getattr(module, "make_host_train", None)
    if host is None:
        return make_train, None

    def make_host_train(env_id, config, optimizer, *, num_envs, total_env_steps, **kw):
        env = envs.GymnasiumVecEnv(env_id, num_envs, **kw)
        return host(env, config, optimizer, total_env_steps=total_env_steps)

    return make_train, make_host_train


class AgentEntry(NamedTuple):
    """How the config-driven runner builds an agent's training run.

    Attributes:
      config_cls: the agent's validated config dataclass.
      make_train: ``(env_id, config, optimizer, *, num_envs, total_env_steps,
        devices=None, backend=None, **env_kwargs) -> Trainer`` on a JAX-native
        environment; `devices` (two or more) and `backend` (``"pmap"`` or
        ``"shard_map"``) make it data-parallel (not REINFORCE).
      make_host_train: the same on gymnasium environments (None if unsupported).
    """

    config_cls: type
    make_train: Callable[..., Any]
    make_host_train: Callable[..., Any] | None


AGENTS: Mapping[str, AgentEntry] = {
    "dqn": AgentEntry(dqn.DQNConfig, _dqn_make_train, _dqn_make_host_train),
    "ppo": AgentEntry(ppo.PPOConfig, *_on_policy(ppo)),
    "a2c": AgentEntry(a2c.A2CConfig, *_on_policy(a2c)),
    "reinforce": AgentEntry(
        reinforce.ReinforceConfig, *_on_policy(reinforce, parallel_ok=False)
    ),
}


def agent_config(raw: Mapping[str, Any]) -> Any:
    """Validates an ``agent:`` config section by its ``name`` (errors name
    ``agent.<field>``)."""
    name = raw.get("name")
    if not isinstance(name, str) or name not in AGENTS:
        raise ConfigError(f"agent.name: expected one of {sorted(AGENTS)}, got {name!r}")
    return validate(AGENTS[name].config_cls, dict(raw), prefix="agent")


__all__ = [
    "AGENTS",
    "AgentEntry",
    "a2c",
    "agent_config",
    "data_parallel",
    "dqn",
    "envs",
    "losses",
    "ppo",
    "reinforce",
]
