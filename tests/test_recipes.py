"""The learning levers as config switches of the one trainer: warm start by DAgger with a critic warm-up,
the goal-holding reward, and SSO's mirror ascent measured against the rollout's behaviour policy."""

from __future__ import annotations

import json

import pytest
import torch

import marl.pretrain as pretrain
from agents import make_policy
from agents.checkpoint import load_policy
from deploy.export import export_policy
from envs.config import RewardConfig
from envs.observations import obs_spec
from envs.rewards import swarm_reward
from marl.train_config import resolve_config
from marl.trainer import Trainer, train

TINY = ["train.num_envs=16", "train.rollout_steps=16", "train.minibatches=2", "train.epochs=2",
        "logging.tensorboard=false", "logging.progress=false"]
SHORT = ["env.episode_seconds=2.0", "train.eval_episodes=2"]
PRETRAIN = ["pretrain.iterations=1", "pretrain.num_envs=4", "pretrain.fit_steps=30", "pretrain.critic_warmup_updates=2"]


def test_pretrain_imitates_then_warms_up_the_critic_before_the_actor_moves(tmp_path):
    cfg = resolve_config("quickstart", [*TINY, *PRETRAIN, "train.total_agent_steps=3072"])
    fresh = Trainer(cfg, tmp_path / "unused").policy.actor.state_dict()
    summary = train(cfg, tmp_path / "run", stop_after_updates=2)
    warm = json.loads((tmp_path / "run" / "pretrain.json").read_text())
    assert warm["teacher"] == "pid_avoid" and warm["rows"] > 0 and warm["teacher_fraction"][0] == 1.0
    # The rollouts of the warm start count: 2 rounds x 4 swarms x 700 steps x 4 drones, plus 2 updates.
    assert summary["agent_steps"] == warm["agent_steps"] + 2 * 16 * 16 * 4 == 2 * 4 * 700 * 4 + 2048
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=True)
    actor = {k[len("actor."):]: v for k, v in ckpt["model"].items() if k.startswith("actor.")}
    assert any(not torch.equal(actor[k], v) for k, v in fresh.items())  # imitation moved the actor ...
    warmed = Trainer(cfg, tmp_path / "again")  # ... and the critic-only updates did not: replay them
    warmed.policy.load_state_dict(ckpt["model"])
    before = {k: v.clone() for k, v in warmed.policy.actor.state_dict().items()}
    critic = [p.detach().clone() for p in warmed.policy.critic.parameters()]
    warmed.learner.update = 0
    warmed.train_step()
    assert all(torch.equal(before[k], v) for k, v in warmed.policy.actor.state_dict().items())
    assert any(not torch.equal(a, b) for a, b in zip(critic, warmed.policy.critic.parameters(), strict=True))
    warmed.learner.update = 2  # past the warm-up the actor learns
    warmed.train_step()
    assert any(not torch.equal(before[k], v) for k, v in warmed.policy.actor.state_dict().items())


def test_pretrain_init_from_starts_from_a_trained_policy_with_the_runs_exploration(tmp_path):
    cfg = resolve_config("swarm8_obstacles_dagger", [*TINY, "pretrain.init_from=zoo:swarm8_obstacles",
                                                     "agent.init_log_std=-2.3", "train.total_agent_steps=2048",
                                                     "pretrain.critic_warmup_updates=1", *SHORT])
    summary = train(cfg, tmp_path / "run")
    warm = json.loads((tmp_path / "run" / "pretrain.json").read_text())
    assert warm["init_from"] == "zoo:swarm8_obstacles" and warm["agent_steps"] == 0
    assert summary["agent_steps"] == 2048  # no DAgger rollouts were flown
    zoo = load_policy("zoo:swarm8_obstacles").actor.state_dict()
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=True)
    actor = {k[len("actor."):]: v for k, v in ckpt["model"].items() if k.startswith("actor.")}
    # The single update was the critic's: the actor is the zoo's, but for the exploration the run asked for.
    assert all(torch.equal(actor[k], v) for k, v in zoo.items() if not k.endswith("log_std"))
    assert torch.allclose(actor["log_std"], torch.full_like(actor["log_std"], -2.3))
    assert not torch.allclose(zoo["log_std"], actor["log_std"])
    # A policy of another shape (the large preset's) is refused, naming the field.
    other = resolve_config("swarm8_obstacles_dagger", [*TINY, "pretrain.init_from=zoo:swarm8_obstacles",
                                                       "agent.preset=large", *SHORT])
    with pytest.raises(ValueError, match="pretrain.init_from='zoo:swarm8_obstacles' does not fit"):
        train(other, tmp_path / "other")


def test_swarm_dense_close_fits_the_gated_networks_of_the_zoo_policy_and_ships_them(tmp_path):
    recipe = resolve_config("swarm_dense_close").agent
    assert (recipe.close_range, recipe.close_time, recipe.column_range) == (0.45, 0.1, 0.1)
    # Wider gates than the recipe's, so that three tiny swarms give every round new gated states.
    cfg = resolve_config("swarm_dense_close", [*TINY, *SHORT, "train.total_agent_steps=1024", "env.num_drones=4",
                                               "pretrain.close_range.swarms=3", "pretrain.close_range.fit_steps=20",
                                               "agent.close_range=1.0", "agent.column_range=0.3",
                                               "pretrain.critic_warmup_updates=2"])
    summary = train(cfg, tmp_path / "run")
    warm = json.loads((tmp_path / "run" / "pretrain.json").read_text())
    rounds = warm["close_range"]["rounds"]
    assert warm["init_from"] == "zoo:swarm_dense" and len(rounds) == 3
    for name in ("near", "column"):
        assert 0 < rounds[0][name]["drone_steps"] < rounds[1][name]["drone_steps"] < rounds[2][name]["drone_steps"]
    assert warm["agent_steps"] == 3 * 3 * 200 * 4  # 3 rounds x 3 swarms x 2 s at 100 Hz x 4 drones
    assert summary["agent_steps"] == warm["agent_steps"] + 1024
    policy = load_policy(tmp_path / "run")
    assert type(policy.actor).__name__ == "CloseRangeActor" and policy.actor.close_range == 1.0
    assert policy.actor.column_range == 0.3 and policy.actor.close_time == 0.1
    zoo = load_policy("zoo:swarm_dense").actor.state_dict()
    actor = policy.actor.state_dict()
    # the far network is the zoo policy's; the gated ones were fitted away from their copies
    assert all(torch.equal(actor[k], v) for k, v in zoo.items() if not k.endswith("log_std"))
    assert not torch.equal(actor["near.mean.weight"], zoo["mean.weight"])
    assert not torch.equal(actor["column.mean.weight"], zoo["mean.weight"])
    # its export compresses network by network, with a round of closed-loop calibration
    report = export_policy(tmp_path / "export", method="gptq", bits=3, run=str(tmp_path / "run"), calib_rounds=1)
    assert report["calib_rounds"] == 1 and set(report["quantizer"]["networks"]) == {"far", "near", "column"}
    assert report["c_vs_torch_max_abs_diff"] < 1e-5 and report["self_test"] == "pass"


def test_swarm_dense_careful_imitates_the_slower_teacher_from_scratch_then_fits_the_gated_networks(tmp_path,
                                                                                                  monkeypatch):
    taught = []

    def spy(name, env, device="cpu", gains=None):
        teacher = make_teacher(name, env, device=device, gains=gains)
        taught.append((name, teacher.cfg.max_pos_error))
        return teacher

    make_teacher = pretrain.make_teacher
    monkeypatch.setattr(pretrain, "make_teacher", spy)
    cfg = resolve_config("swarm_dense_careful", [*TINY, *SHORT, *PRETRAIN, "train.total_agent_steps=1024",
                                                 "env.num_drones=4", "pretrain.close_range.swarms=3",
                                                 "pretrain.close_range.fit_steps=20", "pretrain.close_range.rounds=1",
                                                 "agent.close_range=1.0", "agent.column_range=0.3"])
    train(cfg, tmp_path / "run")
    warm = json.loads((tmp_path / "run" / "pretrain.json").read_text())
    # DAgger from scratch (no init_from), then the close-range fit, both labelled by pid_avoid at 1.2 m
    assert "init_from" not in warm and warm["rows"] > 0 and len(warm["close_range"]["rounds"]) == 1
    assert taught == [("pid_avoid", 1.2), ("pid_avoid", 1.2)]
    assert resolve_config("swarm_dense_close").pretrain.teacher_gains is None  # the default teacher: 1.6 m
    # swarm_dense_gaps is the same procedure whose slower teacher also threads narrow gaps (agents.pid)
    gaps = resolve_config("swarm_dense_gaps").pretrain
    assert gaps.init_from is None and gaps.teacher_gains == {"max_pos_error": 1.2, "brake_room_floor": 0.5,
                                                             "max_brake": 12.0, "push_gain": 4.0}
    assert make_teacher("pid_avoid", cfg.env, gains=gaps.teacher_gains).cfg.brake_room_floor == 0.5
    # swarm_dense_gaps_decay anneals both fits and changes nothing else
    decay = resolve_config("swarm_dense_gaps_decay").pretrain
    assert decay.lr_decay and decay.close_range.lr_decay and not gaps.lr_decay and not gaps.close_range.lr_decay
    assert decay.model_copy(update={"lr_decay": None, "close_range": gaps.close_range}) == gaps
    # swarm_dense_gaps_rl: PPO on every part of the shipped student among 0.8 m columns, held by a
    # behaviour-cloning term towards the same gap-threading teacher
    rl = resolve_config("swarm_dense_gaps_rl")
    assert rl.pretrain.init_from == "zoo:swarm_dense_gaps" and rl.pretrain.teacher_gains == gaps.teacher_gains
    assert rl.pretrain.bc.coef_at(1000) == 10.0 and rl.train.actor_parts is None
    assert rl.env.randomization.size_range == (0.8, 0.8)
    # swarm_dense_gaps_mix: the same PPO with the 0.6 m columns in its maps as well
    mix = resolve_config("swarm_dense_gaps_mix")
    assert mix.env.randomization.size_range == (0.6, 0.8)
    assert mix.model_copy(update={"name": rl.name, "description": rl.description,
                                  "env": mix.env.model_copy(update={"randomization": rl.env.randomization})}) == rl


def test_pretrain_and_sso_configs_are_checked_before_anything_runs():
    with pytest.raises(ValueError, match="pid_avoid"):
        resolve_config("quickstart", ["pretrain.teacher=lqr"])
    with pytest.raises(ValueError, match="optim.name='sso'"):
        resolve_config("predator_prey_commformer", ["optim.name=sso"])
    with pytest.raises(ValueError, match="init_from='runs/nowhere'"):
        resolve_config("quickstart", ["pretrain.init_from=runs/nowhere"])
    with pytest.raises(ValueError, match="pretrain.close_range need a controller"):
        resolve_config("quickstart", ["pretrain.teacher=zoo:quickstart", "pretrain.focus.envs=8"])
    with pytest.raises(ValueError, match="action_noise"):
        resolve_config("quickstart", ["pretrain.action_noise=-0.1"])
    with pytest.raises(ValueError, match="unknown controller gain 'neighbor_safe'; allowed: .*neighbour_safe"):
        resolve_config("quickstart", ["pretrain.teacher_gains={neighbor_safe: 0.2}"])
    with pytest.raises(ValueError, match="teacher_gains needs a controller teacher"):
        resolve_config("quickstart", ["pretrain.teacher=zoo:quickstart", "pretrain.teacher_gains={kp_xy: 3.0}"])
    with pytest.raises(ValueError, match="unknown controller gain 'mass'"):  # the vehicle comes from the env
        resolve_config("quickstart", ["pretrain.teacher_gains={mass: 0.05}"])


def test_the_warm_start_imitates_the_teacher_with_its_configured_gains(monkeypatch):
    cfg = resolve_config("quickstart", ["pretrain.teacher_gains={neighbour_safe: 0.2, kp_xy: 3.0}"])
    seen = {}

    def dagger(policy, env, teacher, **kwargs):
        seen["teacher"] = teacher
        raise StopIteration  # the teacher is all this test needs

    monkeypatch.setattr(pretrain, "dagger", dagger)
    policy = make_policy("attention", obs_spec(cfg.env.num_neighbors), cfg.env.num_drones)
    with pytest.raises(StopIteration):
        pretrain.warm_start(policy, cfg.env, cfg.pretrain)
    teacher = seen["teacher"]
    assert (teacher.cfg.neighbour_safe, teacher.cfg.kp_xy, teacher.cfg.avoid) == (0.2, 3.0, True)
    assert teacher.cfg.kd_xy == 3.2  # the rest stays at the defaults


def test_goal_holding_bonus_pays_most_within_its_radius():
    m, e = 1, 3
    dist = torch.tensor([[0.0, 0.1, 1.0]])  # [M, E]
    zeros = torch.zeros(m, e)
    args = dict(dt=0.01, arm=0.046, action=torch.zeros(4, m, e), on_floor=zeros.bool(), r22=torch.ones(m, e),
                omega=torch.zeros(3, m, e), pair_dist=torch.full((m, m, e), float("inf")), new_nbr_col=zeros,
                new_obs_col=zeros.bool(), collision_scale=1.0)
    plain = swarm_reward(RewardConfig(), dist_to_goal=dist, **args)
    bonus = swarm_reward(RewardConfig(precision=2.0, precision_radius=0.1), dist_to_goal=dist, **args) - plain
    assert torch.allclose(bonus[0], 0.01 * 2.0 * torch.exp(-torch.tensor([0.0, 1.0, 100.0])), atol=1e-7)


def test_sso_in_ppo_bounds_the_kl_to_the_behaviour_policy_and_logs_only_steps_taken(tmp_path):
    trainer = Trainer(resolve_config("quickstart", [*TINY, "optim.name=sso", "optim.fma.max_kl=1e-6",
                                                    "optim.fma.eta=1.0"]), tmp_path)
    before = [p.detach().clone() for p in trainer.policy.actor.parameters()]
    record = trainer.train_step()
    # A trust region far below one step's KL undoes every step: nothing is logged as taken and the actor
    # is where the rollout left it (its KL to the behaviour policy is 0).
    assert record["rejected"] == 1.0 and record["inner_steps"] == 0 and record["approx_kl"] == 0
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.policy.actor.parameters(), strict=True))
    assert abs(record["kl_behaviour"]) < 1e-6
    loose = Trainer(resolve_config("quickstart", [*TINY, "optim.name=sso", "optim.fma.eta=1.0"]), tmp_path / "b")
    record = loose.train_step()
    assert record["rejected"] < 1.0 and record["inner_steps"] > 0 and record["kl_behaviour"] > 0
