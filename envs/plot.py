"""Top-down (x-y) picture of one swarm episode: columns, paths, starts, goals and collisions.

Uses matplotlib's object API on an Agg canvas (no pyplot, no global backend switch), so it is safe
to call from tests, worker processes and headless machines. Knows nothing of learning code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, Rectangle

# Columns parked outside the room (inactive slots of the batched map) are at 1e3 m; anything this far
# from the origin is not drawn.
_PARKED = 100.0


def plot_topdown(
    path: str,
    obstacles: np.ndarray,
    radius: float,
    trajectories: np.ndarray,
    goals: np.ndarray,
    collisions: Sequence[tuple[float, float]] | None = None,
    bounds: tuple[float, float, float, float] | None = None,
    area: tuple[float, float] | None = None,
    title: str = "",
) -> str:
    """Draw one episode seen from above and save it as a PNG; returns ``path``.

    obstacles: [O, 2] column centres (parked ones, far outside the room, are skipped); radius: column
    radius, m; trajectories: [T, M, 3] drone positions per step; goals: [M, 3]; collisions: (x, y)
    points drawn as red crosses; bounds: axis limits (xmin, xmax, ymin, ymax), by default the data
    with a margin; area: (width, height) of the obstacle area, drawn as a dashed rectangle about the
    origin; title: figure title.
    """
    obstacles = np.asarray(obstacles, dtype=float).reshape(-1, 2)
    traj = np.asarray(trajectories, dtype=float)
    goals = np.asarray(goals, dtype=float).reshape(-1, 3)
    if traj.ndim != 3 or traj.shape[-1] != 3:
        raise ValueError(f"trajectories must be [T, M, 3], got {list(traj.shape)}")
    if goals.shape[0] != traj.shape[1]:
        raise ValueError(f"goals hold {goals.shape[0]} drones, trajectories {traj.shape[1]}")
    active = obstacles[np.abs(obstacles).max(axis=1) < _PARKED] if obstacles.size else obstacles

    fig = Figure(figsize=(7.0, 7.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_aspect("equal")
    ax.grid(True, color="0.9", linewidth=0.6, zorder=0)

    if area is not None:
        w, h = area
        ax.add_patch(Rectangle((-w / 2, -h / 2), w, h, fill=False, linestyle="--", edgecolor="0.5", zorder=1))
    for x, y in active:
        ax.add_patch(Circle((x, y), radius, facecolor="0.6", edgecolor="0.3", linewidth=0.8, zorder=2))

    cmap = matplotlib.colormaps["tab10"]
    for i in range(traj.shape[1]):
        col = cmap(i % 10)
        ax.plot(traj[:, i, 0], traj[:, i, 1], color=col, linewidth=1.4, zorder=3)
        ax.plot(traj[0, i, 0], traj[0, i, 1], "o", color=col, markersize=7, markeredgecolor="k", zorder=4)
        ax.plot(goals[i, 0], goals[i, 1], "*", color=col, markersize=14, markeredgecolor="k", zorder=4)
    hits = np.asarray(collisions if collisions else [], dtype=float).reshape(-1, 2)
    if len(hits):
        ax.plot(hits[:, 0], hits[:, 1], "x", color="red", markersize=10, markeredgewidth=2.2, zorder=5)

    if bounds is None:
        pts = np.concatenate([traj[..., :2].reshape(-1, 2), goals[:, :2], active.reshape(-1, 2)])
        lo, hi = pts.min(axis=0) - 0.6, pts.max(axis=0) + 0.6
        bounds = (lo[0], hi[0], lo[1], hi[1])
    ax.set_xlim(bounds[0], bounds[1])
    ax.set_ylim(bounds[2], bounds[3])
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    if title:
        ax.set_title(title, fontsize=10)
    legend = [
        Line2D([], [], marker="o", linestyle="", color="0.5", markeredgecolor="k", label="start"),
        Line2D([], [], marker="*", linestyle="", color="0.5", markeredgecolor="k", markersize=12, label="goal"),
        Line2D([], [], marker="o", linestyle="", color="0.6", markeredgecolor="0.3", markersize=12, label="column"),
        Line2D([], [], marker="x", linestyle="", color="red", markeredgewidth=2, label="collision"),
    ]
    ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    return path


def contact_points(traj: np.ndarray, obstacles: np.ndarray, radius: float, arm: float) -> list[tuple[float, float]]:
    """(x, y) of every new contact (drone-column or drone-drone) along trajectories [T, M, 3].

    The simulator's collision tests: 2-D centre distance <= arm + radius for columns, 3-D distance
    <= 2 arm for drones. A contact is drawn where it starts, not on every step it lasts; contacts in
    the grace period at the start are drawn too (the metrics ignore those).
    """
    d_obs = np.linalg.norm(traj[:, :, None, :2] - obstacles[None, None], axis=-1).min(-1)  # [T, M]
    pair = np.linalg.norm(traj[:, :, None] - traj[:, None], axis=-1)  # [T, M, M]
    m = traj.shape[1]
    pair[:, np.arange(m), np.arange(m)] = np.inf
    touching = (d_obs <= arm + radius) | (pair.min(-1) <= 2 * arm)  # [T, M]
    start = touching & ~np.concatenate([np.zeros_like(touching[:1]), touching[:-1]])
    t, i = np.nonzero(start)
    return [(float(traj[a, b, 0]), float(traj[a, b, 1])) for a, b in zip(t, i, strict=True)]
