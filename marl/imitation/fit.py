"""The regression of imitation (``fit``: any optimiser by name, SSO included), behaviour cloning and DAgger.

Part of ``marl.imitation``; design (SSO's eta, what is hand-written and why): docs/design/imitation.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from agents.close_range import closing_speeds as neighbour_closing_speeds
from agents.close_range import column_closing_speed
from agents.layers import split_obs
from envs.config import SwarmConfig
from marl.imitation.data import (
    ACT_DIM,
    ImitationData,
    Teacher,
    action_mean_fn,
    evaluate_closed_loop,
    imitation_loss,
    make_teacher,
    mean_parameters,
    record_teacher,
    rollout,
)
from optim.registry import build, is_second_order, needs_closure, resolve
from optim.schedules import linear_decay
from optim.sso import SSO
from optim.tpsgd import TPSGD


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
    sample_weight: Callable[[torch.Tensor], torch.Tensor] | None = None,
    lr_decay: bool = False,
    score: bool = True,
) -> FitResult:
    """Regress the student's action means on the teacher's actions (mean squared error), in place.

    ``steps`` minibatches of ``batch`` rows (each row is one env step of M agents), drawn with a seeded
    generator; one expensive gradient evaluation per minibatch (dl/dz for ``sso``, dl/dtheta otherwise;
    an optimiser whose step re-evaluates the loss through a closure, such as ``lbfgs``, is charged for
    each evaluation). ``lr`` is SSO's eta (default ``mse_eta()``) or the optimiser's learning rate
    (default: the library's). ``tpsgd`` needs an ``nn.Sequential`` student of Linear layers (use
    ``marl.bench.studies.distill.distill_compare`` for the comparison with back-propagation).
    ``sample_weight``: obs [B, M, D] -> weights [B, M] of each agent sample in the squared error (a
    weighted mean; gradient optimisers only). ``lr_decay``: the learning rate falls linearly to 0 over the
    ``steps`` (gradient optimisers only), so the last steps are small and the fit does not end wherever its
    last few minibatches pushed it. ``score=False`` skips the losses on the whole ``data`` (and ``eval_data``)
    at the start and every ``eval_every`` steps: the curve stays empty and the losses NaN, and a fit on a large
    data set costs its minibatches alone (the trained weights are the same either way).
    """
    name = check_optimizer(optimizer)
    if (sample_weight is not None or lr_decay) and name in ("sso", "tpsgd"):
        raise ValueError(f"sample weights and lr_decay need a gradient optimiser, not {name!r}")
    if steps < 1 or batch < 1 or eval_every < 1:
        raise ValueError(f"need steps, batch, eval_every >= 1, got {steps}, {batch}, {eval_every}")
    start = time.perf_counter()
    mean = action_mean_fn(student)
    params = mean_parameters(student)
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
    schedule = linear_decay(opt, steps) if lr_decay else None
    second = name not in ("sso", "tpsgd") and is_second_order(name)
    closure_step = name not in ("sso", "tpsgd") and needs_closure(name)

    gen = torch.Generator().manual_seed(seed)
    evals = 0
    result = FitResult(name, 0, [])
    if score:
        result.initial_loss = imitation_loss(student, data)
        result.curve.append((0, result.initial_loss))
        if eval_data is not None:
            result.eval_curve.append((0, imitation_loss(student, eval_data)))

    for step in range(1, steps + 1):
        b = torch.randint(len(data), (min(batch, len(data)),), generator=gen).to(data.obs.device)
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
                    if sample_weight is None:
                        loss = F.mse_loss(mean(obs), act)
                    else:
                        w = sample_weight(obs)
                        loss = ((mean(obs) - act).square().mean(-1) * w).sum() / w.sum()
                    loss.backward(create_graph=second)
                evals += 1
                return loss

            if closure_step:
                opt.step(closure)
            else:
                closure()
                opt.step()
            if schedule is not None:
                schedule.step()
        if score and (step % eval_every == 0 or step == steps):
            result.curve.append((evals, imitation_loss(student, data)))
            if eval_data is not None:
                result.eval_curve.append((evals, imitation_loss(student, eval_data)))
    if second:
        opt.zero_grad(set_to_none=True)  # drop the graph that create_graph kept alive
    result.grad_evals = evals
    if score:
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
    device = next(student.parameters()).device
    data = record_teacher(env_cfg, teacher, num_envs=num_envs, steps=rollout_steps, record_every=record_every,
                          seed=seed, device=device)
    res = fit(student, data, optimizer=optimizer, steps=fit_steps, batch=batch, lr=lr,
              optimizer_kwargs=optimizer_kwargs, seed=seed)
    closed = (evaluate_closed_loop(student, env_cfg, num_envs=eval_envs, seed=seed + 1000, device=device)
              if eval_envs else {})
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
    device: str | torch.device | None = None,
    hazard_weight: float = 0.0,
    action_noise: float = 0.0,
    focus_envs: int = 0,
    focus_threshold: float = 0.5,
    lr_decay: bool = False,
) -> DAggerResult:
    """DAgger: BC, then ``iterations`` rounds of (fly the mixture, label with the teacher, aggregate, refit).

    Round i >= 1 flies beta_i = ``beta0 * beta_decay ** (i - 1)``; every round rolls out with its own seed
    (``seed + i``). With ``eval_envs`` > 0 the student flies one episode alone after each refit.
    Swarms, teacher and data live on ``device`` (default: the student's). ``hazard_weight`` > 0 weights each
    agent sample by 1 + hazard_weight x the teacher's ``hazard_proximity`` (near columns and drones, where
    the teacher's action changes fastest and a mistake is a collision). ``action_noise`` > 0 adds Gaussian
    noise of that std to every executed action of every round (DART; ``rollout``). ``focus_envs`` > 0 flies
    that many more swarms with the student alone in every round after the first and keeps only their
    states where a drone's proximity to a neighbour (the teacher's ``neighbour_proximity``) reaches
    ``focus_threshold``, every step: the student's own near-misses, rare in the other rounds' data,
    labelled with the teacher's recovery. ``lr_decay``: each refit's learning rate falls linearly to 0 (``fit``).
    """
    check_optimizer(optimizer)
    if iterations < 0 or not 0.0 <= beta0 <= 1.0 or not 0.0 <= beta_decay <= 1.0:
        raise ValueError(f"need iterations >= 0 and beta0, beta_decay in [0, 1], got {iterations}, {beta0}, "
                         f"{beta_decay}")
    if device is None:
        device = next(student.parameters()).device
    student.to(device)
    teacher = make_teacher(teacher, env_cfg, device)
    # Only the loss after each refit is kept: scoring the growing aggregate along the way is skipped.
    weight = None
    proximity = getattr(teacher, "hazard_proximity", None)
    neighbour_proximity = getattr(teacher, "neighbour_proximity", None)
    if proximity is None and (hazard_weight > 0 or focus_envs > 0):
        raise ValueError("hazard_weight > 0 and focus_envs > 0 need a built-in controller teacher (pid, pid_avoid, "
                         "sbc)")
    if hazard_weight > 0:
        weight = lambda obs: 1.0 + hazard_weight * proximity(obs)  # noqa: E731
    near_miss = lambda obs: neighbour_proximity(obs).amax(-1) >= focus_threshold  # noqa: E731
    fit_kw = {"optimizer": optimizer, "steps": fit_steps, "batch": batch, "lr": lr,
              "optimizer_kwargs": optimizer_kwargs, "sample_weight": weight, "lr_decay": lr_decay,
              "score": False}  # the aggregate's loss is taken once, after the refit
    roll_kw = {"num_envs": num_envs, "steps": rollout_steps, "record_every": record_every, "device": device,
               "action_noise": action_noise}
    history: list[DAggerIteration] = []
    data: ImitationData | None = None
    for i in range(iterations + 1):
        beta = 1.0 if i == 0 else beta0 * beta_decay ** (i - 1)
        ro = rollout(env_cfg, teacher, student if beta < 1.0 else None, beta=beta, seed=seed + i, **roll_kw)
        data = ro.data if data is None else data.extend(ro.data)
        new_rows = len(ro.data)
        if focus_envs > 0 and i > 0:
            focus = rollout(env_cfg, teacher, student, beta=0.0, seed=seed + 100 + i, record_if=near_miss,
                            **{**roll_kw, "num_envs": focus_envs, "record_every": 1})
            data, new_rows = data.extend(focus.data), new_rows + len(focus.data)
        fit(student, data, seed=seed + i, **fit_kw)
        closed = (evaluate_closed_loop(student, env_cfg, num_envs=eval_envs, seed=seed + 1000, device=device)
                  if eval_envs else {})
        history.append(DAggerIteration(i, beta, ro.teacher_fraction, new_rows, len(data),
                                       imitation_loss(student, data), closed))
    assert data is not None
    return DAggerResult(data, history)


def fit_close_range(
    policy: nn.Module,
    env_cfg: SwarmConfig,
    teacher: str | Teacher = "pid_avoid",
    *,
    swarms: int = 768,
    rounds: int = 1,
    fit_steps: int = 6000,
    batch: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    closing_weight: float = 0.0,
    lr_decay: bool = False,
    workers: int = 1,
) -> dict[str, Any]:
    """Fit the gated networks (near, and column with ``column_range``) of ``policy``'s
    ``agents.close_range.CloseRangeActor`` in place, in ``rounds`` DAgger rounds of their own: ``swarms``
    swarms flown by the policy (one episode, seed ``seed + 500 + round``), every step where a gate holds for
    some drone recorded and labelled by ``teacher`` and added to the data, then for each network Adam on the
    squared error of the drones its gate picks, each weighted by 1 + ``closing_weight`` x the speed (m/s) at
    which it closes in on its gate's hazard (``closing_speeds``: the approaches, where the teacher brakes);
    ``lr_decay``: each fit's learning rate falls linearly to 0 (``fit``). ``workers`` > 1 fits the networks
    side by side in that many threads (they share no weights, so each ends as it would alone; meant for one
    torch thread each, on a core each). Returns per round and network the drone-steps it was fitted on and
    their mean squared error before and after."""
    actor = getattr(policy, "actor", None)
    if not hasattr(actor, "heads") or not hasattr(actor, "gates"):
        raise ValueError(f"fit_close_range needs a policy with a close-range actor (agent.close_range), got "
                         f"{type(actor).__name__}")
    if rounds < 1:
        raise ValueError(f"rounds={rounds} must be >= 1")
    if closing_weight < 0:
        raise ValueError(f"closing_weight={closing_weight} must be >= 0")
    if workers < 1:
        raise ValueError(f"workers={workers} must be >= 1")
    device = next(policy.parameters()).device
    gated = lambda obs: actor.is_close(obs).any(-1)  # noqa: E731
    teacher = make_teacher(teacher, env_cfg, device)
    data: ImitationData | None = None
    history = []
    for r in range(rounds):
        new = rollout(env_cfg, teacher, policy, beta=0.0, num_envs=swarms, record_every=1, seed=seed + 500 + r,
                      device=device, record_if=gated).data
        data = new if data is None else data.extend(new)
        gates = actor.gates(data.obs)
        for name, picked in gates.items():
            if not bool(picked.any()):
                raise ValueError(f"no drone came within the {name} gate of the close-range actor in {swarms} "
                                 "swarms: raise pretrain.close_range.swarms or the gate's range")
        fit_one = partial(_fit_gated, actor, data, gates, steps=fit_steps, batch=batch, lr=lr, seed=seed + 500 + r,
                          lr_decay=lr_decay, closing_weight=closing_weight)
        names = list(gates)
        if workers > 1 and len(names) > 1:
            with ThreadPoolExecutor(min(workers, len(names))) as pool:
                history.append(dict(zip(names, pool.map(fit_one, names), strict=True)))
        else:
            history.append({name: fit_one(name) for name in names})
    return {"rounds": history}


def _fit_gated(actor: nn.Module, data: ImitationData, gates: dict[str, torch.Tensor], name: str, *,
               closing_weight: float, **fit_kw: Any) -> dict[str, Any]:
    """Fit gated network ``name`` of a close-range ``actor`` (Adam) on the drones its gate picks in ``data``
    (``gates``: its bool [N, M] per network); returns their drone-steps and squared error before and after."""
    head, picked = actor.heads()[name], gates[name]
    rows = picked.any(-1)
    part = ImitationData(data.obs[rows], data.actions[rows])
    before = _gated_mse(head, part, picked[rows])
    fit(head, part, optimizer="adam", score=False, **fit_kw,
        sample_weight=lambda obs: _gate_weight(actor, obs, name, closing_weight))
    return {"drone_steps": int(picked.sum()), "mse_before": before, "mse": _gated_mse(head, part, picked[rows])}


def closing_speeds(actor: nn.Module, obs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per gated network of a close-range actor, the speed [...] (m/s, >= 0) at which each agent of obs [..., D]
    closes in on that gate's hazard: its nearest observed neighbour (``near``), the column its SDF shows
    (``column``: ``agents.close_range.column_closing_speed``)."""
    flat = obs.reshape(-1, obs.shape[-1])
    own, nbs, sdf = split_obs(flat, actor.layout)
    nearest = nbs[..., :3].norm(dim=-1).argmin(-1, keepdim=True)  # [N, 1]
    out = {"near": neighbour_closing_speeds(nbs).gather(-1, nearest).view(obs.shape[:-1])}
    if "column" in actor.heads():
        out["column"] = column_closing_speed(own, sdf).view(obs.shape[:-1])
    return out


def _gate_weight(actor: nn.Module, obs: torch.Tensor, name: str, closing_weight: float) -> torch.Tensor:
    """Sample weights [B, M] of gated network ``name``: 0 outside its gate, 1 + closing_weight x closing speed in it."""
    weight = actor.gates(obs)[name].float()
    return weight if closing_weight == 0 else weight * (1.0 + closing_weight * closing_speeds(actor, obs)[name])


@torch.no_grad()
def _gated_mse(head: nn.Module, data: ImitationData, picked: torch.Tensor) -> float:
    """``head``'s mean squared error over the drones ``picked`` [N, M] of ``data``."""
    return float((head(data.obs) - data.actions).square().mean(-1)[picked].mean())
