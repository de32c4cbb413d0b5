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
The ``bc_*`` keys (``bench_bc``) are the imitation-learning case of the paper: behaviour cloning of the
built-in PID teacher into the deployable attention policy on states of the quickstart env (16 swarms x
one 7 s episode, every 5th step: 2,240 rows of 4 drones; held out: 8 more swarms), minibatch 32 rows,
squared error on the action means. One expensive gradient evaluation = one minibatch gradient (it needs
the teacher's labels). SSO runs at the reference's defaults (5 inner Armijo steps) with eta = 2, the
majorisation bound of this loss (``marl.imitation.mse_eta``), and as a variant with 10 inner Adam steps
(lr 0.003); SGD and Adam get the best learning rate of a grid. The target is
l_ref + 0.25 (l0 - l_ref), l_ref the training loss of a long reference Adam fit (3,000 steps of 128 rows).
The seed-0 students then fly one episode alone in 16 swarms (closed loop, ``bc_closed_loop``, with the
teacher's own figures on the same starts), and a DAgger run (SSO, Adam inner steps) reports its
closed-loop success per iteration (``bc_dagger``).

tpsgd suite: a shallow MLP (64-256-256-10, tanh) on scikit-learn's digits (1,797 8x8 images; 1,400
train, 397 test), both methods with SGD + Nesterov momentum 0.9, lr 0.05, batch 100, same epochs and
initial weights. Peak memory is the peak bytes of tensors autograd saves for backward during one
training step (``optim.memory.SavedTensorMeter``: saved-tensor hooks; parameters excluded, as both
methods hold them; torch has no CPU allocator statistics and tracemalloc does not see torch), plus for
tpSGD the bytes of its fixed projection matrices, which it keeps and back-propagation does not.
The ``distill_*`` keys (``bench_distill``) distil the PID teacher into a per-agent MLP student (40-64-64-4,
tanh, standardised inputs and actions) on the same quickstart states as the bc keys, once by
back-propagation and once by tpSGD (regression: each layer against a fixed random projection of the
teacher's actions), same initial weights, minibatches and optimiser (SGD Nesterov 0.9, batch 100, 20
epochs, the better of lr 0.01 / 0.05 per method, mean over seeds): held-out action MSE, peak saved-tensor
bytes of one step, and the seed-0 students' closed-loop success (``distill_closed_loop``).

ppo suite: PPO on ``quickstart`` with adam, lion, sophiah (second order: backward(create_graph=True))
and sso (functional mirror ascent on the actor, ``optim.name: sso``), the same budget (the config's or
``--steps``) and the same largest step per weight (``PPO_OVERRIDES``), 3 seeds; success curves and the
end-of-run evaluation per optimiser:

    marl bench optim --suite ppo --steps 6000000 --out-dir runs/bench_ppo --plot ppo_optimizers.png --json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
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
    bc: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """SSO vs SGD and Adam on logistic regression: expensive gradient evaluations to the target loss;
    then the behaviour-cloning part (``bench_bc(**bc)``; ``bc=None`` runs it with its defaults)."""
    start = time.perf_counter()
    kw = {"seeds": seeds, "budget": budget, "batch": batch, "every": every, "sgd_lrs": sgd_lrs,
          "adam_lrs": adam_lrs, "inner_steps": inner_steps}
    synthetic = _sso_dataset(*_synthetic_logreg(), **kw)
    real = _sso_dataset(*_breast_cancer(), **kw)
    out = {"suite": "sso", "dataset": "synthetic ill-conditioned logistic regression (n 2000, d 20)", **synthetic,
           "breast_cancer": real, "batch": batch, "budget": budget, "seeds": seeds, "sso_inner_steps": inner_steps,
           "sso_eta": 2.0}
    out.update(bench_bc(**(bc or {})))
    out["seconds"] = time.perf_counter() - start
    return out


# -- sso suite, part 2: behaviour cloning of a swarm policy (see the module docstring) ------------------
_CLOSED_LOOP_KEYS = ("success_rate", "collision_rate", "floor_collision_rate", "distance_to_goal_1s")
_SSO_ADAM_INNER = {"inner": "adam", "inner_kwargs": {"lr": 0.003}, "inner_steps": 10}


def _closed_loop_summary(metrics: dict[str, float]) -> dict[str, float]:
    return {k: metrics[k] for k in _CLOSED_LOOP_KEYS if k in metrics}


def bench_bc(
    seeds: int = 3, budget: int = 600, batch: int = 32, every: int = 10,
    sgd_lrs: tuple[float, ...] = (0.03, 0.1, 0.3), adam_lrs: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03),
    num_envs: int = 16, test_envs: int = 8, rollout_steps: int | None = None, ref_steps: int = 3000,
    target_fraction: float = 0.25, closed_loop_envs: int = 16, dagger_iterations: int = 3,
    dagger_fit_steps: int = 300,
) -> dict[str, Any]:
    """Behaviour cloning of the PID teacher into the deployable attention policy: SSO vs SGD and Adam,
    expensive gradient evaluations to the target loss, final losses, closed-loop success, and DAgger."""
    from marl.imitation import (
        dagger,
        evaluate_closed_loop,
        fit,
        imitation_loss,
        make_student,
        mse_eta,
        quickstart_env,
        record_teacher,
        rollout,
    )

    start = time.perf_counter()
    cfg = quickstart_env()
    train = record_teacher(cfg, num_envs=num_envs, steps=rollout_steps, seed=0)
    test = record_teacher(cfg, num_envs=test_envs, steps=rollout_steps, seed=1)
    base = make_student("attention", cfg, seed=0)
    l0 = imitation_loss(base, train)
    ref = copy.deepcopy(base)
    l_ref = fit(ref, train, optimizer="adam", lr=0.003, steps=ref_steps, batch=128, eval_every=ref_steps).final_loss
    target = l_ref + target_fraction * (l0 - l_ref)

    def runs(name: str, lr: float | None, kwargs: dict[str, Any] | None = None) -> list[tuple[Any, nn.Module]]:
        out = []
        for s in range(seeds):
            student = copy.deepcopy(base)
            res = fit(student, train, optimizer=name, lr=lr, optimizer_kwargs=kwargs, steps=budget, batch=batch,
                      eval_data=test, eval_every=every, seed=s)
            out.append((res, student))
        return out

    def summary(rs: list[tuple[Any, nn.Module]]) -> dict[str, Any]:
        fits = [r for r, _ in rs]
        return {"evals": _median_or_none([r.evals_to(target) for r in fits]),
                "final": statistics.median(r.final_loss for r in fits),
                "held_out": statistics.median(r.final_eval_loss for r in fits), "student": rs[0][1]}

    def best_of(name: str, lrs: tuple[float, ...]) -> dict[str, Any]:
        per_lr = {lr: summary(runs(name, lr)) for lr in lrs}
        reached = {lr: v["evals"] for lr, v in per_lr.items() if v["evals"] is not None}
        # the fastest to the target; if no lr reached it, the lowest final loss (nan, i.e. diverged, last)
        lr = min(reached, key=reached.get) if reached else min(
            lrs, key=lambda k: per_lr[k]["final"] if per_lr[k]["final"] == per_lr[k]["final"] else float("inf"))
        return {**per_lr[lr], "lr": lr, "per_lr": {str(k): v["evals"] for k, v in per_lr.items()},
                "final_by_lr": {str(k): v["final"] for k, v in per_lr.items()}}

    sso = summary(runs("sso", None))
    sso_adam = summary(runs("sso", None, _SSO_ADAM_INNER))
    sgd, adam = best_of("sgd", sgd_lrs), best_of("adam", adam_lrs)
    out: dict[str, Any] = {
        "bc_task": "PID -> deployable attention policy, quickstart env (4 drones), action-mean MSE",
        "bc_train_rows": len(train), "bc_test_rows": len(test), "bc_batch_rows": batch, "bc_budget": budget,
        "bc_seeds": seeds, "bc_sso_eta": mse_eta(), "bc_sso_inner_steps": 5, "bc_sso_adam_inner": _SSO_ADAM_INNER,
        "bc_initial_loss": l0, "bc_reference_loss": l_ref, "bc_target_loss": target,
        "bc_sso_grad_evals_to_target": sso["evals"], "bc_sso_adam_inner_grad_evals_to_target": sso_adam["evals"],
        "bc_sgd_grad_evals_to_target": sgd["evals"], "bc_adam_grad_evals_to_target": adam["evals"],
        "bc_sgd_best_lr": sgd["lr"], "bc_adam_best_lr": adam["lr"],
        "bc_sgd_evals_by_lr": sgd["per_lr"], "bc_adam_evals_by_lr": adam["per_lr"],
        "bc_sgd_final_loss_by_lr": sgd["final_by_lr"], "bc_adam_final_loss_by_lr": adam["final_by_lr"],
        "bc_sso_final_loss": sso["final"], "bc_sso_adam_inner_final_loss": sso_adam["final"],
        "bc_sgd_final_loss": sgd["final"], "bc_adam_final_loss": adam["final"],
        "bc_sso_held_out_loss": sso["held_out"], "bc_sso_adam_inner_held_out_loss": sso_adam["held_out"],
        "bc_sgd_held_out_loss": sgd["held_out"], "bc_adam_held_out_loss": adam["held_out"],
    }
    if closed_loop_envs:
        ev = {"num_envs": closed_loop_envs, "seed": 1000}
        teacher = rollout(cfg, "pid", num_envs=closed_loop_envs, seed=1000).metrics()
        out["bc_closed_loop"] = {
            "pid_teacher": _closed_loop_summary(teacher),
            **{k: _closed_loop_summary(evaluate_closed_loop(v["student"], cfg, **ev))
               for k, v in (("sso", sso), ("sso_adam_inner", sso_adam), ("sgd", sgd), ("adam", adam))},
        }
        out["bc_closed_loop_success"] = {k: v["success_rate"] for k, v in out["bc_closed_loop"].items()}
    if dagger_iterations:
        res = dagger(copy.deepcopy(base), cfg, optimizer="sso", optimizer_kwargs=_SSO_ADAM_INNER,
                     iterations=dagger_iterations, num_envs=num_envs, rollout_steps=rollout_steps,
                     fit_steps=dagger_fit_steps, batch=batch, eval_envs=closed_loop_envs, seed=0)
        out["bc_dagger"] = [
            {"iteration": it.iteration, "beta": it.beta, "teacher_fraction": it.teacher_fraction,
             "dataset_rows": it.dataset_rows, "fit_loss": it.fit_loss, **_closed_loop_summary(it.closed_loop)}
            for it in res.iterations
        ]
        out["bc_dagger_fit_steps"] = dagger_fit_steps
        if closed_loop_envs:
            out["bc_dagger_success_by_iteration"] = [it.closed_loop["success_rate"] for it in res.iterations]
    out["bc_seconds"] = time.perf_counter() - start
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
    """The digits MLP: 64 -> ``depth`` tanh layers of ``hidden`` -> 10, seeded."""
    from marl.imitation import mlp_student

    return mlp_student(64, (hidden,) * depth, seed, out_dim=10)


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


def bench_tpsgd(
    epochs: int = 20, seeds: int = 3, batch: int = 100, lr: float = 0.05, distill: dict[str, Any] | None = None
) -> dict[str, Any]:
    """tpSGD vs back-propagation on digits: test accuracy (mean over seeds) and peak saved-tensor bytes; then
    the policy-distillation part (``bench_distill(**distill)``; ``distill=None`` runs it with its defaults)."""
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
    out = {
        "suite": "tpsgd", "dataset": "scikit-learn digits (1400 train / 397 test)", "model": "MLP 64-256-256-10 tanh",
        "epochs": epochs, "batch": batch, "lr": lr, "seeds": seeds,
        "bp_accuracy": statistics.mean(bp_acc), "tpsgd_accuracy": statistics.mean(tp_acc),
        "bp_accuracy_by_seed": bp_acc, "tpsgd_accuracy_by_seed": tp_acc,
        "bp_peak_bytes": bp_peak, "tpsgd_peak_bytes": tp_peak + proj_bytes,
        "tpsgd_peak_saved_bytes": tp_peak, "tpsgd_projection_bytes": proj_bytes,
        "memory_method": "peak bytes of tensors saved for backward in one step (saved_tensors_hooks), "
        "parameters excluded; tpSGD adds its fixed projections",
        "peak_bytes_by_hidden_layers": _peak_by_depth(xtr[:batch].clone(), ytr[:batch].clone()),
        "bp_seconds": bp_time, "tpsgd_seconds": tp_time,
    }
    out.update(bench_distill(**(distill or {})))
    out["seconds"] = time.perf_counter() - start
    return out


# -- tpsgd suite, part 2: distillation of a swarm policy (see the module docstring) --------------------
def bench_distill(
    seeds: int = 3, epochs: int = 20, lrs: tuple[float, ...] = (0.01, 0.05), hidden: tuple[int, ...] = (64, 64),
    batch: int = 100, num_envs: int = 16, test_envs: int = 8, rollout_steps: int | None = None,
    closed_loop_envs: int = 16,
) -> dict[str, Any]:
    """Distil the PID teacher into an MLP student by back-propagation and by tpSGD: held-out action MSE
    (mean over seeds, each method at its best lr), peak saved-tensor bytes, closed-loop success."""
    from marl.imitation import distill_compare, evaluate_closed_loop, quickstart_env, record_teacher

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
            m: _closed_loop_summary(evaluate_closed_loop(getattr(results[best[m]][0], m).student, cfg, **ev))
            for m in ("bp", "tpsgd")
        }
    out["distill_seconds"] = time.perf_counter() - start
    return out


PPO_OPTIMIZERS = ("adam", "lion", "sophiah", "sso")
# The same largest step per coordinate for all: Adam's and Lion's step is about lr (1e-3 in quickstart);
# SophiaH's is lr * clip(m / h, +-p) with p = 0.01, so at lr 1e-3 it could move a weight by 1e-5 at most
# and did not learn (eval return -48.5 at 3 M steps); lr 0.1 gives it the same 1e-3.
PPO_OVERRIDES: dict[str, tuple[str, ...]] = {"sophiah": ("train.lr=0.1",)}


def bench_ppo(
    optimizers: tuple[str, ...] = PPO_OPTIMIZERS,
    seeds: tuple[int, ...] = (0, 1, 2),
    steps: int | None = None,
    config: str = "quickstart",
    overrides: tuple[str, ...] = (),
    out_dir: str | None = None,
) -> dict[str, Any]:
    """PPO on ``config`` with each optimiser (``optim.name``; sso = functional mirror ascent on the actor),
    the same budget (``steps`` agent steps, default the config's) and seeds; returns per optimiser the
    success curve of each seed (agent steps, success rate of the recent training episodes), the final
    evaluation success and return (mean and std over seeds) and the wall time.
    """
    import tempfile

    import numpy as np

    from marl.logger import read_metrics
    from marl.train_config import resolve_config
    from marl.trainer import train

    root = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="bench_ppo_"))
    out: dict[str, Any] = {"suite": "ppo", "config": config, "seeds": list(seeds), "optimizers": {}}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in optimizers}
    for seed in seeds:  # seed-major: a cut-short benchmark has every optimiser on the first seeds
        for name in optimizers:
            extra = [f"optim.name={name}", f"seed={seed}", "logging.tensorboard=false", "logging.progress=false",
                     *PPO_OVERRIDES.get(name, ()), *overrides, *([f"train.total_agent_steps={steps}"] if steps else [])]
            cfg = resolve_config(config, extra)
            run = root / f"{name}_s{seed}"
            # A finished run of an earlier invocation is read back, a cut one resumed (same numbers).
            if not (run / "eval.json").is_file():
                train(cfg, run, resume=(run / "checkpoints" / "latest.pt").is_file(), progress=False)
            records = read_metrics(run / "metrics.jsonl")
            ev = json.loads((run / "eval.json").read_text())
            results[name].append({"curve": [(r["agent_steps"], r.get("success_rate")) for r in records],
                                  "success": ev["success_rate"], "return": ev["episode_return"],
                                  "wall_s": records[-1]["wall_s"], "agent_steps": records[-1]["agent_steps"]})
    for name, rows in results.items():
        finals, returns = [r["success"] for r in rows], [r["return"] for r in rows]
        out["agent_steps"] = rows[0]["agent_steps"]
        out["optimizers"][name] = {
            "eval_success_mean": float(np.mean(finals)), "eval_success_std": float(np.std(finals)),
            "eval_return_mean": float(np.mean(returns)), "eval_return_std": float(np.std(returns)),
            "eval_success_by_seed": finals, "overrides": list(PPO_OVERRIDES.get(name, ())),
            "wall_s_mean": float(np.mean([r["wall_s"] for r in rows])),
            "success_curves": [r["curve"] for r in rows],
        }
    out["eval_success"] = {k: v["eval_success_mean"] for k, v in out["optimizers"].items()}
    return out


def run_suite(
    name: str,
    quick: bool = False,
    seeds: tuple[int, ...] | None = None,
    steps: int | None = None,
    out_dir: str | None = None,
) -> dict[str, Any]:
    """Run one suite by name; ``quick`` shrinks budgets for smoke tests. ``seeds``, ``steps`` (agent steps)
    and ``out_dir`` (runs kept there, finished ones read back) apply to the ppo suite."""
    if name == "sso":
        if not quick:
            return bench_sso()
        bc = {"seeds": 1, "budget": 20, "sgd_lrs": (0.1,), "adam_lrs": (0.01,), "num_envs": 2, "test_envs": 1,
              "rollout_steps": 100, "ref_steps": 50, "closed_loop_envs": 0, "dagger_iterations": 1,
              "dagger_fit_steps": 5}
        return bench_sso(seeds=1, budget=60, sgd_lrs=(0.1, 1.0), adam_lrs=(0.03,), bc=bc)
    if name == "tpsgd":
        distill = {"seeds": 1, "epochs": 2, "lrs": (0.05,), "num_envs": 2, "test_envs": 1, "rollout_steps": 100,
                   "closed_loop_envs": 0}
        return bench_tpsgd(epochs=2, seeds=1, distill=distill) if quick else bench_tpsgd()
    if name == "ppo":
        if quick:
            tiny = ("train.num_envs=8", "train.rollout_steps=8", "train.minibatches=2", "train.epochs=1",
                    "train.eval_episodes=2")
            return bench_ppo(seeds=seeds or (0,), steps=steps or 8 * 8 * 4 * 2, overrides=tiny, out_dir=out_dir)
        return bench_ppo(seeds=seeds or (0, 1, 2), steps=steps, out_dir=out_dir)
    raise ValueError(f"--suite must be one of {', '.join(SUITES)}, got {name!r}")


def plot_success_curves(result: dict[str, Any], path: str | Path) -> Path:
    """The ppo suite's success curves (success rate of the recent training episodes against agent steps):
    each seed thin, the mean over seeds bold, one colour per optimiser. Returns the written path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (name, r) in enumerate(result["optimizers"].items()):
        curves = [{s: v for s, v in c if v is not None} for c in r["success_curves"]]
        for c in curves:
            ax.plot(np.array(list(c)) / 1e6, list(c.values()), color=f"C{i}", alpha=0.3, lw=0.8)
        common = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        ax.plot(np.array(common) / 1e6, [np.mean([c[s] for c in curves]) for s in common], color=f"C{i}", lw=2,
                label=f"{name} (mean of {len(curves)} seeds)")
    ax.set(xlabel="agent steps (millions)", ylabel="success rate, recent training episodes", ylim=(0, 1.02),
           title=f"PPO on {result['config']} by optimiser")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def _cmd_bench_optim(args: Any) -> int:
    suites = SUITES if args.suite == "all" else (args.suite,)
    for name in suites:
        result = run_suite(name, quick=args.quick, seeds=args.seeds, steps=args.steps, out_dir=args.out_dir)
        if name == "ppo" and args.plot:
            result["plot"] = str(plot_success_curves(result, args.plot))
        if args.json:
            print(json.dumps(result, default=str))
        else:
            print(f"[{name}]")
            for key, value in result.items():
                if not isinstance(value, dict | list):
                    print(f"  {key}: {_fmt(value)}")
    return 0


def _seed_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes comma-separated integers (e.g. 0,1,2), got {text!r}") from None


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
    ppo = p.add_argument_group("ppo suite")
    ppo.add_argument("--steps", type=int, help="agent steps per run (default: the config's budget)")
    ppo.add_argument("--seeds", type=_seed_list, help="comma-separated seeds (default 0,1,2)")
    ppo.add_argument("--out-dir", help="keep the runs here; finished ones are read back, cut ones resumed")
    ppo.add_argument("--plot", help="write the success curves to this PNG")
    p.set_defaults(func=_cmd_bench_optim)
