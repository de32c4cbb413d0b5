"""Sweep the column speed limit of ``pid_avoid`` (``PIDConfig.slow_speed``) and fly ``pid_plan`` beside it.

    .venv/bin/python scripts/pid_speed_sweep.py --json docs/results/pid_speed_sweep.json

Each row: one controller setting flies ``--envs`` swarms (one 15 s episode each) of the obstacle recipe's
environment (o_random, reference layout) at one density, drone count and column size, tuning seed 500,
through the imitation rollout (marl.imitation.rollout, the loop DAgger records its data with). Prints one
JSON line per row; ``--json`` also writes them all. The default speed limit (0.8 m/s) was chosen from
this sweep; the held-out figures are the ``marl bench policies`` ones on seed 1000 (docs/training.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from agents.pid import PIDConfig, PIDController
from agents.planner import PlannedPIDController
from marl.evaluate import eval_config
from marl.imitation import rollout
from marl.train_config import resolve_config

METRICS = ("success_rate", "deadlock_rate", "neighbour_collision_rate", "obstacle_collision_rate",
           "distance_to_goal_1s", "time_to_goal")
# (controller, slow_speed, density, drones, column size)
GRID = (
    [("pid_avoid", s, d, 8, 0.6) for s in (0.3, 0.5, 0.8, 1.2) for d in (0.2, 0.4, 0.6, 0.8)]
    + [("pid_avoid", 0.65, 0.8, 8, 0.6)]
    + [("pid_avoid", s, 0.8, 32, 0.6) for s in (0.3, 0.5, 0.65, 0.8)]
    + [("pid_avoid", s, 0.8, 8, 0.8) for s in (0.3, 0.5, 0.65, 0.8)]
    + [("pid_plan", s, 0.8, 8, 0.8) for s in (0.5, 0.8)]
    + [("pid_avoid", 0.8, 0.6, 8, 0.8), ("pid_plan", 0.8, 0.6, 8, 0.8)]
)


def run(kind: str, slow: float, density: float, drones: int, size: float, envs: int, seed: int) -> dict:
    """Fly one setting; returns its row (settings and the mean metrics over the ended episodes)."""
    base = resolve_config("swarm8_obstacles_dagger").env
    cfg = eval_config(None, drones=drones, density=density, base=base, obstacle_size=size)
    pid_cfg = PIDConfig.from_dynamics(cfg.dynamics, avoid=True, slow_speed=slow)
    controller = PlannedPIDController(pid_cfg) if kind == "pid_plan" else PIDController(pid_cfg)
    metrics = rollout(cfg, controller, num_envs=envs if drones <= 8 else envs // 2, seed=seed).metrics()
    return dict(controller=kind, slow_speed=slow, density=density, drones=drones, obstacle_size=size,
                **{k: round(metrics[k], 3) for k in METRICS})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=32, help="swarms per row (half with 32 drones)")
    parser.add_argument("--seed", type=int, default=500)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for kind, slow, density, drones, size in GRID:
        rows.append(run(kind, slow, density, drones, size, args.envs, args.seed))
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"seed": args.seed, "envs": args.envs, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
