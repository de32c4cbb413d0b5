"""Per-episode metrics of the field (quad-swarm-rl), computed per drone and averaged per env.

* reached goal: the mean distance to goal over some ``reach_window`` consecutive steps fell below the
  scenario's threshold (0.5 m, or 1.0 m for shared-goal scenarios);
* success: reached goal and no neighbour or obstacle collision after the grace period;
* collision: a neighbour or obstacle collision after the grace period (success + deadlock +
  collision = 1); floor and wall contacts are reported separately;
* deadlock: no collision and goal not reached;
* distance_to_goal_{1,3,5}s: mean distance to goal over the final 1, 3 and 5 seconds;
* time_to_goal: seconds from the episode start to each drone's first arrival within the reach radius
  (the scenario's threshold, the same radius as the reached-goal test but on the instantaneous
  distance), averaged over the drones. A drone that never arrives counts the full episode length
  (a censored value: read it beside reached_goal_rate), so a timid swarm scores worse, never better,
  than one that arrives late. Not a field metric of quad-swarm-rl: ours, to tell fast policies from slow.
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
    "time_to_goal",
    "episode_return",
    "episode_length",
)
LAST_SECONDS = (1.0, 3.0, 5.0)


def episode_metrics(
    live: SimState, env_ids: torch.Tensor, window_steps: torch.Tensor, control_dt: float
) -> dict[str, torch.Tensor]:
    """Metrics [n] for the environments env_ids at the end of their episodes.

    live: the simulator's state in its working layout (env axis last, drones before it).
    window_steps: [3] steps summed into dist_last (the last 1, 3, 5 s, capped by the episode).
    control_dt: seconds per control step (live.t and live.arrive_t count control steps).
    """
    pick = lambda x: x[..., env_ids]  # noqa: E731
    rate = lambda x: pick(x).float().mean(0)  # noqa: E731 - fraction of drones
    reached, nbr, obs = pick(live.reached), pick(live.col_nbr), pick(live.col_obs)
    collided = nbr | obs
    dist = (pick(live.dist_last) / window_steps.view(3, 1, 1)).mean(1)  # [3, n]
    length = pick(live.t).float()  # [n] steps
    arrive = torch.minimum(pick(live.arrive_t), length)  # [M, n]; never arrived -> the episode length
    return {
        "success_rate": (reached & ~collided).float().mean(0),
        "reached_goal_rate": reached.float().mean(0),
        "deadlock_rate": (~reached & ~collided).float().mean(0),
        "collision_rate": collided.float().mean(0),
        "neighbour_collision_rate": nbr.float().mean(0),
        "obstacle_collision_rate": obs.float().mean(0),
        "floor_collision_rate": rate(live.col_floor),
        "wall_collision_rate": rate(live.col_wall),
        "distance_to_goal_1s": dist[0],
        "distance_to_goal_3s": dist[1],
        "distance_to_goal_5s": dist[2],
        "time_to_goal": arrive.mean(0) * control_dt,
        "episode_return": pick(live.ret).mean(0),
        "episode_length": length,
    }
