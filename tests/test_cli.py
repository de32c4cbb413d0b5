"""The `marl` command line (marl.cli), the benchmark's JSON and the one config pipeline (resolve_config)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from envs.config import make_config
from envs.swarm import QuadSwarmVecEnv
from marl.bench.sim import bench_env_config
from marl.cli import main, parse_args
from marl.config import SECTIONS, shipped_configs
from marl.train_config import resolve_config

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = {
    "agent_steps_per_s", "drones", "envs", "steps", "density", "backend", "threads", "device", "scenario",
    "torch_version", "seconds",
}


def _marl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "marl.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_bench_sim_json():
    proc = _marl("bench", "sim", "--drones", "2", "--envs", "4", "--steps", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert REQUIRED <= set(result)
    assert result["agent_steps_per_s"] > 0
    assert (result["drones"], result["envs"], result["steps"], result["backend"]) == (2, 4, 5, "sim")
    assert result["num_neighbors"] == 1  # K = min(2, drones - 1)


def test_bench_invalid_density_exits_2_naming_field():
    proc = _marl("bench", "sim", "--drones", "2", "--envs", "4", "--steps", "5", "--density", "1.5")
    assert proc.returncode == 2
    assert "density" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, field",
    [
        (["--envs", "0"], "envs"),
        (["--threads", "999"], "threads"),
        (["--scenario", "nowhere"], "scenario"),
        (["--drones", "100000"], "drones"),
    ],
)
def test_bench_bad_settings_exit_2(args, field, capsys):
    assert main(["bench", "sim", "--steps", "1", *args]) == 2
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err


def test_bench_config_fits_many_drones():
    cfg = bench_env_config(128, 0.2)
    assert cfg.num_drones == 128 and cfg.num_neighbors == 2
    assert cfg.grid[0] * len(cfg.spawn_heights) >= 128
    assert max(cfg.spawn_heights) < cfg.room[2]
    QuadSwarmVecEnv(cfg, num_envs=1).reset(seed=0)  # the simulator finds a start slot for every drone
    assert bench_env_config(1, 0.2).num_neighbors == 0
    open_room = bench_env_config(128, 0.2, "static_diff_goal")  # starts anywhere on the grid: enough slots
    assert open_room.spawn_heights == make_config().spawn_heights


def test_load_shipped_config_by_name():
    env = resolve_config("o_random_8").env
    assert (env.num_drones, env.num_neighbors, env.scenario, env.density) == (8, 2, "o_random", 0.2)
    assert resolve_config("o_random_8.yaml").env == env
    mix = resolve_config("swarm_mix").env
    assert isinstance(mix.scenario, dict) and len(mix.scenario_weights) > 1
    assert abs(sum(mix.scenario_weights.values()) - 1.0) < 1e-9


def test_every_shipped_config_validates():
    files = sorted((ROOT / "configs").glob("*.yaml"))
    assert {f.stem for f in files} == set(shipped_configs())
    for f in files:
        resolve_config(f)


def test_unknown_top_level_section_is_named(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("env:\n  num_drones: 4\ntrainer_typo:\n  lr: 1.0e-4\n")
    with pytest.raises(ValueError, match="trainer_typo") as info:
        resolve_config(path)
    assert "env" in str(info.value) and all(s in str(info.value) for s in SECTIONS)


def test_unknown_or_bad_env_key_is_named(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("env:\n  num_drone: 4\n")
    with pytest.raises(ValueError, match=r"env\.num_drone"):
        resolve_config(path)
    path.write_text("env:\n  num_drones: 2\n  num_neighbors: 2\n")
    with pytest.raises(ValueError, match="num_neighbors"):
        resolve_config(path)


def test_missing_config_lists_shipped():
    with pytest.raises(ValueError, match="o_random_8"):
        resolve_config("no_such_config")


def test_configs_subcommand(capsys, tmp_path):
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    assert "o_random_8" in out and "swarm_mix" in out
    assert main(["configs", "o_random_8"]) == 0
    assert json.loads(capsys.readouterr().out)["env"]["num_drones"] == 8
    bad = tmp_path / "bad.yaml"
    bad.write_text("env:\n  density: 1.5\n")
    assert main(["configs", str(bad)]) == 2
    assert "env.density" in capsys.readouterr().err


def test_configs_prints_what_train_runs_with_the_base_merged(capsys):
    # predator_prey_commformer_none only cuts the edges of its base: the env must be the base's.
    assert main(["configs", "predator_prey_commformer_none"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["env"]["target"] == "pettingzoo:envs.predator_prey_v0:parallel_env"
    assert shown["env"]["kwargs"]["num_predators"] == 5
    assert shown["agent"]["name"] == "commformer" and shown["agent"]["communicate"] is False
    assert shown == resolve_config("predator_prey_commformer_none").to_dict()  # the same call as marl train
    assert main(["configs", "predator_prey_commformer_none", "train.lr=0.5"]) == 0
    assert json.loads(capsys.readouterr().out)["train"]["lr"] == 0.5
    assert main(["configs", "predator_prey_commformer_none", "agent.sparsity=2"]) == 2
    err = capsys.readouterr().err
    assert "agent.sparsity" in err and len(err.strip().splitlines()) == 1


def test_every_section_is_typed():
    from agents.config import PolicyConfig
    from marl.train_config import RunConfig

    assert RunConfig.model_fields["agent"].annotation is PolicyConfig
    assert isinstance(resolve_config("quickstart").agent, PolicyConfig)


def test_validating_a_config_imports_no_trainer_or_simulator():
    code = (
        "import sys\nfrom marl.train_config import resolve_config\n"
        "for name in ('quickstart', 'predator_prey_commformer_none', 'o_random_8'):\n    resolve_config(name)\n"
        "heavy = ('marl.trainer', 'marl.ppo', 'marl.replay', 'marl.distributed', 'envs.swarm', 'ray')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_overrides_may_follow_options_and_other_words_are_refused(capsys):
    args = parse_args(["train", "quickstart", "--steps", "5", "train.lr=1", "--no-progress", "seed=3"])
    assert (args.config, args.steps, args.overrides) == ("quickstart", 5, ["train.lr=1", "seed=3"])
    args = parse_args(["sweep", "a", "b", "--seeds", "0", "1", "--jobs", "2", "train.lr=1"])
    assert (args.configs, args.seeds, args.jobs, args.overrides) == (["a", "b"], ["0", "1"], 2, ["train.lr=1"])
    with pytest.raises(SystemExit) as info:
        parse_args(["demo", "--quick", "train.lr=1"])  # demo takes no overrides
    assert info.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["marl", "marl.cli"])
def test_module_entry_points_list_every_command(module):
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    for command in ("bench", "configs", "demo", "train", "eval", "export", "plot", "sweep", "run"):
        assert command in proc.stdout



def test_bench_group_has_every_benchmark_under_one_parser():
    from marl.bench import policies

    assert parse_args(["bench", "policies", "--policies", "pid,sbc"]).func is policies.run
    assert parse_args(["bench", "policies", "--policies", "pid,sbc"]).policies == ["pid", "sbc"]
    for what in ("sim", "train", "optim"):
        assert callable(parse_args(["bench", what]).func)
    assert parse_args(["bench", "train", "train.epochs=1", "--seconds", "1", "seed=2"]).overrides == [
        "train.epochs=1", "seed=2"]
