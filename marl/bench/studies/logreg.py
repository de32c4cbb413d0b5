"""The sso suite's first study: SSO vs SGD and Adam on logistic regression (expensive gradient
evaluations to a target loss), on a synthetic ill-conditioned data set and on breast-cancer data;
then the behaviour-cloning study (``marl.bench.studies.bc``). Settings: docs/design/benchmarks.md.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from sklearn.datasets import load_breast_cancer
from torch import nn

from marl.bench.studies.bc import bench_bc
from marl.bench.studies.common import evals_to, median_or_none
from optim.sso import SSO


def synthetic_logreg(n: int = 2000, d: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features with scales spread over a decade (ill-conditioned), labels drawn from a logistic model."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(0, 1, d)
    x = torch.randn(n, d, generator=g) * scales
    w = torch.randn(d, generator=g) / scales
    y = (torch.rand(n, generator=g) < torch.sigmoid(x @ w)).float()
    return x, y


def _breast_cancer() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)


def logreg_curve(
    x: torch.Tensor, y: torch.Tensor, base: nn.Module, make: Callable[[nn.Module], Any], budget: int, batch: int,
    seed: int, every: int,
) -> list[tuple[int, float]]:
    """Full-batch loss every ``every`` expensive gradient evaluations of one run."""
    model = copy.deepcopy(base)
    opt = make(model)
    gen = torch.Generator().manual_seed(seed)
    curve: list[tuple[int, float]] = []
    evals = 0
    while evals < budget:
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(perm) - batch + 1, batch):
            b = perm[i : i + batch]
            if isinstance(opt, SSO):
                opt.step((x[b], y[b]))
            else:
                opt.zero_grad()
                F.binary_cross_entropy_with_logits(model(x[b]).squeeze(-1), y[b]).backward()
                opt.step()
            evals += 1
            if evals % every == 0:
                with torch.no_grad():
                    curve.append((evals, float(F.binary_cross_entropy_with_logits(model(x).squeeze(-1), y))))
            if evals >= budget:
                break
    return curve


def logreg_target(x: torch.Tensor, y: torch.Tensor) -> tuple[nn.Linear, float, float, float]:
    """(the seeded initial model, its loss, the optimum's loss by L-BFGS, the target loss 10 % of the way
    from the optimum's to the initial one)."""
    torch.manual_seed(0)
    base = nn.Linear(x.shape[1], 1)
    with torch.no_grad():
        l0 = float(F.binary_cross_entropy_with_logits(base(x).squeeze(-1), y))
    best = copy.deepcopy(base)
    lbfgs = torch.optim.LBFGS(best.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        lbfgs.zero_grad()
        loss = F.binary_cross_entropy_with_logits(best(x).squeeze(-1), y)
        loss.backward()
        return loss

    lbfgs.step(closure)
    with torch.no_grad():
        l_star = float(F.binary_cross_entropy_with_logits(best(x).squeeze(-1), y))
    return base, l0, l_star, l_star + 0.1 * (l0 - l_star)


def _sso_dataset(
    x: torch.Tensor, y: torch.Tensor, seeds: int, budget: int, batch: int, every: int,
    sgd_lrs: tuple[float, ...], adam_lrs: tuple[float, ...], inner_steps: int,
) -> dict[str, Any]:
    base, l0, l_star, target = logreg_target(x, y)

    def runs(make: Callable[[nn.Module], Any]) -> list[list[tuple[int, float]]]:
        return [logreg_curve(x, y, base, make, budget, batch, s, every) for s in range(seeds)]

    def sso(m: nn.Module) -> SSO:
        return SSO(m.parameters(), lambda inp: m(inp).squeeze(-1), "bce", inner_steps=inner_steps)

    def best_of(make: Callable[[float], Callable[[nn.Module], Any]], lrs: tuple[float, ...]) -> dict[str, Any]:
        per_lr = {lr: median_or_none([evals_to(c, target) for c in runs(make(lr))]) for lr in lrs}
        reached = {lr: v for lr, v in per_lr.items() if v is not None}
        lr = min(reached, key=reached.get) if reached else None
        return {"evals": reached.get(lr) if lr is not None else None, "lr": lr, "per_lr": per_lr}

    sso_curves = runs(sso)
    sgd = best_of(lambda lr: lambda m: torch.optim.SGD(m.parameters(), lr=lr), sgd_lrs)
    adam = best_of(lambda lr: lambda m: torch.optim.Adam(m.parameters(), lr=lr), adam_lrs)
    return {
        "n": int(x.shape[0]), "d": int(x.shape[1]), "initial_loss": l0, "optimal_loss": l_star, "target_loss": target,
        "sso_grad_evals_to_target": median_or_none([evals_to(c, target) for c in sso_curves]),
        "sgd_grad_evals_to_target": sgd["evals"], "adam_grad_evals_to_target": adam["evals"],
        "sgd_best_lr": sgd["lr"], "adam_best_lr": adam["lr"],
        "sgd_evals_by_lr": {str(k): v for k, v in sgd["per_lr"].items()},
        "adam_evals_by_lr": {str(k): v for k, v in adam["per_lr"].items()},
        "sso_final_loss": statistics.median(c[-1][1] for c in sso_curves),
    }


def bench_sso(
    seeds: int = 3, budget: int = 300, batch: int = 32, every: int = 5, inner_steps: int = 5,
    sgd_lrs: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
    adam_lrs: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1, 0.3),
    bc: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """SSO vs SGD and Adam on logistic regression: expensive gradient evaluations to the target loss;
    then the behaviour-cloning part (``bench_bc(**bc)``; ``bc=None`` runs it with its defaults)."""
    start = time.perf_counter()
    kw = {"seeds": seeds, "budget": budget, "batch": batch, "every": every, "sgd_lrs": sgd_lrs,
          "adam_lrs": adam_lrs, "inner_steps": inner_steps}
    synthetic = _sso_dataset(*synthetic_logreg(), **kw)
    real = _sso_dataset(*_breast_cancer(), **kw)
    out = {"suite": "sso", "dataset": "synthetic ill-conditioned logistic regression (n 2000, d 20)", **synthetic,
           "breast_cancer": real, "batch": batch, "budget": budget, "seeds": seeds, "sso_inner_steps": inner_steps,
           "sso_eta": 2.0}
    out.update(bench_bc(**(bc or {})))
    out["seconds"] = time.perf_counter() - start
    return out
