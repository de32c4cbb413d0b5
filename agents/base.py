"""The interface between policies and the trainer: an actor-critic over a swarm's observations.

Every policy maps observations [B, M, D] (B batch rows, each one environment's M agents) to a
per-agent action distribution and a per-agent value: a Gaussian over ``act_dim`` continuous commands
(the 4 motor commands of a quadrotor), or, with ``num_actions`` set, a categorical over that many
discrete actions (grid worlds, MPE), whose actions travel as integers [B, M] (or [B, M, 1] floats in
a rollout buffer). Keeping the agent axis lets a
policy share information across agents (attention over neighbours is per agent, but CommFormer's
communication graph or a centralised critic look at all M agents of an environment).

The observation layout comes from the environment as a ``quadspec.ObsLayout`` (segment sizes self_dim,
num_neighbors, neighbour_dim, obstacle_dim); agents/ never imports simulator code.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Normal

# The layout record is the contract module's (segment sizes self_dim, num_neighbors, neighbour_dim,
# obstacle_dim and their sum ``dim``); any object with those fields is accepted where one is expected.
from quadspec import ObsLayout

__all__ = ["ActorCritic", "ObsLayout"]


class ActorCritic(nn.Module):
    """Base class of trainable swarm policies.

    Subclasses set ``obs_dim``, ``actor`` (obs [B, M, D] -> Gaussian means [B, M, act_dim] with ``std()``,
    or logits [B, M, A]) and ``critic`` (obs -> values [B, M]).
    """

    act_dim: int = 4  # width of a stored action: the Gaussian's dimensions, 1 for a categorical head
    num_actions: int | None = None  # None: Gaussian head; A: categorical over A discrete actions
    obs_dim: int
    actor: nn.Module
    critic: nn.Module

    def forward(self, obs: torch.Tensor) -> tuple[Distribution, torch.Tensor]:
        """obs [B, M, D] -> (Normal [B, M, act_dim] or Categorical [B, M], value [B, M])."""
        return self.distribution(obs), self.critic(obs)

    def distribution(self, obs: torch.Tensor) -> Distribution:
        """The action distribution alone, without the critic's pass: what a policy-only update re-evaluates."""
        if obs.dim() != 3 or obs.shape[-1] != self.obs_dim:
            raise ValueError(f"expected observations [B, M, {self.obs_dim}], got {list(obs.shape)}")
        out = self.actor(obs)  # [B, M, act_dim] means or [B, M, A] logits
        if self.num_actions is not None:
            return Categorical(logits=out)
        return Normal(out, self.actor.std().expand_as(out))

    def log_prob(self, dist: Distribution, action: torch.Tensor) -> torch.Tensor:
        """Joint log-probability [B, M] of each agent's action (summed over Gaussian dimensions)."""
        if self.num_actions is not None:
            return dist.log_prob(action.reshape(dist.batch_shape).long())
        return dist.log_prob(action).sum(-1)

    def entropy(self, dist: Distribution) -> torch.Tensor:
        """Entropy [B, M] of each agent's action distribution."""
        return dist.entropy() if self.num_actions is not None else dist.entropy().sum(-1)

    def sample(self, dist: Distribution, deterministic: bool = False) -> torch.Tensor:
        """An action per agent: [B, M, act_dim] (Gaussian) or [B, M] int64 (categorical); the mode if deterministic."""
        if self.num_actions is not None:
            return dist.probs.argmax(-1) if deterministic else dist.sample()
        return dist.mean if deterministic else dist.sample()

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample (or take the mode of) the policy: (action, log_prob [B, M], value [B, M])."""
        dist, value = self(obs)
        action = self.sample(dist, deterministic)
        return action, self.log_prob(dist, action), value

    def evaluate(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For the PPO loss: (log_prob [B, M], entropy [B, M], value [B, M]) of given actions."""
        dist, value = self(obs)
        return self.log_prob(dist, action), self.entropy(dist), value

    # Hooks the trainer, PPO and evaluation call on every policy; these defaults do nothing, a policy
    # with a learned communication graph (CommFormer) overrides them.
    def set_training_progress(self, update: int, total_updates: int) -> None:
        """Where training stands (completed updates of ``total_updates``), told before every rollout and update."""

    def edge_parameters(self) -> list[nn.Parameter]:
        """Parameters of the outer level of a bi-level update (a graph's edge logits); none by default."""
        return []

    def policy_parameters(self) -> list[nn.Parameter]:
        """Every parameter that is not an edge parameter (the inner level of a bi-level update)."""
        edges = {id(p) for p in self.edge_parameters()}
        return [p for p in self.parameters() if id(p) not in edges]

    def gate_penalty(self, obs: torch.Tensor) -> torch.Tensor | None:
        """An extra differentiable loss term on observations [B, M, D] that PPO adds; None: no extra term."""
        return None

    def communication_stats(self, obs: torch.Tensor) -> dict[str, float]:
        """What the policy's communication does on observations [B, M, D] (logged per update; a communicating
        policy reports ``communication_rate`` among them); {} for a policy that does not communicate."""
        return {}
