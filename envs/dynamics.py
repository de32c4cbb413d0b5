"""Batched Crazyflie rigid-body dynamics on torch tensors (written by hand: no library steps a
batch of quadrotors on tensors).

All drones of all environments advance together; tensors are [E, M, ...] (envs, drones). One call
of :func:`physics_step` is one 200 Hz physics step:

* motors: commanded thrust fraction -> Ornstein-Uhlenbeck thrust noise -> first-order lag on
  sqrt(thrust) with coefficient min(1, 4 dt / T) (T the settling time, as in quad-swarm-rl);
* rigid body: body-frame torques from the X layout, Euler's equation, body-rate clip, attitude by the
  exponential map (Rodrigues) of omega * dt, semi-implicit Euler for velocity and position;
* contacts: floor at z = arm (vertical velocity stopped, Coulomb friction), room walls and ceiling
  (position clipped, velocity reversed with restitution, random spin kick);
* optional downwash of drones above (cylinder radius 0.1 m, height 0.7 m, acceleration
  (6/17)(7 - 10 d) with d the vertical gap in metres).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from envs.config import DynamicsConfig

# Motor layout (X configuration, x forward, y left, z up): front-right, back-right, back-left,
# front-left. PROP_CCW = +1 means the propeller turns counter-clockwise seen from above; the drag
# torque it puts on the body is then clockwise (-z): more thrust on the CCW pair yaws the body right.
PROP_SIGNS_XY = ((1.0, -1.0), (-1.0, -1.0), (-1.0, 1.0), (1.0, 1.0))
PROP_CCW = (-1.0, 1.0, -1.0, 1.0)

OU_THETA = 0.15  # Ornstein-Uhlenbeck mean reversion per physics step (quad-swarm-rl's OUNoise)
OU_SIGMA = 0.2  # its per-step standard deviation, scaled by DynamicsConfig.thrust_noise


@dataclass
class BodyParams:
    """Per-drone physical parameters, [E, M] (inertia [E, M, 3]); randomised at reset."""

    mass: torch.Tensor
    inertia: torch.Tensor
    max_thrust: torch.Tensor


class Dynamics:
    """Constant tensors of the motor and body model, and the batched physics step."""

    def __init__(self, cfg: DynamicsConfig, room: tuple[float, float, float], device: torch.device):
        self.cfg = cfg
        self.dt = cfg.dt
        half = cfg.arm / 2**0.5  # motor offset along x and y
        xy = torch.tensor(PROP_SIGNS_XY, device=device) * half  # [4, 2]
        # torque = sum_i r_i x (0, 0, F_i) + yaw drag: tau = T @ F with T [3, 4]
        self.torque_map = torch.stack(
            [xy[:, 1], -xy[:, 0], -torch.tensor(PROP_CCW, device=device) * cfg.torque_to_thrust]
        )
        self.alpha_up = min(1.0, 4.0 * cfg.dt / cfg.motor_time_up)
        self.alpha_down = min(1.0, 4.0 * cfg.dt / cfg.motor_time_down)
        self.room_lo = torch.tensor([-room[0] / 2, -room[1] / 2, cfg.arm], device=device)
        self.room_hi = torch.tensor([room[0] / 2, room[1] / 2, room[2]], device=device)
        self.eye = torch.eye(3, device=device)

    def step(
        self,
        s,
        cmd: torch.Tensor,
        body: BodyParams,
        gen: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance state ``s`` (pos, vel, rot, omega, motor, ou; modified in place) by one physics step.

        cmd: [E, M, 4] thrust fractions in [0, 1]. Returns (on_floor, wall_hit), bool [E, M].
        """
        cfg, dt = self.cfg, self.dt
        if cfg.thrust_noise > 0:
            noise = torch.randn(s.ou.shape, generator=gen, device=s.ou.device)
            s.ou.mul_(1.0 - OU_THETA).add_(noise, alpha=OU_SIGMA)
            cmd = (cmd * (1.0 + cfg.thrust_noise * s.ou)).clamp_(0.0, 1.0)
        target = cmd.sqrt()
        alpha = torch.where(target >= s.motor, self.alpha_up, self.alpha_down)
        s.motor.add_(alpha * (target - s.motor))
        thrust = s.motor.square() * body.max_thrust.unsqueeze(-1)  # [E, M, 4] newtons

        # Rotational dynamics in the body frame: I w' = tau - w x (I w).
        torque = thrust @ self.torque_map.T  # [E, M, 3]
        iw = body.inertia * s.omega
        s.omega.add_((torque - torch.linalg.cross(s.omega, iw)) / body.inertia, alpha=dt)
        s.omega.clamp_(-cfg.max_omega, cfg.max_omega)
        s.rot.copy_(s.rot @ rodrigues(s.omega * dt, self.eye))

        # Translational dynamics in the world frame.
        acc = s.rot[..., 2] * (thrust.sum(-1) / body.mass).unsqueeze(-1)
        acc[..., 2] -= cfg.gravity
        if cfg.linear_drag > 0:
            acc.sub_(s.vel, alpha=cfg.linear_drag)
        if cfg.downwash:
            acc.add_(downwash_acceleration(s.pos, cfg))
        s.vel.add_(acc, alpha=dt)
        s.pos.add_(s.vel, alpha=dt)
        return self._contacts(s, gen)

    def _contacts(self, s, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, dt = self.cfg, self.dt
        below = s.pos < self.room_lo
        above = s.pos > self.room_hi
        on_floor = below[..., 2]
        wall = below[..., :2].any(-1) | above.any(-1)
        if bool((below | above).any()):
            s.pos.copy_(torch.maximum(torch.minimum(s.pos, self.room_hi), self.room_lo))
            # Floor: stop falling, Coulomb friction on the horizontal velocity, damp the spin.
            floor = on_floor.unsqueeze(-1)
            vz = s.vel[..., 2].clamp(min=0.0)
            s.vel[..., 2] = torch.where(on_floor, vz, s.vel[..., 2])
            vxy = s.vel[..., :2]
            speed = vxy.norm(dim=-1, keepdim=True).clamp_min(1e-9)
            scale = (1.0 - cfg.floor_friction * cfg.gravity * dt / speed).clamp_min(0.0)
            s.vel[..., :2] = torch.where(floor, vxy * scale, vxy)
            s.omega.copy_(torch.where(floor, s.omega * 0.9, s.omega))
            # Walls and ceiling: reverse the normal velocity with restitution, kick the spin.
            hit = (below | above) & torch.tensor([True, True, False], device=s.pos.device)
            hit[..., 2] |= above[..., 2]
            s.vel.copy_(torch.where(hit, -cfg.wall_restitution * s.vel, s.vel))
            if cfg.wall_spin > 0:
                kick = torch.randn(s.omega.shape, generator=gen, device=s.omega.device) * cfg.wall_spin
                s.omega.add_(kick * wall.unsqueeze(-1))
        return on_floor, wall

    def orthonormalize(self, rot: torch.Tensor) -> None:
        """Re-orthonormalise rotation matrices in place (Gram-Schmidt on the columns)."""
        x = rot[..., 0]
        x = x / x.norm(dim=-1, keepdim=True)
        y = rot[..., 1] - (rot[..., 1] * x).sum(-1, keepdim=True) * x
        y = y / y.norm(dim=-1, keepdim=True)
        z = torch.linalg.cross(x, y)
        rot.copy_(torch.stack([x, y, z], dim=-1))


def skew(v: torch.Tensor) -> torch.Tensor:
    """Skew-symmetric matrices [..., 3, 3] of vectors [..., 3]."""
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v.unbind(-1)
    return torch.stack(
        [torch.stack([zero, -z, y], -1), torch.stack([z, zero, -x], -1), torch.stack([-y, x, zero], -1)], -2
    )


def rodrigues(w: torch.Tensor, eye: torch.Tensor) -> torch.Tensor:
    """exp(skew(w)) for rotation vectors w [..., 3] (Rodrigues' formula, series near zero)."""
    theta2 = (w * w).sum(-1, keepdim=True).unsqueeze(-1)  # [..., 1, 1]
    theta = theta2.sqrt()
    small = theta2 < 1e-8
    safe = torch.where(small, torch.ones_like(theta), theta)
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(safe) / safe)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(safe)) / (safe * safe))
    k = skew(w)
    return eye + a * k + b * (k @ k)


def downwash_acceleration(pos: torch.Tensor, cfg: DynamicsConfig) -> torch.Tensor:
    """Downward acceleration [E, M, 3] on each drone from the drones above it."""
    rel = pos.unsqueeze(-3) - pos.unsqueeze(-2)  # [E, M(i), M(j), 3]: p_j - p_i
    gap = rel[..., 2]  # height of j above i
    horiz = rel[..., :2].norm(dim=-1)
    inside = (gap > 0) & (gap < cfg.downwash_height) & (horiz < cfg.downwash_radius)
    mag = (6.0 / 17.0) * (7.0 - 10.0 * gap).clamp_min(0.0) * inside
    acc = torch.zeros_like(pos)
    acc[..., 2] = -mag.sum(-1)
    return acc
