"""Episode runner: fly a policy for N episodes on a vector env and report the field's metrics with their spread.

    from envs.evaluation import evaluate_swarm
    report, _ = evaluate_swarm(policy, cfg, episodes=20, backend="pybullet", seed=0)

Algorithm-free, as Stable-Baselines3's common/evaluation.py: it knows vector envs (``reset(seed)``,
``step(actions)`` with ``info["episode"]`` / ``info["episode_env_ids"]``) and policies as callables
(obs [E, M, D] -> actions), not trainers or checkpoint formats. marl.evaluate, deploy.closed_loop and
the benchmarks call it. All N episodes of the swarm simulator run side by side as N environments of
one vector env, from one seed; the same seed gives the same maps, starts and goals in both backends
(batched sim, PyBullet physics), so their figures compare like for like.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from envs.config import SwarmConfig, make_config
from envs.metrics import METRIC_NAMES
from envs.swarm import QuadSwarmVecEnv

BACKENDS = ("sim", "pybullet")
REPORTED = tuple(n for n in METRIC_NAMES if n != "episode_length")


class Controller:
    """Observation [E, M, D] -> actions [E, M, A], with ``reset(env_ids)`` for stateful controllers and
    ``plan(goals, obstacles, radius, env_ids)`` for those told the map of each episode (``pid_plan``)."""

    def __init__(
        self,
        act: Callable[[torch.Tensor], torch.Tensor],
        reset: Callable[[torch.Tensor], None] | None = None,
        communication_rate: Callable[[torch.Tensor], float] | None = None,
        plan: Callable[..., None] | None = None,
    ):
        self._act, self._reset = act, reset
        # For policies that communicate (CommFormer): fraction of possible messages received.
        self.communication_rate = communication_rate
        self.plan = plan

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        """Actions for observations [E, M, D]."""
        return self._act(obs)

    def reset(self, env_ids: torch.Tensor) -> None:
        """Forget the internal state of the given environments (after their episode ended)."""
        if self._reset is not None:
            self._reset(env_ids)


def as_controller(policy: Controller | nn.Module | Callable[[torch.Tensor], torch.Tensor],
                  deterministic: bool = True) -> Controller:
    """A Controller for ``policy``: an actor-critic (its ``act``: the mode when ``deterministic``), any
    module or callable mapping obs [E, M, D] to actions (its ``reset(env_ids)`` kept when it has one),
    or a Controller as it is."""
    if isinstance(policy, Controller):
        return policy
    comm = getattr(policy, "communication_rate", None)
    act = getattr(policy, "act", None)
    if isinstance(policy, nn.Module) and act is not None:
        return Controller(lambda obs: act(obs, deterministic=deterministic)[0], communication_rate=comm)
    if act is not None:  # a controller object (agents.pid): act(obs) -> actions, reset(env_ids)
        return Controller(act, getattr(policy, "reset", None), comm, getattr(policy, "plan", None))
    return Controller(policy, communication_rate=comm)


def tell_map(plan: Callable[..., None], env: QuadSwarmVecEnv, env_ids: torch.Tensor | None = None) -> None:
    """Give a map-aware controller's ``plan`` (``pid_plan``) the goals and columns of the envs ``env_ids``
    (all when None), right after they reset."""
    state = env.get_state(torch.arange(env.num_envs) if env_ids is None else env_ids)
    plan(state.goals, state.obstacles, state.obstacle_radius, env_ids)


def summarize(metrics: dict[str, torch.Tensor], names: tuple[str, ...] | None = None) -> dict[str, float]:
    """Mean and spread (``<name>_std``, population std; 0 for one episode) of per-episode values [N]."""
    out: dict[str, float] = {}
    for name in names if names is not None else tuple(metrics):
        if name not in metrics:
            continue
        values = metrics[name].double()
        out[name] = float(values.mean())
        out[f"{name}_std"] = float(values.std(unbiased=False)) if values.numel() > 1 else 0.0
    return out


def run_episodes(env: QuadSwarmVecEnv, controller: Controller, seed: int, record: bool = False
                 ) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """One episode of every environment of the swarm simulator (all end at the same step).

    Returns the per-episode metrics [E] (``communication_rate`` added for a communicating policy) and,
    with ``record``, the flight of env 0: positions [T, M, 3], rotations [T, M, 3, 3], goals, obstacles.
    """
    obs = env.reset(seed=seed)
    if controller.plan is not None:
        tell_map(controller.plan, env)
    first = env.get_state([0])
    rec: dict[str, Any] = {
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
            if record:
                snap = env.get_state([0])
                pos.append(snap.pos[0])
                rot.append(snap.rot[0])
    if info["episode_env_ids"].numel() != env.num_envs:
        raise RuntimeError("environments of one evaluation batch ended at different steps")
    episode = dict(info["episode"])
    if comm_rates:
        episode["communication_rate"] = torch.full((env.num_envs,), sum(comm_rates) / len(comm_rates))
    if not record:
        return episode, None
    rec["pos"] = torch.stack(pos).cpu().numpy()
    rec["rot"] = torch.stack(rot).cpu().numpy()
    return episode, rec


def run_first_episodes(env: Any, controller: Controller, num_envs: int, seed: int) -> dict[str, torch.Tensor]:
    """The first episode of each of ``num_envs`` environments of any vector env whose episodes may end at
    different steps (PettingZoo tasks); returns the metrics it reports per episode [num_envs]."""
    obs = env.reset(seed=seed)
    done = torch.zeros(num_envs, dtype=torch.bool)
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
                rows.setdefault(key, torch.full((num_envs,), float("nan")))[ids[first]] = values[first].float()
            done[ids] = True
    if comm_rates:
        rows["communication_rate"] = torch.full((num_envs,), sum(comm_rates) / len(comm_rates))
    return rows


def evaluate_swarm(
    policy: Controller | nn.Module | Callable[[torch.Tensor], torch.Tensor],
    cfg: SwarmConfig,
    episodes: int = 20,
    seed: int = 0,
    backend: str = "sim",
    device: str = "cpu",
    deterministic: bool = True,
    record: bool = False,
    **overrides: Any,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Fly ``episodes`` episodes of ``cfg`` (keyword ``overrides`` on top, e.g. ``episode_seconds=5``) on
    ``backend`` and return (report, recording of env 0 or None).

    The report holds the mean and ``<name>_std`` of every metric of envs.metrics (and the communication
    rate of a communicating policy), the settings flown and the wall time.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is unknown; allowed: {', '.join(BACKENDS)}")
    if episodes < 1:
        raise ValueError(f"episodes={episodes} must be >= 1")
    if overrides:
        cfg = make_config(**{**cfg.model_dump(), **overrides})
    controller = as_controller(policy, deterministic)
    physics = None
    if backend == "pybullet":
        from envs.pybullet_backend import PyBulletPhysics  # PyBullet is imported only when it is asked for

        physics = PyBulletPhysics(cfg)
    t0 = time.perf_counter()
    try:
        env = QuadSwarmVecEnv(cfg, num_envs=episodes, device=device, physics=physics)
        episode, rec = run_episodes(env, controller, seed, record)
    finally:
        if physics is not None:
            physics.close()
    report: dict[str, Any] = summarize(episode, (*REPORTED, "communication_rate"))
    report.update(
        backend=backend, scenario=cfg.scenario, drones=cfg.num_drones, episodes=episodes, density=cfg.density,
        episode_seconds=cfg.episode_seconds, seed=seed, wall_s=time.perf_counter() - t0,
    )
    return report, rec
