"""The PID demo (marl.demo) and the top-down plot (envs.plot)."""

from __future__ import annotations

import json

import numpy as np

from envs.plot import contact_points, plot_topdown
from marl.demo import run_demo

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_run_demo_quick_writes_png_and_json(tmp_path, capsys):
    metrics = run_demo(out_dir=str(tmp_path), seed=0, quick=True)
    png = tmp_path / "topdown.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == PNG_MAGIC
    record = json.loads((tmp_path / "episode.json").read_text())
    # pid_avoid flies 7 of the 8 drones to their goals without a collision here (seed 0, measured);
    # the demo's episode is evaluate()'s first one with the same controller and settings.
    assert record["success_rate"] >= 0.75 and record["collision_rate"] == 0.0
    from marl.demo import DENSITY, QUICK_SECONDS
    from marl.evaluate import evaluate

    direct = evaluate("pid_avoid", scenario="o_random", drones=8, density=DENSITY, episode_seconds=QUICK_SECONDS,
                      episodes=1, seed=0)
    for key in ("success_rate", "reached_goal_rate", "collision_rate", "distance_to_goal_1s"):
        assert abs(record[key] - direct[key]) <= 1e-6, key
    assert record["success_rate"] == metrics["success_rate"]
    assert record["demo"]["scenario"] == "o_random" and record["demo"]["num_drones"] == 8
    assert "success" in capsys.readouterr().out


def test_plot_topdown_skips_parked_columns(tmp_path):
    t = np.linspace(0, 1, 50)
    traj = np.stack([np.stack([t, t, 1 + 0 * t], -1), np.stack([-t, t, 2 + 0 * t], -1)], 1)  # [T, 2, 3]
    obstacles = np.array([[0.5, 0.0], [1e3, 1e3]])  # the second is a parked (inactive) slot
    out = plot_topdown(
        str(tmp_path / "p.png"), obstacles, 0.3, traj, traj[-1], [(0.5, 0.5)], area=(2.0, 2.0), title="t"
    )
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG_MAGIC and out.endswith("p.png")


def test_contact_points_mark_starts_of_contacts():
    # Drone 0 crosses a column (radius 0.3) at x = 1; drone 1 stays far away.
    x = np.linspace(0, 2, 21)
    traj = np.stack([np.stack([x, 0 * x, 1 + 0 * x], -1), np.stack([x, 5 + 0 * x, 1 + 0 * x], -1)], 1)
    hits = contact_points(traj, np.array([[1.0, 0.0]]), 0.3, 0.046)
    assert len(hits) == 1 and abs(hits[0][0] - 0.7) < 1e-6 and hits[0][1] == 0.0
