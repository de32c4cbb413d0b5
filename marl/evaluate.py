"""Evaluation: fly a policy for N episodes in the batched simulator or in PyBullet and report the
field's metrics (success, collisions by kind, deadlock, distance to goal) with their spread.

    from marl.evaluate import evaluate
    report = evaluate("pid", backend="pybullet", scenario="static_diff_goal", drones=8, episodes=20)

POLICY is a built-in controller name (``pid``, ``pid_avoid``, ``sbc``), a shipped zoo policy
(``zoo:quickstart``, agents.zoo) or a training run directory / checkpoint file; any of them with ``+shield``
appended flies with ``pid_avoid`` taking over next to neighbours (agents.shield). This module resolves
those names and the run's environment, and writes plots and videos; the episodes themselves are
flown by the algorithm-free runner of envs.evaluation (all N side by side as N environments of one
vector env, from one seed), which deploy/ and the benchmarks use too.
"""

from __future__ import annotations

import math
import time
from typing import Any

from torch import nn

from agents.checkpoint import is_checkpoint_source
from agents.checkpoint import load_policy as load_checkpoint_policy
from agents.controllers import CONTROLLERS, make_controller
from agents.shield import SHIELD_SUFFIX, Shield
from agents.zoo import ZOO_PREFIX, zoo_names
from envs.config import SwarmConfig, make_config
from envs.evaluation import BACKENDS, REPORTED, Controller, as_controller, evaluate_swarm, run_first_episodes, summarize
from envs.plot import contact_points, plot_topdown
from marl.checkpoint import load_policy
from marl.pettingzoo_env import PettingZooEnvConfig, PettingZooVecEnv

__all__ = ["BACKENDS", "BUILTIN_POLICIES", "REPORTED", "Controller", "eval_config", "evaluate", "evaluate_pettingzoo",
           "evaluate_policy", "format_report", "resolve_policy", "run_config"]

BUILTIN_POLICIES = CONTROLLERS


def resolve_policy(
    policy: str | nn.Module, cfg: SwarmConfig | None, device: str = "cpu", deterministic: bool = True
) -> Controller:
    """A built-in controller by name (for the vehicle of ``cfg``), the trained policy of a run directory /
    checkpoint file, or a policy module (an agents.base.ActorCritic, or any module mapping obs [E, M, D]
    to actions)."""
    if isinstance(policy, nn.Module):
        return as_controller(policy, deterministic)
    if policy.endswith(SHIELD_SUFFIX):
        if cfg is None:
            raise ValueError(f"{policy!r}: a shield flies the swarm simulator only")
        inner = resolve_policy(policy.removesuffix(SHIELD_SUFFIX), cfg, device, deterministic)
        if inner.plan is not None:
            raise ValueError(f"{policy!r}: a map-aware controller cannot be shielded")
        return as_controller(Shield(inner, make_controller("pid_avoid", cfg.dynamics, device=device),
                                    reset=inner.reset))
    if policy in BUILTIN_POLICIES:
        if cfg is None:
            raise ValueError(f"controller {policy!r} flies the swarm simulator only")
        return as_controller(make_controller(policy, cfg.dynamics, device=device))
    if is_checkpoint_source(policy):
        return as_controller(load_checkpoint_policy(policy, device=device), deterministic)
    raise ValueError(
        f"policy {policy!r} is neither a built-in controller ({', '.join(BUILTIN_POLICIES)}), "
        f"a zoo policy ({', '.join(ZOO_PREFIX + n for n in zoo_names())}) nor an existing run directory or "
        f"checkpoint file (any of them may end in {SHIELD_SUFFIX!r})"
    )


def run_config(policy: str | nn.Module) -> SwarmConfig | PettingZooEnvConfig | None:
    """The environment config a run was trained with (None for built-in controllers and modules)."""
    if isinstance(policy, str):
        policy = policy.removesuffix(SHIELD_SUFFIX)
    if isinstance(policy, nn.Module) or policy in BUILTIN_POLICIES or not is_checkpoint_source(policy):
        return None
    return load_policy(policy)[1]


def eval_config(
    policy: str | nn.Module,
    scenario: str | None = None,
    drones: int | None = None,
    density: float | None = None,
    episode_seconds: float | None = None,
    base: SwarmConfig | None = None,
    **overrides: Any,
) -> SwarmConfig:
    """The environment of an evaluation: ``base``, else the run's config, else the defaults, with the
    given settings on top."""
    base = base if base is not None else run_config(policy)
    values = base.model_dump() if base is not None else {}
    if drones is not None:
        values["num_drones"] = drones
        values["num_neighbors"] = min(values.get("num_neighbors", 2), drones - 1)
    for key, value in (("scenario", scenario), ("density", density), ("episode_seconds", episode_seconds)):
        if value is not None:
            values[key] = value
    values.update(overrides)
    # A density or column size asked for is the one flown: a run trained over a range would otherwise
    # keep drawing from its range, and every cell of a benchmark would fly the same mixture.
    rnd = dict(values.get("randomization") or {})
    if density is not None:
        rnd["density_range"] = None
    if "obstacle_size" in overrides:
        rnd["size_range"] = None
    if rnd:
        values["randomization"] = rnd
    return make_config(**values)


def evaluate(
    policy: str | nn.Module = "pid",
    backend: str = "sim",
    scenario: str | None = None,
    drones: int | None = None,
    episodes: int = 20,
    seed: int = 0,
    density: float | None = None,
    episode_seconds: float | None = None,
    video: str | None = None,
    plot: str | None = None,
    device: str = "cpu",
    deterministic: bool = True,
    env_config: SwarmConfig | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Fly ``episodes`` episodes and return the mean of every metric, its std (``<name>_std``) and the settings.

    video: write an MP4/GIF of episode 0 (PyBullet's renderer); plot: a top-down PNG of episode 0.
    env_config: the environment to start from (default: the run's, or the defaults); keyword
    overrides go on top of it (e.g. ``num_neighbors=2``).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is unknown; allowed: {', '.join(BACKENDS)}")
    if episodes < 1:
        raise ValueError(f"episodes={episodes} must be >= 1")
    base = env_config if env_config is not None else run_config(policy)
    if isinstance(base, PettingZooEnvConfig):
        given = {k: v for k, v in dict(scenario=scenario, drones=drones, density=density, video=video, plot=plot,
                                      episode_seconds=episode_seconds, **overrides).items() if v is not None}
        if backend != "sim" or given:
            raise ValueError(f"{base.target} is a PettingZoo environment: backend pybullet and the settings "
                             f"{', '.join(given) or 'given'} apply only to the swarm simulator")
        return evaluate_pettingzoo(policy, base, episodes, seed, device, None if deterministic else False)
    cfg = eval_config(policy, scenario, drones, density, episode_seconds, base, **overrides)
    controller = resolve_policy(policy, cfg, device, deterministic)
    keep = video is not None or plot is not None
    flown, record = evaluate_swarm(controller, cfg, episodes, seed, backend, device, deterministic, record=keep)
    metrics = (*REPORTED, "communication_rate")
    report: dict[str, Any] = {k: v for k, v in flown.items() if k.removesuffix("_std") in metrics}
    report.update(policy=policy if isinstance(policy, str) else type(policy).__name__, backend=backend,
                  scenario=cfg.scenario, drones=cfg.num_drones, episodes=episodes, density=cfg.density,
                  episode_seconds=cfg.episode_seconds, seed=seed, wall_s=flown["wall_s"])
    # A run trained over ranges is flown over them unless a density or size was asked for: say so, or the
    # base density above reads as the one flown.
    for key in ("density_range", "size_range"):
        if getattr(cfg.randomization, key) is not None:
            report[key] = list(getattr(cfg.randomization, key))
    if plot is not None:
        report["plot"] = _plot(plot, cfg, record, report)
    if video is not None:
        from envs.render import render_episode  # PyBullet's renderer: pybullet is imported only for a video

        report["video"] = render_episode(
            video, record["pos"], record["rot"], record["goals"], record["obstacles"], record["radius"],
            room_height=cfg.room[2], arm=cfg.dynamics.arm, control_hz=1.0 / cfg.dynamics.control_dt,
        )
    return report


def evaluate_pettingzoo(
    policy: str | nn.Module, env_cfg: PettingZooEnvConfig, episodes: int = 20, seed: int = 0,
    device: str = "cpu", deterministic: bool | None = None,
) -> dict[str, Any]:
    """Run ``episodes`` episodes of a PettingZoo environment side by side (the first episode of each of
    ``episodes`` copies) and report the mean and std of every metric it reports.

    ``deterministic`` None: the mean of a Gaussian policy, but samples of a categorical one (the mode
    of a discrete policy can step back and forth between two cells for ever, as in grid worlds).
    """
    if isinstance(policy, str):
        if not is_checkpoint_source(policy):
            raise ValueError(f"policy {policy!r} is not a zoo policy nor an existing run directory or checkpoint file")
        module = load_checkpoint_policy(policy, device=device)
    else:
        module = policy
    if deterministic is None:
        deterministic = getattr(module, "num_actions", None) is None
    controller = as_controller(module, deterministic)
    t0 = time.perf_counter()
    env = PettingZooVecEnv(env_cfg, episodes, device)
    try:
        rows = run_first_episodes(env, controller, episodes, seed)
    finally:
        env.close()
    report: dict[str, Any] = summarize(rows)
    report.update(policy=policy if isinstance(policy, str) else type(policy).__name__, backend="sim",
                  env=env_cfg.target, episodes=episodes, seed=seed, deterministic=deterministic,
                  wall_s=time.perf_counter() - t0)
    return report


def evaluate_policy(policy: nn.Module, cfg: Any, episodes: int = 20, **kwargs: Any) -> dict[str, Any]:
    """Evaluate an in-memory policy on the environment of ``cfg`` (a run config with ``.env``, or a
    SwarmConfig): the trainer's end-of-run and periodic evaluations, on the policy's device unless given."""
    env_cfg = cfg.env if hasattr(cfg, "env") else cfg
    kwargs.setdefault("device", str(next(policy.parameters()).device))
    return evaluate(policy, episodes=episodes, env_config=env_cfg, **kwargs)


def _plot(path: str, cfg: SwarmConfig, record: dict[str, Any], report: dict[str, Any]) -> str:
    hits = contact_points(record["pos"], record["obstacles"], record["radius"], cfg.dynamics.arm)
    room = cfg.room
    title = (
        f"{report['policy']} on {report['backend']}, {cfg.scenario}, {cfg.num_drones} drones, episode 0 of "
        f"{report['episodes']}: success {report['success_rate']:.2f} (mean)"
    )
    return plot_topdown(
        path, record["obstacles"], record["radius"], record["pos"], record["goals"], hits,
        bounds=(-room[0] / 2, room[0] / 2, -room[1] / 2, room[1] / 2), area=cfg.obstacle_area, title=title,
    )


def format_report(report: dict[str, Any]) -> str:
    """A human-readable table of an evaluation report."""
    where = f"{report['scenario']}, {report['drones']} drones" if "scenario" in report else report.get("env", "")
    lines = [
        f"{report['policy']} on {report['backend']}: {where}, "
        f"{report['episodes']} episodes, seed {report['seed']} ({report['wall_s']:.1f} s)"
    ]
    names = (*REPORTED, "communication_rate") if "scenario" in report else [
        k for k in report if f"{k}_std" in report]
    for name in names:
        if name not in report:
            continue
        mean, std = report[name], report[f"{name}_std"]
        lines.append(f"  {name:<26} {mean:>9.3f} +- {std:.3f}" if math.isfinite(mean) else f"  {name:<26} {mean}")
    for key in ("plot", "video"):
        if key in report:
            lines.append(f"  {key}: {report[key]}")
    return "\n".join(lines)
