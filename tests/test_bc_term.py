"""The behaviour-cloning term of ``pretrain.bc``: the teacher labels the collector's observations and PPO's
actor loss pulls the action means towards those labels, with a decaying weight; off, nothing changes."""

from __future__ import annotations

import pytest
import torch

import marl.collector
from agents.checkpoint import load_policy
from agents.controllers import make_controller
from marl.logger import read_metrics
from marl.train_config import BCTermConfig, PretrainConfig, resolve_config
from marl.trainer import Trainer, config_differences, load_run_config, train

TINY = ["train.num_envs=16", "train.rollout_steps=16", "train.minibatches=2", "train.epochs=2",
        "logging.tensorboard=false", "logging.progress=false"]
# A pretrain section without warm-up; Trainer alone does not run the DAgger warm start (train() does).
BC = ["pretrain.critic_warmup_updates=0", "pretrain.bc.decay=1.0"]


def _mse(policy, obs: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((policy(obs)[0].mean - labels).square().sum(-1).mean())


def test_a_large_bc_weight_moves_the_action_means_towards_the_teacher(tmp_path):
    more = ["train.minibatches=4", "train.epochs=4"]
    pulled = Trainer(resolve_config("quickstart", [*TINY, *more, *BC, "pretrain.bc.coef=100"]), tmp_path / "bc")
    plain = Trainer(resolve_config("quickstart", [*TINY, *more, *BC]), tmp_path / "plain")  # same seed, same weights
    before = {k: v.clone() for k, v in plain.policy.state_dict().items()}
    records = [pulled.train_step()]
    buf = pulled.sampler.buf  # the first rollout's observations and the teacher's labels: the probe
    obs, labels = buf.obs.flatten(0, 1).clone(), buf.teacher_actions.flatten(0, 1).clone()
    records += [pulled.train_step() for _ in range(2)]
    for _ in range(3):
        plain.train_step()
    start = _mse(Trainer(resolve_config("quickstart", [*TINY, *more, *BC]), tmp_path / "fresh").policy, obs, labels)
    assert all(torch.equal(before[k], v) for k, v in Trainer(
        resolve_config("quickstart", [*TINY, *more, *BC]), tmp_path / "again").policy.state_dict().items())
    assert [r["bc_coef"] for r in records] == [100.0] * 3 and all(r["bc_loss"] > 0 for r in records)
    # PPO alone leaves the means about as far from the teacher; the term pulls them well towards it.
    assert _mse(plain.policy, obs, labels) > 0.95 * start
    assert _mse(pulled.policy, obs, labels) < 0.6 * start


def test_the_teacher_labels_the_flown_observations_and_resets_with_the_envs(tmp_path):
    cfg = resolve_config("quickstart", [*TINY, *BC, "pretrain.bc.coef=1.0", "env.episode_seconds=0.1"])
    trainer = Trainer(cfg, tmp_path)
    trainer.train_step()
    buf = trainer.sampler.buf
    assert bool(buf.dones.any())  # 10-step episodes: some envs restart inside the 16-step rollout
    # A fresh teacher fed the same observations, reset where an episode ended, gives the stored labels:
    # its integral followed the trajectory the policy flew.
    teacher = make_controller("pid_avoid", cfg.env.dynamics)
    for t in range(buf.steps):
        assert torch.equal(teacher(buf.obs[t]), buf.teacher_actions[t])
        teacher.reset(buf.dones[t].nonzero().flatten())
    assert not torch.allclose(buf.teacher_actions, buf.actions)  # labels, not the executed actions


def test_a_trained_policy_can_be_the_teacher(tmp_path):
    # Distillation: pretrain.teacher names a trained policy; its deterministic actions are the labels.
    cfg = resolve_config("swarm8_obstacles_dagger", [*TINY, *BC, "pretrain.bc.coef=1.0", "train.num_envs=4",
                                                     "pretrain.teacher=zoo:swarm8_obstacles"])
    trainer = Trainer(cfg, tmp_path)
    trainer.train_step()
    buf = trainer.sampler.buf
    zoo = load_policy("zoo:swarm8_obstacles")
    with torch.no_grad():
        want = zoo.act(buf.obs.flatten(0, 1), deterministic=True)[0].clamp(-1.0, 1.0)
    assert torch.allclose(buf.teacher_actions.flatten(0, 1), want, atol=1e-6)
    with pytest.raises(ValueError, match="trained policy"):
        resolve_config("quickstart", ["pretrain.teacher=runs/nowhere"])


def test_off_no_teacher_is_built_or_called_and_the_buffer_is_as_before(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a teacher was built with the BC term off")

    monkeypatch.setattr(marl.collector, "make_teacher", refuse)
    for extra in ([], ["pretrain.bc.coef=0"]):
        trainer = Trainer(resolve_config("quickstart", [*TINY, "pretrain.critic_warmup_updates=0", *extra]),
                          tmp_path / str(len(extra)))
        record = trainer.train_step()
        buf = trainer.sampler.buf
        assert trainer.sampler.teacher is None and buf.teacher_actions is None
        assert set(buf.flat()) == {"obs", "actions", "logprobs", "values", "advantages", "returns"}
        assert "bc_loss" not in record and "bc_coef" not in record
    # Without bc the resolved config is what it was before the term existed: older runs still resume.
    cfg = resolve_config("quickstart", [*TINY, "pretrain.critic_warmup_updates=0"]).to_dict()
    old = {**cfg, "pretrain": {k: v for k, v in cfg["pretrain"].items() if k != "bc"}}
    assert cfg["pretrain"]["bc"] is None and config_differences(old, cfg) == []


def test_the_weight_decays_per_actor_update_after_the_critic_warm_up():
    geo = PretrainConfig(critic_warmup_updates=2, bc=BCTermConfig(coef=2.0, decay=0.5, updates=3))
    assert [geo.bc_coef(u) for u in range(6)] == [0.0, 0.0, 2.0, 1.0, 0.5, 0.0]
    lin = PretrainConfig(critic_warmup_updates=0, bc=BCTermConfig(coef=1.0, schedule="linear", updates=4))
    assert [lin.bc_coef(u) for u in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert PretrainConfig().bc_coef(10) == 0.0


def test_the_collector_stops_calling_the_teacher_once_the_weight_is_zero_for_good(tmp_path):
    cfg = resolve_config("quickstart", [*TINY, *BC, "pretrain.bc.coef=1.0", "pretrain.bc.updates=1"])
    trainer = Trainer(cfg, tmp_path)
    first, second = trainer.train_step(), trainer.train_step()
    assert first["bc_coef"] == 1.0 and "bc_coef" not in second and "bc_loss" not in second


@pytest.mark.parametrize("override, field", [
    (["pretrain.bc.coef=-1"], "pretrain.bc.coef"),
    (["pretrain.bc.schedule=cosine"], "pretrain.bc.schedule"),
    (["pretrain.bc.coef=1", "pretrain.bc.schedule=linear"], "pretrain.bc: updates must be > 0"),
    (["pretrain.bc.decay=1.5"], "pretrain.bc.decay"),
    (["pretrain.bc.coeff=1"], "pretrain.bc.coeff: unknown field"),
    (["pretrain.bc.coef=1", "optim.name=sso"], "pretrain.bc.coef=1.0 .*optim.name='sso'"),
    (["pretrain.bc.coef=1", "distributed.backend=ray"], "distributed.backend='ray'"),
])
def test_bc_settings_are_checked_naming_the_field(override, field):
    with pytest.raises(ValueError, match=field):
        resolve_config("quickstart", override)


def test_a_run_with_the_term_resumes_to_the_same_numbers(tmp_path):
    warm = ["pretrain.iterations=0", "pretrain.num_envs=1", "pretrain.fit_steps=1", "pretrain.critic_warmup_updates=1"]
    cfg = resolve_config("quickstart", [*TINY, *warm, "pretrain.bc.coef=1", "train.total_agent_steps=3072",
                                        "env.episode_seconds=1.0", "train.eval_episodes=1"])
    train(cfg, tmp_path / "straight", progress=False)
    train(cfg, tmp_path / "split", stop_after_updates=2, progress=False)
    train(load_run_config(tmp_path / "split"), tmp_path / "split", resume=True, progress=False)
    straight, split = (read_metrics(tmp_path / r / "metrics.jsonl") for r in ("straight", "split"))
    assert [r["bc_coef"] for r in straight] == [0.0, 1.0, 0.95]  # the critic warm-up, then the decay
    assert [r["bc_loss"] for r in split] == [r["bc_loss"] for r in straight]
    assert [r["policy_loss"] for r in split] == [r["policy_loss"] for r in straight]


def test_a_radius_keeps_the_term_to_samples_near_the_goal(tmp_path):
    cfg = resolve_config("quickstart", [*TINY, *BC, "pretrain.bc.coef=1", "pretrain.bc.radius=1.0"])
    trainer = Trainer(cfg, tmp_path / "near")
    trainer.train_step()
    buf = trainer.sampler.buf
    assert torch.equal(buf.teacher_weights, (buf.obs[..., 0:3].norm(dim=-1) < 1.0).float())
    # No sample that close: the term is 0 and the update is plain PPO's.
    # (Each trainer seeds the global generator its rollouts sample from: build and step one after the other.)
    tight = Trainer(resolve_config("quickstart", [*TINY, *BC, "pretrain.bc.coef=1", "pretrain.bc.radius=1e-9"]),
                    tmp_path / "tight")
    record = tight.train_step()
    plain = Trainer(resolve_config("quickstart", [*TINY, *BC]), tmp_path / "plain")
    plain_record = plain.train_step()
    assert record["bc_loss"] == 0.0 and record["policy_loss"] == plain_record["policy_loss"]
    assert all(torch.equal(a, b) for a, b in zip(tight.policy.parameters(), plain.policy.parameters(), strict=True))
