"""The policy zoo: shipped weights-only entries, ``zoo:NAME`` accepted wherever a policy is, ``marl zoo``."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import agents.zoo as zoo
from agents import load_policy
from agents.checkpoint import CheckpointError, checkpoint_path, is_checkpoint_source
from marl.cli import main
from marl.evaluate import eval_config, evaluate
from marl.train_config import resolve_config
from marl.zoo import KEEP, add_to_zoo, list_zoo

SHIPPED = ("quickstart", "swarm8_obstacles", "swarm_dense", "swarm_dense_close", "swarm_dense_careful",
           "swarm_dense_gaps", "swarm_dense_gaps_rl", "swarm_dense_gaps_mix")


def test_shipped_entries_are_complete_small_and_weights_only():
    assert set(SHIPPED) <= set(zoo.zoo_names())
    for name in zoo.zoo_names():
        entry = zoo.ZOO_DIR / name
        assert all((entry / f).is_file() for f in zoo.FILES), name
        assert (entry / "policy.pt").stat().st_size <= zoo.MAX_POLICY_BYTES, name
        ckpt = torch.load(entry / "policy.pt", map_location="cpu", weights_only=True)
        assert set(ckpt) == set(KEEP), name  # no optimiser, RNG or simulator state
        config = yaml.safe_load((entry / "config.yaml").read_text())
        assert config["env"] == ckpt["config"]["env"], name  # the shipped config is the one it was trained with
        meta = json.loads((entry / "eval.json").read_text())
        assert meta["name"] == name and meta["description"]
        sim = meta["eval"]["sim"]
        assert sim["episodes"] >= 32 and sim["seed"] == 1000 and 0.0 <= sim["success_rate"] <= 1.0, name
        policy = load_policy(zoo.ZOO_PREFIX + name)
        assert not policy.training and policy.num_agents == config["env"]["num_drones"]


def test_zoo_swarm8_obstacles_flies_the_column_field_precisely():
    """The shipped obstacle policy, on held-out maps: every drone-episode but a few reaches its goal, within cm."""
    report = evaluate("zoo:swarm8_obstacles", episodes=4, seed=1000, density=0.2)
    assert report["success_rate"] >= 0.9 and report["distance_to_goal_1s"] <= 0.05, report


@pytest.mark.parametrize("name", ["swarm_dense_gaps_rl", "swarm_dense_gaps_mix"])
def test_zoo_ppo_tuned_gaps_policies_fly_dense_narrow_columns_precisely(name):
    """The PPO-tuned policies among 0.6 m columns at density 0.6 (the README's headline maps, seed 1000)."""
    env = eval_config(None, drones=8, density=0.6, base=resolve_config(name).env, obstacle_size=0.6)
    report = evaluate(f"zoo:{name}", episodes=4, seed=1000, env_config=env)
    assert report["success_rate"] >= 0.9 and report["distance_to_goal_1s"] <= 0.05, report


def test_zoo_swarm_dense_close_flies_three_networks_and_exports_them_as_one(tmp_path, capsys):
    """The shipped close-range policy: its gated networks fly the drones next to a neighbour or a column, it
    flies the dense column field on held-out maps, and `marl export` turns the networks and gates into C."""
    policy = load_policy("zoo:swarm_dense_close")
    assert type(policy.actor).__name__ == "CloseRangeActor" and policy.actor.close_range == pytest.approx(0.45)
    assert policy.actor.column_range == pytest.approx(0.1) and policy.actor.close_time == pytest.approx(0.1)
    env = eval_config(None, drones=8, density=0.6, base=resolve_config("swarm_dense_close").env, obstacle_size=0.6)
    report = evaluate("zoo:swarm_dense_close", episodes=4, seed=1000, env_config=env)  # 0.6 m columns, as README
    assert report["success_rate"] >= 0.9 and report["distance_to_goal_1s"] <= 0.05, report
    out = tmp_path / "export"
    assert main(["export", "zoo:swarm_dense_close", "--method", "int8", "--calib", "none", "--out", str(out),
                 "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert "if (close_range)" in (out / "policy.c").read_text()
    assert exported["c_vs_torch_max_abs_diff"] < 1e-5


def test_zoo_names_resolve_at_the_one_place_and_unknown_names_list_the_allowed():
    assert checkpoint_path("zoo:quickstart") == zoo.zoo_path("quickstart") == zoo.ZOO_DIR / "quickstart" / "policy.pt"
    assert is_checkpoint_source("zoo:quickstart") and is_checkpoint_source("zoo:nope")
    assert not is_checkpoint_source("pid_avoid") and not is_checkpoint_source("no/such/run")
    with pytest.raises(ValueError, match="allowed: .*zoo:quickstart"):
        checkpoint_path("zoo:nope")
    with pytest.raises(ValueError, match="zoo:swarm8_obstacles"):
        load_policy("zoo:swarm_denser")


def test_marl_eval_zoo_policy_flies_its_own_task(capsys):
    assert main(["eval", "zoo:quickstart", "--episodes", "2", "--episode-seconds", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # the run's environment comes with the zoo checkpoint: quickstart's 4 drones, static_diff_goal
    assert (report["policy"], report["scenario"], report["drones"], report["episodes"]) == (
        "zoo:quickstart", "static_diff_goal", 4, 2)
    assert main(["eval", "zoo:nope", "--episodes", "1"]) == 2
    assert "zoo:quickstart" in capsys.readouterr().err


def test_marl_bench_policies_takes_zoo_names_beside_controllers(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "policies", "--policies", "pid_avoid,zoo:swarm8_obstacles", "--densities", "0.2",
                 "--episodes", "2", "--episode-seconds", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["policy"] for r in rows] == ["pid_avoid", "zoo:swarm8_obstacles"]
    assert all(r["drones"] == 8 and r["density"] == 0.2 for r in rows)
    assert "zoo:swarm8_obstacles" in capsys.readouterr().out


def test_marl_export_zoo_policy(tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", "zoo:quickstart", "--method", "int8", "--calib", "none", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["policy"] == "zoo:quickstart" and (out / "policy.c").is_file()
    assert report["c_vs_torch_max_abs_diff"] < 1e-5


def test_marl_demo_flies_a_zoo_policy(tmp_path, capsys):
    assert main(["demo", "--quick", "--policy", "zoo:swarm8_obstacles", "--out", str(tmp_path)]) == 0
    episode = json.loads((tmp_path / "episode.json").read_text())
    assert episode["demo"]["policy"] == "zoo:swarm8_obstacles" and (tmp_path / "topdown.png").is_file()
    assert main(["demo", "--quick", "--policy", "zoo:nope", "--out", str(tmp_path)]) == 2


def test_marl_zoo_lists_entries_with_size_and_shipped_eval(capsys):
    assert main(["zoo"]) == 0
    text = capsys.readouterr().out
    assert all(f"zoo:{name}" in text for name in SHIPPED)
    assert main(["zoo", "--json"]) == 0
    entries = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert entries.keys() == {e["name"] for e in list_zoo()}
    qs = entries["quickstart"]
    assert qs["size_kb"] == pytest.approx((zoo.ZOO_DIR / "quickstart" / "policy.pt").stat().st_size / 1024, abs=0.1)
    assert {"sim", "pybullet"} <= set(qs["eval"]) and qs["eval"]["pybullet"]["seed"] == 2000


def _trainer_run(tmp_path):
    """A run directory whose latest.pt is a full trainer checkpoint (the zoo's, plus optimiser state)."""
    ckpt = torch.load(zoo.zoo_path("quickstart"), map_location="cpu", weights_only=True)
    ckpt["optimizer"] = {"state": {0: {"exp_avg": torch.zeros(5000)}}, "param_groups": []}
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save(ckpt, run / "checkpoints" / "latest.pt")
    (run / "config.yaml").write_text(yaml.safe_dump(ckpt["config"], sort_keys=False))
    return run


def test_marl_zoo_add_writes_a_weights_only_entry(tmp_path, capsys):
    run = _trainer_run(tmp_path)
    given = tmp_path / "eval.json"
    given.write_text(json.dumps([{"backend": "sim", "episodes": 64, "seed": 1000, "success_rate": 0.5}]))
    assert main(["zoo", "add", str(run), "--name", "copy", "--description", "a test copy", "--eval-json",
                 str(given), "--zoo-dir", str(tmp_path / "zoo")]) == 0
    entry = tmp_path / "zoo" / "copy"
    ckpt = torch.load(entry / "policy.pt", map_location="cpu", weights_only=True)
    assert set(ckpt) == set(KEEP)  # the optimiser state is dropped
    assert (entry / "policy.pt").stat().st_size + 10_000 < (run / "checkpoints" / "latest.pt").stat().st_size
    assert (entry / "config.yaml").read_text() == (run / "config.yaml").read_text()
    meta = json.loads((entry / "eval.json").read_text())
    assert meta["description"] == "a test copy" and meta["eval"]["sim"]["success_rate"] == 0.5
    loaded = load_policy(entry / "policy.pt")
    reference = load_policy("zoo:quickstart")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), reference.state_dict().values(),
                                                  strict=True))


def test_marl_zoo_add_evaluates_on_the_held_out_seed_without_a_file(tmp_path, monkeypatch):
    import marl.zoo as mzoo

    calls = []
    monkeypatch.setattr(mzoo, "evaluate", lambda policy, **kw: calls.append(kw) or {"backend": "sim", **kw})
    record = add_to_zoo(_trainer_run(tmp_path), "fresh", zoo_dir=tmp_path / "zoo")
    assert calls == [{"backend": "sim", "episodes": 64, "seed": 1000}] and record["eval"]["sim"]["seed"] == 1000


def test_marl_zoo_add_refuses_big_checkpoints_and_bad_names(tmp_path, monkeypatch, capsys):
    run = _trainer_run(tmp_path)
    monkeypatch.setattr(zoo, "MAX_POLICY_BYTES", 10 * 1024)
    assert main(["zoo", "add", str(run), "--name", "big", "--zoo-dir", str(tmp_path / "zoo")]) == 2
    assert "at most 10 KB" in capsys.readouterr().err and not (tmp_path / "zoo" / "big").exists()
    with pytest.raises(ValueError, match="name='Bad-Name'"):
        add_to_zoo(run, "Bad-Name", zoo_dir=tmp_path / "zoo")
    with pytest.raises(CheckpointError, match="does not exist"):
        add_to_zoo(tmp_path / "nowhere", "x", zoo_dir=tmp_path / "zoo")
