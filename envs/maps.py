"""Obstacle maps (columns on a grid), spawn slots and the local signed-distance observation.

Written by hand: batched over environments on torch tensors. The grid of ``grid[0] x grid[1]``
cells (``cell_size`` metres) is centred on the room's origin. Two layouts (``SwarmConfig.layout``):

* ``reference`` (quad-swarm-rl's ``obst_generation_given_density``): ``int(density * cells)`` columns
  on distinct cells drawn over the whole grid (8 x 8 m, density 0.2: 12 columns); starts and goals are
  then drawn from the free cells (see :func:`sample_free_slots`). The count is capped so that at least
  ``min_free`` cells stay free, enough for every drone's start slot.
* ``rows``: row 0 (lowest y) is the start row and the last row the goal row; columns are placed only
  in the rows between, ``round(density * cells)`` of them where ``cells`` counts those interior cells.

Columns are full-height cylinders, so all obstacle geometry is 2-D. Inactive column slots (for fewer
columns than the batch maximum, or obstacle-free scenarios) are parked far outside the room, which
keeps every tensor dense.
"""

from __future__ import annotations

import torch

from envs.scenarios import LAYOUTS

FAR = 1.0e3  # where inactive columns are parked, m


class ObstacleGrid:
    """Cell geometry of the obstacle grid of one configuration."""

    def __init__(
        self, grid: tuple[int, int], cell_size: float, device: torch.device, layout: str = "rows", min_free: int = 1
    ):
        """grid: cells along x and y; layout: "reference" or "rows" (see the module docstring);
        min_free: cells the reference layout leaves free whatever the density."""
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; allowed: {', '.join(LAYOUTS)}")
        gx, gy = grid
        self.gx, self.gy = gx, gy
        self.layout = layout
        xs = (torch.arange(gx, device=device) - (gx - 1) / 2) * cell_size
        ys = (torch.arange(gy, device=device) - (gy - 1) / 2) * cell_size
        # Cell c = row * gx + col; centres [gy * gx, 2].
        self.centres = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
        self.start_row = torch.arange(0, gx, device=device)
        self.goal_row = torch.arange(gx * (gy - 1), gx * gy, device=device)
        if layout == "rows":
            self.interior = torch.arange(gx, gx * (gy - 1), device=device)  # cells of rows 1..gy-2
        else:
            self.interior = torch.arange(gx * gy, device=device)  # every cell may hold a column
        self.max_count = self.interior.numel() - (min_free if layout == "reference" else 0)

    def num_obstacles(self, density: torch.Tensor) -> torch.Tensor:
        """Column count per env for densities [E].

        rows: the rounded fraction of the interior cells; reference: the truncated fraction of all cells
        (quad-swarm-rl's ``int(cells * density)``; the small epsilon keeps 0.2 * 64 = 12.8 from
        becoming 12.799... under float32), capped to leave ``min_free`` cells.
        """
        cells = self.interior.numel()
        if self.layout == "rows":
            return torch.round(density * cells).long()
        return torch.floor(density * cells + 1e-4).long().clamp_max(self.max_count)

    def sample(
        self, density: torch.Tensor, max_count: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random column layouts for densities [E].

        Returns (positions [E, max_count, 2] with inactive ones at FAR, occupied [E, cells] bool).
        """
        e = density.shape[0]
        n = self.num_obstacles(density)  # [E]
        order = torch.rand(e, self.interior.numel(), generator=gen, device=density.device).argsort(-1)
        cells = self.interior[order[:, :max_count]]  # [E, max_count]
        active = torch.arange(max_count, device=density.device) < n.unsqueeze(-1)
        pos = torch.where(active.unsqueeze(-1), self.centres[cells], torch.full_like(self.centres[cells], FAR))
        occupied = torch.zeros(e, self.centres.shape[0], dtype=torch.bool, device=density.device)
        occupied.scatter_(1, cells, active)
        return pos, occupied

    def random_free_cell(self, occupied: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Centre [E, 2] of a uniformly drawn free cell in each env."""
        score = torch.rand(occupied.shape, generator=gen, device=occupied.device).masked_fill(occupied, -1.0)
        return self.centres[score.argmax(-1)]


def sample_free_slots(
    centres: torch.Tensor,
    occupied: torch.Tensor,
    heights: torch.Tensor,
    num_drones: int,
    jitter: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """Distinct free (cell, height) positions [E, M, 3], jittered by +-jitter in x, y, z.

    centres: [C, 2] cell centres; occupied: [E, C] bool (cells with a column); heights: [H].
    Every env must have at least M free slots (free cells x H); the config validator ensures it.
    """
    e, c = occupied.shape
    h = heights.shape[0]
    device = centres.device
    # A random score per slot, occupied slots pushed below every free one: the top M are a uniform
    # draw of M distinct free slots.
    score = torch.rand(e, c * h, generator=gen, device=device)
    score = score.masked_fill(occupied.repeat_interleave(h, dim=1), -1.0)
    pick = score.topk(num_drones, dim=-1).indices  # [E, M]
    pos = torch.cat([centres[pick // h], heights[pick % h].unsqueeze(-1)], -1)
    if jitter > 0:
        pos = pos + (torch.rand(pos.shape, generator=gen, device=device) * 2 - 1) * jitter
    return pos


def sample_slots(
    cells_xy: torch.Tensor,
    heights: torch.Tensor,
    num_envs: int,
    num_drones: int,
    jitter: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """Distinct (cell, height) positions [E, M, 3] for M drones, jittered by +-jitter in x, y, z.

    cells_xy: [C, 2] candidate cell centres; heights: [H]. Requires M <= C * H.
    """
    c, h = cells_xy.shape[0], heights.shape[0]
    device = cells_xy.device
    pick = torch.rand(num_envs, c * h, generator=gen, device=device).argsort(-1)[:, :num_drones]
    xy = cells_xy[pick // h]
    z = heights[pick % h].unsqueeze(-1)
    pos = torch.cat([xy, z], -1)
    if jitter > 0:
        pos = pos + (torch.rand(pos.shape, generator=gen, device=device) * 2 - 1) * jitter
    return pos


def local_sdf(pos: torch.Tensor, obstacles: torch.Tensor, radius: torch.Tensor, resolution: float) -> torch.Tensor:
    """Local signed-distance field, in the simulator's working layout.

    pos [3, M, E] (or [2, M, E]); obstacles [2, O, E]; radius [E]. Returns sdf [9, M, E]: for the
    3 x 3 grid of points p + (i h, j h), i, j in (-1, 0, 1) with i (the x offset) varying slowest,
    the distance to the nearest column centre minus the radius. Index 4 is the drone itself.

    Uses |c - p - o|^2 = |c - p|^2 - 2 o.(c - p) + |o|^2 on drone-centred [O, M, E] tensors, so the
    nine points cost a few passes and nine reductions over the (outer) column axis.
    """
    rx = obstacles[0].unsqueeze(1) - pos[0]  # [O, M, E]
    ry = obstacles[1].unsqueeze(1) - pos[1]
    r2 = rx * rx + ry * ry
    ax, ay = (2.0 * resolution) * rx, (2.0 * resolution) * ry
    h2 = resolution * resolution
    mins = []
    for i, base in ((-1, r2 + ax), (0, r2), (1, r2 - ax)):
        for j, d2 in ((-1, base + ay), (0, base), (1, base - ay)):
            mins.append(d2.amin(0) + h2 * (i * i + j * j))
    return torch.stack(mins).clamp_min_(0.0).sqrt_() - radius


def sdf_normal(sdf: torch.Tensor, resolution: float) -> torch.Tensor:
    """Unit xy direction [2, M, E] away from the nearest column, from central differences of the SDF."""
    grad = torch.stack([sdf[7] - sdf[1], sdf[5] - sdf[3]]) / (2.0 * resolution)
    return grad / (grad * grad).sum(0).sqrt().clamp_min(1e-6)
