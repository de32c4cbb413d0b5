"""Distributed training on a local Ray instance (2 CPUs): same numbers, same learning, worker failures, bad input."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import ray  # requirements-dev.txt installs it (the project's [distributed] extra)

from marl.checkpoint import load_checkpoint
from marl.distributed import DistributedError, RaySampler
from marl.logger import TIMING_KEYS, read_metrics
from marl.train_config import apply_overrides, resolve_config, validate_run_config
from marl.trainer import Trainer, load_run_config, train

ROOT = Path(__file__).resolve().parent.parent
# A worker that imports torch on a loaded 2-core machine can take over a minute to start: the tests check
# numbers, not start-up time.
RAY = ["distributed.backend=ray", "distributed.placement_timeout_s=300"]
# quickstart made tiny (as in test_train.py): 2 drones, 0.5 s episodes, a small MLP, 5 updates.
TINY = [
    "env.num_drones=2", "env.num_neighbors=1", "env.episode_seconds=0.5", "env.grace_seconds=0.1",
    "agent.name=mlp", "train.num_envs=16", "train.rollout_steps=8", "train.epochs=2", "train.minibatches=2",
    "train.threads=1", "train.total_agent_steps=1280", "train.checkpoint_every=1", "logging.tensorboard=false",
    "logging.progress=false",
]
# quickstart on the hover task (test_train.py's learning check): the return rises within 25 updates.
HOVER = [
    *TINY, "env.scenario=hover", "env.num_drones=1", "env.num_neighbors=0", "train.num_envs=64",
    "train.rollout_steps=25", "train.total_agent_steps=40000", "train.epochs=4", "train.lr=3e-3",
    "agent.init_log_std=-0.5", "train.checkpoint_every=100", "logging.episode_window=64",
]


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


def _numbers(path: Path) -> list[dict]:
    drop = {*TIMING_KEYS, "workers", "worker_restarts"}
    return [{k: v for k, v in r.items() if k not in drop} for r in read_metrics(path / "metrics.jsonl")]


def test_distributed_section_is_validated_before_anything_starts(tmp_path):
    for override, field in [("distributed.workers=0", "distributed.workers"), ("distributed.backend=spark",
                            "distributed.backend"), ("distributed.wrokers=2", "distributed.wrokers")]:
        with pytest.raises(ValueError, match=field.replace(".", r"\.")):
            resolve_config("quickstart", [override])
    cfg = resolve_config("quickstart", [*TINY, *RAY, "distributed.workers=3"])  # 16 envs do not split in 3
    with pytest.raises(ValueError, match=r"train\.num_envs=16 .*distributed\.workers=3"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    assert resolve_config("quickstart").to_dict()["distributed"]["backend"] == "none"


def test_single_machine_path_never_imports_ray(tmp_path):
    code = (
        "import sys\nfrom marl.train_config import resolve_config\nfrom marl.trainer import train\n"
        f"train(resolve_config('quickstart', {TINY!r}), {str(tmp_path / 'run')!r}, progress=False)\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\nprint('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_unreachable_address_fails_fast_on_the_command_line(tmp_path):
    # A non-routable address: ray.init would retry for ~20 s; the TCP probe gives up after connect_timeout_s.
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "marl", "train", "quickstart", *RAY, "distributed.address=10.255.255.1:6379",
         "distributed.connect_timeout_s=2", "--run-dir", str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    elapsed = time.perf_counter() - t0
    assert out.returncode == 2, out.stderr[-2000:]
    assert "distributed.address='10.255.255.1:6379'" in out.stderr and "Traceback" not in out.stderr
    assert elapsed < 15, elapsed  # interpreter start and imports included
    assert not (tmp_path / "run").exists()


def test_refused_address_fails_fast(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = resolve_config("quickstart", [*TINY, *RAY, f"distributed.address=127.0.0.1:{port}"])
    t0 = time.perf_counter()
    with pytest.raises(DistributedError, match=rf"distributed\.address='127\.0\.0\.1:{port}'"):
        train(cfg, tmp_path / "run", progress=False)
    assert time.perf_counter() - t0 < 5
    with pytest.raises(DistributedError, match=r"distributed\.address='nonsense'"):
        train(resolve_config("quickstart", [*TINY, *RAY, "distributed.address=nonsense"]), tmp_path / "run")


def test_more_workers_than_the_cluster_can_place_fail_fast(cluster, tmp_path):
    cfg = resolve_config("quickstart", [*TINY, *RAY, "distributed.workers=4"])  # 4 x 1 CPU on 2 CPUs
    t0 = time.perf_counter()
    with pytest.raises(DistributedError, match=r"distributed\.workers=4 .* needs 4 CPUs, but the Ray cluster has 2"):
        train(cfg, tmp_path / "run", progress=False)
    assert time.perf_counter() - t0 < 5
    assert not (tmp_path / "run").exists()
    assert ray.is_initialized()  # the caller's Ray instance is left as it was


def test_one_worker_reproduces_the_single_process_run(cluster, tmp_path):
    train(resolve_config("quickstart", TINY), tmp_path / "single", progress=False)
    train(resolve_config("quickstart", [*TINY, *RAY]), tmp_path / "ray1", progress=False)
    single, ray1 = _numbers(tmp_path / "single"), _numbers(tmp_path / "ray1")
    assert len(single) == 5 and ray1 == single
    assert [r["workers"] for r in read_metrics(tmp_path / "ray1" / "metrics.jsonl")] == [1] * 5


def test_two_workers_learn_like_one_process(cluster, tmp_path):
    curves = {}
    for name, extra in (("single", []), ("ray2", [*RAY, "distributed.workers=2"])):
        train(resolve_config("quickstart", [*HOVER, *extra]), tmp_path / name, progress=False)
        records = read_metrics(tmp_path / name / "metrics.jsonl")
        assert records[-1]["agent_steps"] == 40000
        curves[name] = [r["episode_return"] for r in records if r["episodes_update"]]
    for name, returns in curves.items():
        assert len(returns) >= 10, name
        first, last = sum(returns[:3]) / 3, sum(returns[-3:]) / 3
        assert last > first + 0.1 * abs(first), (name, first, last)
    final = {name: sum(r[-3:]) / 3 for name, r in curves.items()}
    gain = final["single"] - sum(curves["single"][:3]) / 3
    assert abs(final["ray2"] - final["single"]) < 0.25 * gain, final


class _Killer(RaySampler):
    """Kills worker 1 while its rollout of update ``kill_at + 1`` is in flight; counts the requests."""

    kill_at = 1

    def _submit(self, index, weights, progress):
        self.asked = getattr(self, "asked", Counter())
        self.asked[(progress.update, index)] += 1
        ref = super()._submit(index, weights, progress)
        if index == 1 and progress.update == self.kill_at and self.asked[(progress.update, 1)] == 1:
            ray.kill(self.workers[1], no_restart=True)
        return ref


def test_a_killed_worker_is_replaced_and_no_completed_rollout_is_lost(cluster, tmp_path):
    cfg = resolve_config("quickstart", [*TINY, *RAY, "distributed.workers=2", "env.episode_seconds=0.2"])
    trainer = Trainer(cfg, tmp_path, sampler=_Killer)
    learner, sampler = trainer.learner, trainer.sampler
    try:
        records = []
        while learner.update < learner.num_updates:
            records.append(trainer.train_step())
            if learner.update == 3:  # between updates: Ray restarts this actor (max_restarts) by itself
                ray.kill(sampler.workers[0], no_restart=False)
        updates, workers = learner.num_updates, sampler.num_workers
        assert learner.update == updates == 5
        assert learner.agent_steps == updates * learner.steps_per_update == 1280
        assert sampler.rollouts_received == updates * workers
        # Update 2: worker 0's completed rollout was kept; only the killed worker's was asked for again.
        assert sampler.asked[(1, 0)] == 1 and sampler.asked[(1, 1)] == 2
        assert sampler.restarts[1] == 1 and sampler.restarts[0] == 1 and records[-1]["worker_restarts"] == 2
        assert sum(r["episodes_update"] for r in records) == trainer.window.total > 0
        assert all(len(sampler.workers) == 2 for _ in records)
    finally:
        trainer.close()
    assert sampler.workers == []


def test_checkpoint_resume_across_machines_and_worker_counts(cluster, tmp_path):
    run = tmp_path / "run"
    train(resolve_config("quickstart", TINY), run, stop_after_updates=2, progress=False)  # one machine
    summary = train(load_run_config(run, [*RAY, "distributed.workers=2"]), run, resume=True, progress=False)
    assert summary["finished"] and summary["updates"] == 5 and summary["agent_steps"] == 1280
    records = read_metrics(run / "metrics.jsonl")
    assert [r["update"] for r in records] == [1, 2, 3, 4, 5]
    assert [r.get("workers") for r in records] == [None, None, 2, 2, 2]
    assert load_run_config(run).distributed.workers == 2
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert ckpt["counters"]["update"] == 5 and "env" not in ckpt  # the envs live on the workers


def test_a_pettingzoo_env_runs_distributed_with_the_same_numbers(cluster, tmp_path):
    raw = {"name": "pp", "env": {"target": "pettingzoo:envs.predator_prey_v0:parallel_env",
                                 "kwargs": {"grid_size": 4, "vision": 0, "num_predators": 3, "max_steps": 8}},
           "agent": {"name": "mlp"}}  # CommFormer's updates draw Gumbel noise from torch's global RNG: not exact
    tiny = ["train.num_envs=8", "train.rollout_steps=8", "train.minibatches=2", "train.epochs=5",
            "train.total_agent_steps=960", "train.threads=1", "logging.tensorboard=false", "logging.progress=false"]
    for name, extra in (("single", []), ("ray1", RAY)):
        train(validate_run_config(apply_overrides(raw, [*tiny, *extra])), tmp_path / name, progress=False)
    single, ray1 = _numbers(tmp_path / "single"), _numbers(tmp_path / "ray1")
    assert len(single) == 5 and sum(r["episodes_update"] for r in single) > 0 and ray1 == single
