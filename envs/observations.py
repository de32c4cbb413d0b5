"""Per-agent observation: self (19) + K nearest neighbours (6 K) + local obstacle SDF (9).

Layout (quad-swarm-rl): [p - g (3), v (3), R flattened row-major (9), omega (3), z (1)],
then for each of the K nearest neighbours [p_j - p_i (3), v_j - v_i (3)], then the 3 x 3 SDF.
With ``leaders`` set (the leader task), only drones 0..leaders-1 see the goal: the others get zeros
in place of p - g, and the self segment ends with a 20th feature, 1 for a leader and 0 otherwise.
Neighbours are ranked by distance + dot(unit relative position, relative velocity), so that a
neighbour closing in counts as nearer than one moving away.
"""

from __future__ import annotations

import torch

from quadspec import NEIGHBOUR_DIM, OBSTACLE_DIM, SELF_DIM, ObsLayout, obs_layout

__all__ = ["NEIGHBOUR_DIM", "OBSTACLE_DIM", "SELF_DIM", "ObsSpec", "build_observation", "nearest_neighbours",
           "obs_spec"]

TIE_BREAK = 1e-5  # metres added per neighbour index to the ranking score

# The segment sizes and the layout record live in the contract module (quadspec), shared with agents/
# and deploy/; these names keep the simulator's spelling.
ObsSpec = ObsLayout
obs_spec = obs_layout


def nearest_neighbours(
    pos: torch.Tensor, vel: torch.Tensor, rel_pos: torch.Tensor, dist: torch.Tensor, k: int
) -> torch.Tensor:
    """Neighbour features [6 K, M, E] of the K best-ranked other drones (working layout).

    pos, vel: [3, M, E]; rel_pos: [3, M(i), M(j), E] (p_j - p_i); dist: [M, M, E], +inf on the diagonal.
    """
    m = dist.shape[0]
    index = torch.arange(m, device=dist.device, dtype=dist.dtype).view(1, m, 1)
    rel_vel = vel.unsqueeze(1) - vel.unsqueeze(2)  # [3, M, M, E]: v_j - v_i
    # A 10-micrometre tie-break by index keeps the minimum unique for symmetric placements.
    score = dist + (rel_pos * rel_vel).sum(0) / dist.clamp_min(1e-6) + TIE_BREAK * index
    out = []
    # K rounds of a one-hot minimum over the (outer) neighbour axis, turned into an index for a
    # gather: arg-min or top-k over an outer or a small inner axis are much slower on a CPU.
    for _ in range(k):
        first = score == score.amin(1, keepdim=True)  # [M, M, E]
        j = (first * index).sum(1).long().clamp_(0, m - 1).unsqueeze(0).expand_as(pos)  # [3, M, E]
        out += [pos.gather(1, j) - pos, vel.gather(1, j) - vel]
        score.masked_fill_(first, float("inf"))
    return torch.cat(out)


def build_observation(
    pos: torch.Tensor,
    vel: torch.Tensor,
    rot: torch.Tensor,
    omega: torch.Tensor,
    goals: torch.Tensor,
    neighbours: torch.Tensor | None,
    sdf: torch.Tensor,
    leaders: int = 0,
) -> torch.Tensor:
    """Concatenate the segments (working layout, [c, M, E]) into the agent-major [E, M, D] (see obs_spec)."""
    m, e = pos.shape[1:]
    to_goal = pos - goals
    parts = [to_goal, vel, rot.reshape(9, m, e), omega, pos[2:3]]
    if leaders:
        is_leader = (torch.arange(m, device=pos.device) < leaders).to(pos.dtype).view(1, m, 1)
        parts[0] = to_goal * is_leader
        parts.append(is_leader.expand(1, m, e))
    if neighbours is not None:
        parts.append(neighbours)
    parts.append(sdf)
    return torch.cat(parts).permute(2, 1, 0).contiguous()
