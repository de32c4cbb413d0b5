"""Device placement of the whole training path: the DAgger warm start, the collector's swarms and teacher,
the rollout buffer, the replay of collision states, the update with the BC term, the checkpoint and the
end-of-run evaluation all follow ``train.device``.

These tests run on ``MARL_TEST_DEVICE`` (default ``cpu``); the GPU check runs the same file with
``MARL_TEST_DEVICE=cuda`` (scripts/gpu_check.sh). On the CPU they still fail when a step leaves the
configured device's tensors for another type or drops the device the config names.
"""

from __future__ import annotations

import json
import os
from contextlib import ExitStack

import torch

from agents.checkpoint import load_policy
from marl.devices import claim_cores
from marl.imitation import dagger, make_student
from marl.train_config import resolve_config
from marl.trainer import Trainer, train

DEVICE = os.environ.get("MARL_TEST_DEVICE", "cpu")
# The obstacle recipe, shrunk: DAgger of pid_avoid, critic warm-up, then PPO with the BC term and replay.
TINY = [f"train.device={DEVICE}", "train.num_envs=4", "train.rollout_steps=16", "train.minibatches=2",
        "train.epochs=1", "train.total_agent_steps=2048", "train.eval_episodes=2", "env.episode_seconds=0.5",
        "pretrain.iterations=1", "pretrain.num_envs=2", "pretrain.fit_steps=5", "pretrain.batch=8",
        "pretrain.critic_warmup_updates=1", "pretrain.bc.coef=1.0", "logging.tensorboard=false",
        "logging.progress=false"]


def _resolved(device: str | torch.device) -> torch.device:
    """The device a tensor created on ``device`` reports (with its index)."""
    return torch.empty(0, device=device).device


def _on(tensors: dict[str, torch.Tensor], device: torch.device) -> list[str]:
    """Names of the tensors that are not on ``device``."""
    return [k for k, t in tensors.items() if isinstance(t, torch.Tensor) and t.device != device]


def test_dagger_keeps_swarms_teacher_and_data_on_the_students_device():
    cfg = resolve_config("swarm8_obstacles_dagger", TINY)
    student = make_student("attention", cfg.env).to(DEVICE)
    result = dagger(student, cfg.env, "pid_avoid", iterations=1, num_envs=2, rollout_steps=20, fit_steps=3,
                    batch=4, optimizer="adam", eval_envs=2)
    want = torch.device(DEVICE)
    assert result.data.obs.device.type == want.type and result.data.actions.device.type == want.type
    assert len(result.data) == 2 * 2 * 4 and torch.isfinite(result.data.actions).all()
    assert all(p.device.type == want.type for p in student.parameters())
    assert "success_rate" in result.iterations[-1].closed_loop  # the closed-loop check flew on the device too


def test_a_training_run_computes_on_the_configured_device_end_to_end(tmp_path):
    cfg = resolve_config("swarm8_obstacles_dagger", TINY)
    summary = train(cfg, tmp_path / "run")
    assert summary["finished"] and summary["updates"] == 4
    assert json.loads((tmp_path / "run" / "pretrain.json").read_text())["rows"] > 0
    assert summary["eval"]["episodes"] == 2 and summary["agent_steps"] > 2048  # the warm start's steps count
    # The checkpoint is device-free: it loads on the CPU wherever it was trained.
    policy = load_policy(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert all(p.device.type == "cpu" for p in policy.parameters())
    # A resume on the same device restores the envs, generators and optimiser there and goes on.
    more = resolve_config("swarm8_obstacles_dagger", [*TINY, "train.total_agent_steps=3072"])
    resumed = train(more, tmp_path / "run", resume=True)
    assert resumed["finished"] and resumed["updates"] == 6

    # One more update on a fresh trainer: every tensor the loop touches is on the configured device.
    trainer = Trainer(cfg, tmp_path / "probe")
    trainer.train_step()
    want = _resolved(DEVICE)  # "cuda" names cuda:0 (the current device); tensors report the index
    sampler, learner = trainer.sampler, trainer.learner
    assert _on(dict(learner.policy.named_parameters()), want) == []
    assert _on(dict(sampler.policy.named_parameters()), want) == []
    assert _on(vars(sampler.buf), want) == []
    assert _on(dict(learner.value_norm.named_buffers()), want) == []  # the critic's target statistics
    assert sampler.buf.teacher_actions is not None  # the BC term's labels are collected
    assert _resolved(sampler.env.device) == want and sampler.obs.device == want
    assert _on(vars(sampler.env), want) == [] and _on(vars(sampler.env.live), want) == []
    assert _on(vars(sampler.teacher), want) == []


def test_runs_side_by_side_claim_different_cores(tmp_path):
    with ExitStack() as first, ExitStack() as second, ExitStack() as third:
        a = claim_cores([0, 1], 1, first, tmp_path)
        b = claim_cores([0, 1], 1, second, tmp_path)
        assert a == [0] and b == [1]  # the second run takes the core the first left free
        assert claim_cores([0, 1], 1, third, tmp_path) == [0]  # none free: share, never refuse
    with ExitStack() as again:
        assert claim_cores([0, 1], 2, again, tmp_path) == [0, 1]  # released when the runs end
