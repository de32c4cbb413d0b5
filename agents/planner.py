"""``pid_plan``: ``pid_avoid`` steered along shortest paths through the column map (a privileged teacher).

``pid_avoid`` is a potential field: it slides round one column at a time and stalls where columns close
a pocket between a drone and its goal (its failures at density 0.6-0.8 are all such deadlocks, and a
lone drone has them too). This controller is told the map (column centres and radius) and the goals at
the start of every episode (:meth:`PlannedPIDController.plan`; the evaluation loop and the imitation
rollouts call it with the simulator's state) and computes, per drone, the geodesic distance to its goal
on a grid over the room (8-connected, nodes closer than ``radius + clearance`` to a column blocked) by
batched Bellman-Ford relaxation on torch. Each step the drone aims at the point ``lookahead`` nodes
down the shortest path from its nearest node, at the PID's capped speed for the remaining path length;
where the straight line is about as short as the path (``straight_ratio``) it flies the plain PID,
which keeps its centimetre hold at the goal. The avoidance filter of ``pid_avoid`` stays on (neighbours,
columns). Written by hand: a grid planner over a 2-D map this small needs no planning library.

It reads more than the policy's observation (the whole map), so it is a teacher and a reference point,
not a baseline a local policy could be expected to match: a student imitating it learns, from local
observations, the detours that the plan takes where ``pid_avoid`` would stall.
"""

from __future__ import annotations

import math

import torch

from agents.pid import PIDConfig, PIDController

_SQRT2 = math.sqrt(2.0)
# The 8 grid moves (dy, dx) and their lengths in nodes.
_MOVES = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
_LENGTHS = tuple(_SQRT2 if dy and dx else 1.0 for dy, dx in _MOVES)


def _shift(x: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """x [B, H, W] moved so that out[:, i, j] = x[:, i + dy, j + dx] (``fill`` outside the grid)."""
    out = torch.full_like(x, fill)
    h, w = x.shape[-2:]
    out[:, max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)] = x[
        :, max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)
    ]
    return out


class PlannedPIDController(PIDController):
    """``pid_avoid`` with its velocity set-point pointed along the shortest path to the goal (see the module
    docstring). Call :meth:`plan` after every reset (all envs, or the ids that restarted) before acting."""

    def __init__(
        self,
        cfg: PIDConfig | None = None,
        device: str | torch.device = "cpu",
        spec=None,
        *,
        extent: float = 5.0,
        resolution: float = 0.1,
        clearance: float = 0.1,
        lookahead: int = 6,
        straight_ratio: float = 1.1,
    ):
        """extent: the room spans [-extent, extent] m in x and y (the simulator's 10 m room); resolution: the
        grid spacing, m; clearance: m of body clearance a path keeps from the columns (plus the arm);
        lookahead: path nodes ahead of the nearest node that the drone aims at; straight_ratio: fly the
        plain PID where the path is at most this times the straight distance (plus one node)."""
        super().__init__(cfg or PIDConfig(avoid=True), device, spec)
        if not self.cfg.avoid:
            raise ValueError("PlannedPIDController steers pid_avoid: its PIDConfig needs avoid=True")
        if resolution <= 0 or extent <= 0 or lookahead < 1 or straight_ratio < 1:
            raise ValueError(f"bad planner settings: extent={extent}, resolution={resolution}, "
                             f"lookahead={lookahead} (>= 1), straight_ratio={straight_ratio} (>= 1)")
        self.extent, self.resolution, self.clearance = extent, resolution, clearance
        self.lookahead, self.straight_ratio = lookahead, straight_ratio
        self.n = int(round(2 * extent / resolution)) + 1  # nodes per side
        axis = torch.linspace(-extent, extent, self.n, device=self.device)
        self.nodes = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)  # [N, 2], x fastest
        self.goals: torch.Tensor | None = None  # [E, M, 3]
        self.dist: torch.Tensor | None = None  # [E, M, N] path length to the goal, m (inf: unreachable)
        self.succ: torch.Tensor | None = None  # [E, M, N] next node on the path

    # ------------------------------------------------------------------ planning
    @torch.no_grad()
    def plan(self, goals: torch.Tensor, obstacles: torch.Tensor, radius: torch.Tensor,
             env_ids: torch.Tensor | None = None) -> None:
        """Shortest paths to ``goals`` [E', M, 3] around columns ``obstacles`` [E', O, 2] of ``radius`` [E'],
        for all envs (``env_ids`` None, E' = E) or for the envs ``env_ids`` that restarted."""
        goals, obstacles, radius = (t.to(self.device, torch.float32) for t in (goals, obstacles, radius))
        e, m, _ = goals.shape
        n = self.n
        # Blocked nodes: within radius + arm + clearance of a column centre; [E', N].
        d2 = (self.nodes.view(1, -1, 1, 2) - obstacles.view(e, 1, -1, 2)).square().sum(-1).amin(-1)
        blocked = d2.sqrt() < (radius + self.cfg.arm + self.clearance).view(e, 1)
        goal_node = self._nearest_node(goals[..., :2])  # [E', M]
        free = ~blocked.unsqueeze(1).expand(e, m, -1).clone()  # [E', M, N]
        free.scatter_(2, goal_node.unsqueeze(-1), True)  # the goal itself is always reachable
        dist = torch.full((e, m, n * n), math.inf, device=self.device)
        dist.scatter_(2, goal_node.unsqueeze(-1), 0.0)
        dist, free = dist.view(e * m, n, n), free.view(e * m, n, n)
        # Bellman-Ford over the grid: a node's path length is the least over its free neighbours of theirs
        # plus the move. Every node (blocked ones too, so a drone that strayed near a column has a way out)
        # may step into a free node; nothing steps through a blocked one.
        for it in range(4 * n):
            through = torch.where(free, dist, math.inf)
            best = dist
            for (dy, dx), length in zip(_MOVES, _LENGTHS, strict=True):
                best = torch.minimum(best, _shift(through, dy, dx, math.inf) + length * self.resolution)
            if it % 8 == 7 and torch.equal(best, dist):
                break
            dist = best
        # Next node: the free neighbour with the least path length plus move (itself at the goal).
        through = torch.where(free, dist, math.inf)
        cand = torch.stack([_shift(through, dy, dx, math.inf) + length * self.resolution
                            for (dy, dx), length in zip(_MOVES, _LENGTHS, strict=True)])  # [8, B, n, n]
        k = cand.argmin(0)
        dy = torch.tensor([mv[0] for mv in _MOVES], device=self.device)[k]
        dx = torch.tensor([mv[1] for mv in _MOVES], device=self.device)[k]
        idx = torch.arange(n * n, device=self.device).view(1, n, n)
        succ = (idx + dy * n + dx).view(e, m, -1)
        at_goal = dist.view(e, m, -1) == 0
        succ = torch.where(at_goal | ~torch.isfinite(dist.view(e, m, -1)), idx.view(1, 1, -1), succ)
        dist = dist.view(e, m, -1)
        if env_ids is None or self.dist is None:
            self.goals, self.dist, self.succ = goals, dist, succ
        else:
            ids = torch.as_tensor(env_ids, device=self.device, dtype=torch.long)
            self.goals[ids], self.dist[ids], self.succ[ids] = goals, dist, succ

    def _nearest_node(self, xy: torch.Tensor) -> torch.Tensor:
        """Index of the grid node nearest to each point xy [..., 2] (clamped into the room)."""
        ij = ((xy + self.extent) / self.resolution).round().long().clamp(0, self.n - 1)
        return ij[..., 1] * self.n + ij[..., 0]

    # ------------------------------------------------------------------ control
    def velocity_setpoint(self, obs: torch.Tensor, err_c: torch.Tensor) -> torch.Tensor:
        """The PID's set-point, its horizontal part turned along the planned path where that is clearly
        longer than the straight line; speed as the PID's for the remaining path length."""
        v_des = super().velocity_setpoint(obs, err_c)
        if self.dist is None or self.goals is None or self.goals.shape[:2] != obs.shape[:2]:
            raise RuntimeError("PlannedPIDController.plan(goals, obstacles, radius) must be called after reset")
        pos = obs[..., 0:2] + self.goals[..., :2]  # the observation's p - g, plus the goal
        node = self._nearest_node(pos)  # [E, M]
        path = self.dist.gather(2, node.unsqueeze(-1)).squeeze(-1)  # [E, M]
        ahead = node
        for _ in range(self.lookahead):
            ahead = self.succ.gather(2, ahead.unsqueeze(-1)).squeeze(-1)
        aim = self.nodes[ahead] - pos  # [E, M, 2]
        straight = obs[..., 0:2].norm(dim=-1)
        detour = torch.isfinite(path) & (path > self.straight_ratio * straight + self.resolution)
        speed = (self.kp[0] / self.kd[0]) * path.clamp(max=self.cfg.max_pos_error)
        planned = aim / aim.norm(dim=-1, keepdim=True).clamp_min(1e-6) * speed.unsqueeze(-1)
        v_xy = torch.where(detour.unsqueeze(-1), planned, v_des[..., :2])
        return torch.cat([v_xy, v_des[..., 2:]], -1)
