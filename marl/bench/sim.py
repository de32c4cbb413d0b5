"""Simulator throughput: agent-steps per second of the batched core and of the per-env PettingZoo path.

``bench_sim`` times ``QuadSwarmVecEnv.step`` with random actions in [-1, 1] (pre-generated outside
the timed loop, after a few warm-up steps). Every step computes the full observation, reward and
metric update of every agent, as in training. The process is pinned to ``threads`` cores
(``marl.devices.pinned``) and torch to as many threads, so the figure is per that many cores.

``backend="pettingzoo"`` steps ``envs`` separate ``envs.quad_swarm_v0.parallel_env`` instances one
after another in a Python loop with dict actions, which is how PettingZoo users drive an
environment; comparing the two shows what batching buys. ``bench_sweep`` runs both over drone counts
(1, 8, 32, 128) with roughly constant agents per step.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from envs import quad_swarm_v0
from envs.config import SwarmConfig, make_config
from envs.swarm import ACTION_DIM, QuadSwarmVecEnv
from marl.devices import cpu_name, parse_device, pinned

BACKENDS = ("sim", "pettingzoo", "pybullet")
SWEEP_DRONES = (1, 8, 32, 128)
SWEEP_AGENTS = 8192  # envs * drones per step in the sweep's "sim" runs
MIN_LEVEL_GAP = 0.25  # m, the closest spawn heights are allowed to be when more drones need more levels
_POOL_FLOATS = 1 << 25  # cap on pre-generated action values (128 MB of float32)


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be an integer >= 1")
    return value


def bench_env_config(drones: int, density: float, scenario: str = "o_random") -> SwarmConfig:
    """The benchmark's env config: K = min(2, drones - 1) neighbours, reference values otherwise.

    Obstacle maps start every drone in the 8 cells of the start row at 5 spawn heights (40 drones);
    for more drones the spawn heights are spread over more levels of the same room (at least
    MIN_LEVEL_GAP apart), so the map and the obstacle field stay those of the reference task.
    """
    _positive("drones", drones)
    k = min(2, drones - 1)
    kwargs: dict[str, Any] = dict(num_drones=drones, num_neighbors=k, density=density, scenario=scenario)
    probe = make_config(**{**kwargs, "num_drones": 1, "num_neighbors": 0})  # validates density, scenario
    cells = probe.grid[0] if probe.uses_obstacles else probe.grid[0] * probe.grid[1]
    if drones > cells * len(probe.spawn_heights):
        levels = math.ceil(drones / cells)
        lo, hi = min(probe.spawn_heights), probe.room[2] - 1.0
        gap = (hi - lo) / (levels - 1)
        if gap < MIN_LEVEL_GAP:
            most = cells * (int((hi - lo) / MIN_LEVEL_GAP) + 1)
            raise ValueError(f"drones={drones} exceeds the {most} start slots of the bench map (allowed: 1..{most})")
        kwargs["spawn_heights"] = tuple(round(lo + i * gap, 4) for i in range(levels))
    return make_config(**kwargs)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_vec(
    cfg: SwarmConfig, envs: int, steps: int, device: torch.device, warmup: int, seed: int, physics=None
) -> float:
    env = QuadSwarmVecEnv(cfg, num_envs=envs, device=device, physics=physics)
    env.reset(seed=seed)
    gen = torch.Generator().manual_seed(seed)
    shape = (envs, cfg.num_drones, ACTION_DIM)
    pool = max(1, min(steps + warmup, 64, _POOL_FLOATS // math.prod(shape)))
    actions = [(torch.rand(shape, generator=gen) * 2 - 1).to(device) for _ in range(pool)]
    with torch.no_grad():
        for i in range(warmup):
            env.step(actions[i % pool])
        _sync(device)
        t0 = time.perf_counter()
        for i in range(steps):
            env.step(actions[(warmup + i) % pool])
        _sync(device)
        return time.perf_counter() - t0


def _parallel_env_kwargs(cfg: SwarmConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        num_drones=cfg.num_drones, num_neighbors=cfg.num_neighbors, density=cfg.density, scenario=cfg.scenario
    )
    if cfg.spawn_heights != SwarmConfig.model_fields["spawn_heights"].default:
        kwargs["spawn_heights"] = cfg.spawn_heights
    return kwargs


def _time_pettingzoo(cfg: SwarmConfig, envs: int, steps: int, warmup: int, seed: int) -> float:
    kwargs = _parallel_env_kwargs(cfg)
    pz = [quad_swarm_v0.parallel_env(**kwargs) for _ in range(envs)]
    for i, e in enumerate(pz):
        e.reset(seed=seed + i)
    agents = list(pz[0].possible_agents)
    rng = np.random.default_rng(seed)
    pool = max(1, min(steps + warmup, 16))
    actions = [
        [{a: rng.uniform(-1.0, 1.0, ACTION_DIM).astype(np.float32) for a in agents} for _ in range(envs)]
        for _ in range(pool)
    ]

    def one_step(t: int) -> None:
        acts = actions[t % pool]
        for i, e in enumerate(pz):
            if not e.agents:  # episode over: PettingZoo envs do not reset themselves
                e.reset()
            e.step(acts[i])

    with torch.no_grad():
        for t in range(warmup):
            one_step(t)
        t0 = time.perf_counter()
        for t in range(steps):
            one_step(warmup + t)
        return time.perf_counter() - t0


def bench_sim(
    drones: int,
    envs: int,
    steps: int,
    density: float,
    scenario: str = "o_random",
    backend: str = "sim",
    threads: int = 1,
    device: str = "cpu",
    warmup: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure agent-steps/s of one backend; returns a JSON-ready dict of the figures and settings."""
    for name, value in (("drones", drones), ("envs", envs), ("steps", steps), ("threads", threads)):
        _positive(name, value)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup={warmup!r} must be an integer >= 0")
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is unknown; allowed: {', '.join(BACKENDS)}")
    dev = parse_device(device)
    if backend != "sim" and dev.type != "cpu":
        raise ValueError(f"device={device!r}: the {backend} backend runs on cpu only")
    cfg = bench_env_config(drones, density, scenario)

    with pinned(threads) as cores:
        if backend == "sim":
            seconds = _time_vec(cfg, envs, steps, dev, warmup, seed)
        elif backend == "pybullet":
            from envs.pybullet_backend import PyBulletPhysics  # optional dependency: PyBullet only when asked for

            physics = PyBulletPhysics(cfg)
            try:
                seconds = _time_vec(cfg, envs, steps, dev, warmup, seed, physics)
            finally:
                physics.close()
        else:
            seconds = _time_pettingzoo(cfg, envs, steps, warmup, seed)

    seconds = max(seconds, 1e-9)
    return {
        "backend": backend,
        "scenario": scenario,
        "drones": drones,
        "envs": envs,
        "steps": steps,
        "density": density,
        "num_neighbors": cfg.num_neighbors,
        "spawn_levels": len(cfg.spawn_heights),
        "threads": threads,
        "cores": cores,
        "device": str(dev),
        "warmup": warmup,
        "seconds": seconds,
        "agent_steps_per_s": drones * envs * steps / seconds,
        "env_steps_per_s": envs * steps / seconds,
        "agent_steps_per_s_per_thread": drones * envs * steps / seconds / threads,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "cpu": cpu_name(),
    }


def bench_sweep(
    steps: int = 100,
    density: float = 0.2,
    scenario: str = "o_random",
    threads: int = 1,
    device: str = "cpu",
    drones: Sequence[int] = SWEEP_DRONES,
    agents: int = SWEEP_AGENTS,
    backends: Sequence[str] = BACKENDS,
    pz_envs: int = 8,
    pz_steps: int | None = None,
) -> list[dict[str, Any]]:
    """Both backends over drone counts. "sim" runs max(1, agents // drones) envs for ``steps`` steps;
    "pettingzoo" runs min(that, pz_envs) instances for ``pz_steps`` (default steps // 5, at least 10)
    steps, since its cost per agent-step does not depend on how many instances it loops over."""
    _positive("steps", steps)
    _positive("pz_envs", pz_envs)
    _positive("agents", agents)
    pz_steps = pz_steps if pz_steps is not None else max(10, steps // 5)
    results = []
    for m in drones:
        envs = max(1, agents // m)
        for backend in backends:
            if backend == "sim":
                results.append(bench_sim(m, envs, steps, density, scenario, "sim", threads, device))
            else:
                results.append(bench_sim(m, min(envs, pz_envs), pz_steps, density, scenario, backend, threads, "cpu"))
    return results


def sweep_ratios(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per drone count: agent-steps/s of each backend and the ratios sim / pettingzoo and sim / pybullet."""
    rows: dict[int, dict[str, Any]] = {}
    for r in results:
        row = rows.setdefault(r["drones"], {"drones": r["drones"], **{b: None for b in BACKENDS}})
        row[r["backend"]] = r["agent_steps_per_s"]
    for row in rows.values():
        row["ratio"] = row["sim"] / row["pettingzoo"] if row["sim"] and row["pettingzoo"] else None
        row["ratio_pybullet"] = row["sim"] / row["pybullet"] if row["sim"] and row["pybullet"] else None
    return [rows[k] for k in sorted(rows)]
