"""Training with communication: the PettingZoo adapter, categorical heads, CommFormer's bi-level
schedule and gate penalty in PPO, the leader task and the shipped comparison configs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pettingzoo.test import parallel_api_test

from agents import make_policy
from envs import quad_leader_v0
from envs.config import make_config
from envs.swarm import QuadSwarmVecEnv
from marl.evaluate import evaluate
from marl.pettingzoo_env import PettingZooEnvConfig, PettingZooVecEnv
from marl.ppo import Optimizers, ppo_update
from marl.rollout import RolloutBuffer
from marl.train_config import TrainConfig, resolve_config, validate_run_config
from marl.trainer import Trainer, train

PP = "pettingzoo:envs.predator_prey_v0:parallel_env"
PP_KW = {"grid_size": 4, "vision": 0, "num_predators": 3, "max_steps": 8}
TINY = ["train.num_envs=8", "train.rollout_steps=8", "train.minibatches=2", "train.epochs=5",
        "train.total_agent_steps=960", "train.eval_episodes=4", "logging.tensorboard=false",
        "logging.progress=false", "train.checkpoint_every=2"]


def _pp_config(*overrides: str, agent: dict | None = None):
    raw = {"name": "pp", "env": {"target": PP, "kwargs": PP_KW},
           "agent": agent or {"name": "commformer", "sparsity": 0.4, "gating": True}}
    from marl.train_config import apply_overrides

    return validate_run_config(apply_overrides(raw, [*TINY, *overrides]))


# ------------------------------------------------------------------ the adapter
def test_adapter_batches_a_parallel_env_and_resets_finished_copies():
    env = PettingZooVecEnv(PettingZooEnvConfig(target=PP, kwargs=PP_KW), num_envs=3)
    assert (env.num_agents, env.num_actions, env.act_dim) == (3, 5, 1)
    obs = env.reset(seed=1)
    assert obs.shape == (3, 3, env.obs_dim) and obs.dtype == torch.float32
    again = PettingZooVecEnv(PettingZooEnvConfig(target=PP, kwargs=PP_KW), num_envs=3).reset(seed=1)
    assert torch.equal(obs, again)  # seeded copies are reproducible
    ended_at = []
    for step in range(1, PP_KW["max_steps"] + 1):
        obs, reward, term, trunc, info = env.step(torch.full((3, 3), 4))  # everyone stays
        assert reward.shape == (3, 3)
        if "episode_env_ids" in info:
            ended_at += [step] * len(info["episode_env_ids"])
            assert info["final_obs"].shape == obs.shape
            assert set(info["episode"]) >= {"episode_return", "episode_length", "success_rate"}
    assert ended_at == [PP_KW["max_steps"]] * 3  # all truncated at max_steps, then reset


def test_adapter_rejects_bad_targets_and_actions():
    with pytest.raises(ValueError, match="pettingzoo:<module>:<constructor>"):
        PettingZooEnvConfig(target="envs.predator_prey_v0:parallel_env")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module'"):
        PettingZooEnvConfig(target="pettingzoo:no_such_module:parallel_env")
    with pytest.raises(ValueError, match="no callable 'nope'"):
        PettingZooEnvConfig(target="pettingzoo:envs.predator_prey_v0:nope")
    with pytest.raises(ValueError, match="not a pettingzoo ParallelEnv"):  # the AEC constructor
        PettingZooVecEnv(PettingZooEnvConfig(target="pettingzoo:envs.predator_prey_v0:env"), 1)
    env = PettingZooVecEnv(PettingZooEnvConfig(target=PP, kwargs=PP_KW), num_envs=2)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"integers in 0..4"):
        env.step(torch.full((2, 3), 7))
    with pytest.raises(ValueError, match=r"shape \[2, 3\]"):
        env.step(torch.zeros(2, 2))


def test_config_errors_name_the_env_field():
    with pytest.raises(ValueError, match="env.target"):
        validate_run_config({"env": {"target": "pettingzoo:envs.predator_prey_v0:env_nope"}})
    with pytest.raises(ValueError, match="env.kwargz: unknown field"):
        validate_run_config({"env": {"target": PP, "kwargz": {}}})
    with pytest.raises(ValueError, match="train.replay.enabled"):
        validate_run_config({"env": PP, "train": {"replay": {"enabled": True}}})


# ------------------------------------------------------------------ the bi-level schedule
def test_bilevel_schedule_counts_epochs_over_the_run():
    policy_opt, edge_opt = object(), object()
    opts = Optimizers(policy_opt, edge_opt, edge_every=5)  # type: ignore[arg-type]
    levels = [opts.for_epoch(e)[1] for e in range(1, 13)]
    assert levels == ["policy"] * 4 + ["edge"] + ["policy"] * 4 + ["edge"] + ["policy"] * 2
    assert Optimizers(policy_opt, None, edge_every=5).for_epoch(5)[1] == "policy"  # type: ignore[arg-type]


def test_ppo_update_steps_the_edge_optimiser_only_in_its_epochs():
    from envs.predator_prey_v0 import parallel_env

    layout = parallel_env(**PP_KW).obs_layout
    policy = make_policy("commformer", layout, 3, num_actions=5, sparsity=0.4, gating=True, warmup_updates=0)
    policy.set_training_progress(5, 10)  # past warm-up: Gumbel top-k
    calls: list[str] = []

    def counting(opt, name):
        step = opt.step

        def wrapped(*a, **k):
            calls.append(name)
            return step(*a, **k)

        opt.step = wrapped
        return opt

    opts = Optimizers(counting(torch.optim.Adam(policy.policy_parameters(), lr=1e-3), "policy"),
                      counting(torch.optim.Adam(policy.edge_parameters(), lr=1e-2), "edge"), edge_every=5)
    buf = RolloutBuffer(4, 4, 3, layout.dim, 1)
    gen = torch.Generator().manual_seed(0)
    buf.obs.copy_(torch.rand(buf.obs.shape, generator=gen))
    buf.actions.copy_(torch.randint(0, 5, buf.actions.shape, generator=gen).float())
    buf.rewards.copy_(torch.randn(buf.rewards.shape, generator=gen))
    with torch.no_grad():
        for t in range(4):
            dist, value = policy(buf.obs[t])
            buf.logprobs[t], buf.values[t] = policy.log_prob(dist, buf.actions[t]), value
    buf.compute_gae(torch.zeros(4, 3), 0.99, 0.95)
    cfg = TrainConfig(num_envs=4, rollout_steps=4, epochs=6, minibatches=2)
    edge_before = policy.edge_parameters()[0].detach().clone()
    policy_before = [p.detach().clone() for p in policy.policy_parameters()]
    stats = ppo_update(policy, opts, buf, cfg, None, gen, update=1, epochs_done=3)
    # Run epochs 4..9: epoch 5 steps the edges (2 minibatches), the other five the policy.
    assert calls == ["policy"] * 2 + ["edge"] * 2 + ["policy"] * 8
    assert stats["edge_steps"] == 2 and stats["epochs"] == 6 and stats["gate_penalty"] > 0
    assert not torch.equal(edge_before, policy.edge_parameters()[0])
    assert any(not torch.equal(a, b) for a, b in zip(policy_before, policy.policy_parameters(), strict=True))


def test_edge_optimiser_alone_leaves_the_policy_unchanged():
    """In an edge epoch only the edge logits move (the policy parameters get no step)."""
    from envs.predator_prey_v0 import parallel_env

    layout = parallel_env(**PP_KW).obs_layout
    policy = make_policy("commformer", layout, 3, num_actions=5, warmup_updates=0)
    policy.set_training_progress(1, 2)
    opts = Optimizers(torch.optim.SGD(policy.policy_parameters(), lr=0.1),
                      torch.optim.SGD(policy.edge_parameters(), lr=0.1), edge_every=1)
    buf = RolloutBuffer(2, 2, 3, layout.dim, 1)
    buf.obs.uniform_()
    buf.advantages.normal_()
    buf.returns.normal_()
    before = [p.detach().clone() for p in policy.policy_parameters()]
    ppo_update(policy, opts, buf, TrainConfig(num_envs=2, rollout_steps=2, epochs=1, minibatches=1), None,
               torch.Generator().manual_seed(0), update=1)
    assert all(torch.equal(a, b) for a, b in zip(before, policy.policy_parameters(), strict=True))


# ------------------------------------------------------------------ training end to end
def test_commformer_trains_on_predator_prey_and_resumes(tmp_path):
    cfg = _pp_config()
    summary = train(cfg, tmp_path / "run", stop_after_updates=2)
    assert not summary["finished"]
    summary = train(cfg, tmp_path / "run", resume=True)
    assert summary["finished"] and summary["updates"] == 5
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in records] == [1, 2, 3, 4, 5]
    assert sum(r["edge_steps"] for r in records) == 2 * 5  # epochs 5, 10, ..., 25 of the run x 2 minibatches
    # At acting time every open gate receives exactly k = int(3 * 0.4) = 1 of the 2 possible messages.
    for r in records:
        assert r["graph_density"] == 0.5 and "success_rate" in r
        assert r["communication_rate"] == pytest.approx(r["gate_open_rate"] * r["graph_density"], abs=1e-9)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=True)
    assert ckpt["edge_optimizer"]["state"] and ckpt["counters"]["epochs"] == 25
    report = evaluate(str(tmp_path / "run"), episodes=4)
    # At most the graph's k = 1 of 2 possible messages (all gates open); the untrained gates start open
    # with p = sigmoid(2) ~ 0.88, so well above nothing. (Success and return are sampled from the
    # categorical head with the global RNG, so a re-evaluation does not reproduce the trainer's eval.)
    assert 0.25 <= report["communication_rate"] <= 0.5 + 1e-6 and "success_rate" in report
    with pytest.raises(ValueError, match="PettingZoo environment"):
        evaluate(str(tmp_path / "run"), episodes=2, scenario="o_random")


@pytest.mark.parametrize("name", ["attention", "mlp"])
def test_categorical_heads_for_every_policy(tmp_path, name):
    cfg = _pp_config("train.total_agent_steps=192", agent={"name": name})
    trainer = Trainer(cfg, tmp_path)
    assert trainer.policy.num_actions == 5 and trainer.sampler.buf.actions.shape[-1] == 1
    record = trainer.train_step()
    assert np.isfinite(record["policy_loss"]) and "action_std" not in record


def test_trains_on_mpe_simple_spread(tmp_path):
    raw = {"env": "pettingzoo:mpe2.simple_spread_v3:parallel_env", "agent": {"name": "commformer", "sparsity": 1.0}}
    from marl.train_config import apply_overrides

    cfg = validate_run_config(apply_overrides(raw, TINY))
    summary = train(cfg, tmp_path / "ss")
    assert summary["finished"] and np.isfinite(summary["eval"]["episode_return"])
    assert summary["eval"]["communication_rate"] == pytest.approx(1.0)


def test_agent_num_actions_must_match_the_env(tmp_path):
    with pytest.raises(ValueError, match="agent.num_actions=3 does not match"):
        Trainer(_pp_config(agent={"name": "mlp", "num_actions": 3}), tmp_path)


# ------------------------------------------------------------------ the leader task
def test_leader_task_hides_the_goal_from_followers():
    parallel_api_test(quad_leader_v0.parallel_env(), num_cycles=20)
    cfg = make_config(num_drones=4, leaders=1, num_neighbors=2, scenario="static_same_goal")
    env = QuadSwarmVecEnv(cfg, num_envs=3)
    obs = env.reset(seed=0)
    assert env.spec.self_dim == 20 and obs.shape[-1] == cfg.obs_dim == 20 + 12 + 9
    assert torch.all(obs[:, 1:, :3] == 0) and torch.all(obs[:, 0, :3].abs().sum(-1) > 0)
    assert torch.equal(obs[:, :, 19], torch.tensor([1.0, 0, 0, 0]).expand(3, 4))
    full = QuadSwarmVecEnv(make_config(num_drones=4, num_neighbors=2, scenario="static_same_goal"), num_envs=3)
    ref = full.reset(seed=0)
    assert torch.allclose(ref[:, 0, :3], obs[:, 0, :3])  # same episode, the leader sees the same goal
    with pytest.raises(ValueError, match="leaders=4 must be < num_drones=4"):
        make_config(num_drones=4, leaders=4)
    with pytest.raises(ValueError, match="needs leaders >= 1"):
        quad_leader_v0.parallel_env(leaders=0)


# ------------------------------------------------------------------ shipped configs
@pytest.mark.parametrize("task", ["predator_prey", "quad_leader"])
def test_comparison_variants_differ_only_in_the_policy(task):
    main = resolve_config(f"{task}_commformer")
    variants = {v: resolve_config(f"{task}_{v}") for v in ("commformer_full", "commformer_none", "attention")}
    assert main.agent.sparsity == 0.4 and variants["commformer_full"].agent.sparsity == 1.0
    assert variants["commformer_none"].agent.communicate is False
    assert variants["attention"].agent.name == "attention"
    for cfg in variants.values():
        assert cfg.env == main.env and cfg.train == main.train and cfg.seed == main.seed


def test_base_configs_merge_and_unset(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("base: predator_prey_commformer\nname: child\ntrain: {lr: 0.002}\nagent: {sparsity: null}\n")
    cfg = resolve_config(str(child))
    assert cfg.name == "child" and cfg.train.lr == 0.002 and cfg.train.num_envs == 64 and cfg.agent.sparsity is None
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"base: {loop}\n")
    with pytest.raises(ValueError, match="nest more than 8"):
        resolve_config(str(loop))
