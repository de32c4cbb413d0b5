"""``marl bench optim --suite {sso,tpsgd,ppo} [--json]``: the measured claims of the plug-in optimisers.

    from marl.bench_optim import bench_sso, bench_tpsgd
    bench_sso()    # SSO vs SGD and Adam: expensive gradient evaluations to a target loss
    bench_tpsgd()  # tpSGD vs back-propagation: accuracy and peak activation memory on digits

sso suite: logistic regression, minibatch 32, one "expensive gradient evaluation" = one minibatch
gradient of the loss (dl/dz for SSO, dl/dtheta for SGD and Adam; SSO's inner steps on its surrogate need
no labels and are not counted). SSO runs with the reference's defaults (eta 2 for BCE, 5 inner Armijo
steps), untuned; SGD and Adam get the best learning rate of a grid, chosen per target. The target is
l* + 0.1 (l0 - l*), l* from full-batch L-BFGS. Two data sets: a synthetic ill-conditioned,
non-separable one (the headline keys) and scikit-learn's breast-cancer data (real, nearly separable),
reported under ``breast_cancer``. Medians over seeds; null means not reached within the budget.

tpsgd suite: a shallow MLP (64-256-256-10, tanh) on scikit-learn's digits (1,797 8x8 images; 1,400
train, 397 test), both methods with SGD + Nesterov momentum 0.9, lr 0.05, batch 100, same epochs and
initial weights. Peak memory is the peak bytes of tensors autograd saves for backward during one
training step (``optim.memory.SavedTensorMeter``: saved-tensor hooks; parameters excluded, as both
methods hold them; torch has no CPU allocator statistics and tracemalloc does not see torch), plus for
tpSGD the bytes of its fixed projection matrices, which it keeps and back-propagation does not.

The ppo suite needs the PPO trainer and is not run here yet: it reports ``skipped`` with the reason.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SUITES = ("sso", "tpsgd", "ppo")


# -- sso suite ----------------------------------------------------------------------------------------
def _synthetic_logreg(n: int = 2000, d: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features with scales spread over a decade (ill-conditioned), labels drawn from a logistic model."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(0, 1, d)
    x = torch.randn(n, d, generator=g) * scales
    w = torch.randn(d, generator=g) / scales
    y = (torch.rand(n, generator=g) < torch.sigmoid(x @ w)).float()
    return x, y


def _breast_cancer() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)


def _logreg_curve(
    x: torch.Tensor, y: torch.Tensor, base: nn.Module, make: Callable[[nn.Module], Any], budget: int, batch: int,
    seed: int, every: int,
) -> list[tuple[int, float]]:
    """Full-batch loss every ``every`` expensive gradient evaluations of one run."""
    from optim.sso import SSO

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


def _evals_to(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((e for e, loss in curve if loss <= target), None)


def _median_or_none(values: list[int | None]) -> float | None:
    """Median over seeds, a run that never reached the target counting as +inf; None if most never did."""
    vals = sorted(float("inf") if v is None else float(v) for v in values)
    med = statistics.median(vals)
    return None if med == float("inf") else med


def _sso_dataset(
    x: torch.Tensor, y: torch.Tensor, seeds: int, budget: int, batch: int, every: int,
    sgd_lrs: tuple[float, ...], adam_lrs: tuple[float, ...], inner_steps: int,
) -> dict[str, Any]:
    from optim.sso import SSO

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
    target = l_star + 0.1 * (l0 - l_star)

    def runs(make: Callable[[nn.Module], Any]) -> list[list[tuple[int, float]]]:
        return [_logreg_curve(x, y, base, make, budget, batch, s, every) for s in range(seeds)]

    def sso(m: nn.Module) -> SSO:
        return SSO(m.parameters(), lambda inp: m(inp).squeeze(-1), "bce", inner_steps=inner_steps)

    def best_of(make: Callable[[float], Callable[[nn.Module], Any]], lrs: tuple[float, ...]) -> dict[str, Any]:
        per_lr = {lr: _median_or_none([_evals_to(c, target) for c in runs(make(lr))]) for lr in lrs}
        reached = {lr: v for lr, v in per_lr.items() if v is not None}
        lr = min(reached, key=reached.get) if reached else None
        return {"evals": reached.get(lr) if lr is not None else None, "lr": lr, "per_lr": per_lr}

    sso_curves = runs(sso)
    sgd = best_of(lambda lr: lambda m: torch.optim.SGD(m.parameters(), lr=lr), sgd_lrs)
    adam = best_of(lambda lr: lambda m: torch.optim.Adam(m.parameters(), lr=lr), adam_lrs)
    return {
        "n": int(x.shape[0]), "d": int(x.shape[1]), "initial_loss": l0, "optimal_loss": l_star, "target_loss": target,
        "sso_grad_evals_to_target": _median_or_none([_evals_to(c, target) for c in sso_curves]),
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
) -> dict[str, Any]:
    """SSO vs SGD and Adam on logistic regression: expensive gradient evaluations to the target loss."""
    start = time.perf_counter()
    kw = {"seeds": seeds, "budget": budget, "batch": batch, "every": every, "sgd_lrs": sgd_lrs,
          "adam_lrs": adam_lrs, "inner_steps": inner_steps}
    synthetic = _sso_dataset(*_synthetic_logreg(), **kw)
    real = _sso_dataset(*_breast_cancer(), **kw)
    out = {"suite": "sso", "dataset": "synthetic ill-conditioned logistic regression (n 2000, d 20)", **synthetic,
           "breast_cancer": real, "batch": batch, "budget": budget, "seeds": seeds, "sso_inner_steps": inner_steps,
           "sso_eta": 2.0}
    out["seconds"] = time.perf_counter() - start
    return out


# -- tpsgd suite --------------------------------------------------------------------------------------
def _digits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    tr, te = perm[:1400], perm[1400:]
    return x[tr], y[tr], x[te], y[te]


def _mlp(seed: int, hidden: int = 256, depth: int = 2) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width = 64
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.Tanh()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, 10))


def _peak_by_depth(x: torch.Tensor, y: torch.Tensor, depths: tuple[int, ...] = (1, 2, 3, 4)) -> dict[str, Any]:
    """Peak saved-tensor bytes of one training step for 1..4 hidden layers of 256 (batch 100)."""
    from optim.memory import SavedTensorMeter
    from optim.tpsgd import TPSGD

    out: dict[str, Any] = {}
    for depth in depths:
        model = _mlp(0, depth=depth)
        with SavedTensorMeter(exclude=model.parameters()) as bp:
            F.cross_entropy(model(x), y).backward()
        tp = TPSGD(copy.deepcopy(model))
        with SavedTensorMeter(exclude=tp.model.parameters()) as tpm:
            tp.step(x, y)
        proj = sum(p.numel() * p.element_size() for p in tp.projections)
        out[str(depth)] = {"bp_peak_bytes": bp.peak_bytes, "tpsgd_peak_bytes": tpm.peak_bytes + proj}
    return out


def bench_tpsgd(epochs: int = 20, seeds: int = 3, batch: int = 100, lr: float = 0.05) -> dict[str, Any]:
    """tpSGD vs back-propagation on digits: test accuracy (mean over seeds) and peak saved-tensor bytes."""
    from optim.memory import SavedTensorMeter
    from optim.registry import build
    from optim.tpsgd import TPSGD

    start = time.perf_counter()
    xtr, ytr, xte, yte = _digits()
    bp_acc, tp_acc, bp_peak, tp_peak, bp_time, tp_time = [], [], 0, 0, 0.0, 0.0
    proj_bytes = 0
    for seed in range(seeds):
        gen = torch.Generator().manual_seed(100 + seed)
        orders = [torch.randperm(len(xtr), generator=gen) for _ in range(epochs)]
        bp_model = _mlp(seed)
        tp_model = copy.deepcopy(bp_model)
        opt = build("sgd", bp_model.parameters(), lr=lr, momentum=0.9, nesterov=True)
        tp = TPSGD(tp_model, optimizer_kwargs={"lr": lr}, seed=seed)
        proj_bytes = sum(p.numel() * p.element_size() for p in tp.projections)
        t0 = time.perf_counter()
        for order in orders:
            for i in range(0, len(order), batch):
                b = order[i : i + batch]
                with SavedTensorMeter(exclude=bp_model.parameters()) as meter:
                    opt.zero_grad()
                    F.cross_entropy(bp_model(xtr[b]), ytr[b]).backward()
                opt.step()
                bp_peak = max(bp_peak, meter.peak_bytes)
        bp_time += time.perf_counter() - t0
        t0 = time.perf_counter()
        for order in orders:
            for i in range(0, len(order), batch):
                b = order[i : i + batch]
                with SavedTensorMeter(exclude=tp_model.parameters()) as meter:
                    tp.step(xtr[b], ytr[b])
                tp_peak = max(tp_peak, meter.peak_bytes)
        tp_time += time.perf_counter() - t0
        with torch.no_grad():
            bp_model.eval()
            bp_acc.append(float((bp_model(xte).argmax(-1) == yte).float().mean()))
            tp_acc.append(float((tp.forward(xte).argmax(-1) == yte).float().mean()))
    return {
        "suite": "tpsgd", "dataset": "scikit-learn digits (1400 train / 397 test)", "model": "MLP 64-256-256-10 tanh",
        "epochs": epochs, "batch": batch, "lr": lr, "seeds": seeds,
        "bp_accuracy": statistics.mean(bp_acc), "tpsgd_accuracy": statistics.mean(tp_acc),
        "bp_accuracy_by_seed": bp_acc, "tpsgd_accuracy_by_seed": tp_acc,
        "bp_peak_bytes": bp_peak, "tpsgd_peak_bytes": tp_peak + proj_bytes,
        "tpsgd_peak_saved_bytes": tp_peak, "tpsgd_projection_bytes": proj_bytes,
        "memory_method": "peak bytes of tensors saved for backward in one step (saved_tensors_hooks), "
        "parameters excluded; tpSGD adds its fixed projections",
        "peak_bytes_by_hidden_layers": _peak_by_depth(xtr[:batch].clone(), ytr[:batch].clone()),
        "bp_seconds": bp_time, "tpsgd_seconds": tp_time, "seconds": time.perf_counter() - start,
    }


def bench_ppo() -> dict[str, Any]:
    """Placeholder until the PPO trainer takes optimisers from the registry."""
    return {"suite": "ppo", "skipped": True,
            "reason": "needs the PPO trainer (quickstart, 3 seeds, adam/lion/sophiah/sso); not wired yet"}


def run_suite(name: str, quick: bool = False) -> dict[str, Any]:
    """Run one suite by name; ``quick`` shrinks budgets for smoke tests."""
    if name == "sso":
        return bench_sso(seeds=1, budget=60, sgd_lrs=(0.1, 1.0), adam_lrs=(0.03,)) if quick else bench_sso()
    if name == "tpsgd":
        return bench_tpsgd(epochs=2, seeds=1) if quick else bench_tpsgd()
    if name == "ppo":
        return bench_ppo()
    raise ValueError(f"--suite must be one of {', '.join(SUITES)}, got {name!r}")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def _cmd_bench_optim(args: Any) -> int:
    suites = SUITES if args.suite == "all" else (args.suite,)
    for name in suites:
        result = run_suite(name, quick=args.quick)
        if args.json:
            print(json.dumps(result, default=str))
        else:
            print(f"[{name}]")
            for key, value in result.items():
                if not isinstance(value, dict | list):
                    print(f"  {key}: {_fmt(value)}")
    return 0


def _bench_subparsers(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The ``bench WHAT`` sub-command group that marl.cli created."""
    for action in sub.choices["bench"]._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise RuntimeError("marl bench has no sub-commands")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``marl bench optim`` under the ``marl bench`` group (listed in marl.cli.COMMAND_MODULES)."""
    p = _bench_subparsers(sub).add_parser(
        "optim", help="optimiser benchmarks (SSO vs SGD/Adam, tpSGD vs back-propagation)",
        description="Run an optimiser benchmark suite and print one JSON object per suite with --json.",
    )
    p.add_argument("--suite", choices=(*SUITES, "all"), default="all", help="which suite (default all)")
    p.add_argument("--quick", action="store_true", help="tiny budgets, for smoke tests")
    p.add_argument("--json", action="store_true", help="print one JSON object per suite")
    p.set_defaults(func=_cmd_bench_optim)
