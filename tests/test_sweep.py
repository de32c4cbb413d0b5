"""`marl sweep` (marl.sweep): configs x seeds, validated up front, finished runs read back, one table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from marl.sweep import format_table, plan, sweep

ROOT = Path(__file__).resolve().parent.parent


def _finished(run_dir: Path, **metrics: float) -> None:
    """A run directory as the trainer leaves it after its end-of-run evaluation (what a sweep reads)."""
    run_dir.mkdir(parents=True)
    (run_dir / "eval.json").write_text(json.dumps(metrics))


def test_finished_runs_are_read_back_and_summarised(tmp_path):
    _finished(tmp_path / "quickstart" / "s0", success_rate=1.0, episode_return=-2.0, collision_rate=0.0,
              distance_to_goal_1s=0.1)
    _finished(tmp_path / "quickstart" / "s1", success_rate=0.0, episode_return=-4.0, collision_rate=0.5,
              distance_to_goal_1s=0.3)
    _finished(tmp_path / "predator_prey_commformer_none" / "s0", success_rate=0.25, episode_return=3.0)
    _finished(tmp_path / "predator_prey_commformer_none" / "s1", success_rate=0.75, episode_return=5.0)
    result = sweep(["quickstart", "predator_prey_commformer_none"], [0, 1], out_dir=tmp_path)
    assert result["failed"] == [] and len(result["runs"]) == 4
    quick, pp = result["configs"]["quickstart"], result["configs"]["predator_prey_commformer_none"]
    assert quick["runs"] == 2 and quick["success"]["mean"] == 0.5 and quick["success"]["std"] == 0.5
    assert quick["return"]["mean"] == -3.0 and quick["distance to goal"]["mean"] == pytest.approx(0.2)
    assert pp["success"]["mean"] == 0.5 and pp["collisions"] is None  # predator-prey reports no collisions
    table = format_table(result).splitlines()
    assert table[0] == "| config | success | distance to goal | collisions | return | runs |"
    assert table[2] == "| quickstart | 0.500 +- 0.500 | 0.200 +- 0.100 | 0.250 +- 0.250 | -3.000 +- 1.000 | 2 |"
    assert table[3].startswith("| predator_prey_commformer_none | 0.500 +- 0.250 | - | - | 4.000 +- 1.000 |")
    assert not any((tmp_path / "quickstart" / "s0").glob("train.log"))  # nothing was trained again


def test_bad_settings_fail_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match=r"train\.lrr"):
        sweep(["quickstart"], [0], ["train.lrr=1"], out_dir=tmp_path)
    with pytest.raises(ValueError, match="no_such_config"):
        plan(["quickstart", "no_such_config"], [0], out_dir=tmp_path)
    with pytest.raises(ValueError, match="seed"):
        plan(["quickstart"], [], out_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_marl_sweep_trains_evaluates_and_prints_the_table(tmp_path):
    # The check at a tiny budget: 2 updates of 8 envs x 10 steps x 5 predators per run.
    tiny = ["train.num_envs=8", "train.rollout_steps=10", "train.minibatches=2", "train.epochs=1",
            "train.eval_episodes=4", "train.checkpoint_every=1"]
    cmd = [sys.executable, "-m", "marl", "sweep", "predator_prey_commformer", "predator_prey_commformer_none",
           "--seeds", "0", "1", "--steps", "800", "--out-dir", str(tmp_path), *tiny]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("| config | success") and len(lines) == 4
    for line, config in zip(lines[2:], ("predator_prey_commformer", "predator_prey_commformer_none"), strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == config and cells[-1] == "2"
        assert "+-" in cells[1] and 0.0 <= float(cells[1].split("+-")[0]) <= 1.0
    for run in ("predator_prey_commformer/s0", "predator_prey_commformer/s1", "predator_prey_commformer_none/s1"):
        assert (tmp_path / run / "eval.json").is_file()
    stored = yaml.safe_load((tmp_path / "predator_prey_commformer/s1/config.yaml").read_text())
    assert stored["seed"] == 1 and stored["train"]["total_agent_steps"] == 800
    # a second sweep reads the finished runs back: the same table, nothing retrained
    stamp = (tmp_path / "predator_prey_commformer/s0/eval.json").stat().st_mtime_ns
    again = subprocess.run([*cmd, "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "finished, read back" in again.stderr
    assert (tmp_path / "predator_prey_commformer/s0/eval.json").stat().st_mtime_ns == stamp
    assert format_table(json.loads(again.stdout)).splitlines() == lines
