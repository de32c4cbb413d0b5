"""Batched Crazyflie rigid-body dynamics on torch tensors (written by hand: no library steps a
batch of quadrotors on tensors).

One call of :meth:`Dynamics.step` is one 200 Hz physics step of every drone of every environment:
motor lag and thrust noise, rigid body (X layout, Euler's equation, exponential-map attitude,
semi-implicit Euler), contacts with the floor, walls and ceiling, optional downwash. Tensors use the
simulator's working layout, components first, then drones, then environments (vectors [3, M, E],
rotations [3, 3, M, E], motors [4, M, E]), so element-wise operations run over long contiguous rows.

Design note (why this layout, each part of the step): docs/design/simulator_core.md.
"""

from __future__ import annotations

import torch

from envs.config import DynamicsConfig

# Motor layout (X configuration, x forward, y left, z up: front-right, back-right, back-left,
# front-left) and propeller spin directions: the contract module's, shared with agents.pid.
from quadspec import PROP_CCW, PROP_SIGNS_XY

OU_THETA = 0.15  # Ornstein-Uhlenbeck mean reversion per step (quad-swarm-rl's OUNoise)
OU_SIGMA = 0.2  # its per-step standard deviation, scaled by DynamicsConfig.thrust_noise
FLOOR_SPIN_DAMPING = 0.9  # body rates kept per physics step while resting on the floor


def cross(a: torch.Tensor, b: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Cross product along ``dim`` (size 3); rolls keep the work in contiguous blocks."""
    return a.roll(-1, dim) * b.roll(-2, dim) - a.roll(-2, dim) * b.roll(-1, dim)


class Dynamics:
    """Constant tensors of the motor and body model, and the batched physics step."""

    def __init__(self, cfg: DynamicsConfig, room: tuple[float, float, float], device: torch.device):
        self.cfg = cfg
        self.dt = cfg.dt
        half = cfg.arm / 2**0.5  # motor offset along x and y
        xy = torch.tensor(PROP_SIGNS_XY, device=device) * half  # [4, 2]
        # torque = sum_i r_i x (0, 0, F_i) + yaw drag, i.e. tau = T @ F with T [3, 4]
        self.torque_map = torch.stack(
            [xy[:, 1], -xy[:, 0], -torch.tensor(PROP_CCW, device=device) * cfg.torque_to_thrust]
        )
        self.alpha_up = min(1.0, 4.0 * cfg.dt / cfg.motor_time_up)
        self.alpha_down = min(1.0, 4.0 * cfg.dt / cfg.motor_time_down)
        self.room_lo = torch.tensor([-room[0] / 2, -room[1] / 2, cfg.arm], device=device).view(3, 1, 1)
        self.room_hi = torch.tensor([room[0] / 2, room[1] / 2, room[2]], device=device).view(3, 1, 1)
        self.wall_axes = torch.tensor([True, True, False], device=device).view(3, 1, 1)

    def noisy_command(self, cmd: torch.Tensor, ou: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Advance the thrust-noise process ``ou`` [4, M, E] in place; return the perturbed command."""
        if self.cfg.thrust_noise <= 0:
            return cmd
        ou.mul_(1.0 - OU_THETA).add_(torch.randn(ou.shape, generator=gen, device=ou.device), alpha=OU_SIGMA)
        return (cmd * (1.0 + self.cfg.thrust_noise * ou)).clamp_(0.0, 1.0)

    def motor_thrust(self, motor: torch.Tensor, cmd: torch.Tensor, max_thrust: torch.Tensor) -> torch.Tensor:
        """Advance the motor lag state [4, M, E] in place towards sqrt(cmd); return the thrusts in newtons."""
        target = cmd.sqrt()
        if self.alpha_up == self.alpha_down:
            motor.add_(target - motor, alpha=self.alpha_up)
        else:
            motor.add_(torch.where(target >= motor, self.alpha_up, self.alpha_down) * (target - motor))
        return motor.square() * max_thrust

    def step(self, s, cmd: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance the live state ``s`` (pos, vel, rot, omega, motor; in place) by one physics step.

        cmd: [4, M, E] thrust fractions in [0, 1]. Returns (on_floor, wall_hit), bool [M, E].
        """
        cfg, dt = self.cfg, self.dt
        thrust = self.motor_thrust(s.motor, cmd, s.max_thrust)  # [4, M, E] newtons
        m, e = thrust.shape[1:]

        # Rotational dynamics in the body frame: I w' = tau - w x (I w).
        torque = (self.torque_map @ thrust.view(4, -1)).view(3, m, e)
        gyro = cross(s.omega, s.inertia * s.omega)
        s.omega.add_((torque - gyro) / s.inertia, alpha=dt).clamp_(-cfg.max_omega, cfg.max_omega)
        # R <- R exp([w dt]x); row i of R [w]x is r_i x w (Rodrigues: exp(K) = I + a K + b K^2).
        w = s.omega * dt
        theta2 = (w * w).sum(0)
        small = theta2 < 1e-8
        theta = torch.where(small, 1.0, theta2).sqrt()
        a = torch.where(small, 1.0 - theta2 / 6.0, theta.sin() / theta)
        b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - theta.cos()) / (theta * theta))
        wb = w.unsqueeze(0)  # broadcast over the rows of R
        rk = cross(s.rot, wb, dim=1)
        rkk = cross(rk, wb, dim=1)
        s.rot.add_(a * rk + b * rkk)

        # Translational dynamics in the world frame: body z axis is column 2 of R.
        acc = s.rot[:, 2] * (thrust.sum(0) / s.mass)
        acc[2] -= cfg.gravity
        if cfg.linear_drag > 0:
            acc.sub_(s.vel, alpha=cfg.linear_drag)
        if cfg.downwash:
            acc[2] -= downwash_acceleration(s.pos, cfg)
        s.vel.add_(acc, alpha=dt)
        s.pos.add_(s.vel, alpha=dt)
        return self._contacts(s, gen)

    def _contacts(self, s, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, dt = self.cfg, self.dt
        below = s.pos < self.room_lo
        above = s.pos > self.room_hi
        on_floor = below[2]
        wall = below[0] | below[1] | above.any(0)
        if not bool(on_floor.any() | wall.any()):
            return on_floor, wall
        s.pos.copy_(torch.maximum(torch.minimum(s.pos, self.room_hi), self.room_lo))
        # Floor: stop falling, Coulomb friction on the horizontal velocity, damp the spin.
        s.vel[2] = torch.where(on_floor, s.vel[2].clamp(min=0.0), s.vel[2])
        speed = (s.vel[0].square() + s.vel[1].square()).sqrt().clamp_min(1e-9)
        keep = (1.0 - cfg.floor_friction * cfg.gravity * dt / speed).clamp_min(0.0)
        s.vel[:2] = torch.where(on_floor, s.vel[:2] * keep, s.vel[:2])
        s.omega.copy_(torch.where(on_floor, s.omega * FLOOR_SPIN_DAMPING, s.omega))
        # Walls and ceiling: reverse the normal velocity with restitution, kick the spin.
        hit = ((below | above) & self.wall_axes) | (above & ~self.wall_axes)
        s.vel.copy_(torch.where(hit, -cfg.wall_restitution * s.vel, s.vel))
        if cfg.wall_spin > 0 and bool(wall.any()):  # floor contacts alone need no random kick
            kick = torch.randn(s.omega.shape, generator=gen, device=s.omega.device)
            s.omega.add_(kick * (cfg.wall_spin * wall))
        return on_floor, wall

    def on_reset(self, live, env_ids: torch.Tensor) -> None:
        """Nothing to do: the batched dynamics read the live state directly."""

    def contacts(self) -> None:
        """Collisions are detected from distances by the environment."""
        return None

    @staticmethod
    def orthonormalized(rot: torch.Tensor) -> torch.Tensor:
        """Rotation matrices [3, 3, M, E] re-orthonormalised (Gram-Schmidt on the columns)."""
        x = rot[:, 0] / rot[:, 0].norm(dim=0)
        y = rot[:, 1] - (rot[:, 1] * x).sum(0) * x
        y = y / y.norm(dim=0)
        return torch.stack([x, y, cross(x, y)], 1)


def downwash_acceleration(pos: torch.Tensor, cfg: DynamicsConfig) -> torch.Tensor:
    """Downward acceleration magnitude [M, E] on each drone from the drones above it."""
    rel = pos.unsqueeze(1) - pos.unsqueeze(2)  # [3, M(i), M(j), E]: p_j - p_i
    gap = rel[2]  # height of j above i
    horiz = (rel[0].square() + rel[1].square()).sqrt()
    inside = (gap > 0) & (gap < cfg.downwash_height) & (horiz < cfg.downwash_radius)
    return ((6.0 / 17.0) * (7.0 - 10.0 * gap).clamp_min(0.0) * inside).sum(1)
