"""End-to-end training throughput: agent-steps/s of whole updates (simulation, inference and PPO)."""

from __future__ import annotations

import platform
import tempfile
import time
from typing import Any

import torch

from marl.bench import _cpu_name, pinned
from marl.train_config import resolve_config
from marl.trainer import Trainer


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
    with tempfile.TemporaryDirectory() as tmp, pinned(tc.threads) as cores:
        trainer = Trainer(cfg, tmp)
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
        elapsed = time.perf_counter() - t0
        params = sum(p.numel() for p in trainer.policy.parameters())
    steps = n * trainer.steps_per_update
    return {
        "config": config, "policy": getattr(cfg.agent, "name", None), "preset": getattr(cfg.agent, "preset", None),
        "parameters": params, "drones": cfg.env.num_drones, "envs": tc.num_envs, "rollout_steps": tc.rollout_steps,
        "epochs": tc.epochs, "minibatches": tc.minibatches, "updates": n, "agent_steps": steps, "seconds": elapsed,
        "agent_steps_per_s": steps / elapsed,
        "rollout_agent_steps_per_s": steps / max(rollout, 1e-9), "rollout_share": rollout / elapsed,
        "update_share": update / elapsed, "threads": tc.threads, "cores": cores,
        "torch_version": torch.__version__, "python_version": platform.python_version(), "cpu": _cpu_name(),
    }
