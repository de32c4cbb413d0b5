"""The PPO trainer: learning on a trivial task, exact resume, config errors, the NaN guard, checkpoints, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from envs.config import make_config
from envs.swarm import QuadSwarmVecEnv
from marl.checkpoint import CheckpointError, load_checkpoint, load_policy
from marl.collector import ROLLOUT_KEYS
from marl.distributed import RemoteCollector
from marl.logger import TIMING_KEYS, read_metrics
from marl.pettingzoo_env import PettingZooEnvConfig
from marl.ppo import NonFiniteError
from marl.replay import CollisionReplay
from marl.rollout import RolloutBuffer
from marl.train_config import ReplayConfig, apply_overrides, parse_override, resolve_config, validate_run_config
from marl.trainer import Trainer, config_differences, load_run_config, train
from marl.vec_env import Capabilities, capabilities, make_vec_env

ROOT = Path(__file__).resolve().parent.parent

# A tiny, fast setting on top of the shipped quickstart config: 2 drones, 1 s episodes, small MLP.
TINY = [
    "env.num_drones=2", "env.num_neighbors=1", "env.episode_seconds=0.5", "env.grace_seconds=0.1",
    "agent.name=mlp", "train.num_envs=16", "train.rollout_steps=8", "train.epochs=2", "train.minibatches=2",
    "train.threads=1", "train.total_agent_steps=1280", "train.checkpoint_every=1", "logging.tensorboard=false",
    "logging.progress=false",
]


def _numbers(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def test_overrides_are_yaml_typed_and_dotted():
    assert parse_override("train.lr=3e-4") == (["train", "lr"], 3e-4)
    assert parse_override("env.num_drones=4") == (["env", "num_drones"], 4)
    assert parse_override("logging.tensorboard=false") == (["logging", "tensorboard"], False)
    raw = apply_overrides({"train": {"lr": 1.0}}, ["train.replay.enabled=true", "seed=3"])
    assert raw == {"train": {"lr": 1.0, "replay": {"enabled": True}}, "seed": 3}
    cfg = resolve_config("quickstart", ["train.lr=3e-4", "env.num_drones=3"])
    assert cfg.train.lr == 3e-4 and cfg.env.num_drones == 3


@pytest.mark.parametrize(
    "override, field",
    [
        ("train.lrr=1e-3", "train.lrr"),  # unknown key
        ("train.clip=-0.1", "train.clip"),  # bad range
        ("train.gamma=1.5", "train.gamma"),
        ("env.num_drones=0", "env.num_drones"),
        ("optim.name=lionn", "optim.name"),  # unknown: the registry lists the names
        ("optim.name=tpsgd", "optim.name"),  # known, but needs its own training step (layer-wise targets)
        ("agent.num_heads=0", "agent.num_heads"),
        ("train.replay.capacity=0", "train.replay.capacity"),
        ("bogus.key=1", "bogus"),
        ("train.overlap=true", "train.threads"),  # quickstart runs on one core: nothing to overlap on
    ],
)
def test_config_errors_name_the_field(override, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        resolve_config("quickstart", [override])


def test_algo_sets_the_critic_and_contradictions_fail():
    assert resolve_config("quickstart", ["train.algo=mappo"]).agent.critic == "central"
    assert resolve_config("quickstart", ["train.algo=ippo"]).agent.critic == "local"
    with pytest.raises(ValueError, match="agent.critic"):
        resolve_config("quickstart", ["train.algo=ippo", "agent.critic=central"])


def test_resolved_config_round_trips():
    cfg = resolve_config("swarm8_obstacles", ["train.lr=1e-4"])
    again = validate_run_config(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()


def test_gae_matches_a_direct_computation():
    buf = RolloutBuffer(steps=3, num_envs=1, num_agents=1, obs_dim=1, act_dim=1)
    buf.rewards[:, 0, 0] = torch.tensor([1.0, 2.0, 3.0])
    buf.values[:, 0, 0] = torch.tensor([0.5, 0.25, 0.125])
    buf.dones[:, 0] = torch.tensor([0.0, 1.0, 0.0])  # the episode ends after step 1
    gamma, lam = 0.9, 0.8
    buf.compute_gae(torch.tensor([[2.0]]), gamma, lam)
    d2 = 3.0 + gamma * 2.0 - 0.125
    d1 = 2.0 - 0.25  # no bootstrap across the episode end
    d0 = 1.0 + gamma * 0.25 - 0.5
    want = torch.tensor([d0 + gamma * lam * d1, d1, d2])
    torch.testing.assert_close(buf.advantages[:, 0, 0], want)
    torch.testing.assert_close(buf.returns, buf.advantages + buf.values)


def test_tiny_training_improves_return_on_hover(tmp_path):
    # Hover: every drone starts on its goal; a random policy drifts and tilts, training learns to hold.
    cfg = resolve_config("quickstart", [
        *TINY, "env.scenario=hover", "env.num_drones=1", "env.num_neighbors=0", "env.episode_seconds=0.5",
        "train.num_envs=64", "train.rollout_steps=25", "train.total_agent_steps=64000", "train.epochs=4",
        "train.lr=3e-3", "agent.init_log_std=-0.5", "train.checkpoint_every=100", "logging.episode_window=64",
    ])
    train(cfg, tmp_path / "run", progress=False)
    returns = [r["episode_return"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["episodes_update"]]
    assert len(returns) >= 10
    first, last = sum(returns[:3]) / 3, sum(returns[-3:]) / 3
    assert last > first + 0.1 * abs(first), (first, last)


def test_resume_gives_the_same_numbers(tmp_path):
    overrides = [*TINY, "train.replay.enabled=true", "train.anneal.collision_steps=640"]
    cfg = resolve_config("quickstart", overrides)
    train(cfg, tmp_path / "straight", progress=False)
    train(cfg, tmp_path / "split", stop_after_updates=2, progress=False)
    assert len(read_metrics(tmp_path / "split" / "metrics.jsonl")) == 2
    # A fresh process would reload config.yaml: do the same here.
    train(load_run_config(tmp_path / "split"), tmp_path / "split", resume=True, progress=False)
    straight = read_metrics(tmp_path / "straight" / "metrics.jsonl")
    split = read_metrics(tmp_path / "split" / "metrics.jsonl")
    assert len(straight) == 5  # 1280 agent steps / (16 envs x 8 steps x 2 drones)
    assert _numbers(split) == _numbers(straight)
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "latest.pt")["model"]
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "latest.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_collision_replay_stores_a_state_before_the_crash_and_restores_it():
    cfg = make_config(num_drones=2, num_neighbors=1, scenario="hover", grace_seconds=0.0, episode_seconds=0.2)
    env = QuadSwarmVecEnv(cfg, num_envs=2)
    env.reset(seed=0)
    rc = ReplayConfig(enabled=True, snapshot_seconds=0.02, history_seconds=0.1, lookback_seconds=0.04, prob=1.0,
                      max_replays=2, max_crashes=5.0)
    replay = CollisionReplay(rc, num_envs=2, num_drones=2, ctrl_dt=env.ctrl_dt)
    hover = torch.full((2, 2, 4), 2 / 1.9 - 1)  # thrust fraction 1 / (thrust-to-weight)

    def step(i):
        t_before = env.live.t.clone()
        _, _, _, _, info = env.step(hover)
        return replay.after_step(env, t_before, info), info

    for i in range(1, 9):
        step(i)
    assert not replay.events and len(replay.ring) == 4
    snap = env.get_state([0])
    snap.pos[0, 1] = snap.pos[0, 0]  # env 0: both drones in one place -> a neighbour collision
    env.set_state([0], snap)
    step(9)
    assert len(replay.events) == 1 and replay.crashed.tolist() == [True, False]
    assert int(replay.events[0]["t"][0]) <= 9 - replay.lookback
    for i in range(10, 21):
        was_replayed, info = step(i)
    assert "episode_env_ids" in info and was_replayed.tolist() == [False, False]
    event_t = int(replay.events[0]["t"][0])
    obs = replay.restore(env, info["episode_env_ids"], torch.Generator().manual_seed(0))
    assert obs is not None and replay.replayed.all()
    assert env.live.t.tolist() == [event_t, event_t]  # both envs start from the stored state
    assert replay.stored == 1 and not replay.events  # replayed twice = max_replays: dropped


def test_vec_envs_declare_their_capabilities_and_policies_have_no_op_hooks():
    swarm = make_vec_env(make_config(num_drones=2, num_neighbors=1), 2)
    assert capabilities(swarm) == Capabilities(snapshots=True, collision_scale=True, step_metrics=True)
    pz = make_vec_env(PettingZooEnvConfig(target="pettingzoo:envs.predator_prey_v0:parallel_env",
                                          kwargs={"grid_size": 4, "num_predators": 2}), 2)
    assert capabilities(pz) == Capabilities(snapshots=False, collision_scale=False, step_metrics=False)
    assert not hasattr(pz, "ctrl_dt")  # no clock: it does not pretend to have one
    policy = Trainer(resolve_config("quickstart", TINY), "unused").policy
    obs = swarm.reset(seed=0)
    assert policy.edge_parameters() == [] and len(policy.policy_parameters()) == len(list(policy.parameters()))
    assert policy.gate_penalty(obs) is None and policy.communication_stats(obs) == {}


def test_a_remote_collector_reproduces_the_local_one_and_builds_no_optimiser(tmp_path):
    cfg = resolve_config("quickstart", [*TINY, "train.anneal.collision_steps=640"])
    trainer = Trainer(cfg, tmp_path)
    learner = trainer.learner
    local = trainer.sampler.collect(learner.weights(), learner.progress())
    # What a Ray actor runs, here in-process: the same seed and order give the same rollout.
    worker = RemoteCollector(cfg.to_dict(), 0, cfg.train.num_envs, threads=1)
    remote = worker.sample(learner.weights(), cfg.seed, learner.progress())
    for key in ROLLOUT_KEYS:
        assert torch.equal(remote[key], getattr(local.buf, key)), key
    assert torch.equal(remote["last_value"], local.last_value) and remote["stats"] == local.stats
    assert 0 < local.stats["collision_scale"] < 1  # annealed by the run's agent steps
    assert not any(isinstance(v, torch.optim.Optimizer) for v in vars(worker.collector).values())


def test_checkpoint_loads_weights_only(tmp_path):
    cfg = resolve_config("quickstart", [*TINY, "train.total_agent_steps=256"])
    train(cfg, tmp_path / "run", progress=False)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=True)
    assert {"model", "optimizer", "rng", "env", "counters", "config", "value_norm"} <= set(ckpt)
    assert ckpt["rng"]["torch"].dtype == torch.uint8
    assert ckpt["counters"]["update"] == 1
    assert ckpt["env"]["state"]["pos"].shape == (16, 2, 3)
    assert ckpt["config"]["env"]["num_drones"] == 2
    policy, env_cfg = load_policy(tmp_path / "run")  # what `marl eval RUN` uses
    assert env_cfg.num_drones == 2
    action = policy.act(torch.zeros(3, 2, env_cfg.obs_dim), deterministic=True)[0]
    assert action.shape == (3, 2, 4)


def test_resume_refuses_incompatible_config_and_corrupt_checkpoint(tmp_path):
    run = tmp_path / "run"
    cfg = resolve_config("quickstart", TINY)
    train(cfg, run, stop_after_updates=1, progress=False)
    latest = run / "checkpoints" / "latest.pt"
    with pytest.raises(CheckpointError, match="env.num_drones"):
        train(load_run_config(run, ["env.num_drones=3"]), run, resume=True, progress=False)
    moved = load_run_config(run, ["train.threads=2"]).to_dict()  # the same run, moved to a machine with more cores
    assert config_differences(load_checkpoint(latest)["config"], moved) == []
    good = latest.read_bytes()
    assert load_checkpoint(latest)["counters"]["update"] == 1
    latest.write_bytes(good[: len(good) // 2])  # a torn file
    torn = latest.read_bytes()
    with pytest.raises(CheckpointError, match="corrupt"):
        train(load_run_config(run), run, resume=True, progress=False)
    assert latest.read_bytes() == torn  # left as it was, for inspection; nothing was written over it


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import marl.trainer

    real = marl.trainer.build_policy  # the learner's policy (the collector acts with a copy of it)
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        policy = real(*args, **kwargs)
        evaluate = policy.evaluate

        def bad_evaluate(obs, action):
            calls["n"] += 1
            logp, ent, value = evaluate(obs, action)
            if calls["n"] > 4:  # update 1 has 2 epochs x 2 minibatches; update 2 gets a NaN
                value = value * float("nan")
            return logp, ent, value

        policy.evaluate = bad_evaluate
        return policy

    monkeypatch.setattr(marl.trainer, "build_policy", poisoned)
    run = tmp_path / "run"
    cfg = resolve_config("quickstart", TINY)
    with pytest.raises(NonFiniteError) as err:
        train(cfg, run, progress=False)
    assert err.value.update == 2 and err.value.tensor == "loss"
    assert "update 2" in str(err.value)
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["counters"]["update"] == 1
    assert len(read_metrics(run / "metrics.jsonl")) == 1
    assert "loss" in (run / "nan_report.json").read_text()


def _marl(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "marl", *args], cwd=cwd, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_cli_train_quickstart_writes_the_run(tmp_path):
    run = tmp_path / "qs"
    # Short episodes keep the end-of-run evaluation (when marl.evaluate offers one) quick.
    proc = _marl("train", "quickstart", "--steps", "2000", "train.num_envs=16", "train.threads=1",
                 "env.episode_seconds=1", "train.eval_episodes=4", "--run-dir", str(run), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["updates"] == 1
    for name in ("config.yaml", "metrics.jsonl", "checkpoints/latest.pt"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    record = read_metrics(run / "metrics.jsonl")[0]
    for key in ("agent_steps", "wall_s", "episode_return", "success_rate", "policy_loss", "value_loss", "entropy",
                "approx_kl", "clip_frac", "collision_rate", "agent_steps_per_s"):
        assert key in record, key
    assert load_run_config(run).train.total_agent_steps == 2000
    # A second start in the same directory refuses rather than mixing two runs.
    again = _marl("train", "quickstart", "--steps", "2000", "--run-dir", str(run))
    assert again.returncode == 2 and "--resume" in again.stderr
    # Resume with a larger step budget: one more update, the same run directory.
    more = _marl("train", "--resume", str(run), "--steps", "4000", "--no-progress")
    assert more.returncode == 0, more.stderr
    assert [r["update"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2]
    plot = _marl("plot", str(run))
    assert plot.returncode == 0, plot.stderr
    assert (run / "plots" / "learning_curves.png").is_file()


def test_cli_sigkill_then_resume_gives_the_same_numbers(tmp_path):
    args = [*TINY, "train.total_agent_steps=12800", "--no-progress"]  # 50 updates
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    train(resolve_config("quickstart", args[:-1]), straight, progress=False)  # in-process: same numbers
    proc = subprocess.Popen(
        [sys.executable, "-m", "marl", "train", "quickstart", *args, "--run-dir", str(killed)], cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    deadline = time.monotonic() + 120
    while len(read_metrics(killed / "metrics.jsonl")) < 5 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()  # SIGKILL: no chance to write anything more
    proc.wait()
    assert (killed / "checkpoints" / "latest.pt").is_file()
    train(load_run_config(killed), killed, resume=True, progress=False)  # what `marl train --resume` runs
    assert _numbers(read_metrics(killed / "metrics.jsonl")) == _numbers(read_metrics(straight / "metrics.jsonl"))


def test_cli_config_error_exits_2_before_training(tmp_path):
    run = tmp_path / "bad"
    proc = _marl("train", "quickstart", "train.epochs=0", "--run-dir", str(run))
    assert proc.returncode == 2
    assert "train.epochs" in proc.stderr and "Traceback" not in proc.stderr
    assert not run.exists()


def test_cli_nan_guard_reports_clearly(tmp_path):
    run = tmp_path / "nan"
    proc = _marl("train", "quickstart", *TINY, "train.lr=1e30", "optim.name=sgd", "--run-dir", str(run))
    assert proc.returncode == 1, proc.stderr
    assert "non-finite" in proc.stderr and "update" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_train_figures_are_consistent():
    """``marl bench train``: the timed updates' steps, rate and shares agree with each other."""
    from marl.bench.train import bench_train

    r = bench_train("quickstart", seconds=0.01, overrides=TINY, warmup_updates=0)
    assert r["updates"] >= 1 and r["agent_steps"] == r["updates"] * 16 * 8 * 2
    assert r["agent_steps_per_s"] == pytest.approx(r["agent_steps"] / r["seconds"])
    assert 0 < r["rollout_share"] < 1 and 0 < r["update_share"] < 1
    assert r["rollout_share"] + r["update_share"] <= 1 + 1e-9
    assert r["rollout_agent_steps_per_s"] > r["agent_steps_per_s"]
