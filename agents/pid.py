"""Batched cascaded PID controller for the quadrotor swarm (the built-in ``pid`` baseline).

In the spirit of gym-pybullet-drones' ``DSLPIDControl``, batched over [E, M] on torch and written
against the observation alone, so it plugs in wherever a learned policy does: position PID ->
desired thrust vector -> desired attitude -> attitude error on SO(3) (Lee, Leok, McClamroch 2010) ->
body torques -> X-layout motor mixing -> action a = 2 f - 1. Tracking needs only the self part of the
observation; the optional potential-field avoidance (``PIDConfig.avoid``) also reads the neighbour
and SDF parts.

Design note (the cascade, the observation it reads): docs/design/pid.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# The observation layout, the motor layout (X configuration, front-right, back-right, back-left,
# front-left; PROP_CCW = +1 turns counter-clockwise seen from above, its drag torque on the body is -z)
# and the Crazyflie's constants come from the contract module that the simulator uses too.
from quadspec import CONTROL_DT, CRAZYFLIE, NEIGHBOUR_DIM, OBSTACLE_DIM, PROP_CCW, PROP_SIGNS_XY, SELF_DIM


def column_normal_xy(sdf: torch.Tensor) -> torch.Tensor:
    """Unit xy normal [..., 2] away from the nearest column, from the observed 3 x 3 SDF patch [..., 9] (index
    (i + 1) * 3 + (j + 1), x offset slowest): its central-difference gradient; zero where the SDF is flat."""
    grad = torch.stack([sdf[..., 7] - sdf[..., 1], sdf[..., 5] - sdf[..., 3]], -1)
    return grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-9)


@dataclass
class PIDConfig:
    """Gains, limits and vehicle constants of :class:`PIDController`.

    Vehicle constants default to the Crazyflie (``quadspec.CRAZYFLIE``, as ``envs.config.DynamicsConfig``); use
    :meth:`from_dynamics` to copy them from a (possibly different) dynamics config.
    Position gains are in acceleration units (m/s^2 per m, per m/s, per m s); attitude gains are
    angular accelerations (rad/s^2 per rad, per rad/s), multiplied by the inertia to give torques.
    """

    # Vehicle (nominal; per-drone randomisation is absorbed by the integral term).
    mass: float = CRAZYFLIE.mass
    arm: float = CRAZYFLIE.arm
    inertia: tuple[float, float, float] = CRAZYFLIE.inertia
    thrust_to_weight: float = CRAZYFLIE.thrust_to_weight
    torque_to_thrust: float = CRAZYFLIE.torque_to_thrust
    gravity: float = CRAZYFLIE.gravity
    control_dt: float = CONTROL_DT
    # Position loop.
    kp_xy: float = 4.0
    kd_xy: float = 3.2
    ki_xy: float = 0.4
    kp_z: float = 8.0
    kd_z: float = 5.0
    ki_z: float = 3.0
    max_pos_error: float = 1.6  # m; clipping the error caps the cruise speed near kp / kd * this
    integral_zone: float = 0.5  # m; integrate only this close to the goal, so a long transit winds nothing up
    integral_limit: float = 1.0  # m s; anti-windup clamp on the integrated position error
    max_tilt_deg: float = 35.0
    max_acc_up: float = 6.0  # m/s^2 above gravity compensation (the motors give at most 0.9 g)
    max_acc_down: float = 5.0  # m/s^2 below it (keeps some thrust, hence attitude authority)
    min_thrust_frac: float = 0.3  # collective floor, fraction of the weight
    # Attitude loop (the motor lag is 0.15 s settling, i.e. tau = 37.5 ms: keep this loop well below).
    kr_rp: float = 800.0
    kw_rp: float = 50.0
    kr_yaw: float = 60.0
    kw_yaw: float = 12.0
    max_yaw_torque_frac: float = 0.3  # of the yaw authority; roll/pitch come first
    # Optional avoidance (reads the neighbour and SDF parts of the observation), see avoid_velocity.
    avoid: bool = False
    sdf_resolution: float = 0.1  # m, spacing of the simulator's 3 x 3 SDF grid
    obstacle_range: float = 0.8  # m of body clearance to a column where the filter starts acting
    obstacle_safe: float = 0.1  # m of clearance where the approach is fully blocked
    neighbour_range: float = 0.5  # m of body gap (centre distance - 2 arm) where it starts for drones
    neighbour_safe: float = 0.05
    push_gain: float = 2.0  # 1/s: outward speed per metre inside the safe distance
    max_brake: float = 8.0  # m/s^2, cap of the braking term v_n^2 / (2 (clearance - safe))
    # Tuned on seed 500 (docs/training.md): 0.3 timed out in dense fields (success 0.906 at density 0.8,
    # every failure a drone still on its way), 0.8 reached every goal, 1.2 hit columns.
    slow_speed: float = 0.8  # m/s, speed limit at the safe clearance to a column ...
    slow_gain: float = 3.0  # 1/s ... rising this much per metre of extra clearance
    # Cruise near hazards (0: off). The position error is clipped at caution_pos_error instead of max_pos_error
    # where a column or neighbour is within its avoidance range, blended by caution_ramp x the hazard proximity
    # (hazard_proximity; 3: fully at a third of the way in), so the drone cruises fast in the open and slowly
    # only where it has something to avoid. Off by default; a slower teacher for imitation (docs/training.md).
    caution_pos_error: float = 0.0  # m
    caution_ramp: float = 3.0
    # Braking room inside the safe clearance (0: off). The braking term v_n^2 / (2 room) takes room = clearance
    # - safe, which vanishes inside the safe clearance: there any closing speed brakes at max_brake, so between
    # two columns whose gap is under twice the safe clearance (0.8 m columns stand 0.2 m apart) the drone
    # chatters from side to side, crawls and times out. With brake_room_floor f the room is at least f times
    # the clearance to contact. Off by default; a teacher for dense columns (docs/training.md).
    brake_room_floor: float = 0.0

    @classmethod
    def from_dynamics(cls, dyn, **overrides) -> PIDConfig:
        """Copy the vehicle constants from a DynamicsConfig-like object (duck-typed), then apply overrides."""
        vehicle = dict(
            mass=dyn.mass,
            arm=dyn.arm,
            inertia=tuple(dyn.inertia),
            thrust_to_weight=dyn.thrust_to_weight,
            torque_to_thrust=dyn.torque_to_thrust,
            gravity=dyn.gravity,
            control_dt=dyn.control_dt,
        )
        vehicle.update(overrides)
        return cls(**vehicle)

    @property
    def max_thrust(self) -> float:
        """Maximum thrust of one motor, N."""
        return self.thrust_to_weight * self.mass * self.gravity / 4.0


class PIDController:
    """Cascaded position/attitude controller over observations [E, M, D] -> actions [E, M, 4] in [-1, 1].

    Holds the integral of the position error per env and drone; call :meth:`reset` with the ids of
    environments that restart (``info["episode_env_ids"]`` of the vector env) so no windup carries over.
    """

    def __init__(self, cfg: PIDConfig | None = None, device: str | torch.device = "cpu", spec=None):
        """cfg: gains and vehicle (defaults: Crazyflie); spec: optional ObsSpec-like layout (self_dim,
        num_neighbors, neighbour_dim, obstacle_dim) to check observations against; without it the
        number of neighbours K is inferred from the observation width 19 + 6 K + 9."""
        self.cfg = cfg or PIDConfig()
        self.device = torch.device(device)
        if spec is not None:
            layout = (spec.self_dim, spec.neighbour_dim, spec.obstacle_dim)
            if layout != (SELF_DIM, NEIGHBOUR_DIM, OBSTACLE_DIM):
                raise ValueError(f"PIDController reads the layout (19, 6 per neighbour, 9), got {layout}")
        self.spec = spec
        c = self.cfg
        half = c.arm / math.sqrt(2.0)
        xy = torch.tensor(PROP_SIGNS_XY, dtype=torch.float64) * half  # [4, 2]
        ccw = torch.tensor(PROP_CCW, dtype=torch.float64)
        # [sum F; tau_x; tau_y; tau_z] = A @ F (the simulator's torque map plus the collective row).
        a = torch.stack([torch.ones(4, dtype=torch.float64), xy[:, 1], -xy[:, 0], -ccw * c.torque_to_thrust])
        self.mix = torch.linalg.inv(a).to(torch.float32).to(self.device)  # [4, 4]: F = mix @ [T, tau]
        self.inertia = torch.tensor(c.inertia, dtype=torch.float32, device=self.device)
        self.kr = torch.tensor([c.kr_rp, c.kr_rp, c.kr_yaw], device=self.device)
        self.kw = torch.tensor([c.kw_rp, c.kw_rp, c.kw_yaw], device=self.device)
        self.kp = torch.tensor([c.kp_xy, c.kp_xy, c.kp_z], device=self.device)
        self.kd = torch.tensor([c.kd_xy, c.kd_xy, c.kd_z], device=self.device)
        self.ki = torch.tensor([c.ki_xy, c.ki_xy, c.ki_z], device=self.device)
        # Largest yaw torque that the mixer may ask for: a fraction of the full differential authority.
        self.max_yaw_torque = c.max_yaw_torque_frac * 2.0 * c.torque_to_thrust * c.max_thrust
        self.integral: torch.Tensor | None = None  # [E, M, 3], allocated on the first call

    # ------------------------------------------------------------------ state
    def reset(self, env_ids: torch.Tensor | list[int] | None = None) -> None:
        """Zero the integral state of the given environments (all when ``env_ids`` is None)."""
        if self.integral is None:
            return
        if env_ids is None:
            self.integral.zero_()
        else:
            self.integral[torch.as_tensor(env_ids, device=self.device, dtype=torch.long)] = 0.0

    # ------------------------------------------------------------------ control
    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        """Actions [E, M, 4] in [-1, 1] for observations [E, M, D]; advances the integral by one step."""
        return self.act(obs)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Actions [E, M, 4] in [-1, 1] for observations [E, M, D]; advances the integral by one step."""
        if obs.dim() != 3 or obs.shape[-1] < SELF_DIM + OBSTACLE_DIM:
            raise ValueError(f"obs must be [E, M, D] with D >= {SELF_DIM + OBSTACLE_DIM}, got {list(obs.shape)}")
        c = self.cfg
        obs = obs.to(self.device, torch.float32)
        e, m, _ = obs.shape
        err = obs[..., 0:3]  # p - g
        vel = obs[..., 3:6]
        rot = obs[..., 6:15].reshape(e, m, 3, 3)  # body-to-world
        omega = obs[..., 15:18]  # body rates

        # Position PID -> desired acceleration (world frame).
        norm = err.norm(dim=-1, keepdim=True)
        clip = self.position_error_clip(obs)
        err_c = err * (clip / norm.clamp_min(clip))  # caps the approach speed
        if self.integral is None or self.integral.shape[:2] != (e, m):
            self.integral = torch.zeros(e, m, 3, device=self.device)
        near = (norm < c.integral_zone).float()  # [E, M, 1]
        self.integral = (self.integral + near * err * c.control_dt).clamp(-c.integral_limit, c.integral_limit)
        v_des = self.velocity_setpoint(obs, err_c)
        brake = 0.0
        if c.avoid:
            v_des, brake = self.avoid_velocity(obs, v_des)
        acc = self.kd * (v_des - vel) - self.ki * self.integral + brake  # [E, M, 3]
        acc = self._limit(acc)
        acc[..., 2] += c.gravity
        force = c.mass * acc  # desired thrust vector, N

        # Desired attitude: body z along the thrust vector, yaw 0 (x_b in the world x-z plane).
        zb = force / force.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        xc = torch.zeros_like(zb)
        xc[..., 0] = 1.0
        yb = torch.linalg.cross(zb, xc)
        yb = yb / yb.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        xb = torch.linalg.cross(yb, zb)
        rot_des = torch.stack([xb, yb, zb], dim=-1)  # columns are the desired body axes

        # Collective thrust: the part of the desired force along the current body z.
        # Floored at a fraction of hover so that a strongly tilted drone keeps some lift while it rights itself.
        thrust = (force * rot[..., :, 2]).sum(-1).clamp_min(c.min_thrust_frac * c.mass * c.gravity)  # [E, M]

        # Attitude error on SO(3) and PD torques (omega_des = 0: the position loop is slow).
        e_mat = rot_des.transpose(-1, -2) @ rot - rot.transpose(-1, -2) @ rot_des
        e_rot = 0.5 * torch.stack([e_mat[..., 2, 1], e_mat[..., 0, 2], e_mat[..., 1, 0]], -1)
        jw = self.inertia * omega
        torque = self.inertia * (-self.kr * e_rot - self.kw * omega) + torch.linalg.cross(omega, jw)
        torque[..., 2] = torque[..., 2].clamp(-self.max_yaw_torque, self.max_yaw_torque)
        return self._mix(thrust, torque)

    def position_error_clip(self, obs: torch.Tensor) -> torch.Tensor | float:
        """The clip of the position error (m), which caps the cruise speed near kp / kd times it: max_pos_error,
        or [E, M, 1] blended towards caution_pos_error near hazards when avoidance and caution are on."""
        c = self.cfg
        if not (c.avoid and c.caution_pos_error > 0.0):
            return c.max_pos_error
        f = (c.caution_ramp * self.hazard_proximity(obs)).clamp(max=1.0).unsqueeze(-1)
        return c.max_pos_error + (c.caution_pos_error - c.max_pos_error) * f

    def velocity_setpoint(self, obs: torch.Tensor, err_c: torch.Tensor) -> torch.Tensor:
        """The PD written as a velocity set-point [E, M, 3] from the capped position error err_c = p - g:
        v_des = -kp / kd err_c, identical to -kp e - kd v, and a velocity for the avoidance filter to bend
        (agents.planner turns it along a planned path)."""
        return -(self.kp / self.kd) * err_c

    def _limit(self, acc: torch.Tensor) -> torch.Tensor:
        """Clip the vertical command, then the horizontal one to the tilt limit (vertical first: keeps height)."""
        c = self.cfg
        az = acc[..., 2].clamp(-c.max_acc_down, c.max_acc_up)
        max_xy = math.tan(math.radians(c.max_tilt_deg)) * (c.gravity + az)  # [E, M]
        axy = acc[..., :2]
        scale = (max_xy / axy.norm(dim=-1).clamp_min(1e-6)).clamp_max(1.0)
        return torch.cat([axy * scale.unsqueeze(-1), az.unsqueeze(-1)], -1)

    def _mix(self, thrust: torch.Tensor, torque: torch.Tensor) -> torch.Tensor:
        """Motor fractions from collective thrust [E, M] and body torques [E, M, 3], attitude first.

        The torque part of the mix sums to zero over the motors. It is scaled down only if its spread
        exceeds the full [0, 1] range; then the collective is shifted just enough that every motor fits
        ("air mode"). Saturation thus costs thrust, never attitude authority: a plain clip at zero
        collective leaves no torque to right a tumbling drone.
        """
        fmax = self.cfg.max_thrust
        base = (thrust / (4.0 * fmax)).unsqueeze(-1)  # [E, M, 1]
        diff = (torque @ self.mix[:, 1:].T) / fmax  # [E, M, 4]
        lo, hi = diff.amin(-1, keepdim=True), diff.amax(-1, keepdim=True)
        scale = (1.0 / (hi - lo).clamp_min(1e-9)).clamp_max(1.0)
        lo, hi = lo * scale, hi * scale
        base = torch.minimum(torch.maximum(base, -lo), 1.0 - hi)
        frac = (base + scale * diff).clamp(0.0, 1.0)  # the clamp only trims rounding
        return 2.0 * frac - 1.0

    # ------------------------------------------------------------------ optional avoidance
    def avoid_velocity(self, obs: torch.Tensor, v_des: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bend the velocity set-point v_des [E, M, 3] around columns (SDF part) and neighbours.

        Returns (v_des [E, M, 3], braking acceleration [E, M, 3]).

        A potential field in velocity form: for each hazard with unit normal n (pointing away from it)
        and proximity weight w in [0, 1] (0 at ``*_range`` clearance, 1 at ``*_safe``), the inward
        component v_n = v . n < 0 is removed in proportion w and its magnitude redirected along the
        tangent, so a drone slides around a column or another drone instead of stopping in front of it
        (the stall point of a plain repulsive field); inside the safe distance an outward speed is added.
        Near columns the set-point speed is also capped, rising linearly with the clearance.
        Because the velocity loop is soft (time constant 1 / kd), an explicit braking acceleration
        v_n^2 / (2 (clearance - safe)) along n is added while the actual velocity closes in, so that
        the drone can stop within the clearance it has.
        Columns: n is the SDF gradient by central differences on the 3 x 3 grid (x offset varying
        slowest), the clearance the centre value minus the arm. Neighbours: n = -(p_j - p_i) / |.|;
        the tangent is v_des's own perpendicular part, or n turned +90 degrees about z when v_des points
        straight at the neighbour (two drones meeting head-on then both keep right).
        Not a planner: it can still get stuck in dense clutter or a dead end.
        """
        c = self.cfg
        e, m, d = obs.shape
        k = self.spec.num_neighbors if self.spec is not None else (d - SELF_DIM - OBSTACLE_DIM) // NEIGHBOUR_DIM
        if SELF_DIM + k * NEIGHBOUR_DIM + OBSTACLE_DIM != d:
            raise ValueError(f"obs width {d} is not 19 + 6 K + 9 for K = {k}")

        sdf = obs[..., d - OBSTACLE_DIM :]  # [E, M, 9]; index (i + 1) * 3 + (j + 1)
        n_xy = column_normal_xy(sdf)
        normal = torch.cat([n_xy, torch.zeros_like(n_xy[..., :1])], -1)
        clear = sdf[..., 4] - c.arm
        v_des = self._deflect(v_des, normal, clear, c.obstacle_range, c.obstacle_safe, perp_from_v=False)
        brake = self._brake(-obs[..., 3:6], normal, clear, c.obstacle_range, c.obstacle_safe)
        # The SDF shows only the nearest column: slow down near any, so that the next one, seen only
        # when it becomes the nearest, can still be braked for.
        limit = (c.slow_speed + c.slow_gain * (clear - c.obstacle_safe).clamp_min(0.0)).unsqueeze(-1)
        speed = v_des.norm(dim=-1, keepdim=True)
        v_des = v_des * (limit / speed.clamp_min(1e-6)).clamp_max(1.0)

        nbr = obs[..., SELF_DIM : SELF_DIM + k * NEIGHBOUR_DIM].reshape(e, m, k, NEIGHBOUR_DIM)
        dist = nbr[..., :3].norm(dim=-1)  # [E, M, K]
        for j in range(k):
            normal = -nbr[..., j, :3] / dist[..., j : j + 1].clamp_min(1e-6)
            gap = dist[..., j] - 2.0 * c.arm
            v_des = self._deflect(v_des, normal, gap, c.neighbour_range, c.neighbour_safe, perp_from_v=True)
            # Both drones brake, so each takes half of the closing speed's deceleration.
            brake = brake + 0.5 * self._brake(nbr[..., j, 3:], normal, gap, c.neighbour_range, c.neighbour_safe)
        return v_des, brake

    @torch.no_grad()
    def hazard_proximity(self, obs: torch.Tensor) -> torch.Tensor:
        """How close each drone is to its nearest hazard, [E, M] in [0, 1]: the largest of the avoidance
        filter's proximity weights (0 beyond ``*_range`` clearance, 1 at ``*_safe``) over the column of
        the SDF part and the neighbours. Imitation weights its samples by it (``pretrain.hazard_weight``)."""
        c = self.cfg
        d = obs.shape[-1]
        prox = self._proximity(obs[..., d - OBSTACLE_DIM + 4] - c.arm, c.obstacle_range, c.obstacle_safe)
        return torch.maximum(prox, self.neighbour_proximity(obs))

    def neighbour_proximity(self, obs: torch.Tensor) -> torch.Tensor:
        """The neighbours' part of :meth:`hazard_proximity`, [E, M] in [0, 1] (0 without neighbours). DAgger's
        near-miss rounds keep the states where it is high (``pretrain.focus``)."""
        c = self.cfg
        gap = neighbour_gaps(obs, c.arm)
        if not gap.shape[-1]:
            return obs.new_zeros(gap.shape[:2])
        return self._proximity(gap, c.neighbour_range, c.neighbour_safe).amax(-1)

    @staticmethod
    def _proximity(clear: torch.Tensor, rng: float, safe: float) -> torch.Tensor:
        return ((rng - clear) / (rng - safe)).clamp(0.0, 1.0)

    def _brake(self, v_hazard: torch.Tensor, n: torch.Tensor, clear: torch.Tensor, rng: float, safe: float):
        """Braking acceleration [E, M, 3] along n; v_hazard [E, M, 3] is the hazard's velocity relative to us."""
        closing = (v_hazard * n).sum(-1).clamp_min(0.0)  # hazard moving towards us along -n, i.e. we close in
        room = torch.maximum(clear - safe, self.cfg.brake_room_floor * clear).clamp_min(0.01)
        acc = (closing.square() / (2.0 * room)).clamp_max(self.cfg.max_brake) * (clear < rng)
        return acc.unsqueeze(-1) * n

    def _deflect(
        self, v: torch.Tensor, n: torch.Tensor, clear: torch.Tensor, rng: float, safe: float, perp_from_v: bool
    ) -> torch.Tensor:
        """One hazard of :meth:`avoid_velocity`: v, n [E, M, 3], clear [E, M] -> deflected v [E, M, 3]."""
        w = ((rng - clear) / (rng - safe)).clamp(0.0, 1.0).unsqueeze(-1)  # [E, M, 1]
        vn = (v * n).sum(-1, keepdim=True)
        inward = vn.clamp_max(0.0)  # only motion towards the hazard is filtered
        turn = torch.stack([-n[..., 1], n[..., 0], torch.zeros_like(n[..., 0])], -1)  # n rotated +90 deg about z
        if perp_from_v:
            perp = v - vn * n
            pn = perp.norm(dim=-1, keepdim=True)
            tangent = torch.where(pn > 0.05, perp / pn.clamp_min(1e-9), turn)
        else:
            # Go round on the side that v already leans to; dead straight on, always to the right
            # (n points back at the drone, so n turned +90 degrees is its right-hand side).
            side = torch.where((v * turn).sum(-1, keepdim=True) < 0, -1.0, 1.0)
            tangent = side * turn
        push = self.cfg.push_gain * (safe - clear).clamp_min(0.0).unsqueeze(-1)
        return v - w * inward * n + w * (-inward) * tangent + push * n


def neighbour_gaps(obs: torch.Tensor, arm: float) -> torch.Tensor:
    """Body gaps [E, M, K] (centre distance minus two arms) to the K observed neighbours of obs [E, M, 19 + 6 K + 9]."""
    e, m, d = obs.shape
    k = (d - SELF_DIM - OBSTACLE_DIM) // NEIGHBOUR_DIM
    if SELF_DIM + k * NEIGHBOUR_DIM + OBSTACLE_DIM != d:
        raise ValueError(f"obs width {d} is not 19 + 6 K + 9 for K = {k}")
    rel = obs[..., SELF_DIM : SELF_DIM + k * NEIGHBOUR_DIM].reshape(e, m, k, NEIGHBOUR_DIM)[..., :3]
    return rel.norm(dim=-1) - 2.0 * arm
