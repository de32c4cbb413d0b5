"""deploy.selection: choosing among compressions by their flights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from agents import make_policy
from deploy import calibration, selection
from envs.observations import obs_spec


def _actor_and_states(cfg):
    torch.manual_seed(0)
    actor = make_policy("attention", obs_spec(cfg.num_neighbors), cfg.num_drones).actor.eval()
    return actor, calibration.record_states(cfg, 128, seed=0, policy=actor, steps=40)


def test_failed_drones_counts_every_drone_that_falls():
    cfg = calibration.default_env_config(2)

    class Idle(nn.Module):  # thrust at its minimum: every drone drops and none reaches its goal
        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return -torch.ones(*obs.shape[:-1], 4)

    assert selection.failed_drones(Idle(), cfg, episodes=2, seed=0) == 2 * cfg.num_drones


def test_choose_compression_keeps_the_candidate_that_fails_fewest(monkeypatch):
    cfg = calibration.default_env_config(2)
    actor, calib = _actor_and_states(cfg)
    drawn, flown = [], []

    def cheap_states(cfg, n, seed=0, policy=None):
        drawn.append(seed)
        return calibration.record_states(cfg, n, seed=seed, policy=policy, steps=40)

    scores = iter([5, 2, 2])

    def score(policy, cfg, episodes, seed):
        flown.append((policy, seed, cfg))
        return next(scores)

    monkeypatch.setattr(selection, "calibration_states", cheap_states)
    monkeypatch.setattr(selection, "failed_drones", score)
    q, states, log = selection.choose_compression(actor, cfg, "gptq", 3, calib, candidates=3, rounds=0,
                                                  calib_seed=10, round_seed=20, flyer=actor, select_cfgs=[cfg])
    stride = selection.CANDIDATE_STRIDE
    assert drawn == [10 + stride, 10 + 2 * stride]  # candidate 0 keeps the states it was given
    assert [c["total"] for c in log["candidates"]] == [5, 2, 2] and log["chosen"] == 1  # a tie keeps the earlier
    assert all(p is not actor and s == selection.SELECT_SEED for p, s, _ in flown)  # the compressions flew
    chosen_states = calibration.record_states(cfg, 128, seed=10 + stride, policy=actor, steps=40)
    expected = calibration.quantize_actor(actor, "gptq", 3, calib=chosen_states)
    torch.testing.assert_close(q.layers["mean"].weight, expected.layers["mean"].weight)
    torch.testing.assert_close(states, chosen_states)

    flown.clear()
    one, _, log = selection.choose_compression(actor, cfg, "gptq", 3, calib, candidates=1, rounds=0,
                                               calib_seed=10, round_seed=20, flyer=actor)
    assert log == {} and flown == []  # one candidate: no selection flights
    with pytest.raises(ValueError, match="candidates=0"):
        selection.choose_compression(actor, cfg, "gptq", 3, calib, candidates=0, rounds=0, calib_seed=10,
                                     round_seed=20, flyer=actor)


def test_export_refuses_candidates_without_drawn_calibration(tmp_path):
    from deploy.export import export_policy

    for method, calib in (("int8", "rollout"), ("jlcm", "none")):
        with pytest.raises(ValueError, match="candidates=2"):
            export_policy(tmp_path / "x", method=method, preset="deployable", calib=calib, candidates=2)


def test_cli_export_chooses_among_candidates(tmp_path):
    import json

    from marl.cli import main

    out = tmp_path / "exp"
    assert main(["export", "--policy", "deployable", "--method", "gptq", "--candidates", "2", "--select-densities",
                 "0.2,0.4", "--select-obstacle-size", "0.7", "--select-episodes", "2", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    sel = report["selection"]
    assert report["candidates"] == 2 and [c["candidate"] for c in sel["candidates"]] == [0, 1]
    assert sel["flown"] == [{"density": d, "obstacle_size": 0.7} for d in (0.2, 0.4)] and sel["episodes"] == 2
    totals = [c["total"] for c in sel["candidates"]]
    assert sel["chosen"] == totals.index(min(totals)) and report["c_vs_torch_max_abs_diff"] <= 1e-5
