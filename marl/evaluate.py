"""Evaluation: fly a policy for N episodes in the batched simulator or in PyBullet and report the
field's metrics (success, collisions by kind, deadlock, distance to goal) with their spread.

    from marl.evaluate import evaluate
    report = evaluate("pid", backend="pybullet", scenario="static_diff_goal", drones=8, episodes=20)

All N episodes run side by side as N environments of one vector env, from one seed; the same seed
gives the same maps, starts and goals in both backends, so their figures compare like for like.
POLICY is a built-in controller name (``pid``, ``pid_avoid``) or a training run directory / checkpoint file.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agents.controllers import CONTROLLERS, make_controller
from envs.config import SwarmConfig, make_config
from envs.metrics import METRIC_NAMES
from envs.swarm import QuadSwarmVecEnv
from marl.pettingzoo_env import PettingZooEnvConfig

BACKENDS = ("sim", "pybullet")
BUILTIN_POLICIES = CONTROLLERS
REPORTED = tuple(n for n in METRIC_NAMES if n != "episode_length")


class Controller:
    """Observation [E, M, D] -> actions [E, M, 4], with ``reset(env_ids)`` for stateful controllers."""

    def __init__(
        self,
        act: Callable[[torch.Tensor], torch.Tensor],
        reset: Callable[[torch.Tensor], None] | None = None,
        communication_rate: Callable[[torch.Tensor], float] | None = None,
    ):
        self._act, self._reset = act, reset
        # For policies that communicate (CommFormer): fraction of possible messages received.
        self.communication_rate = communication_rate

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        return self._act(obs)

    def reset(self, env_ids: torch.Tensor) -> None:
        """Forget the internal state of the given environments (after their episode ended)."""
        if self._reset is not None:
            self._reset(env_ids)


def resolve_policy(
    policy: str | nn.Module, cfg: SwarmConfig, device: str = "cpu", deterministic: bool = True
) -> Controller:
    """A built-in controller by name, the trained policy of a run directory / checkpoint file, or a
    policy module (an agents.base.ActorCritic, or any module mapping obs [E, M, D] to actions)."""
    if isinstance(policy, nn.Module):
        comm = getattr(policy, "communication_rate", None)
        if hasattr(policy, "act"):
            return Controller(lambda obs: policy.act(obs, deterministic=deterministic)[0], communication_rate=comm)
        return Controller(policy, communication_rate=comm)
    if policy in BUILTIN_POLICIES:
        controller = make_controller(policy, cfg.dynamics, device=device)
        return Controller(controller, controller.reset)
    path = Path(policy)
    if path.exists():
        from marl.checkpoint import load_policy  # the trainer's checkpoint format

        return resolve_policy(load_policy(path, device=device)[0].eval(), cfg, device, deterministic)
    raise ValueError(
        f"policy {policy!r} is neither a built-in controller ({', '.join(BUILTIN_POLICIES)}) "
        "nor an existing run directory or checkpoint file"
    )


def run_config(policy: str | nn.Module) -> SwarmConfig | None:
    """The environment config a run was trained with (None for built-in controllers and modules)."""
    if isinstance(policy, nn.Module):
        return None
    path = Path(policy)
    if policy in BUILTIN_POLICIES or not path.exists():
        return None
    from marl.checkpoint import load_policy

    return load_policy(path)[1]


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
    cfg = eval_config(policy, scenario, drones, density, episode_seconds, env_config, **overrides)
    controller = resolve_policy(policy, cfg, device, deterministic)
    physics = None
    if backend == "pybullet":
        from envs.pybullet_backend import PyBulletPhysics

        physics = PyBulletPhysics(cfg)
    t0 = time.perf_counter()
    try:
        env = QuadSwarmVecEnv(cfg, num_envs=episodes, device=device, physics=physics)
        episode, record = _run_episode(env, controller, seed, keep=video is not None or plot is not None)
    finally:
        if physics is not None:
            physics.close()
    report: dict[str, Any] = {}
    for name in (*REPORTED, "communication_rate"):
        if name not in episode:
            continue
        values = episode[name].double()
        report[name] = float(values.mean())
        report[f"{name}_std"] = float(values.std(unbiased=False)) if episodes > 1 else 0.0
    report.update(
        policy=policy if isinstance(policy, str) else type(policy).__name__, backend=backend,
        scenario=cfg.scenario, drones=cfg.num_drones, episodes=episodes,
        density=cfg.density, episode_seconds=cfg.episode_seconds, seed=seed, wall_s=time.perf_counter() - t0,
    )
    if plot is not None:
        report["plot"] = _plot(plot, cfg, record, report)
    if video is not None:
        from envs.render import render_episode

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
    from marl.trainer import make_vec_env

    if isinstance(policy, str):
        path = Path(policy)
        if not path.exists():
            raise ValueError(f"policy {policy!r} is not an existing run directory or checkpoint file")
        from marl.checkpoint import load_policy

        module = load_policy(path, device=device)[0]
    else:
        module = policy
    if deterministic is None:
        deterministic = getattr(module, "num_actions", None) is None
    controller = resolve_policy(module, None, device, deterministic)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    env = make_vec_env(env_cfg, episodes, device)
    obs = env.reset(seed=seed)
    done = torch.zeros(episodes, dtype=torch.bool)
    rows: dict[str, torch.Tensor] = {}
    comm_rates = []
    with torch.no_grad():
        while not bool(done.all()):
            if controller.communication_rate is not None:
                comm_rates.append(controller.communication_rate(obs))
            obs, _, _, _, info = env.step(controller(obs))
            if "episode_env_ids" not in info:
                continue
            ids = info["episode_env_ids"].cpu()
            first = ~done[ids]
            for key, values in info["episode"].items():
                rows.setdefault(key, torch.full((episodes,), float("nan")))[ids[first]] = values[first].float()
            done[ids] = True
    env.close()
    if comm_rates:
        rows["communication_rate"] = torch.full((episodes,), sum(comm_rates) / len(comm_rates))
    report: dict[str, Any] = {}
    for name, values in rows.items():
        values = values.double()
        report[name] = float(values.mean())
        report[f"{name}_std"] = float(values.std(unbiased=False)) if episodes > 1 else 0.0
    report.update(policy=policy if isinstance(policy, str) else type(policy).__name__, backend="sim",
                  env=env_cfg.target, episodes=episodes, seed=seed, deterministic=deterministic,
                  wall_s=time.perf_counter() - t0)
    return report


def evaluate_policy(policy: nn.Module, cfg: Any, episodes: int = 20, **kwargs: Any) -> dict[str, Any]:
    """Evaluate an in-memory policy on the environment of ``cfg`` (a run config with ``.env``, or a
    SwarmConfig): the trainer's end-of-run and periodic evaluations, and deploy's closed-loop check."""
    env_cfg = cfg.env if hasattr(cfg, "env") else cfg
    return evaluate(policy, episodes=episodes, env_config=env_cfg, **kwargs)


def _run_episode(env: QuadSwarmVecEnv, controller: Controller, seed: int, keep: bool):
    """One episode of every env; returns its metrics and, if ``keep``, the recording of env 0."""
    obs = env.reset(seed=seed)
    first = env.get_state([0])
    record: dict[str, Any] = {
        "goals": first.goals[0].cpu().numpy(),
        "obstacles": first.obstacles[0].cpu().numpy(),
        "radius": float(first.obstacle_radius[0]),
    }
    pos, rot = [first.pos[0].clone()], [first.rot[0].clone()]
    comm_rates = []
    with torch.no_grad():
        while True:
            if controller.communication_rate is not None:
                comm_rates.append(controller.communication_rate(obs))
            obs, _, _, _, info = env.step(controller(obs))
            if "episode" in info:
                break
            if keep:
                snap = env.get_state([0])
                pos.append(snap.pos[0])
                rot.append(snap.rot[0])
    if keep:
        record["pos"] = torch.stack(pos).cpu().numpy()
        record["rot"] = torch.stack(rot).cpu().numpy()
    if info["episode_env_ids"].numel() != env.num_envs:
        raise RuntimeError("environments of one evaluation batch ended at different steps")
    episode = dict(info["episode"])
    if comm_rates:
        episode["communication_rate"] = torch.full((env.num_envs,), sum(comm_rates) / len(comm_rates))
    return episode, record


def _plot(path: str, cfg: SwarmConfig, record: dict[str, Any], report: dict[str, Any]) -> str:
    from envs.plot import contact_points, plot_topdown

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


def register(sub) -> None:
    """Add ``marl eval`` to the command line."""
    ev = sub.add_parser(
        "eval", help="evaluate a policy (built-in controller or trained run) and print the field's metrics",
        description="Fly POLICY for N episodes side by side and print success, collisions, deadlock and distance.",
    )
    ev.add_argument("policy", help=f"built-in controller ({', '.join(BUILTIN_POLICIES)}) or a run dir / checkpoint")
    ev.add_argument("--backend", default="sim", help=f"physics engine: {', '.join(BACKENDS)} (default sim)")
    ev.add_argument("--scenario", default=None, help="scenario name (default: the run's, or o_random)")
    ev.add_argument("--drones", type=int, default=None, help="drones per episode (default: the run's, or 8)")
    ev.add_argument("--episodes", type=int, default=20, help="episodes (default 20)")
    ev.add_argument("--density", type=float, default=None, help="obstacle density in [0, 1)")
    ev.add_argument("--episode-seconds", type=float, default=None, help="episode length in seconds")
    ev.add_argument("--seed", type=int, default=0, help="seed of the maps, starts and noise (default 0)")
    ev.add_argument("--video", default=None, help="write an .mp4 or .gif of episode 0")
    ev.add_argument("--plot", default=None, help="write a top-down .png of episode 0")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.set_defaults(func=_cmd_eval)


def _cmd_eval(args) -> int:
    report = evaluate(
        args.policy, backend=args.backend, scenario=args.scenario, drones=args.drones, episodes=args.episodes,
        seed=args.seed, density=args.density, episode_seconds=args.episode_seconds, video=args.video, plot=args.plot,
    )
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0

