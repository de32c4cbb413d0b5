"""Per-step reward of quad-swarm-rl (obstacle runs), every coefficient a RewardConfig value.

r = -dt (c_pos |p - g| + c_act |a| + c_floor on_floor + c_orient (-R22) + c_spin |omega|)
    + dt c_prec exp(-(|p - g| / r_prec)^2)   (goal holding; c_prec = 0 in the reference)
    - c_col (new neighbour collisions) - c_prox dt sum_j max(0, 1 - d_ij / (k arm))
    - c_obst (new obstacle collision),
scaled collision terms by ``collision_scale`` (the trainer anneals it from 0 to 1), clipped to +-clip.
"""

from __future__ import annotations

import torch

from envs.config import RewardConfig


def swarm_reward(
    cfg: RewardConfig,
    dt: float,
    arm: float,
    dist_to_goal: torch.Tensor,
    action: torch.Tensor,
    on_floor: torch.Tensor,
    r22: torch.Tensor,
    omega: torch.Tensor,
    pair_dist: torch.Tensor,
    new_nbr_col: torch.Tensor,
    new_obs_col: torch.Tensor,
    collision_scale: float,
) -> torch.Tensor:
    """Reward [M, E] (working layout: components first, envs last).

    action [4, M, E]; omega [3, M, E]; pair_dist [M, M, E] with +inf on the diagonal; new_nbr_col
    [M, E] counts of new neighbour collisions; the other arguments are [M, E].
    """
    shaping = (
        cfg.pos * dist_to_goal
        + cfg.action * (action * action).sum(0).sqrt()
        + cfg.floor * on_floor.float()
        - cfg.orient * r22
        + cfg.spin * (omega * omega).sum(0).sqrt()
    )
    falloff = cfg.proximity_radius_arms * arm
    proximity = (1.0 - pair_dist / falloff).clamp_min(0.0).sum(1)
    collisions = cfg.neighbour_collision * new_nbr_col + cfg.obstacle_collision * new_obs_col.float()
    if cfg.precision:
        shaping = shaping - cfg.precision * torch.exp(-((dist_to_goal / cfg.precision_radius) ** 2))
    reward = -dt * shaping - collision_scale * (collisions + cfg.neighbour_proximity * dt * proximity)
    return reward.clamp(-cfg.clip, cfg.clip)
