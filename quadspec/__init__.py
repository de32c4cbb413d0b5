"""The observation / vehicle contract of the quadrotor swarm: segment sizes, vehicle constants, motor layout.

One home for what the simulator (envs/), the policies and the PID controller (agents/) and the exporter
(deploy/) must agree on. Pure Python: no torch, no pydantic, no import of any other platform package,
so agents/ can import it without pulling in envs/ or simulator code. It is a top-level package of its own
for that reason: a module inside envs/ or agents/ would run that package's ``__init__`` (and its
imports) first. import-linter keeps it so (``.importlinter``: this package imports nothing of the platform;
agents/ imports nothing of the platform but this).

Per-agent observation (quad-swarm-rl): self (19) + K nearest neighbours (6 K) + local obstacle SDF (9);
self = [p - g (3), v (3), R body->world row-major (9), omega (3), z (1)] (+1 leader flag with leaders).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Segment sizes of the observation.
SELF_DIM = 19
NEIGHBOUR_DIM = 6  # per neighbour: p_j - p_i (3), v_j - v_i (3)
OBSTACLE_DIM = 9  # 3 x 3 SDF patch around the drone
LEADER_FLAG_DIM = 1  # appended to the self segment in the leader task

# Offsets of the self segment's fields (slices of the last axis of an observation).
POS_ERROR = slice(0, 3)  # p - g, world frame, m (zeros for a non-leader in the leader task)
VELOCITY = slice(3, 6)  # world frame, m/s
ROTATION = slice(6, 15)  # R body -> world, row-major
BODY_RATES = slice(15, 18)  # omega, body frame, rad/s
HEIGHT = slice(18, 19)  # z above the floor, m

# Actions: one command in [-1, 1] per motor (thrust fraction f = (a + 1) / 2), motor order below.
ACT_DIM = 4

# Motor layout (X configuration, x forward, y left, z up): front-right, back-right, back-left, front-left
# (Crazyflie M1..M4). A motor sits at PROP_SIGNS_XY * arm / sqrt(2). PROP_CCW = +1: the propeller turns
# counter-clockwise seen from above, so its drag torque on the body is clockwise (-z).
PROP_SIGNS_XY: tuple[tuple[float, float], ...] = ((1.0, -1.0), (-1.0, -1.0), (-1.0, 1.0), (1.0, 1.0))
PROP_CCW: tuple[float, ...] = (-1.0, 1.0, -1.0, 1.0)


@dataclass(frozen=True)
class Vehicle:
    """Nominal rigid-body constants of one quadrotor (SI units)."""

    mass: float
    arm: float  # centre-to-motor distance, m
    inertia: tuple[float, float, float]  # diagonal, kg m^2
    thrust_to_weight: float
    torque_to_thrust: float  # yaw drag torque per newton of thrust, m
    gravity: float = 9.81

    @property
    def max_thrust(self) -> float:
        """Maximum thrust of one motor, N."""
        return self.thrust_to_weight * self.mass * self.gravity / 4.0

    @property
    def hover_action(self) -> float:
        """The motor command a = 2 f - 1 that holds the vehicle in hover (f = 1 / thrust_to_weight)."""
        return 2.0 / self.thrust_to_weight - 1.0


CRAZYFLIE = Vehicle(mass=0.028, arm=0.046, inertia=(1.37e-5, 1.44e-5, 2.66e-5), thrust_to_weight=1.9,
                    torque_to_thrust=0.006)
PHYSICS_HZ = 200.0  # simulator physics steps per second
SIM_STEPS = 2  # physics steps per control step
CONTROL_DT = SIM_STEPS / PHYSICS_HZ  # s, one control step (100 Hz)


@dataclass(frozen=True)
class ObsLayout:
    """Segment sizes of a flat per-agent observation: what a policy needs to split it.

    The simulator's layout is ``obs_layout(K)``; an environment without neighbours or obstacles (a
    PettingZoo task) is one self segment: ``ObsLayout(D, 0, 1, 0)``.
    """

    self_dim: int = SELF_DIM
    num_neighbors: int = 0
    neighbour_dim: int = NEIGHBOUR_DIM
    obstacle_dim: int = OBSTACLE_DIM

    @property
    def dim(self) -> int:
        """Total width."""
        return self.self_dim + self.num_neighbors * self.neighbour_dim + self.obstacle_dim

    def to_dict(self) -> dict[str, int]:
        """Plain data (for a checkpoint)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ObsLayout:
        """Inverse of ``to_dict``; ValueError names a missing or non-integer field."""
        try:
            return cls(**{k: int(data[k]) for k in ("self_dim", "num_neighbors", "neighbour_dim", "obstacle_dim")})
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"observation layout {data!r} is incomplete ({type(err).__name__}: {err})") from None


def obs_layout(num_neighbors: int, leaders: int = 0) -> ObsLayout:
    """The simulator's layout for K neighbours (with the leader flag when ``leaders`` > 0)."""
    return ObsLayout(SELF_DIM + (LEADER_FLAG_DIM if leaders else 0), num_neighbors, NEIGHBOUR_DIM, OBSTACLE_DIM)


def layout_from_dim(dim: int) -> ObsLayout:
    """The simulator's layout (19 + 6 K + 9) of an observation ``dim`` wide; K is inferred."""
    rest = dim - SELF_DIM - OBSTACLE_DIM
    if rest < 0 or rest % NEIGHBOUR_DIM:
        raise ValueError(
            f"observation width {dim} is not {SELF_DIM} + {NEIGHBOUR_DIM} K + {OBSTACLE_DIM} for any K >= 0; "
            "pass the layout explicitly"
        )
    return obs_layout(rest // NEIGHBOUR_DIM)


def flat_layout(dim: int) -> ObsLayout:
    """The layout of an observation that is one self segment of ``dim`` features (no neighbours, no SDF)."""
    return ObsLayout(dim, 0, 1, 0)
