"""Imitation of a teacher swarm policy: behaviour cloning (BC) and DAgger, with any optimiser by name.

    from marl.imitation import behaviour_cloning, dagger, make_student, quickstart_env
    env_cfg = quickstart_env()                                  # resolve_config("quickstart").env
    bc = behaviour_cloning(make_student("attention", env_cfg), env_cfg, optimizer="sso")
    dg = dagger(make_student("attention", env_cfg), env_cfg, iterations=3)

The teacher is a callable obs [E, M, D] -> actions [E, M, 4] (default: the built-in ``pid``); the
student's action means are regressed on its labels (``fit``: ``sso`` or any ``optim`` name). The
tpSGD distillation study lives in ``marl.bench.studies.distill``; the design: docs/design/imitation.md.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from agents import make_policy
from agents.base import ActorCritic
from agents.pid import PIDConfig, PIDController
from envs.config import SwarmConfig
from envs.observations import obs_spec
from envs.swarm import QuadSwarmVecEnv
from marl.train_config import resolve_config
from optim.registry import build, is_second_order, needs_closure, resolve
from optim.sso import SSO
from optim.tpsgd import TPSGD

__all__ = [
    "ACT_DIM",
    "BCResult",
    "DAggerIteration",
    "DAggerResult",
    "FitResult",
    "ImitationData",
    "RolloutResult",
    "behaviour_cloning",
    "check_optimizer",
    "dagger",
    "evaluate_closed_loop",
    "fit",
    "imitation_loss",
    "make_student",
    "make_teacher",
    "mlp_student",
    "mse_eta",
    "quickstart_env",
    "record_teacher",
    "rollout",
    "student_actions",
]

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


def make_teacher(name: str | Teacher = "pid", env_cfg: SwarmConfig | None = None) -> Teacher:
    """The teacher called ``name`` (only ``pid``: agents.pid with the env's vehicle constants), or ``name``
    itself when it is already a callable obs [E, M, D] -> actions [E, M, 4]."""
    if callable(name):
        return name
    if name == "pid":
        cfg = PIDConfig.from_dynamics(env_cfg.dynamics) if env_cfg is not None else PIDConfig()
        return PIDController(cfg)
    raise ValueError(f"unknown teacher {name!r}; allowed: 'pid' or a callable obs [E, M, D] -> actions [E, M, 4]")


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


def _mean_fn(student: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """obs [B, M, D] -> the student's action means [B, M, 4] (with graph)."""
    if isinstance(student, ActorCritic):
        actor = getattr(student, "actor", None)
        if actor is not None:
            return actor  # GaussianActor / CommFormerActor: the mean, without running the critic
        return lambda obs: student(obs)[0].mean
    return student


def _trainable(student: nn.Module) -> list[nn.Parameter]:
    """Parameters that move the action mean: the actor's (not the critic's nor the log-std)."""
    actor = getattr(student, "actor", student)
    return [p for n, p in actor.named_parameters() if p.requires_grad and not n.endswith("log_std")]


@torch.no_grad()
def student_actions(student: nn.Module, obs: torch.Tensor) -> torch.Tensor:
    """The student's deterministic actions [E, M, 4] (its action means), clipped to [-1, 1]."""
    was = student.training
    student.eval()
    act = student.act(obs, deterministic=True)[0] if isinstance(student, ActorCritic) else student(obs)
    student.train(was)
    return act.clamp(-1.0, 1.0)


def imitation_loss(student: nn.Module, data: ImitationData) -> float:
    """Mean squared error between the student's action means and the teacher's actions on ``data``."""
    with torch.no_grad():
        return float(F.mse_loss(_mean_fn(student)(data.obs), data.actions))


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


def _reset_teacher(teacher: Teacher, env_ids: torch.Tensor | None) -> None:
    reset = getattr(teacher, "reset", None)
    if callable(reset):
        reset(env_ids)


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
) -> RolloutResult:
    """Fly ``num_envs`` swarms for ``steps`` control steps (default one episode) and label the states.

    Each env, each step, executes the teacher's action with probability ``beta`` and the student's
    deterministic action otherwise (``beta`` must be 1 without a student). Every ``record_every``-th
    step's observations [E, M, D] are recorded with the teacher's actions on them. The teacher is
    called every step (its state follows the flown trajectory) and reset where an episode restarts.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta={beta} must lie in [0, 1]")
    if student is None and beta < 1.0:
        raise ValueError("beta < 1 needs a student to fly the other steps")
    if record_every < 1:
        raise ValueError(f"record_every={record_every} must be >= 1")
    teacher = make_teacher(teacher, env_cfg)
    env = QuadSwarmVecEnv(env_cfg, num_envs=num_envs)
    steps = env.episode_steps if steps is None else steps
    gen = torch.Generator().manual_seed(seed + 7919)  # the mixture's coin flips
    obs = env.reset(seed=seed)
    _reset_teacher(teacher, None)
    rec_obs, rec_act, episodes = [], [], []
    teacher_steps = 0
    for t in range(steps):
        label = teacher(obs)  # [E, M, 4]
        if t % record_every == 0:
            rec_obs.append(obs.clone())
            rec_act.append(label.clone())
        if beta >= 1.0:
            act, use = label, torch.ones(num_envs, dtype=torch.bool)
        else:
            use = torch.rand(num_envs, generator=gen) < beta  # [E]
            act = torch.where(use.view(-1, 1, 1), label, student_actions(student, obs))
        teacher_steps += int(use.sum())
        obs, _, _, _, info = env.step(act)
        if "episode" in info:
            ids = info["episode_env_ids"]
            _reset_teacher(teacher, ids)
            for i in range(len(ids)):
                episodes.append({k: float(v[i]) for k, v in info["episode"].items()})
    data = ImitationData(torch.cat(rec_obs), torch.cat(rec_act))
    return RolloutResult(data, episodes, teacher_steps / (steps * num_envs))


def record_teacher(
    env_cfg: SwarmConfig, teacher: str | Teacher = "pid", *, num_envs: int = 8, steps: int | None = None,
    record_every: int = 5, seed: int = 0,
) -> ImitationData:
    """Behaviour-cloning data: the teacher flies alone; its visited states with its actions."""
    return rollout(env_cfg, teacher, num_envs=num_envs, steps=steps, record_every=record_every, seed=seed).data


def evaluate_closed_loop(
    student: nn.Module, env_cfg: SwarmConfig, *, num_envs: int = 8, seed: int = 1000
) -> dict[str, float]:
    """The student alone (deterministic actions) for one episode of ``num_envs`` swarms: mean episode metrics
    (``success_rate``, ``collision_rate``, ``distance_to_goal_1s``, ...)."""
    env = QuadSwarmVecEnv(env_cfg, num_envs=num_envs)
    obs = env.reset(seed=seed)
    for _ in range(env.episode_steps):
        obs, _, _, _, info = env.step(student_actions(student, obs))
        if "episode" in info:
            return {k: float(v.float().mean()) for k, v in info["episode"].items()}
    raise RuntimeError("no episode ended")  # pragma: no cover - every env ends after episode_steps


# -- the regression ------------------------------------------------------------------------------------
def mse_eta(act_dim: int = ACT_DIM) -> float:
    """SSO's target step for ``F.mse_loss`` over ``act_dim`` outputs: the majorisation bound act_dim / 2."""
    return act_dim / 2.0


def check_optimizer(name: str) -> str:
    """The canonical name of optimiser ``name`` (``sso`` or an ``optim.build`` name); raises
    ``optim.OptimizerNameError`` (a ValueError listing the available names) for an unknown one."""
    if not isinstance(name, str):
        raise TypeError(f"optimizer must be a name (str), got {type(name).__name__}")
    return resolve(name)[0]


@dataclass
class FitResult:
    """One regression run: losses every ``eval_every`` expensive gradient evaluations."""

    optimizer: str
    grad_evals: int
    curve: list[tuple[int, float]]  # (expensive gradient evaluations, loss on the training data)
    eval_curve: list[tuple[int, float]] = field(default_factory=list)  # same, on the held-out data
    initial_loss: float = float("nan")
    final_loss: float = float("nan")
    final_eval_loss: float | None = None
    seconds: float = 0.0

    def evals_to(self, target: float) -> int | None:
        """First recorded number of expensive gradient evaluations at which the training loss is <= ``target``."""
        return next((e for e, loss in self.curve if loss <= target), None)


def fit(
    student: nn.Module,
    data: ImitationData,
    *,
    optimizer: str = "sso",
    steps: int = 200,
    batch: int = 32,
    lr: float | None = None,
    optimizer_kwargs: dict[str, Any] | None = None,
    eval_data: ImitationData | None = None,
    eval_every: int = 10,
    seed: int = 0,
) -> FitResult:
    """Regress the student's action means on the teacher's actions (mean squared error), in place.

    ``steps`` minibatches of ``batch`` rows (each row is one env step of M agents), drawn with a seeded
    generator; one expensive gradient evaluation per minibatch (dl/dz for ``sso``, dl/dtheta otherwise;
    an optimiser whose step re-evaluates the loss through a closure, such as ``lbfgs``, is charged for
    each evaluation). ``lr`` is SSO's eta (default ``mse_eta()``) or the optimiser's learning rate
    (default: the library's). ``tpsgd`` needs an ``nn.Sequential`` student of Linear layers (use
    ``marl.bench.studies.distill.distill_compare`` for the comparison with back-propagation).
    """
    name = check_optimizer(optimizer)
    if steps < 1 or batch < 1 or eval_every < 1:
        raise ValueError(f"need steps, batch, eval_every >= 1, got {steps}, {batch}, {eval_every}")
    start = time.perf_counter()
    mean = _mean_fn(student)
    params = _trainable(student)
    kwargs = dict(optimizer_kwargs or {})
    student.train()
    if name == "sso":
        opt: Any = SSO(params, mean, "mse", eta=mse_eta() if lr is None else lr, **kwargs)
    elif name == "tpsgd":
        if not isinstance(student, nn.Sequential):
            raise ValueError("optimizer 'tpsgd' trains nn.Sequential Linear/GRU stacks; use an mlp_student")
        if lr is not None:
            kwargs.setdefault("optimizer_kwargs", {})["lr"] = lr
        opt = TPSGD(student, task="regression", seed=seed, **kwargs)
    else:
        if lr is not None:
            kwargs["lr"] = lr
        opt = build(name, params, **kwargs)
    second = name not in ("sso", "tpsgd") and is_second_order(name)
    closure_step = name not in ("sso", "tpsgd") and needs_closure(name)

    gen = torch.Generator().manual_seed(seed)
    evals = 0
    result = FitResult(name, 0, [], initial_loss=imitation_loss(student, data))
    result.curve.append((0, result.initial_loss))
    if eval_data is not None:
        result.eval_curve.append((0, imitation_loss(student, eval_data)))

    for step in range(1, steps + 1):
        b = torch.randint(len(data), (min(batch, len(data)),), generator=gen)
        obs, act = data.obs[b], data.actions[b]
        if name == "sso":
            opt.step((obs, act))
            evals = opt.counters["grad_evals"]
        elif name == "tpsgd":
            opt.step(obs.reshape(-1, obs.shape[-1]), act.reshape(-1, ACT_DIM))
            evals += 1
        else:

            def closure(obs: torch.Tensor = obs, act: torch.Tensor = act) -> torch.Tensor:
                nonlocal evals
                with torch.enable_grad():
                    opt.zero_grad(set_to_none=True)
                    loss = F.mse_loss(mean(obs), act)
                    loss.backward(create_graph=second)
                evals += 1
                return loss

            if closure_step:
                opt.step(closure)
            else:
                closure()
                opt.step()
        if step % eval_every == 0 or step == steps:
            result.curve.append((evals, imitation_loss(student, data)))
            if eval_data is not None:
                result.eval_curve.append((evals, imitation_loss(student, eval_data)))
    if second:
        opt.zero_grad(set_to_none=True)  # drop the graph that create_graph kept alive
    result.grad_evals = evals
    result.final_loss = result.curve[-1][1]
    result.final_eval_loss = result.eval_curve[-1][1] if eval_data is not None else None
    result.seconds = time.perf_counter() - start
    return result


# -- behaviour cloning and DAgger ---------------------------------------------------------------------
@dataclass
class BCResult:
    """Behaviour cloning: the data, the fit and (when asked) the student's closed-loop metrics."""

    data: ImitationData
    fit: FitResult
    closed_loop: dict[str, float] = field(default_factory=dict)


def behaviour_cloning(
    student: nn.Module,
    env_cfg: SwarmConfig,
    teacher: str | Teacher = "pid",
    *,
    optimizer: str = "sso",
    num_envs: int = 8,
    rollout_steps: int | None = None,
    record_every: int = 5,
    fit_steps: int = 300,
    batch: int = 32,
    lr: float | None = None,
    optimizer_kwargs: dict[str, Any] | None = None,
    eval_envs: int = 0,
    seed: int = 0,
) -> BCResult:
    """Roll out the teacher, record (state, teacher action) pairs and fit the student on them, in place.

    With ``eval_envs`` > 0 the student then flies one episode alone in that many swarms (closed loop).
    """
    check_optimizer(optimizer)
    data = record_teacher(env_cfg, teacher, num_envs=num_envs, steps=rollout_steps, record_every=record_every,
                          seed=seed)
    res = fit(student, data, optimizer=optimizer, steps=fit_steps, batch=batch, lr=lr,
              optimizer_kwargs=optimizer_kwargs, seed=seed)
    closed = evaluate_closed_loop(student, env_cfg, num_envs=eval_envs, seed=seed + 1000) if eval_envs else {}
    return BCResult(data, res, closed)


@dataclass
class DAggerIteration:
    """One DAgger iteration (0 is behaviour cloning)."""

    iteration: int
    beta: float
    teacher_fraction: float  # executed teacher actions / all (env, step) pairs of the rollout
    new_rows: int
    dataset_rows: int
    fit_loss: float  # imitation loss on the aggregate after the refit
    closed_loop: dict[str, float] = field(default_factory=dict)


@dataclass
class DAggerResult:
    """All DAgger iterations and the final aggregate data set."""

    data: ImitationData
    iterations: list[DAggerIteration]


def dagger(
    student: nn.Module,
    env_cfg: SwarmConfig,
    teacher: str | Teacher = "pid",
    *,
    iterations: int = 3,
    beta0: float = 0.5,
    beta_decay: float = 0.5,
    optimizer: str = "sso",
    num_envs: int = 8,
    rollout_steps: int | None = None,
    record_every: int = 5,
    fit_steps: int = 300,
    batch: int = 32,
    lr: float | None = None,
    optimizer_kwargs: dict[str, Any] | None = None,
    eval_envs: int = 0,
    seed: int = 0,
) -> DAggerResult:
    """DAgger: BC, then ``iterations`` rounds of (fly the mixture, label with the teacher, aggregate, refit).

    Round i >= 1 flies beta_i = ``beta0 * beta_decay ** (i - 1)``; every round rolls out with its own seed
    (``seed + i``). With ``eval_envs`` > 0 the student flies one episode alone after each refit.
    """
    check_optimizer(optimizer)
    if iterations < 0 or not 0.0 <= beta0 <= 1.0 or not 0.0 <= beta_decay <= 1.0:
        raise ValueError(f"need iterations >= 0 and beta0, beta_decay in [0, 1], got {iterations}, {beta0}, "
                         f"{beta_decay}")
    teacher = make_teacher(teacher, env_cfg)
    # Only the loss after each refit is kept: scoring the growing aggregate along the way is skipped.
    fit_kw = {"optimizer": optimizer, "steps": fit_steps, "batch": batch, "lr": lr,
              "optimizer_kwargs": optimizer_kwargs, "eval_every": fit_steps}
    roll_kw = {"num_envs": num_envs, "steps": rollout_steps, "record_every": record_every}
    history: list[DAggerIteration] = []
    data: ImitationData | None = None
    for i in range(iterations + 1):
        beta = 1.0 if i == 0 else beta0 * beta_decay ** (i - 1)
        ro = rollout(env_cfg, teacher, student if beta < 1.0 else None, beta=beta, seed=seed + i, **roll_kw)
        data = ro.data if data is None else data.extend(ro.data)
        res = fit(student, data, seed=seed + i, **fit_kw)
        closed = evaluate_closed_loop(student, env_cfg, num_envs=eval_envs, seed=seed + 1000) if eval_envs else {}
        history.append(DAggerIteration(i, beta, ro.teacher_fraction, len(ro.data), len(data), res.final_loss, closed))
    assert data is not None
    return DAggerResult(data, history)
