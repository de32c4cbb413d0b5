"""Per-agent observation: self (19) + K nearest neighbours (6 K) + local obstacle SDF (9).

Layout (quad-swarm-rl): [p - g (3), v (3), R flattened row-major (9), omega (3), z (1)],
then for each of the K nearest neighbours [p_j - p_i (3), v_j - v_i (3)], then the 3 x 3 SDF.
Neighbours are ranked by distance + dot(unit relative position, relative velocity), so that a
neighbour closing in counts as nearer than one moving away.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SELF_DIM = 19
NEIGHBOUR_DIM = 6
OBSTACLE_DIM = 9


@dataclass(frozen=True)
class ObsSpec:
    """Segment sizes of the observation, for policies that split it (agents/ reads this, not the sim)."""

    self_dim: int
    num_neighbors: int
    neighbour_dim: int
    obstacle_dim: int

    @property
    def dim(self) -> int:
        """Total width."""
        return self.self_dim + self.num_neighbors * self.neighbour_dim + self.obstacle_dim


def obs_spec(num_neighbors: int) -> ObsSpec:
    """The observation layout for K neighbours."""
    return ObsSpec(SELF_DIM, num_neighbors, NEIGHBOUR_DIM, OBSTACLE_DIM)


def nearest_neighbours(
    pos: torch.Tensor, vel: torch.Tensor, rel_pos: torch.Tensor, dist: torch.Tensor, k: int
) -> torch.Tensor:
    """Neighbour features [E, M, K, 6] of the K best-ranked other drones.

    pos, vel: [E, M, 3]; rel_pos: [E, M, M, 3] (p_j - p_i); dist: [E, M, M], +inf on the diagonal.
    """
    rel_vel = vel.unsqueeze(1) - vel.unsqueeze(2)
    score = dist + (rel_pos * rel_vel).sum(-1) / dist.clamp_min(1e-6)  # inf on the diagonal
    idx = score.topk(k, dim=-1, largest=False, sorted=True).indices  # [E, M, K]
    e, m = idx.shape[:2]
    flat = idx.reshape(e, m * k, 1).expand(-1, -1, 3)
    own = lambda x: x.unsqueeze(2)  # noqa: E731
    nb_pos = pos.gather(1, flat).view(e, m, k, 3) - own(pos)
    nb_vel = vel.gather(1, flat).view(e, m, k, 3) - own(vel)
    return torch.cat([nb_pos, nb_vel], -1)


def build_observation(
    pos: torch.Tensor,
    vel: torch.Tensor,
    rot: torch.Tensor,
    omega: torch.Tensor,
    goals: torch.Tensor,
    neighbours: torch.Tensor | None,
    sdf: torch.Tensor,
) -> torch.Tensor:
    """Concatenate the segments into [E, M, 19 + 6K + 9]."""
    e, m = pos.shape[:2]
    parts = [pos - goals, vel, rot.reshape(e, m, 9), omega, pos[..., 2:3]]
    if neighbours is not None:
        parts.append(neighbours.reshape(e, m, -1))
    parts.append(sdf)
    return torch.cat(parts, -1)
