"""A one-episode demonstration: a built-in controller (``pid_avoid`` by default) or a trained policy (``zoo:NAME``,
a run) flies 8 drones through a column field.

    from marl.demo import run_demo
    metrics = run_demo("runs/demo", seed=0)          # writes topdown.png and episode.json

Scenario ``o_random`` (8 drones, obstacle density 0.2) on ``QuadSwarmVecEnv`` with one environment;
every step's positions are recorded and the episode is drawn from above with ``envs.plot``.
"""

from __future__ import annotations

import json
import os

import torch

from envs.config import make_config
from envs.evaluation import tell_map
from envs.plot import contact_points, plot_topdown
from envs.swarm import QuadSwarmVecEnv
from marl.evaluate import resolve_policy

SCENARIO = "o_random"
NUM_DRONES = 8
DENSITY = 0.2
EPISODE_SECONDS = 15.0  # the reference episode length
QUICK_SECONDS = 6.0  # long enough to see the drones weave through the first rows of columns


def run_demo(out_dir: str = "runs/demo", seed: int = 0, quick: bool = False, policy: str = "pid_avoid") -> dict:
    """Fly one seeded episode with a built-in controller; save ``topdown.png`` and ``episode.json`` in out_dir.

    quick: a 6 s episode instead of the 15 s reference one. policy: a name of agents.controllers.CONTROLLERS,
    a shipped ``zoo:NAME`` or a run directory / checkpoint (whatever marl.evaluate.resolve_policy accepts);
    ``pid_avoid`` reads the SDF and neighbour parts of the observation, while plain ``pid`` flies straight
    at its goal and hits the columns on its way, which the picture shows as red crosses.
    Returns the episode metrics of ``info["episode"]`` as plain floats.
    """
    seconds = QUICK_SECONDS if quick else EPISODE_SECONDS
    cfg = make_config(num_drones=NUM_DRONES, scenario=SCENARIO, density=DENSITY, episode_seconds=seconds)
    env = QuadSwarmVecEnv(cfg, num_envs=1)
    controller = resolve_policy(policy, cfg)  # a built-in controller, zoo:NAME or a run (ValueError lists them)

    obs = env.reset(seed=seed)
    first = env.get_state([0])  # the map and goals of this episode (o_random goals do not move)
    if controller.plan is not None:  # pid_plan is told the map
        tell_map(controller.plan, env)
    goals = first.goals[0]  # [M, 3]
    positions = [first.pos[0].clone()]
    metrics: dict[str, float] | None = None
    while metrics is None:
        obs, _, _, _, info = env.step(controller(obs))
        if "episode" in info:
            # The env has already reset itself: the last positions come from the final observation.
            positions.append(info["final_obs"][0, :, :3] + goals)
            metrics = {k: float(v[0]) for k, v in info["episode"].items()}
        else:
            positions.append(env.get_state([0]).pos[0])
    traj = torch.stack(positions).cpu().numpy()  # [T + 1, M, 3]

    obstacles = first.obstacles[0].cpu().numpy()
    radius = float(first.obstacle_radius[0])
    hits = contact_points(traj, obstacles, radius, cfg.dynamics.arm)

    os.makedirs(out_dir, exist_ok=True)
    title = (
        f"{SCENARIO}, {NUM_DRONES} drones, density {DENSITY}, {policy}, seed {seed}: "
        f"success {metrics['success_rate']:.2f}, collisions {metrics['collision_rate']:.2f}"
    )
    room = cfg.room
    png = plot_topdown(
        os.path.join(out_dir, "topdown.png"),
        obstacles,
        radius,
        traj,
        goals.cpu().numpy(),
        hits,
        bounds=(-room[0] / 2, room[0] / 2, -room[1] / 2, room[1] / 2),
        area=cfg.obstacle_area,
        title=title,
    )
    record = dict(metrics)
    record["demo"] = {
        "scenario": SCENARIO,
        "num_drones": NUM_DRONES,
        "density": DENSITY,
        "episode_seconds": seconds,
        "seed": seed,
        "policy": policy,
        "contacts_drawn": len(hits),
    }
    with open(os.path.join(out_dir, "episode.json"), "w") as f:
        json.dump(record, f, indent=2)
    print(
        f"demo {SCENARIO} ({NUM_DRONES} drones, {seconds:g} s, {policy}, seed {seed}): "
        f"success {metrics['success_rate']:.2f}, reached {metrics['reached_goal_rate']:.2f}, "
        f"collisions {metrics['collision_rate']:.2f} (obstacle {metrics['obstacle_collision_rate']:.2f}, "
        f"neighbour {metrics['neighbour_collision_rate']:.2f}), final distance {metrics['distance_to_goal_1s']:.2f} m"
        f" -> {png}"
    )
    return metrics
