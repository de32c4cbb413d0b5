"""The interface between policies and the trainer: an actor-critic over a swarm's observations.

Every policy maps observations [B, M, D] (B batch rows, each one environment's M agents) to a
per-agent Gaussian over the 4 motor commands and a per-agent value. Keeping the agent axis lets a
policy share information across agents (attention over neighbours is per agent, but CommFormer's
communication graph or a centralised critic look at all M agents of an environment).

The observation layout comes from the environment as an ``ObsSpec``-like object with segment sizes
(self_dim, num_neighbors, neighbour_dim, obstacle_dim); agents/ never imports simulator code.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn
from torch.distributions import Normal


class ObsLayout(Protocol):
    """Segment sizes of a flat per-agent observation (envs.observations.ObsSpec satisfies it)."""

    self_dim: int
    num_neighbors: int
    neighbour_dim: int
    obstacle_dim: int

    @property
    def dim(self) -> int: ...


class ActorCritic(nn.Module):
    """Base class of trainable swarm policies. Subclasses implement ``forward``."""

    act_dim: int = 4

    def forward(self, obs: torch.Tensor) -> tuple[Normal, torch.Tensor]:
        """obs [B, M, D] -> (action distribution with batch shape [B, M, 4], value [B, M])."""
        raise NotImplementedError

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample (or take the mean of) the policy: (action [B, M, 4], log_prob [B, M], value [B, M])."""
        dist, value = self(obs)
        action = dist.mean if deterministic else dist.sample()
        return action, dist.log_prob(action).sum(-1), value

    def evaluate(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For the PPO loss: (log_prob [B, M], entropy [B, M], value [B, M]) of given actions."""
        dist, value = self(obs)
        return dist.log_prob(action).sum(-1), dist.entropy().sum(-1), value
