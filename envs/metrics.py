"""Per-episode metrics of the field (quad-swarm-rl), computed per drone and averaged per env.

* reached goal: the mean distance to goal over some ``reach_window`` consecutive steps fell below the
  scenario's threshold (0.5 m, or 1.0 m for shared-goal scenarios);
* success: reached goal and no neighbour or obstacle collision after the grace period;
* collision: a neighbour or obstacle collision after the grace period (success + deadlock +
  collision = 1); floor and wall contacts are reported separately;
* deadlock: no collision and goal not reached;
* distance_to_goal_{1,3,5}s: mean distance to goal over the final 1, 3 and 5 seconds.
"""

from __future__ import annotations

import torch

from envs.state import SimState

METRIC_NAMES = (
    "success_rate",
    "reached_goal_rate",
    "deadlock_rate",
    "collision_rate",
    "neighbour_collision_rate",
    "obstacle_collision_rate",
    "floor_collision_rate",
    "wall_collision_rate",
    "distance_to_goal_1s",
    "distance_to_goal_3s",
    "distance_to_goal_5s",
    "episode_return",
    "episode_length",
)
LAST_SECONDS = (1.0, 3.0, 5.0)


def episode_metrics(s: SimState, env_ids: torch.Tensor, window_steps: torch.Tensor) -> dict[str, torch.Tensor]:
    """Metrics [n] for the environments env_ids at the end of their episodes.

    window_steps: [3] number of steps summed into dist_last (the last 1, 3, 5 s, capped by the episode).
    """
    reached = s.reached[env_ids]
    nbr, obs = s.col_nbr[env_ids], s.col_obs[env_ids]
    collided = nbr | obs
    dist = s.dist_last[env_ids] / window_steps  # [n, M, 3]
    rate = lambda x: x.float().mean(-1)  # noqa: E731 - fraction of drones
    return {
        "success_rate": rate(reached & ~collided),
        "reached_goal_rate": rate(reached),
        "deadlock_rate": rate(~reached & ~collided),
        "collision_rate": rate(collided),
        "neighbour_collision_rate": rate(nbr),
        "obstacle_collision_rate": rate(obs),
        "floor_collision_rate": rate(s.col_floor[env_ids]),
        "wall_collision_rate": rate(s.col_wall[env_ids]),
        "distance_to_goal_1s": dist[..., 0].mean(-1),
        "distance_to_goal_3s": dist[..., 1].mean(-1),
        "distance_to_goal_5s": dist[..., 2].mean(-1),
        "episode_return": s.ret[env_ids].mean(-1),
        "episode_length": s.t[env_ids].float(),
    }
