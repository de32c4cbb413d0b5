"""Imitation of a teacher swarm policy: behaviour cloning, DAgger and tpSGD distillation.

    from marl.imitation import behaviour_cloning, dagger, distill_compare, make_student, quickstart_env
    env_cfg = quickstart_env()                                  # resolve_config("quickstart").env
    student = make_student("attention", env_cfg)                 # the deployable attention policy
    bc = behaviour_cloning(student, env_cfg, optimizer="sso")    # teacher "pid" by default
    dg = dagger(make_student("attention", env_cfg), env_cfg, iterations=3)
    train, test = bc.data.split(0.3)
    cmp = distill_compare(train, test)                           # tpSGD vs back-propagation, MLP student

The teacher is any callable observations [E, M, D] -> actions [E, M, 4] in [-1, 1], optionally with a
``reset(env_ids)`` method (the built-in ``pid`` controller of ``agents.pid`` has both: it keeps the
integral of the position error per env and drone). The student is a trainable policy from
``agents.make_policy`` (its action mean is regressed; the log-std and the critic are left alone) or a
plain module mapping [..., D] -> [..., 4] (the MLP student of the tpSGD comparison).

- Behaviour cloning (BC): roll out the teacher in the simulator, record (observation, teacher action)
  pairs, regress the student's action means on them with the squared error.
- DAgger (Ross, Gordon and Bagnell 2011): iteration 0 is BC; at iteration i >= 1 the swarm flies the
  mixture policy (each environment, at each control step, executes the teacher's action with
  probability beta_i = beta0 * beta_decay ** (i - 1), the student's mean action otherwise); every
  visited state is labelled with the teacher's action, added to the data set, and the student is
  refitted on the aggregate (warm start: it keeps training from its current weights). The teacher is
  called at every step even when the student acts, so a stateful teacher (the PID's integral) follows
  the student's trajectory and labels each state with what it would do there after that history.
- The regression's optimiser is chosen by name: ``sso`` (``optim.sso.SSO``: the student's action means
  are the targets z, the loss is the mean squared error, Euclidean surrogate; one expensive gradient
  dl/dz per minibatch, which needs the teacher's labels, then cheap inner Armijo steps on the surrogate)
  or any ``optim.build`` name (``adam``, ``sgd``, ``lion``, ...), one gradient of the loss per minibatch.
  An unknown name raises ``optim.OptimizerNameError`` (a ValueError) before anything is rolled out.
- tpSGD distillation (``distill_tpsgd``, ``distill_bp``, both in ``distill_compare``): a per-agent MLP
  student (Linear + tanh stack between fixed standardising maps, ``StandardisedStudent``) is trained on
  the same (state, teacher action) pairs once by back-propagation and once by ``optim.tpsgd.TPSGD``
  (forward passes and layer-local updates against fixed random projections of the teacher's actions,
  each layer's input detached, so no autograd graph spans two layers), from the same initial weights,
  minibatches and optimiser; reported: action MSE on held-out states and the peak bytes autograd saves
  for backward in one step (``optim.memory.SavedTensorMeter``).
- ``evaluate_closed_loop`` flies the student alone for one episode (the simulator's episode metrics:
  success, collisions, distance to goal); ``marl bench optim --suite sso|tpsgd`` reports all of it.

SSO's eta: the data loss is ``F.mse_loss`` over the A = 4 action dimensions, i.e. per example
(1 / A) ||z - y||^2, whose gradient in z is (2 / A)-Lipschitz; the surrogate majorises the loss for
eta <= A / 2 = 2 (``mse_eta``), and eta = A / 2 makes the target-space step land exactly on the
teacher's action. That is the default here; the reference's 1/4 (``optim.default_eta("mse")``) would
move the targets only 1/8 of the way to the teacher's actions per step on this loss.

What is hand-written and why: the rollout / labelling / aggregation loop and the fit loop. Imitation
packages (``imitation``'s BC and DAgger, for one) drive SB3-style vector environments of numpy arrays
and train with their own loop and a torch optimiser's ``step()``; the batched torch simulator here, its
[E, M, D] swarm layout, a stateful teacher that must shadow the student's flight, and SSO's
``step(batch)`` interface (one expensive gradient per batch, inner steps on a surrogate) fit none of
that. The loops are thin: the simulator, the teacher, the policies and every update rule come from
envs/, agents/ and optim/. Every random draw is seeded: rollouts reseed the simulator, minibatches and
the DAgger mixture have their own ``torch.Generator``, students are built after ``torch.manual_seed``
(which also reseeds torch's global generator), so a call with the same arguments gives the same result
on the same machine.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from envs.config import SwarmConfig
from envs.swarm import QuadSwarmVecEnv

__all__ = [
    "ACT_DIM",
    "BCResult",
    "DAggerIteration",
    "DAggerResult",
    "DistillResult",
    "DistillRun",
    "FitResult",
    "ImitationData",
    "RolloutResult",
    "StandardisedStudent",
    "behaviour_cloning",
    "check_optimizer",
    "dagger",
    "distill_bp",
    "distill_compare",
    "distill_tpsgd",
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
    from marl.train_config import resolve_config

    return resolve_config("quickstart").env


def make_teacher(name: str | Teacher = "pid", env_cfg: SwarmConfig | None = None) -> Teacher:
    """The teacher called ``name`` (only ``pid``: agents.pid with the env's vehicle constants), or ``name``
    itself when it is already a callable obs [E, M, D] -> actions [E, M, 4]."""
    if callable(name):
        return name
    if name == "pid":
        from agents.pid import PIDConfig, PIDController

        cfg = PIDConfig.from_dynamics(env_cfg.dynamics) if env_cfg is not None else PIDConfig()
        return PIDController(cfg)
    raise ValueError(f"unknown teacher {name!r}; allowed: 'pid' or a callable obs [E, M, D] -> actions [E, M, 4]")


def make_student(name: str, env_cfg: SwarmConfig, seed: int = 0, **kwargs: Any) -> nn.Module:
    """A student for ``env_cfg``'s observations: an ``agents.make_policy`` name (``attention``, ``mlp``,
    ``deepsets``, ``commformer``; preset ``deployable`` unless given), built under ``torch.manual_seed(seed)``."""
    from agents import make_policy
    from envs.observations import obs_spec

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
    from agents.base import ActorCritic

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
    from agents.base import ActorCritic

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
    from optim.registry import resolve

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
    ``distill_compare`` for the comparison with back-propagation).
    """
    import time

    from optim.registry import build, is_second_order, needs_closure

    name = check_optimizer(optimizer)
    if steps < 1 or batch < 1 or eval_every < 1:
        raise ValueError(f"need steps, batch, eval_every >= 1, got {steps}, {batch}, {eval_every}")
    start = time.perf_counter()
    mean = _mean_fn(student)
    params = _trainable(student)
    kwargs = dict(optimizer_kwargs or {})
    student.train()
    if name == "sso":
        from optim.sso import SSO

        opt: Any = SSO(params, mean, "mse", eta=mse_eta() if lr is None else lr, **kwargs)
    elif name == "tpsgd":
        from optim.tpsgd import TPSGD

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


# -- tpSGD distillation ------------------------------------------------------------------------------
class StandardisedStudent(nn.Module):
    """A per-agent network between fixed affine maps: obs [..., D] -> (net((obs - mu_x) / sd_x)) sd_y + mu_y.

    The statistics come from the training data (features with no spread are only centred) and are
    buffers, not parameters: ``net`` alone is trained (on standardised inputs and targets).
    """

    def __init__(self, net: nn.Module, obs: torch.Tensor, actions: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        for name, x in (("x", obs), ("y", actions)):
            std = x.std(0)
            self.register_buffer(f"{name}_mean", x.mean(0))
            self.register_buffer(f"{name}_std", torch.where(std > 1e-6, std, torch.ones_like(std)))

    def norm_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """Standardised observations."""
        return (obs - self.x_mean) / self.x_std

    def norm_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Standardised actions (the regression targets of ``net``)."""
        return (actions - self.y_mean) / self.y_std

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [..., D] -> actions [..., 4] (unclipped)."""
        return self.net(self.norm_obs(obs)) * self.y_std + self.y_mean


@dataclass
class DistillRun:
    """One distillation run (back-propagation or tpSGD)."""

    method: str  # "bp" or "tpsgd"
    student: StandardisedStudent
    initial_mse: float | None  # held-out action MSE before training (None without test data)
    test_curve: list[float]  # held-out action MSE after each epoch (empty without test data)
    peak_bytes: int  # peak bytes autograd saves for backward in one step (parameters excluded) + projections
    projection_bytes: int  # tpSGD's fixed projections (0 for back-propagation)
    seconds: float

    @property
    def final_mse(self) -> float | None:
        """Held-out action MSE after the last epoch."""
        return self.test_curve[-1] if self.test_curve else self.initial_mse


def _distill(
    method: str, train: ImitationData, test: ImitationData | None, hidden: Sequence[int], epochs: int, batch: int,
    lr: float, optimizer: str, optimizer_kwargs: dict[str, Any] | None, tpsgd_kwargs: dict[str, Any] | None,
    seed: int,
) -> DistillRun:
    import time

    from optim.memory import SavedTensorMeter
    from optim.registry import build
    from optim.tpsgd import TPSGD

    check_optimizer(optimizer)
    if epochs < 0 or batch < 1:
        raise ValueError(f"need epochs >= 0 and batch >= 1, got {epochs}, {batch}")
    x, y = train.flat()
    student = StandardisedStudent(mlp_student(x.shape[1], hidden, seed), x, y)
    x, y = student.norm_obs(x), student.norm_actions(y)
    net = student.net
    opt_kw = {"lr": lr, **({"momentum": 0.9, "nesterov": True} if optimizer == "sgd" else {}),
              **(optimizer_kwargs or {})}
    proj_bytes = 0
    if method == "tpsgd":
        tp = TPSGD(net, task="regression", optimizer=optimizer, optimizer_kwargs=opt_kw, seed=seed,
                   **(tpsgd_kwargs or {}))
        proj_bytes = sum(p.numel() * p.element_size() for p in tp.projections)
    else:
        opt = build(optimizer, net.parameters(), **opt_kw)

    def test_mse() -> float | None:
        if test is None:
            return None
        xt, yt = test.flat()
        with torch.no_grad():
            return float(F.mse_loss(student(xt), yt))

    initial = test_mse()
    gen = torch.Generator().manual_seed(seed + 1)  # the same minibatch order for both methods
    curve: list[float] = []
    peak = 0
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(order), batch):
            b = order[i : i + batch]
            with SavedTensorMeter(exclude=net.parameters()) as meter:
                if method == "tpsgd":
                    tp.step(x[b], y[b])
                else:
                    opt.zero_grad(set_to_none=True)
                    F.mse_loss(net(x[b]), y[b]).backward()
            if method != "tpsgd":
                opt.step()
            peak = max(peak, meter.peak_bytes)
        if test is not None:
            curve.append(test_mse())  # type: ignore[arg-type]
    seconds = time.perf_counter() - start
    student.eval()
    return DistillRun(method, student, initial, curve, peak + proj_bytes, proj_bytes, seconds)


def distill_bp(
    train: ImitationData, test: ImitationData | None = None, *, hidden: Sequence[int] = (64, 64), epochs: int = 10,
    batch: int = 100, lr: float = 0.05, optimizer: str = "sgd", optimizer_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
) -> DistillRun:
    """Distil the teacher's actions into a standardised MLP student by back-propagation (per agent samples,
    seeded initial weights and minibatch order; ``sgd`` gets Nesterov momentum 0.9)."""
    return _distill("bp", train, test, hidden, epochs, batch, lr, optimizer, optimizer_kwargs, None, seed)


def distill_tpsgd(
    train: ImitationData, test: ImitationData | None = None, *, hidden: Sequence[int] = (64, 64), epochs: int = 10,
    batch: int = 100, lr: float = 0.05, optimizer: str = "sgd", optimizer_kwargs: dict[str, Any] | None = None,
    tpsgd_kwargs: dict[str, Any] | None = None, seed: int = 0,
) -> DistillRun:
    """The same as ``distill_bp`` (same initial weights and minibatches for the same seed), trained by
    ``optim.tpsgd.TPSGD`` (regression task): each layer against a fixed random projection of the teacher's
    standardised actions, on a detached input; ``tpsgd_kwargs`` go to TPSGD (``hidden_loss``,
    ``projection_scale``)."""
    return _distill("tpsgd", train, test, hidden, epochs, batch, lr, optimizer, optimizer_kwargs, tpsgd_kwargs,
                    seed)


@dataclass
class DistillResult:
    """Back-propagation vs tpSGD on the same data, initial weights, minibatches and optimiser."""

    initial_mse: float  # held-out action MSE of the (shared) initial student
    bp: DistillRun
    tpsgd: DistillRun

    @property
    def bp_mse(self) -> float:
        """Held-out action MSE of the back-propagation student."""
        return float(self.bp.final_mse)  # type: ignore[arg-type]

    @property
    def tpsgd_mse(self) -> float:
        """Held-out action MSE of the tpSGD student."""
        return float(self.tpsgd.final_mse)  # type: ignore[arg-type]


def distill_compare(
    train: ImitationData, test: ImitationData, *, hidden: Sequence[int] = (64, 64), epochs: int = 10,
    batch: int = 100, lr: float = 0.05, optimizer: str = "sgd", optimizer_kwargs: dict[str, Any] | None = None,
    tpsgd_kwargs: dict[str, Any] | None = None, seed: int = 0,
) -> DistillResult:
    """``distill_bp`` and ``distill_tpsgd`` with the same settings: held-out action MSE (action units) and
    peak saved-tensor bytes of one step (tpSGD's include its projections)."""
    kw = {"hidden": hidden, "epochs": epochs, "batch": batch, "lr": lr, "optimizer": optimizer,
          "optimizer_kwargs": optimizer_kwargs, "seed": seed}
    bp = distill_bp(train, test, **kw)
    tp = distill_tpsgd(train, test, tpsgd_kwargs=tpsgd_kwargs, **kw)
    return DistillResult(float(bp.initial_mse), bp, tp)  # type: ignore[arg-type]
