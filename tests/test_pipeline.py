"""The README's main job as a new user runs it: the installed ``marl`` console script, ``marl run`` (the
same list of steps as ``make run``) at tiny budgets, relative paths, from a directory that is not the
repository root."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from marl.pipeline import main_job

ROOT = Path(__file__).resolve().parents[1]


def test_make_run_is_marl_run():
    # One list of steps: the Makefile's run target must call marl run and nothing else.
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^run: setup\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe is not None, "Makefile has no 'run: setup' target"
    assert recipe.group(1).split() == ["$(BIN)/marl", "run"]


def test_main_job_keeps_relative_paths_and_exports_the_headline():
    steps = {s.name: s.argv for s in main_job("out", quick=False)}
    assert [s for s in steps] == ["demo", "train", "plot", "eval_sim", "eval_pybullet", "obstacles_pid_avoid",
                                  "obstacles_zoo_swarm8_obstacles", "export", "bench_sim"]
    export = steps["export"]
    assert export[export.index("--out") + 1] == str(Path("out/quickstart/export"))  # not made absolute
    assert export[export.index("--bits") + 1] == "3" and export[export.index("--method") + 1] == "jlcm"
    assert export[export.index("--target") + 1] == "cortex-m4" and int(export[export.index("--closed-loop") + 1]) > 0
    assert "--video" in steps["eval_pybullet"] and "pybullet" in steps["eval_pybullet"]
    # the shipped obstacle policy beside the controller: PyBullet, the same task and seed, a video each
    pid, zoo = steps["obstacles_pid_avoid"], steps["obstacles_zoo_swarm8_obstacles"]
    assert (pid[1], zoo[1]) == ("pid_avoid", "zoo:swarm8_obstacles") and pid[2:] != zoo[2:]
    assert pid[2:pid.index("--video")] == zoo[2:zoo.index("--video")]  # same backend, maps, seed and episodes
    assert zoo[zoo.index("--backend") + 1] == "pybullet" and zoo[zoo.index("--density") + 1] == "0.2"
    assert zoo[zoo.index("--drones") + 1] == "8" and zoo[zoo.index("--scenario") + 1] == "o_random"


def test_marl_run_quick_from_another_directory(tmp_path):
    marl = Path(sys.executable).with_name("marl")
    assert marl.is_file(), f"the marl console script is not installed next to {sys.executable}"
    proc = subprocess.run([str(marl), "run", "--quick", "--out", "out"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "out"
    summary = json.loads((out / "pipeline" / "summary.json").read_text())
    ex = summary["export"]
    assert (ex["method"], ex["bits"]) == ("jlcm", 3)
    assert ex["weight_bytes"] * 8 <= ex["float32_weight_bytes"]  # 3-bit indices fit in an eighth of float32
    assert ex["c_vs_torch_max_abs_diff"] < 1e-5 and ex["qemu_vs_host_max_abs_diff"] < 1e-5
    assert ex["est_inference_ms_168mhz"] > 0 and set(ex["closed_loop_success"]) == {"sim", "pybullet"}
    assert summary["sim"]["episodes"] == 4 and summary["pybullet"]["episodes"] == 2
    obstacles = summary["obstacles"]
    assert (obstacles["backend"], obstacles["drones"], obstacles["density"]) == ("pybullet", 8, 0.2)
    assert list(obstacles["policies"]) == ["pid_avoid", "zoo:swarm8_obstacles"]
    assert all(f["episodes"] == 2 and 0.0 <= f["success_rate"] <= 1.0 for f in obstacles["policies"].values())
    for name in ("obstacles_pid_avoid", "obstacles_zoo_swarm8_obstacles"):
        assert json.loads((out / "pipeline" / f"{name}.json").read_text())["backend"] == "pybullet"
    assert summary["train"]["agent_steps"] > 32768 and summary["bench_agent_steps_per_s"] > 0  # + the warm start
    assert (tmp_path / "out" / "quickstart" / "pretrain.json").is_file()
    for path in summary["files"].values():
        assert (tmp_path / path).exists(), path  # relative to the user's working directory
    for video in ("video", "video pid_avoid", "video zoo:swarm8_obstacles"):
        assert (tmp_path / summary["files"][video]).stat().st_size > 1000, video
    assert "marl run: the main job took" in proc.stdout and "QEMU vs host" in proc.stdout
    assert re.search(r"zoo:swarm8_obstacles +success \d", proc.stdout)
    assert not (ROOT / "out").exists()  # nothing landed in the repository
