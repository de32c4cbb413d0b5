"""The batched environment interface the collector drives, its optional capabilities, and the factory.

Every vector env (``envs.swarm.QuadSwarmVecEnv``, ``marl.pettingzoo_env.PettingZooVecEnv``) satisfies
:class:`VecEnv`: ``reset(seed) -> obs [E, M, D]`` and ``step(actions) -> obs, reward [E, M],
terminated [E, M], truncated [E, M], info``. What only some envs have is a capability, declared by
a small protocol and checked once (:func:`capabilities`): :class:`Snapshots` (exact resume and
collision replay), :class:`CollisionScale` (annealed collision penalties), :class:`StepMetrics`
(per-step time and collision flags, and the field's episode metrics). ``make_vec_env`` builds the
env an ``env`` section names; ``build_policy`` the policy that fits its spaces. Design note:
docs/design/distributed.md ("Collector and learner").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

import agents
from agents.base import ActorCritic, ObsLayout
from envs.config import SwarmConfig
from envs.observations import obs_spec
from envs.state import SimState
from envs.swarm import ACTION_DIM, QuadSwarmVecEnv
from marl.pettingzoo_env import PettingZooEnvConfig, PettingZooVecEnv
from marl.train_config import RunConfig

StepResult = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]


@runtime_checkable
class VecEnv(Protocol):
    """``num_envs`` environments of ``num_agents`` agents each, stepped together with auto-reset.

    ``info`` of a step that ended episodes holds ``episode_env_ids`` [n], ``final_obs`` [E, M, D] and
    ``episode`` (metric name -> [n] values, at least ``episode_return`` and ``episode_length``).
    """

    num_envs: int
    num_agents: int
    obs_dim: int
    act_dim: int  # width of a stored action (1 for a discrete action)
    num_actions: int | None  # None: a Box of act_dim dimensions; A: Discrete(A)
    spec: ObsLayout  # segment sizes of an observation (what the policy needs to split it)
    device: torch.device

    def reset(self, seed: int | None = None) -> torch.Tensor: ...

    def step(self, actions: torch.Tensor) -> StepResult: ...


@runtime_checkable
class Snapshots(Protocol):
    """Env state that can be read and written back: an exact resume and collision replay need it."""

    gen: torch.Generator  # the env's own random draws (checkpointed with the snapshot)

    def get_state(self, env_ids: torch.Tensor) -> SimState: ...

    def set_state(self, env_ids: torch.Tensor, snapshot: SimState) -> torch.Tensor: ...


@runtime_checkable
class CollisionScale(Protocol):
    """A collision penalty that can be scaled (annealed from ``train.anneal.start`` to 1)."""

    collision_scale: float

    def set_collision_scale(self, scale: float) -> None: ...


@runtime_checkable
class StepMetrics(Protocol):
    """Per-step state of the field: ``live.t`` (steps into each episode), ``live.col_nbr`` /
    ``live.col_obs`` (collision flags [M, E]) and ``ctrl_dt`` (seconds per step); such an env reports
    the field's metrics (``EPISODE_KEYS`` of ``marl.collector``) when an episode ends."""

    ctrl_dt: float
    live: Any


@dataclass(frozen=True)
class Capabilities:
    """Which optional protocols an env satisfies (checked once when a collector starts)."""

    snapshots: bool
    collision_scale: bool
    step_metrics: bool


def capabilities(env: VecEnv) -> Capabilities:
    """The optional capabilities of ``env``."""
    return Capabilities(isinstance(env, Snapshots), isinstance(env, CollisionScale), isinstance(env, StepMetrics))


@dataclass(frozen=True)
class EnvInfo:
    """What a policy needs to know of an env: observation layout, agents and action space."""

    spec: ObsLayout
    num_agents: int
    obs_dim: int
    act_dim: int
    num_actions: int | None


def env_info(env_cfg: SwarmConfig | PettingZooEnvConfig) -> EnvInfo:
    """The :class:`EnvInfo` of an ``env`` section: the simulator's from its config, a PettingZoo env's
    from one instance's declared spaces (no vector env of the run is built)."""
    if isinstance(env_cfg, PettingZooEnvConfig):
        env = PettingZooVecEnv(env_cfg, 1)
        try:
            return EnvInfo(env.spec, env.num_agents, env.obs_dim, env.act_dim, env.num_actions)
        finally:
            env.close()
    spec = obs_spec(env_cfg.num_neighbors, env_cfg.leaders)
    return EnvInfo(spec, env_cfg.num_drones, spec.dim, ACTION_DIM, None)


def make_vec_env(env_cfg: SwarmConfig | PettingZooEnvConfig, num_envs: int,
                 device: str | torch.device = "cpu") -> VecEnv:
    """The batch of environments an ``env`` section describes: the simulator or a PettingZoo env."""
    if isinstance(env_cfg, PettingZooEnvConfig):
        return PettingZooVecEnv(env_cfg, num_envs, device)
    return QuadSwarmVecEnv(env_cfg, num_envs=num_envs, device=device)


def build_policy(
    cfg: RunConfig, layout: Any, num_agents: int, num_actions: int | None = None, act_dim: int = ACTION_DIM
) -> ActorCritic:
    """The policy of the ``agent`` section for the env's action space (``num_actions`` for Discrete)."""
    agent = cfg.agent
    if agent.num_actions not in (None, num_actions):
        space = f"Discrete({num_actions})" if num_actions else f"a Box of {act_dim} dimensions"
        raise ValueError(f"agent.num_actions={agent.num_actions} does not match the environment's actions ({space})")
    return agents.make_policy_from_config(agent.model_copy(update={"num_actions": num_actions}), layout, num_agents,
                                          act_dim=act_dim)
