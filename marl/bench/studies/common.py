"""Small helpers the studies share: medians over seeds and the closed-loop figures they report."""

from __future__ import annotations

import statistics

CLOSED_LOOP_KEYS = ("success_rate", "collision_rate", "floor_collision_rate", "distance_to_goal_1s")


def closed_loop_summary(metrics: dict[str, float]) -> dict[str, float]:
    """The closed-loop episode metrics a study reports (those of CLOSED_LOOP_KEYS that are present)."""
    return {k: metrics[k] for k in CLOSED_LOOP_KEYS if k in metrics}


def evals_to(curve: list[tuple[int, float]], target: float) -> int | None:
    """The first recorded number of gradient evaluations at which the loss is <= ``target``."""
    return next((e for e, loss in curve if loss <= target), None)


def median_or_none(values: list[int | None]) -> float | None:
    """Median over seeds, a run that never reached the target counting as +inf; None if most never did."""
    vals = sorted(float("inf") if v is None else float(v) for v in values)
    med = statistics.median(vals)
    return None if med == float("inf") else med
