"""train.overlap: the next rollout is collected in a thread while the learner updates (marl.overlap)."""

from __future__ import annotations

import pytest
import torch

from marl.logger import TIMING_KEYS, read_metrics
from marl.overlap import OverlappedSampler
from marl.train_config import resolve_config
from marl.trainer import Trainer, load_run_config, train

# tests/test_train.py's tiny hover setting (2 drones, 16 envs, MLP), 5 updates of 256 agent steps.
TINY = [
    "env.num_drones=2", "env.num_neighbors=1", "env.episode_seconds=0.5", "env.grace_seconds=0.1",
    "agent.name=mlp", "train.num_envs=16", "train.rollout_steps=8", "train.epochs=2", "train.minibatches=2",
    "train.total_agent_steps=1280", "train.checkpoint_every=1", "logging.tensorboard=false",
    "logging.progress=false",
]
OVERLAP = [*TINY, "train.threads=2", "train.overlap=true"]


def _numbers(run) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_metrics(run / "metrics.jsonl")]


def test_overlapped_training_is_reproducible_and_lags_one_update(tmp_path):
    for name in ("a", "b"):
        train(resolve_config("quickstart", OVERLAP), tmp_path / name)
    train(resolve_config("quickstart", [*TINY, "train.threads=1"]), tmp_path / "serial")
    a, b, serial = (_numbers(tmp_path / n) for n in ("a", "b", "serial"))
    assert len(a) == len(serial) == 5
    assert a == b  # however the threads were scheduled
    # The first rollout is flown by the initial policy either way; the second, overlapped, by the policy
    # from before the first update (serially, by the updated one).
    assert a[0] == serial[0]
    assert a[1]["value_loss"] != serial[1]["value_loss"]


def test_the_rollout_being_learned_from_is_not_overwritten_by_the_next(tmp_path):
    trainer = Trainer(resolve_config("quickstart", OVERLAP), tmp_path)
    try:
        sampler, learner = trainer.sampler, trainer.learner
        assert isinstance(sampler, OverlappedSampler)
        first = sampler.collect(learner.weights(), learner.progress())
        kept = first.buf.obs.clone()
        following = sampler.pending.result()  # the next rollout, collected meanwhile
        assert following.buf is not first.buf
        assert torch.equal(first.buf.obs, kept)
    finally:
        trainer.close()


def test_an_overlapped_run_resumes_to_its_budget_reproducibly(tmp_path):
    cfg = resolve_config("quickstart", OVERLAP)
    for name in ("a", "b"):
        train(cfg, tmp_path / name, stop_after_updates=2)
        summary = train(load_run_config(tmp_path / name), tmp_path / name, resume=True)
        assert summary["finished"] and summary["updates"] == 5 and summary["agent_steps"] == 1280
    assert _numbers(tmp_path / "a") == _numbers(tmp_path / "b")


def test_overlap_needs_two_cores_and_the_local_collector():
    with pytest.raises(ValueError, match=r"train\.threads=1"):
        resolve_config("quickstart", [*TINY, "train.overlap=true", "train.threads=1"])
    with pytest.raises(ValueError, match=r"train\.overlap=true.*distributed\.backend='ray'"):
        resolve_config("quickstart", [*OVERLAP, "distributed.backend=ray"])


@pytest.mark.parametrize(("overrides", "workers"), [(OVERLAP, 2), ([*TINY, "train.threads=2"], 1)])
def test_the_warm_start_fits_side_by_side_only_under_the_overlap(tmp_path, monkeypatch, overrides, workers):
    # One torch thread per Python thread is what makes side-by-side fits a core each; without the overlap
    # torch already spreads each fit over train.threads.
    seen = []

    def warm_start(policy, env, cfg, seed=0, workers=1):
        seen.append((torch.get_num_threads(), workers))
        return {"agent_steps": 0, "wall_s": 0.0}

    monkeypatch.setattr("marl.trainer.warm_start", warm_start)
    train(resolve_config("quickstart", [*overrides, "pretrain.iterations=0", "train.total_agent_steps=256"]), tmp_path)
    assert seen == [(1 if workers == 2 else 2, workers)]
