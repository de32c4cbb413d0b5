"""Imitation data: (state, teacher action) pairs, the teacher and the students, and labelled rollouts.

``rollout`` flies a teacher, or a teacher/student mixture (DAgger), in the batched simulator and
labels every visited state with the teacher's action; ``evaluate_closed_loop`` flies a student alone.
Part of ``marl.imitation``; design: docs/design/imitation.md.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from agents import make_policy
from agents.base import ActorCritic
from agents.checkpoint import is_checkpoint_source, load_policy
from agents.controllers import CONTROLLERS, make_controller
from agents.pid import PIDConfig
from envs.config import SwarmConfig
from envs.evaluation import tell_map
from envs.observations import obs_spec
from envs.swarm import QuadSwarmVecEnv
from marl.train_config import resolve_config

ACT_DIM = 4
Teacher = Callable[[torch.Tensor], torch.Tensor]


# -- data ------------------------------------------------------------------------------------------
@dataclass
class ImitationData:
    """(state, teacher action) pairs, one row per recorded env step: obs [N, M, D], actions [N, M, 4]."""

    obs: torch.Tensor
    actions: torch.Tensor

    def __post_init__(self) -> None:
        if self.obs.dim() != 3 or self.actions.shape != (*self.obs.shape[:2], ACT_DIM):
            raise ValueError(
                f"need obs [N, M, D] and actions [N, M, {ACT_DIM}], got {list(self.obs.shape)} and "
                f"{list(self.actions.shape)}"
            )

    def __len__(self) -> int:
        return self.obs.shape[0]

    @property
    def num_samples(self) -> int:
        """Agent samples (rows x drones)."""
        return self.obs.shape[0] * self.obs.shape[1]

    def extend(self, other: ImitationData) -> ImitationData:
        """A new data set with ``other``'s rows appended (DAgger's aggregation)."""
        return ImitationData(torch.cat([self.obs, other.obs]), torch.cat([self.actions, other.actions]))

    def split(self, test_fraction: float, seed: int = 0) -> tuple[ImitationData, ImitationData]:
        """(train, test) by a seeded random permutation of the rows."""
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction={test_fraction} must lie in (0, 1)")
        perm = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        n_test = max(1, int(round(test_fraction * len(self))))
        te, tr = perm[:n_test], perm[n_test:]
        return ImitationData(self.obs[tr], self.actions[tr]), ImitationData(self.obs[te], self.actions[te])

    def flat(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-agent samples: (obs [N M, D], actions [N M, 4])."""
        return self.obs.reshape(-1, self.obs.shape[-1]), self.actions.reshape(-1, ACT_DIM)


# -- environment, teacher, students ------------------------------------------------------------------
def quickstart_env() -> SwarmConfig:
    """The simulator config of the ``quickstart`` experiment (4 drones, static_diff_goal, open room)."""
    return resolve_config("quickstart").env


class PolicyTeacher:
    """A trained policy as a teacher (distillation, e.g. the large preset into the deployable one): its
    deterministic actions, clipped to [-1, 1]. Stateless: ``reset`` does nothing."""

    def __init__(self, policy: nn.Module):
        self.policy = policy.eval()

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        return student_actions(self.policy, obs)

    def reset(self, env_ids: torch.Tensor | None = None) -> None:
        """Nothing to reset (the controllers' teachers zero their integrals here)."""


def make_teacher(name: str | Teacher = "pid", env_cfg: SwarmConfig | None = None,
                 device: str | torch.device = "cpu", gains: Mapping[str, float] | None = None) -> Teacher:
    """The built-in controller called ``name`` (``agents.controllers.CONTROLLERS``: pid, pid_avoid, sbc,
    pid_plan) with the env's vehicle constants and ``gains`` over the PIDConfig defaults, on ``device``; a
    trained policy (a run directory, checkpoint file or zoo:NAME) as a :class:`PolicyTeacher`; or ``name``
    itself when it is already a callable obs [E, M, D] -> actions."""
    if callable(name):
        return name
    if name in CONTROLLERS:
        return make_controller(name, env_cfg.dynamics if env_cfg is not None else PIDConfig(), device=device,
                               gains=gains)
    if gains:
        raise ValueError(f"gains are for a controller teacher ({', '.join(CONTROLLERS)}), not {name!r}")
    if is_checkpoint_source(name):
        return PolicyTeacher(load_policy(name, device=device))
    raise ValueError(f"unknown teacher {name!r}; allowed: {', '.join(CONTROLLERS)}, a trained policy (run "
                     "directory, checkpoint or zoo:NAME) or a callable obs [E, M, D] -> actions [E, M, 4]")


def make_student(name: str, env_cfg: SwarmConfig, seed: int = 0, **kwargs: Any) -> nn.Module:
    """A student for ``env_cfg``'s observations: an ``agents.make_policy`` name (``attention``, ``mlp``,
    ``deepsets``, ``commformer``; preset ``deployable`` unless given), built under ``torch.manual_seed(seed)``."""
    kwargs.setdefault("preset", "deployable")
    torch.manual_seed(seed)
    return make_policy(name, obs_spec(env_cfg.num_neighbors), env_cfg.num_drones, **kwargs)


def mlp_student(in_dim: int, hidden: Sequence[int] = (64, 64), seed: int = 0, out_dim: int = ACT_DIM) -> nn.Sequential:
    """A Linear + tanh stack in_dim -> hidden... -> out_dim (4: the student of the tpSGD comparison), seeded."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.Tanh()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, out_dim))


def action_mean_fn(student: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """obs [B, M, D] -> the student's action means [B, M, 4] (with graph)."""
    if isinstance(student, ActorCritic):
        actor = getattr(student, "actor", None)
        if actor is not None:
            return actor  # GaussianActor / CommFormerActor: the mean, without running the critic
        return lambda obs: student(obs)[0].mean
    return student


def mean_parameters(student: nn.Module) -> list[nn.Parameter]:
    """Parameters that move the action mean: the actor's (not the critic's nor the log-std)."""
    actor = getattr(student, "actor", student)
    return [p for n, p in actor.named_parameters() if p.requires_grad and not n.endswith("log_std")]


@torch.no_grad()
def student_actions(student: nn.Module, obs: torch.Tensor) -> torch.Tensor:
    """The student's deterministic actions [E, M, 4] (its action means), clipped to [-1, 1]."""
    was = student.training
    student.eval()
    act = action_mean_fn(student)(obs)  # the actor alone: the critic's pass was a quarter of the time
    student.train(was)
    return act.clamp(-1.0, 1.0)


def imitation_loss(student: nn.Module, data: ImitationData) -> float:
    """Mean squared error between the student's action means and the teacher's actions on ``data``."""
    with torch.no_grad():
        return float(F.mse_loss(action_mean_fn(student)(data.obs), data.actions))


# -- rollouts ----------------------------------------------------------------------------------------
@dataclass
class RolloutResult:
    """Recorded states with the teacher's labels, and the per-episode metrics of episodes that ended."""

    data: ImitationData
    episodes: list[dict[str, float]] = field(default_factory=list)
    teacher_fraction: float = 1.0  # fraction of (env, step) pairs that executed the teacher's action

    def metrics(self) -> dict[str, float]:
        """Mean of each metric over the ended episodes (empty when none ended)."""
        if not self.episodes:
            return {}
        return {k: statistics.fmean(e[k] for e in self.episodes) for k in self.episodes[0]}


def _reset_teacher(teacher: Teacher, env: QuadSwarmVecEnv, env_ids: torch.Tensor | None) -> None:
    """Zero a controller's integrals for the envs that restarted and tell a map-aware one (``pid_plan``)
    their new maps and goals."""
    reset = getattr(teacher, "reset", None)
    if callable(reset):
        reset(env_ids)
    plan = getattr(teacher, "plan", None)
    if callable(plan):
        tell_map(plan, env, env_ids)


def rollout(
    env_cfg: SwarmConfig,
    teacher: str | Teacher = "pid",
    student: nn.Module | None = None,
    *,
    beta: float = 1.0,
    num_envs: int = 8,
    steps: int | None = None,
    record_every: int = 5,
    seed: int = 0,
    device: str | torch.device = "cpu",
    action_noise: float = 0.0,
    record_if: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> RolloutResult:
    """Fly ``num_envs`` swarms for ``steps`` control steps (default one episode) and label the states.

    Each env, each step, executes the teacher's action with probability ``beta`` and the student's
    deterministic action otherwise (``beta`` must be 1 without a student), plus Gaussian noise of std
    ``action_noise`` (DART, Laskey et al. 2017: the flown states stray from the clean ones, the labels stay
    the teacher's clean actions, so the data shows how to recover). Every ``record_every``-th
    step's observations [E, M, D] are recorded with the teacher's actions on them; with ``record_if``
    (obs [E, M, D] -> [E] bool) only the envs where it holds (e.g. a drone near a hazard). The teacher is
    called every step (its state follows the flown trajectory) and reset where an episode restarts.
    The swarms, a built-in teacher and the recorded data live on ``device`` (the student's, too).
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta={beta} must lie in [0, 1]")
    if student is None and beta < 1.0:
        raise ValueError("beta < 1 needs a student to fly the other steps")
    if record_every < 1:
        raise ValueError(f"record_every={record_every} must be >= 1")
    if action_noise < 0:
        raise ValueError(f"action_noise={action_noise} must be >= 0")
    teacher = make_teacher(teacher, env_cfg, device)
    env = QuadSwarmVecEnv(env_cfg, num_envs=num_envs, device=device)
    steps = env.episode_steps if steps is None else steps
    gen = torch.Generator().manual_seed(seed + 7919)  # the mixture's coin flips: on the CPU, so every device
    # draws the same ones
    obs = env.reset(seed=seed)
    _reset_teacher(teacher, env, None)
    rec_obs, rec_act, episodes = [], [], []
    teacher_steps = 0
    for t in range(steps):
        label = teacher(obs)  # [E, M, 4]
        if t % record_every == 0:
            keep = slice(None) if record_if is None else record_if(obs)
            rec_obs.append(obs[keep].clone())
            rec_act.append(label[keep].clone())
        if beta >= 1.0:
            act, use = label, torch.ones(num_envs, dtype=torch.bool)
        else:
            use = torch.rand(num_envs, generator=gen) < beta  # [E]
            act = torch.where(use.to(env.device).view(-1, 1, 1), label, student_actions(student, obs))
        teacher_steps += int(use.sum())
        if action_noise > 0:
            noise = torch.randn(act.shape, generator=gen) * action_noise
            act = (act + noise.to(env.device)).clamp(-1.0, 1.0)
        obs, _, _, _, info = env.step(act)
        if "episode" in info:
            ids = info["episode_env_ids"]
            _reset_teacher(teacher, env, ids)
            for i in range(len(ids)):
                episodes.append({k: float(v[i]) for k, v in info["episode"].items()})
    data = ImitationData(torch.cat(rec_obs), torch.cat(rec_act))
    return RolloutResult(data, episodes, teacher_steps / (steps * num_envs))


def record_teacher(
    env_cfg: SwarmConfig, teacher: str | Teacher = "pid", *, num_envs: int = 8, steps: int | None = None,
    record_every: int = 5, seed: int = 0, device: str | torch.device = "cpu",
) -> ImitationData:
    """Behaviour-cloning data: the teacher flies alone; its visited states with its actions."""
    return rollout(env_cfg, teacher, num_envs=num_envs, steps=steps, record_every=record_every, seed=seed,
                   device=device).data


def evaluate_closed_loop(
    student: nn.Module, env_cfg: SwarmConfig, *, num_envs: int = 8, seed: int = 1000,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """The student alone (deterministic actions) for one episode of ``num_envs`` swarms on ``device`` (the
    student's): mean episode metrics (``success_rate``, ``collision_rate``, ``distance_to_goal_1s``, ...)."""
    env = QuadSwarmVecEnv(env_cfg, num_envs=num_envs, device=device)
    obs = env.reset(seed=seed)
    for _ in range(env.episode_steps):
        obs, _, _, _, info = env.step(student_actions(student, obs))
        if "episode" in info:
            return {k: float(v.float().mean()) for k, v in info["episode"].items()}
    raise RuntimeError("no episode ended")  # pragma: no cover - every env ends after episode_steps
