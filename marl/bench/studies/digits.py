"""The tpsgd suite's first study: tpSGD vs back-propagation on scikit-learn's digits (test accuracy
and peak saved-tensor bytes, also by depth); then the distillation study (``marl.bench.studies.distill``).
Settings and figures: docs/design/benchmarks.md.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from marl.bench.studies.distill import bench_distill
from marl.imitation import mlp_student
from optim.memory import SavedTensorMeter
from optim.registry import build
from optim.tpsgd import TPSGD, train_readout


def _digits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    tr, te = perm[:1400], perm[1400:]
    return x[tr], y[tr], x[te], y[te]


def _mlp(seed: int, hidden: int = 256, depth: int = 2) -> nn.Sequential:
    """The digits MLP: 64 -> ``depth`` tanh layers of ``hidden`` -> 10, seeded."""
    return mlp_student(64, (hidden,) * depth, seed, out_dim=10)


def _peak_by_depth(x: torch.Tensor, y: torch.Tensor, depths: tuple[int, ...] = (1, 2, 3, 4)) -> dict[str, Any]:
    """Peak saved-tensor bytes of one training step for 1..4 hidden layers of 256 (batch 100)."""
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
    """tpSGD vs back-propagation on digits: test accuracy (mean over seeds) and peak saved-tensor bytes, beside
    the frozen-random-hidden-layers baseline (``train_readout``: the readout alone, same batches); then
    the policy-distillation part (``bench_distill(**distill)``; ``distill=None`` runs it with its defaults)."""
    start = time.perf_counter()
    xtr, ytr, xte, yte = _digits()
    readout_acc: list[float] = []
    bp_acc, tp_acc, bp_peak, tp_peak, bp_time, tp_time = [], [], 0, 0, 0.0, 0.0
    proj_bytes = 0
    for seed in range(seeds):
        gen = torch.Generator().manual_seed(100 + seed)
        orders = [torch.randperm(len(xtr), generator=gen) for _ in range(epochs)]
        bp_model = _mlp(seed)
        tp_model = copy.deepcopy(bp_model)
        readout = train_readout(copy.deepcopy(bp_model), xtr, ytr, epochs=epochs, batch=batch, lr=lr, seed=100 + seed)
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
            readout_acc.append(float((readout(xte).argmax(-1) == yte).float().mean()))
    out = {
        "suite": "tpsgd", "dataset": "scikit-learn digits (1400 train / 397 test)", "model": "MLP 64-256-256-10 tanh",
        "epochs": epochs, "batch": batch, "lr": lr, "seeds": seeds,
        "bp_accuracy": statistics.mean(bp_acc), "tpsgd_accuracy": statistics.mean(tp_acc),
        "bp_accuracy_by_seed": bp_acc, "tpsgd_accuracy_by_seed": tp_acc,
        "readout_only_accuracy": statistics.mean(readout_acc), "readout_only_accuracy_by_seed": readout_acc,
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
