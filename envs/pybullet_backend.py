"""PyBullet evaluation backend: the same swarm task stepped by an independent rigid-body engine.

``PyBulletPhysics`` implements :class:`envs.swarm.Physics`, so ``QuadSwarmVecEnv(cfg, physics=...)``
keeps doing scenarios, maps, observations, rewards and metrics while PyBullet moves the vehicles:

    env = QuadSwarmVecEnv(cfg, num_envs=1, physics=PyBulletPhysics(cfg))   # or make_pybullet_vec_env

One headless client per environment; rigid bodies from primitive shapes with the live state's mass
and inertia; motor thrusts as link-frame forces at the rotors. The motor model is this module's own
code (constants from ``Dynamics``), so the sim-to-sim tests compare two implementations. Modelling
choices, measured agreement and throughput: docs/design/pybullet.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pybullet as p
import torch

from envs.config import SwarmConfig
from envs.dynamics import FLOOR_SPIN_DAMPING, PROP_SIGNS_XY, Dynamics, downwash_acceleration
from envs.maps import FAR
from envs.state import SimState

CONTACT_TOLERANCE = 1.0e-3  # m: a PyBullet contact point counts as a collision up to this separation
DRONE_FRICTION = 1.0  # Bullet multiplies coefficients: drone-floor friction = floor_friction
DRONE_RESTITUTION = 1.0  # drone-drone elastic; drone-column = wall_restitution; drone-floor = 0
# Rolling and spinning friction of the floor (a torque limit in metres x normal force): large enough
# that a drone sphere slides on the floor (Coulomb friction stops it, as in the batched sim)
# instead of rolling away.
FLOOR_ROLLING_FRICTION = 1.0

# Roles of PyBullet body ids in one world.
_FLOOR, _DRONE, _COLUMN = 0, 1, 2


@dataclass
class _World:
    """One environment's PyBullet client and the ids of its bodies."""

    client: int
    drones: list[int] = field(default_factory=list)
    role: dict[int, tuple[int, int]] = field(default_factory=dict)  # body id -> (kind, index)


def rot_to_quat(rot: np.ndarray) -> np.ndarray:
    """Quaternions [..., 4] in PyBullet's (x, y, z, w) order from rotation matrices [..., 3, 3]."""
    r = np.asarray(rot, dtype=np.float64)
    m00, m11, m22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
    # Shepperd's method: pick the largest of w, x, y, z to divide by.
    cands = np.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    best = cands.argmax(-1)
    s = np.sqrt(np.maximum(cands.max(-1), 1e-12)) * 2.0  # 4 * |largest component|
    w = np.where(best == 0, s / 4, 0.0)
    x = np.where(best == 1, s / 4, 0.0)
    y = np.where(best == 2, s / 4, 0.0)
    z = np.where(best == 3, s / 4, 0.0)
    d_zy, d_xz, d_yx = r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]
    s_xy, s_xz, s_yz = r[..., 0, 1] + r[..., 1, 0], r[..., 0, 2] + r[..., 2, 0], r[..., 1, 2] + r[..., 2, 1]
    x = np.select([best == 0, best == 2, best == 3], [d_zy / s, s_xy / s, s_xz / s], x)
    y = np.select([best == 0, best == 1, best == 3], [d_xz / s, s_xy / s, s_yz / s], y)
    z = np.select([best == 0, best == 1, best == 2], [d_yx / s, s_xz / s, s_yz / s], z)
    w = np.select([best == 1, best == 2, best == 3], [d_zy / s, d_xz / s, d_yx / s], w)
    q = np.stack([x, y, z, w], -1)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


class PyBulletPhysics:
    """PyBullet engine for ``QuadSwarmVecEnv(cfg, physics=PyBulletPhysics(cfg))`` (see the module docstring).

    Worlds are created lazily by ``on_reset``, one ``p.DIRECT`` client per environment index; call
    :meth:`close` (or let the object be collected) to disconnect them.
    """

    def __init__(self, cfg: SwarmConfig):
        self.cfg = cfg
        self.dcfg = cfg.dynamics
        self.dyn = Dynamics(cfg.dynamics, cfg.room, torch.device("cpu"))  # constants only: lag rates, torque map
        half = cfg.dynamics.arm / math.sqrt(2.0)
        self.motor_pos = [(sx * half, sy * half, 0.0) for sx, sy in PROP_SIGNS_XY]
        self.room = cfg.room
        self._worlds: dict[int, _World] = {}
        self._nbr_hits: np.ndarray | None = None  # [E, M, M] bool, OR-ed since the last contacts()
        self._col_hits: np.ndarray | None = None  # [E, M] bool
        self._device = torch.device("cpu")

    # ------------------------------------------------------------------ Physics protocol
    def _motor_thrust(self, motor: torch.Tensor, cmd: torch.Tensor, max_thrust: torch.Tensor) -> torch.Tensor:
        """Rotor lag and thrust, written independently of ``Dynamics.motor_thrust`` (same model).

        motor [4, M, E]: rotor speed as a fraction of its maximum, advanced in place by one physics step
        towards sqrt(cmd) (thrust grows with speed squared), faster up than down; returns newtons.
        """
        target = cmd.sqrt()
        rate = torch.where(target >= motor, self.dyn.alpha_up, self.dyn.alpha_down)
        motor.add_(rate * (target - motor))
        return motor * motor * max_thrust

    def step(self, live: SimState, cmd: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One 200 Hz PyBullet step of every env under thrust fractions cmd [4, M, E]; (on_floor, wall) [M, E]."""
        m, e = cmd.shape[1:]
        self._require(e, m)
        dev = live.pos.device
        dyn = self.dyn
        thrust = self._motor_thrust(live.motor, cmd, live.max_thrust)  # [4, M, E] N
        yaw = (dyn.torque_map[2].to(dev) @ thrust.reshape(4, -1)).reshape(m, e)  # [M, E] body z torque
        thrust_l = thrust.permute(2, 1, 0).tolist()  # [E][M][4] python floats: cheapest for pybullet calls
        yaw_l = yaw.T.tolist()  # [E][M]
        extra = self._extra_forces(live)  # [E][M][3] world-frame force at the COM, or None
        pos_l = live.pos.permute(2, 1, 0).tolist() if extra is not None else None

        reads: list[tuple] = []  # per drone, env-major: (position, quaternion, velocity, world angular velocity)
        on_floor = np.zeros((e, m), dtype=bool)
        motor_pos, link, world_frame = self.motor_pos, p.LINK_FRAME, p.WORLD_FRAME
        for k in range(e):
            world = self._worlds[k]
            c = world.client
            for i, body in enumerate(world.drones):
                f = thrust_l[k][i]
                for j in range(4):
                    p.applyExternalForce(body, -1, (0.0, 0.0, f[j]), motor_pos[j], link, physicsClientId=c)
                p.applyExternalTorque(body, -1, (0.0, 0.0, yaw_l[k][i]), link, physicsClientId=c)
                if extra is not None and pos_l is not None:
                    p.applyExternalForce(body, -1, extra[k][i], pos_l[k][i], world_frame, physicsClientId=c)
            p.stepSimulation(physicsClientId=c)
            for body in world.drones:
                pose = p.getBasePositionAndOrientation(body, physicsClientId=c)
                reads.append(pose + p.getBaseVelocity(body, physicsClientId=c))
            self._record_contacts(k, world, on_floor)

        pos = np.array([r[0] for r in reads]).reshape(e, m, 3)
        quat = np.array([r[1] for r in reads]).reshape(e, m, 4)
        vel = np.array([r[2] for r in reads]).reshape(e, m, 3)
        wvel = np.array([r[3] for r in reads]).reshape(e, m, 3)
        rot = np.array([p.getMatrixFromQuaternion(r[1]) for r in reads]).reshape(e, m, 3, 3)
        omega = (rot * wvel[..., :, None]).sum(-2)  # body rates R^T w
        # Same body-rate clip as the batched sim; spin damping while resting on the floor.
        fix = np.abs(omega).max(-1) > self.dcfg.max_omega
        if fix.any():
            omega = np.clip(omega, -self.dcfg.max_omega, self.dcfg.max_omega)
        if on_floor.any():
            omega = np.where(on_floor[..., None], omega * FLOOR_SPIN_DAMPING, omega)
            fix |= on_floor

        to_live = lambda a: torch.from_numpy(a).to(dev, torch.float32)  # noqa: E731
        live.pos.copy_(to_live(pos).permute(2, 1, 0))
        live.vel.copy_(to_live(vel).permute(2, 1, 0))
        live.rot.copy_(to_live(rot).permute(2, 3, 1, 0))
        live.omega.copy_(to_live(omega).permute(2, 1, 0))
        wall = self._walls(live, gen)  # [M, E], clips and kicks the live state in place
        if bool(wall.any()):
            moved = wall.T.cpu().numpy()
            pos[moved] = live.pos.permute(2, 1, 0).cpu().numpy()[moved]
            vel[moved] = live.vel.permute(2, 1, 0).cpu().numpy()[moved]
            omega[moved] = live.omega.permute(2, 1, 0).cpu().numpy()[moved]
            fix |= moved
        else:
            moved = None
        if fix.any():
            self._write_back(fix, moved, pos, quat, vel, rot, omega)
        return torch.from_numpy(on_floor.T.copy()).to(dev), wall

    def on_reset(self, live: SimState, env_ids: torch.Tensor) -> None:
        """Rebuild the PyBullet worlds of env_ids from the live state (bodies, masses, inertia, columns)."""
        m, e = live.mass.shape
        self._device = live.pos.device
        if self._nbr_hits is None or self._nbr_hits.shape[:2] != (e, m):
            self._nbr_hits = np.zeros((e, m, m), dtype=bool)
            self._col_hits = np.zeros((e, m), dtype=bool)
        ids = [int(i) for i in torch.as_tensor(env_ids).reshape(-1).tolist()]
        if not ids:
            return
        sel = torch.tensor(ids, device=live.pos.device)
        np_of = lambda t, *perm: t[..., sel].permute(*perm).double().cpu().numpy()  # noqa: E731
        pos, vel, omega = (np_of(t, 2, 1, 0) for t in (live.pos, live.vel, live.omega))  # [n, M, 3]
        rot = np_of(live.rot, 3, 2, 0, 1)  # [n, M, 3, 3]
        mass, inertia = np_of(live.mass, 1, 0), np_of(live.inertia, 2, 1, 0)
        obstacles, radius = np_of(live.obstacles, 2, 1, 0), live.obstacle_radius[sel].double().cpu().numpy()
        quat = rot_to_quat(rot)
        wvel = np.einsum("nmij,nmj->nmi", rot, omega)
        for n, k in enumerate(ids):
            self._build(k, pos[n], quat[n], vel[n], wvel[n], mass[n], inertia[n], obstacles[n], float(radius[n]))
            self._nbr_hits[k] = False
            self._col_hits[k] = False

    def contacts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """PyBullet contacts (neighbour [M, M, E], column [M, E]) seen since the previous call, then cleared."""
        if self._nbr_hits is None or self._col_hits is None:
            raise RuntimeError("PyBulletPhysics.contacts() before on_reset(): no worlds built")
        nbr = torch.from_numpy(self._nbr_hits.transpose(1, 2, 0).copy()).to(self._device)
        col = torch.from_numpy(self._col_hits.T.copy()).to(self._device)
        self._nbr_hits[:] = False
        self._col_hits[:] = False
        return nbr, col

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Disconnect every PyBullet client; safe to call more than once."""
        for world in self._worlds.values():
            try:
                p.disconnect(physicsClientId=world.client)
            except p.error:  # already gone
                pass
        self._worlds.clear()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: pybullet may already be unloaded
            pass

    # ------------------------------------------------------------------ internals
    def _require(self, e: int, m: int) -> None:
        missing = [k for k in range(e) if k not in self._worlds]
        if missing:
            raise RuntimeError(f"PyBulletPhysics.step() on envs {missing} that on_reset() never built")
        if self._nbr_hits is None or self._nbr_hits.shape[:2] != (e, m):
            raise RuntimeError(f"PyBulletPhysics was built for another batch shape than (envs, drones) = {(e, m)}")

    def _build(
        self,
        k: int,
        pos: np.ndarray,
        quat: np.ndarray,
        vel: np.ndarray,
        wvel: np.ndarray,
        mass: np.ndarray,
        inertia: np.ndarray,
        obstacles: np.ndarray,
        radius: float,
    ) -> None:
        """(Re)create world k: floor plane, M drone spheres, static columns (pos etc. [M, ...] float64)."""
        dcfg = self.dcfg
        old = self._worlds.pop(k, None)
        if old is not None:
            # A fresh client rather than resetSimulation, which leaves engine state behind (a replayed
            # seed then differs in the 7th digit); reconnecting costs about 3 ms per episode.
            p.disconnect(physicsClientId=old.client)
        world = _World(p.connect(p.DIRECT))
        self._worlds[k] = world
        c = world.client
        p.setPhysicsEngineParameter(deterministicOverlappingPairs=1, physicsClientId=c)
        p.setGravity(0.0, 0.0, -dcfg.gravity, physicsClientId=c)
        p.setTimeStep(dcfg.dt, physicsClientId=c)
        world.drones, world.role = [], {}

        plane = p.createMultiBody(0.0, p.createCollisionShape(p.GEOM_PLANE, physicsClientId=c), physicsClientId=c)
        p.changeDynamics(
            plane, -1, lateralFriction=dcfg.floor_friction, restitution=0.0, rollingFriction=FLOOR_ROLLING_FRICTION,
            spinningFriction=FLOOR_ROLLING_FRICTION, physicsClientId=c,
        )
        world.role[plane] = (_FLOOR, 0)

        sphere = p.createCollisionShape(p.GEOM_SPHERE, radius=dcfg.arm, physicsClientId=c)
        for i in range(pos.shape[0]):
            body = p.createMultiBody(
                float(mass[i]), sphere, -1, pos[i].tolist(), quat[i].tolist(), physicsClientId=c
            )
            p.changeDynamics(
                body, -1, localInertiaDiagonal=inertia[i].tolist(), linearDamping=0.0, angularDamping=0.0,
                lateralFriction=DRONE_FRICTION, spinningFriction=0.0, rollingFriction=0.0,
                restitution=DRONE_RESTITUTION, activationState=p.ACTIVATION_STATE_DISABLE_SLEEPING,
                physicsClientId=c,
            )
            p.resetBaseVelocity(body, vel[i].tolist(), wvel[i].tolist(), physicsClientId=c)
            world.drones.append(body)
            world.role[body] = (_DRONE, i)

        active = np.abs(obstacles).max(-1) < FAR / 2  # [O]
        if active.any():
            height = float(self.room[2])
            cyl = p.createCollisionShape(p.GEOM_CYLINDER, radius=radius, height=height, physicsClientId=c)
            for j in np.nonzero(active)[0].tolist():
                x, y = obstacles[j]
                col = p.createMultiBody(0.0, cyl, -1, [float(x), float(y), height / 2], physicsClientId=c)
                p.changeDynamics(
                    col, -1, lateralFriction=0.0, restitution=dcfg.wall_restitution, physicsClientId=c
                )
                world.role[col] = (_COLUMN, j)

    def _record_contacts(self, k: int, world: _World, on_floor: np.ndarray) -> None:
        """OR this step's touching contact points of world k into the hit buffers and on_floor[k]."""
        assert self._nbr_hits is not None and self._col_hits is not None
        for pt in p.getContactPoints(physicsClientId=world.client):
            if pt[8] > CONTACT_TOLERANCE:  # contactDistance: still apart
                continue
            kind_a, a = world.role.get(pt[1], (-1, -1))
            kind_b, b = world.role.get(pt[2], (-1, -1))
            if kind_a != _DRONE:
                kind_a, a, kind_b, b = kind_b, b, kind_a, a
            if kind_a != _DRONE:
                continue
            if kind_b == _DRONE:
                self._nbr_hits[k, a, b] = self._nbr_hits[k, b, a] = True
            elif kind_b == _COLUMN:
                self._col_hits[k, a] = True
            elif kind_b == _FLOOR:
                on_floor[k, a] = True

    def _extra_forces(self, live: SimState) -> list | None:
        """World-frame forces [E][M][3] for the optional linear drag and downwash, or None when both are off."""
        dcfg = self.dcfg
        if dcfg.linear_drag <= 0 and not dcfg.downwash:
            return None
        force = torch.zeros_like(live.vel)  # [3, M, E]
        if dcfg.linear_drag > 0:
            force -= dcfg.linear_drag * live.mass * live.vel
        if dcfg.downwash:
            force[2] -= live.mass * downwash_acceleration(live.pos, dcfg)
        return force.permute(2, 1, 0).tolist()

    def _walls(self, live: SimState, gen: torch.Generator) -> torch.Tensor:
        """The batched sim's wall and ceiling response on the live state (the floor is PyBullet's plane)."""
        dyn = self.dyn
        lo, hi = dyn.room_lo.to(live.pos.device), dyn.room_hi.to(live.pos.device)
        below, above = live.pos < lo, live.pos > hi
        wall = below[0] | below[1] | above.any(0)  # [M, E]
        if not bool(wall.any()):
            return wall
        hit = (below & dyn.wall_axes.to(live.pos.device)) | above
        lo_xy = torch.where(dyn.wall_axes.to(live.pos.device), lo, torch.full_like(lo, -math.inf))
        live.pos.copy_(torch.maximum(torch.minimum(live.pos, hi), lo_xy))
        live.vel.copy_(torch.where(hit, -self.dcfg.wall_restitution * live.vel, live.vel))
        if self.dcfg.wall_spin > 0:
            kick = torch.randn(live.omega.shape, generator=gen, device=live.omega.device)
            live.omega.add_(kick * (self.dcfg.wall_spin * wall))
            live.omega.clamp_(-self.dcfg.max_omega, self.dcfg.max_omega)
        return wall

    def _write_back(
        self,
        fix: np.ndarray,
        moved: np.ndarray | None,
        pos: np.ndarray,
        quat: np.ndarray,
        vel: np.ndarray,
        rot: np.ndarray,
        omega: np.ndarray,
    ) -> None:
        """Push the velocities of the drones in fix [E, M] (and the position of those in moved) into PyBullet.

        pos, vel, omega (body) [E, M, 3], quat [E, M, 4], rot [E, M, 3, 3]: the corrected state; the
        orientation itself is never changed by the corrections.
        """
        for k, i in zip(*np.nonzero(fix), strict=True):
            world = self._worlds[int(k)]
            body, c = world.drones[int(i)], world.client
            if moved is not None and moved[k, i]:
                p.resetBasePositionAndOrientation(body, pos[k, i].tolist(), quat[k, i].tolist(), physicsClientId=c)
            wvel = rot[k, i] @ omega[k, i]
            p.resetBaseVelocity(body, vel[k, i].tolist(), wvel.tolist(), physicsClientId=c)


def make_pybullet_vec_env(cfg: SwarmConfig, num_envs: int = 1):
    """``QuadSwarmVecEnv(cfg, num_envs, physics=PyBulletPhysics(cfg))``: the vector API on PyBullet (CPU)."""
    from envs.swarm import QuadSwarmVecEnv  # envs.swarm does not import this module; kept local anyway

    return QuadSwarmVecEnv(cfg, num_envs=num_envs, device="cpu", physics=PyBulletPhysics(cfg))
