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
    # The command is a thin shell: its figures are those of evaluate() with the same settings.
    direct = evaluate("pid", scenario="o_random", drones=4, episodes=3, episode_seconds=1.0)
    for key in (*REQUIRED[:6], "reached_goal_rate"):
        assert report[key] == pytest.approx(direct[key], abs=1e-9), key
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
    import torch

    from agents import make_policy
    from envs.observations import obs_spec

    policy = make_policy("commformer", obs_spec(2), 4, sparsity=0.4, gating=True).eval()
    settings = dict(scenario="static_diff_goal", drones=4, episodes=2, episode_seconds=0.3)
    report = evaluate(policy, **settings)
    gate = policy.actor.gate.net[-1]
    with torch.no_grad():  # gates forced open: each drone hears exactly its k = 1 of 3; forced shut: none
        gate.weight.zero_()
        gate.bias.fill_(10.0)
        assert evaluate(policy, **settings)["communication_rate"] == pytest.approx(1 / 3, abs=1e-6)  # float32 mean
        gate.bias.fill_(-10.0)
        assert evaluate(policy, **settings)["communication_rate"] == 0.0
    # k = int(4 * 0.4) = 1 in-edge of 3 possible per agent: with every gate open the rate is 1/3.
    assert report["communication_rate"] <= 1 / 3 + 1e-6
    assert "communication_rate" not in evaluate("pid", **settings)


def test_episode_runner_is_algorithm_free_and_is_what_marl_evaluate_reports():
    from agents.controllers import make_controller
    from envs.config import make_config
    from envs.evaluation import evaluate_swarm

    # envs.evaluation knows vector envs and callables only: nothing of agents/, optim/, marl/ or deploy/.
    code = ("import sys, envs.evaluation; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('agents', 'optim', 'marl', 'deploy')); print(bad); assert not bad")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    cfg = make_config(num_drones=4, num_neighbors=2, scenario="static_diff_goal", episode_seconds=1.0)
    report, rec = evaluate_swarm(make_controller("pid", cfg.dynamics), cfg, episodes=3, seed=1, record=True)
    direct = evaluate("pid", scenario="static_diff_goal", drones=4, episodes=3, episode_seconds=1.0, seed=1)
    for key in (*REQUIRED[:6], "reached_goal_rate", "success_rate_std"):
        assert report[key] == direct[key], key
    assert report["episodes"] == 3 and rec["pos"].shape[1:] == (4, 3) and rec["pos"].shape[0] > 50
    # Overrides go on top of the config: a shorter episode flies fewer steps.
    _, short = evaluate_swarm(make_controller("pid", cfg.dynamics), cfg, episodes=1, record=True, episode_seconds=0.5)
    assert short["pos"].shape[0] < rec["pos"].shape[0]
    with pytest.raises(ValueError, match="sim, pybullet"):
        evaluate_swarm(make_controller("pid", cfg.dynamics), cfg, backend="gazebo")


def test_eval_config_flies_the_density_asked_for_not_the_runs_range():
    """A run trained over a density range is evaluated at the density a benchmark cell asks for."""
    from envs.config import make_config
    from marl.evaluate import eval_config

    base = make_config(scenario="o_random", num_drones=8, randomization={"density_range": (0.2, 0.8),
                                                                           "size_range": (0.6, 0.8)})
    cfg = eval_config("pid", density=0.6, base=base, obstacle_size=0.7)
    assert cfg.density == 0.6 and cfg.obstacle_size == 0.7
    assert cfg.randomization.density_range is None and cfg.randomization.size_range is None
    kept = eval_config("pid", base=base)  # nothing asked for: the run's own range stays
    assert kept.randomization.density_range == (0.2, 0.8)
    # and the report says what was flown: the range, not the base density alone
    drawn = evaluate("pid", episodes=2, env_config=base, episode_seconds=0.5)
    assert drawn["density_range"] == [0.2, 0.8] and drawn["size_range"] == [0.6, 0.8]
    fixed = evaluate("pid", episodes=2, env_config=base, episode_seconds=0.5, density=0.4)
    assert fixed["density"] == 0.4 and "density_range" not in fixed and fixed["size_range"] == [0.6, 0.8]
