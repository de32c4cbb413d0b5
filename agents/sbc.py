"""Safety barrier certificates (SBC): the field's classical swarm baseline, batched on torch.

The PID position loop of :mod:`agents.pid` (without its potential-field avoidance) gives a desired
acceleration per drone; a small QP replaces it by the closest acceleration that keeps every pairwise
distance and every column clearance certified safe (Wang, Ames and Egerstedt, T-RO 2017, as
quad-swarm-rl's ``NominalSBC``), solved for all drones at once by Dykstra's alternating projections
within the acceleration bounds. Like ``pid_avoid`` it reads only the observation (the K nearest
neighbours, its height for a floor barrier, and the 3 x 3 local SDF). Registered as the built-in controller ``sbc``.

Design note (the barriers, the QP, infeasibility, known deadlocks): docs/design/sbc.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agents.pid import NEIGHBOUR_DIM, OBSTACLE_DIM, SELF_DIM, PIDConfig, PIDController, column_normal_xy


@dataclass
class SBCConfig:
    """Barrier and QP settings of :class:`SBCController` (SI units)."""

    brake_acc: float = 4.0  # m/s^2 each drone is assumed to spend on braking in the barrier
    max_acc_xy: float = 5.0  # m/s^2, per-axis bound of the QP (below the PID's 35 degree tilt limit)
    neighbour_gamma: float = 0.2  # how fast the barrier may shrink ("aggressiveness"), neighbours
    obstacle_gamma: float = 0.2  # the same for columns
    neighbour_margin: float = 0.1  # m: D_s = 2 arm + margin between drone centres
    obstacle_margin: float = 0.05  # m: D_s = arm + margin from a column surface
    # 1/s, how fast the speed barrier of unseen columns may shrink (0: no such row). Tuned on o_random,
    # 8 drones, density 0.8, seed 0, 16 episodes: 2 -> success 0.46 (too slow: deadlocks), 10 -> 0.83
    # with no collision, 30 -> 0.85 with 10 % collisions; without the row 0.69 (31 % column hits).
    unseen_gamma: float = 10.0
    floor_gamma: float = 0.2  # the floor's barrier (quad-swarm-rl certifies the room's faces too)
    floor_margin: float = 0.3  # m above the floor the barrier keeps the drone's centre
    iterations: int = 50  # Dykstra sweeps at most (they stop early once converged)


def solve_qp(
    a_des: torch.Tensor,
    g: torch.Tensor,
    h: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    iterations: int,
    tol: float = 1e-6,
) -> torch.Tensor:
    """Batched projection QP: argmin_a ||a - a_des||^2 s.t. g a <= h and lo <= a <= hi.

    a_des [N, 3]; g [N, C, 3] constraint rows (an all-zero row with h >= 0 is inactive); h [N, C];
    lo, hi [3] bounds. Returns a [N, 3] after at most ``iterations`` Dykstra sweeps over the C
    half-spaces and the box (fewer once no component moves by more than ``tol``): always inside the
    box, inside every half-space up to the convergence tolerance when the QP is feasible.
    """
    # A row no acceleration in the box can meet (a drone already inside its safety distance) asks
    # for the most the box allows in its direction instead: alone it is then feasible, and Dykstra's
    # corrections do not grow without bound and drag the command to a corner of the box (a_z at
    # its floor sent jammed drones to the ground).
    reachable = torch.minimum(g * lo, g * hi).sum(-1)  # [N, C] the least g a over the box
    h = torch.maximum(h, reachable + 1e-6)
    x = torch.maximum(torch.minimum(a_des, hi), lo)
    # Where the box projection already meets every row it is the answer (the feasible set lies in
    # the box); most drones are far from everything, so only the rest are iterated.
    hard = ((g * x.unsqueeze(1)).sum(-1) > h).any(-1).nonzero().squeeze(-1)
    if hard.numel() > 0:
        x[hard] = _dykstra(a_des[hard], g[hard], h[hard], lo, hi, iterations, tol)
    return x


def _dykstra(
    a_des: torch.Tensor, g: torch.Tensor, h: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, iterations: int,
    tol: float,
) -> torch.Tensor:
    """Dykstra's alternating projections onto the half-spaces g[:, k] a <= h[:, k] and the box."""
    n, c = h.shape
    x = a_des.clone()
    corr = torch.zeros(n, c + 1, 3, dtype=a_des.dtype, device=a_des.device)
    inv_norm2 = 1.0 / (g * g).sum(-1).clamp_min(1e-12)  # [N, C]
    for sweep in range(iterations):
        start = x
        for k in range(c):
            y = x + corr[:, k]
            excess = ((g[:, k] * y).sum(-1) - h[:, k]).clamp_min(0.0)  # [N]
            x = y - (excess * inv_norm2[:, k]).unsqueeze(-1) * g[:, k]
            corr[:, k] = y - x
        y = x + corr[:, c]
        x = torch.maximum(torch.minimum(y, hi), lo)
        corr[:, c] = y - x
        if sweep % 8 == 7 and float((x - start).abs().max()) < tol:  # a host sync, so not every sweep
            break
    return x


class SBCController(PIDController):
    """The PID position/attitude cascade with its desired acceleration filtered by the SBC QP.

    Observations [E, M, D] -> actions [E, M, 4] in [-1, 1], like :class:`agents.pid.PIDController`
    (same ``reset``); ``cfg.avoid`` must be off: the QP is the avoidance.
    """

    def __init__(
        self,
        cfg: PIDConfig | None = None,
        sbc: SBCConfig | None = None,
        device: str | torch.device = "cpu",
        spec=None,
    ):
        """cfg: the PID's gains and vehicle; sbc: barrier and QP settings; spec: optional ObsSpec-like layout."""
        cfg = cfg or PIDConfig()
        if cfg.avoid:
            raise ValueError("SBCController filters the plain PID command: PIDConfig.avoid must be False")
        super().__init__(cfg, device=device, spec=spec)
        self.sbc = sbc or SBCConfig()
        self._obs: torch.Tensor | None = None
        self.lo = torch.tensor([-self.sbc.max_acc_xy, -self.sbc.max_acc_xy, -cfg.max_acc_down], device=self.device)
        self.hi = torch.tensor([self.sbc.max_acc_xy, self.sbc.max_acc_xy, cfg.max_acc_up], device=self.device)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Actions [E, M, 4] in [-1, 1] for observations [E, M, D]."""
        # The PID cascade calls _limit on its desired acceleration; the filter there needs the observation.
        self._obs = obs.to(self.device, torch.float32)
        try:
            return super().act(obs)
        finally:
            self._obs = None

    def _limit(self, acc: torch.Tensor) -> torch.Tensor:
        """The PID's limited desired acceleration [E, M, 3] (gravity excluded), filtered by the QP."""
        a_des = super()._limit(acc)
        if self._obs is None:  # called outside act(): nothing to filter against
            return a_des
        return self.filter(self._obs, a_des)

    def constraints(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Barrier rows for observations [E, M, D]: (G [E, M, R, 3], h [E, M, R]), G a <= h.

        Rows 0..K-1 are the observed neighbours, row K the nearest column, row K + 1 (with
        ``unseen_gamma`` > 0) the speed barrier that stands for the columns the SDF does not show.
        """
        c, s = self.cfg, self.sbc
        e, m, d = obs.shape
        k = self.spec.num_neighbors if self.spec is not None else (d - SELF_DIM - OBSTACLE_DIM) // NEIGHBOUR_DIM
        if SELF_DIM + k * NEIGHBOUR_DIM + OBSTACLE_DIM != d:
            raise ValueError(f"obs width {d} is not 19 + 6 K + 9 for K = {k}")
        vel = obs[..., 3:6]

        # Neighbours: dp = p_i - p_j, dv = v_i - v_j (the observation holds p_j - p_i, v_j - v_i).
        nbr = obs[..., SELF_DIM : SELF_DIM + k * NEIGHBOUR_DIM].reshape(e, m, k, NEIGHBOUR_DIM)
        dp, dv = -nbr[..., :3], -nbr[..., 3:]
        dist = dp.norm(dim=-1).clamp_min(1e-6)  # [E, M, K]
        room = (dist - (2.0 * c.arm + s.neighbour_margin)).clamp_min(1e-2)  # inside D_s: a steep push apart
        a_pair = 2.0 * s.brake_acc
        closing = (dp * dv).sum(-1)
        hb = (2.0 * a_pair * room).sqrt() + closing / dist
        b = (
            s.neighbour_gamma * hb.pow(3) * dist
            + a_pair**0.5 * closing / (2.0 * room).sqrt()
            + (dv * dv).sum(-1)
            - closing.square() / dist.square()
        )
        g_nbr, h_nbr = -dp, 0.5 * b

        # Nearest column: clearance and outward normal from the SDF (x offset varying slowest).
        sdf = obs[..., d - OBSTACLE_DIM :]
        n_xy = column_normal_xy(sdf)
        normal = torch.cat([n_xy, torch.zeros_like(n_xy[..., :1])], -1)  # [E, M, 3]
        room = (sdf[..., 4] - (c.arm + s.obstacle_margin)).clamp_min(1e-2)
        nv = (normal * vel).sum(-1)
        hb = (2.0 * s.brake_acc * room).sqrt() + nv
        h_obs = s.obstacle_gamma * hb.pow(3) + s.brake_acc**0.5 * nv / (2.0 * room).sqrt()
        # A flat SDF (no column in sight) gives a zero row: keep it inactive whatever the sign of h.
        flat = n_xy.abs().sum(-1) == 0
        h_obs = torch.where(flat, torch.ones_like(h_obs), h_obs)
        rows_g, rows_h = [g_nbr, (-normal).unsqueeze(2)], [h_nbr, h_obs.unsqueeze(2)]

        if s.unseen_gamma > 0:
            # The SDF shows the nearest column only, but its centre value bounds the clearance to every
            # column, and no clearance can shrink faster than the horizontal speed. So the barrier
            # h_u = sqrt(2 a (d - D_s)) - |v_xy| >= 0 (able to stop before any column, whichever way
            # it lies) is certified by dh_u/dt >= -unseen_gamma h_u with d' >= -|v_xy|, a row on the
            # acceleration along v_xy: v_xy / |v_xy| . a <= unseen_gamma h_u - sqrt(a / (2 (d - D_s))) |v_xy|.
            v_xy = torch.cat([vel[..., :2], torch.zeros_like(vel[..., 2:])], -1)
            speed = v_xy.norm(dim=-1)
            dir_v = v_xy / speed.clamp_min(1e-6).unsqueeze(-1)
            h_u = (2.0 * s.brake_acc * room).sqrt() - speed
            h_unseen = s.unseen_gamma * h_u - (s.brake_acc / (2.0 * room)).sqrt() * speed
            off = flat | (speed < 1e-3)  # no column in sight, or hovering: nothing to certify
            rows_g.append(torch.where(off.unsqueeze(-1), torch.zeros_like(dir_v), dir_v).unsqueeze(2))
            rows_h.append(torch.where(off, torch.ones_like(h_unseen), h_unseen).unsqueeze(2))
        # The floor, a plane at z = 0 (the observation's height entry): the column row with n = +z.
        # Without it a jammed pair's 3-D neighbour rows can push the lower drone into the floor.
        room_z = (obs[..., SELF_DIM - 1] - s.floor_margin).clamp_min(1e-2)
        vz = vel[..., 2]
        hb = (2.0 * s.brake_acc * room_z).sqrt() + vz
        h_floor = s.floor_gamma * hb.pow(3) + s.brake_acc**0.5 * vz / (2.0 * room_z).sqrt()
        down = torch.zeros_like(vel)
        down[..., 2] = -1.0
        rows_g.append(down.unsqueeze(2))
        rows_h.append(h_floor.unsqueeze(2))
        return torch.cat(rows_g, 2), torch.cat(rows_h, 2)

    def filter(self, obs: torch.Tensor, a_des: torch.Tensor) -> torch.Tensor:
        """The QP-filtered acceleration [E, M, 3] for a desired one a_des [E, M, 3] (gravity excluded)."""
        e, m, _ = a_des.shape
        g, h = self.constraints(obs)
        a = solve_qp(a_des.reshape(e * m, 3), g.reshape(e * m, -1, 3), h.reshape(e * m, -1), self.lo, self.hi,
                     self.sbc.iterations)
        return a.reshape(e, m, 3)
