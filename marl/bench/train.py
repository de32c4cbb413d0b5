"""End-to-end training throughput (``marl bench train``): agent-steps/s of whole updates (simulation,
inference and PPO), in one process, overlapped on two cores against serial on one, or with Ray rollout
workers against one process."""

from __future__ import annotations

import platform
import tempfile
import time
from typing import Any

import torch

from marl.devices import cpu_name, pinned
from marl.train_config import resolve_config
from marl.trainer import Trainer


def time_updates(trainer: Any, warmup_updates: int, seconds: float) -> tuple[int, float, float, float]:
    """Run ``warmup_updates`` untimed updates, then updates for at least ``seconds`` (at least one);
    returns (updates, elapsed s, rollout s, update s) of the timed ones."""
    for _ in range(warmup_updates):
        trainer.train_step()
    rollout = update = 0.0
    n = 0
    t0 = time.perf_counter()
    while n == 0 or time.perf_counter() - t0 < seconds:
        record = trainer.train_step()
        rollout += record["rollout_s"]
        update += record["update_s"]
        n += 1
    return n, time.perf_counter() - t0, rollout, update


def timing_figures(
    updates: int, steps_per_update: int, elapsed: float, rollout: float, update: float
) -> dict[str, Any]:
    """The figures of ``time_updates``'s result: agent steps, rates and the rollout / update shares."""
    steps = updates * steps_per_update
    return {"updates": updates, "agent_steps": steps, "seconds": elapsed, "agent_steps_per_s": steps / elapsed,
            "rollout_agent_steps_per_s": steps / max(rollout, 1e-9), "rollout_share": rollout / elapsed,
            "update_share": update / elapsed}


def bench_train(
    config: str = "quickstart", seconds: float = 30.0, threads: int | None = None,
    overrides: list[str] | None = None, warmup_updates: int = 1,
) -> dict[str, Any]:
    """Run updates of ``config`` for about ``seconds`` (after ``warmup_updates``) and time them.

    ``threads`` (default: the config's train.threads) pins the process to that many cores. Nothing is
    written besides a temporary directory. Returns a JSON-ready dict.
    """
    if seconds <= 0:
        raise ValueError(f"seconds={seconds} must be > 0")
    extra = list(overrides or [])
    if threads is not None:
        extra.append(f"train.threads={threads}")
    cfg = resolve_config(config, extra)
    tc = cfg.train
    with tempfile.TemporaryDirectory() as tmp, pinned(tc.threads, tc.torch_threads) as cores:
        trainer = Trainer(cfg, tmp)
        n, elapsed, rollout, update = time_updates(trainer, warmup_updates, seconds)
        params = sum(p.numel() for p in trainer.policy.parameters())
    return {
        "config": config, "policy": getattr(cfg.agent, "name", None), "preset": getattr(cfg.agent, "preset", None),
        "parameters": params, "drones": cfg.env.num_drones, "envs": tc.num_envs, "rollout_steps": tc.rollout_steps,
        "epochs": tc.epochs, "minibatches": tc.minibatches,
        **timing_figures(n, trainer.steps_per_update, elapsed, rollout, update), "threads": tc.threads, "cores": cores,
        "torch_version": torch.__version__, "python_version": platform.python_version(), "cpu": cpu_name(),
    }


def bench_train_overlap(
    config: str = "quickstart", seconds: float = 30.0, overrides: list[str] | None = None, warmup_updates: int = 1,
) -> dict[str, Any]:
    """The same updates of ``config`` serially on one core and overlapped on two (``train.overlap``): the
    collector fills the next rollout while the learner updates. Returns both runs' figures and the speed-up."""
    extra = list(overrides or [])
    serial = bench_train(config, seconds, 1, [*extra, "train.overlap=false"], warmup_updates)
    overlapped = bench_train(config, seconds, 2, [*extra, "train.overlap=true"], warmup_updates)
    return {"config": config, "serial": serial, "overlap": overlapped,
            "speedup": overlapped["agent_steps_per_s"] / serial["agent_steps_per_s"]}


def bench_train_distributed(
    config: str = "quickstart", seconds: float = 30.0, workers: list[int] | tuple[int, ...] = (1, 2),
    envs_per_worker: int | None = None, address: str | None = None, cpus_per_worker: float = 1.0,
    overrides: list[str] | None = None, warmup_updates: int = 1,
) -> dict[str, Any]:
    """Agent-steps/s of whole distributed updates (``marl.distributed``) for each worker count, and of one process.

    ``envs_per_worker`` None splits the config's train.num_envs over the workers (the same batch:
    strong scaling); a number gives each worker that many envs (the batch grows with the workers:
    weak scaling), and the single-process figure then uses that many envs. Connects once (a local
    Ray instance unless ``address``), times ``seconds`` of updates after ``warmup_updates`` per
    worker count, and returns a JSON-ready dict with the speed-up over the single process.
    """
    # optional dependency: Ray (marl.distributed needs it) only for the distributed benchmark
    from marl.distributed import connect

    if seconds <= 0:
        raise ValueError(f"seconds={seconds} must be > 0")
    counts = [int(w) for w in workers]
    if not counts or min(counts) < 1:
        raise ValueError(f"workers={list(workers)} must be worker counts >= 1")
    extra = list(overrides or [])
    if envs_per_worker is not None:
        extra.append(f"train.num_envs={envs_per_worker}")  # the single-process reference runs one worker's batch
    single = bench_train(config, seconds, overrides=extra, warmup_updates=warmup_updates)
    dist = ["distributed.backend=ray", f"distributed.cpus_per_worker={cpus_per_worker}"]
    if address is not None:
        dist.append(f"distributed.address={address}")
    probe = resolve_config(config, [*extra, *dist])
    import ray  # optional dependency, as above

    started = connect(probe.distributed)
    runs = []
    try:
        for n in counts:
            per = [f"distributed.workers={n}"]
            if envs_per_worker is not None:
                per.append(f"distributed.envs_per_worker={envs_per_worker}")
            cfg = resolve_config(config, [*extra, *dist, *per])
            with tempfile.TemporaryDirectory() as tmp, pinned(cfg.train.threads):
                trainer = Trainer(cfg, tmp)  # distributed.backend=ray: the learner with Ray collectors
                try:
                    k, elapsed, rollout, update = time_updates(trainer, warmup_updates, seconds)
                finally:
                    trainer.close()
            fig = timing_figures(k, trainer.steps_per_update, elapsed, rollout, update)
            runs.append({
                "workers": n, "envs_per_worker": trainer.sampler.envs_per_worker, "envs": trainer.cfg.train.num_envs,
                **fig,
                "speedup_vs_single": fig["agent_steps_per_s"] / single["agent_steps_per_s"],
                "restarts": sum(trainer.sampler.restarts),
                "hosts": sorted({h["host"] for h in trainer.sampler.hosts}),
            })
        cluster_cpus = float(ray.cluster_resources().get("CPU", 0.0))
        nodes = len([n for n in ray.nodes() if n.get("Alive")])
    finally:
        if started:
            ray.shutdown()
    return {
        "config": config, "mode": "strong (train.num_envs split)" if envs_per_worker is None
        else f"weak ({envs_per_worker} envs per worker)", "single": single, "distributed": runs,
        "cluster_cpus": cluster_cpus, "nodes": nodes, "cpus_per_worker": cpus_per_worker,
        "ray_version": ray.__version__,
    }
