"""The tpSGD distillation study: the PID teacher distilled into a per-agent MLP student once by
back-propagation and once by ``optim.tpsgd.TPSGD`` (layer-local updates against fixed random
projections of the teacher's actions) from the same weights, minibatches and optimiser; reported:
held-out action MSE, peak bytes saved for backward in one step, closed-loop success.
The data and the students come from ``marl.imitation``. Design and figures: docs/design/imitation.md.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from marl.bench.studies.common import closed_loop_summary
from marl.imitation import (
    ImitationData,
    check_optimizer,
    evaluate_closed_loop,
    mlp_student,
    quickstart_env,
    record_teacher,
)
from optim.memory import SavedTensorMeter
from optim.registry import build
from optim.tpsgd import TPSGD


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


def bench_distill(
    seeds: int = 3, epochs: int = 20, lrs: tuple[float, ...] = (0.01, 0.05), hidden: tuple[int, ...] = (64, 64),
    batch: int = 100, num_envs: int = 16, test_envs: int = 8, rollout_steps: int | None = None,
    closed_loop_envs: int = 16,
) -> dict[str, Any]:
    """Distil the PID teacher into an MLP student by back-propagation and by tpSGD: held-out action MSE
    (mean over seeds, each method at its best lr), peak saved-tensor bytes, closed-loop success."""
    start = time.perf_counter()
    cfg = quickstart_env()
    train = record_teacher(cfg, num_envs=num_envs, steps=rollout_steps, seed=0)
    test = record_teacher(cfg, num_envs=test_envs, steps=rollout_steps, seed=1)
    results = {lr: [distill_compare(train, test, hidden=hidden, epochs=epochs, batch=batch, lr=lr, seed=s)
                    for s in range(seeds)] for lr in lrs}
    by_lr = {lr: {"bp": statistics.mean(r.bp_mse for r in rs), "tpsgd": statistics.mean(r.tpsgd_mse for r in rs)}
             for lr, rs in results.items()}
    best = {m: min(lrs, key=lambda lr, m=m: by_lr[lr][m]) for m in ("bp", "tpsgd")}
    first = results[lrs[0]][0]
    out: dict[str, Any] = {
        "distill_task": "PID -> per-agent MLP, quickstart env states, standardised inputs and actions",
        "distill_model": "MLP " + "-".join(str(w) for w in (train.obs.shape[-1], *hidden, 4)) + " tanh",
        "distill_train_samples": train.num_samples, "distill_test_samples": test.num_samples,
        "distill_epochs": epochs, "distill_batch": batch, "distill_seeds": seeds,
        "distill_initial_mse": statistics.mean(r.initial_mse for r in results[lrs[0]]),
        "distill_bp_mse": by_lr[best["bp"]]["bp"], "distill_tpsgd_mse": by_lr[best["tpsgd"]]["tpsgd"],
        "distill_bp_best_lr": best["bp"], "distill_tpsgd_best_lr": best["tpsgd"],
        "distill_mse_by_lr": {str(lr): v for lr, v in by_lr.items()},
        "distill_bp_peak_bytes": first.bp.peak_bytes, "distill_tpsgd_peak_bytes": first.tpsgd.peak_bytes,
        "distill_tpsgd_projection_bytes": first.tpsgd.projection_bytes,
        "distill_bp_seconds": sum(r.bp.seconds for rs in results.values() for r in rs),
        "distill_tpsgd_seconds": sum(r.tpsgd.seconds for rs in results.values() for r in rs),
    }
    if closed_loop_envs:
        ev = {"num_envs": closed_loop_envs, "seed": 1000}
        out["distill_closed_loop"] = {
            m: closed_loop_summary(evaluate_closed_loop(getattr(results[best[m]][0], m).student, cfg, **ev))
            for m in ("bp", "tpsgd")
        }
    out["distill_seconds"] = time.perf_counter() - start
    return out
