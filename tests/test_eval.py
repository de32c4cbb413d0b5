"""marl eval: the PID baseline in both backends, the JSON contract, pictures, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from marl.evaluate import evaluate

REQUIRED = (
    "success_rate", "collision_rate", "obstacle_collision_rate", "neighbour_collision_rate", "deadlock_rate",
    "distance_to_goal_1s", "episodes", "backend", "scenario",
)


def test_pid_reaches_goals_and_backends_agree_within_5_points():
    settings = dict(scenario="static_diff_goal", drones=8, episodes=20, episode_seconds=8.0, seed=0)
    sim = evaluate("pid", backend="sim", **settings)
    pyb = evaluate("pid", backend="pybullet", **settings)
    assert sim["reached_goal_rate"] >= 0.95 and pyb["reached_goal_rate"] >= 0.95
    assert sim["success_rate"] >= 0.9
    assert abs(sim["success_rate"] - pyb["success_rate"]) <= 0.05
    assert sim["distance_to_goal_1s"] < 0.1 and pyb["distance_to_goal_1s"] < 0.1


def _marl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "marl.cli", *args], capture_output=True, text=True, timeout=300)


def test_eval_json_contract_and_pictures(tmp_path):
    video, plot = tmp_path / "ep.gif", tmp_path / "ep.png"
    out = _marl(
        "eval", "pid", "--scenario", "o_random", "--drones", "4", "--episodes", "3", "--episode-seconds", "1",
        "--json", "--video", str(video), "--plot", str(plot),
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    for key in REQUIRED:
        assert key in report
    assert report["episodes"] == 3 and report["backend"] == "sim" and report["scenario"] == "o_random"
    for key in REQUIRED[:5]:
        assert 0.0 <= report[key] <= 1.0
    assert video.read_bytes()[:6] in (b"GIF89a", b"GIF87a")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args, words",
    [
        (("eval", "nosuchpolicy"), ("pid", "run directory")),
        (("eval", "pid", "--backend", "gazebo"), ("sim", "pybullet")),
        (("eval", "pid", "--scenario", "nowhere"), ("scenario", "o_random", "static_diff_goal")),
        (("eval", "pid", "--episodes", "0"), ("episodes",)),
    ],
)
def test_bad_input_names_what_exists(args, words):
    out = _marl(*args)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    for word in words:
        assert word in out.stderr


def test_communicating_policy_reports_its_communication_rate():
    from agents import make_policy
    from envs.observations import obs_spec

    policy = make_policy("commformer", obs_spec(2), 4, sparsity=0.4, gating=True).eval()
    settings = dict(scenario="static_diff_goal", drones=4, episodes=2, episode_seconds=0.3)
    report = evaluate(policy, **settings)
    assert 0.0 <= report["communication_rate"] <= 1.0
    # k = int(4 * 0.4) = 1 in-edge of 3 possible per agent: with every gate open the rate is 1/3.
    assert report["communication_rate"] <= 1 / 3 + 1e-6
    assert "communication_rate" not in evaluate("pid", **settings)
