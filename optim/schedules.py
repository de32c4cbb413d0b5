"""Learning-rate schedules as torch LR schedulers: linear decay, warm-up + polynomial decay, and the
refined schedule of Defazio et al. ("When, Why and How Much?") from a previous run's gradient norms.

    sched = linear_decay(opt, total_steps=T)            # lr_t = lr * (1 - t / T)
    sched = warmup_poly(opt, total_steps=T, warmup_steps=W, power=2.0)
    sched = refined(opt, grad_norms, kind="adam")       # len(grad_norms) = T + 1 steps, last lr 0
    for t in range(T): ...; opt.step(); sched.step()

The schedulers are torch's ``LambdaLR``; only the multiplier formulas are written here.

Design note (the refined schedule's formula, why these are hand-written): docs/design/schedules.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["linear_decay", "median_filter", "refined", "refined_multipliers", "warmup_poly"]


def linear_decay(optimizer: torch.optim.Optimizer, total_steps: int, end_factor: float = 0.0) -> LambdaLR:
    """lr_t = lr * max(end_factor, 1 - t / total_steps); t counts ``sched.step()`` calls."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    return LambdaLR(optimizer, lambda t: max(end_factor, 1.0 - t / total_steps))


def warmup_poly(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, power: float = 1.0,
    end_factor: float = 0.0,
) -> LambdaLR:
    """Linear warm-up (t + 1) / warmup_steps for t < warmup_steps, then a polynomial decay to ``end_factor``:

    factor = end + (1 - end) * (1 - (t - W) / (T - W)) ** power, clamped at ``end_factor`` after T.
    """
    if total_steps < 1 or not 0 <= warmup_steps < total_steps:
        raise ValueError(
            f"need total_steps >= 1 and 0 <= warmup_steps < total_steps, got {total_steps}, {warmup_steps}"
        )

    def factor(t: int) -> float:
        if t < warmup_steps:
            return (t + 1) / warmup_steps
        frac = min(1.0, (t - warmup_steps) / (total_steps - warmup_steps))
        return end_factor + (1.0 - end_factor) * (1.0 - frac) ** power

    return LambdaLR(optimizer, factor)


def median_filter(x: torch.Tensor, window: int) -> torch.Tensor:
    """Running median with an odd ``window`` (rounded up), edges padded by repeating the end values."""
    window = max(1, int(window) | 1)
    half = window // 2
    padded = torch.cat([x[:1].expand(half), x, x[-1:].expand(half)])
    return padded.unfold(0, window, 1).median(dim=-1).values


def refined_multipliers(
    grad_norms: Sequence[float] | torch.Tensor, kind: str = "sgd", window_frac: float = 0.1
) -> torch.Tensor:
    """Multipliers s_t (max 1, last 0) for ``len(grad_norms)`` steps from a previous run's gradient norms."""
    if kind not in ("sgd", "adam"):
        raise ValueError(f"kind must be 'sgd' or 'adam', got {kind!r}")
    g = torch.as_tensor(grad_norms, dtype=torch.float64).flatten()
    if g.numel() < 2 or not torch.all(g > 0):
        raise ValueError("grad_norms needs at least 2 positive values")
    g = median_filter(g, max(1, round(window_frac * g.numel())))
    w = g.pow(-2.0 if kind == "sgd" else -1.0)
    tail = torch.flip(torch.cumsum(torch.flip(w, [0]), 0), [0])  # tail[t] = sum_{p >= t} w_p
    s = w * torch.cat([tail[1:], tail.new_zeros(1)])  # w_t * sum_{p > t} w_p
    return s / s.max()


def refined(
    optimizer: torch.optim.Optimizer, grad_norms: Sequence[float] | torch.Tensor, kind: str = "sgd",
    window_frac: float = 0.1,
) -> LambdaLR:
    """LR scheduler following ``refined_multipliers``; after the last step the factor stays 0."""
    s = refined_multipliers(grad_norms, kind, window_frac).tolist()
    return LambdaLR(optimizer, lambda t: s[min(t, len(s) - 1)])
