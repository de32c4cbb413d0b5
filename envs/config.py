"""Typed, validated configuration of the quadrotor-swarm simulator.

Defaults are the reference values of the QuadSwarm / quad-swarm-rl task (Crazyflie 2.x, ICRA 2024
obstacle settings), see ``shared/reference/quadrotor-swarm.md``. Every model forbids unknown keys,
so a typo in a YAML file or a keyword argument fails before anything runs, naming the field.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from envs.scenarios import LAYOUTS, OBSTACLE_SCENARIOS, SCENARIOS
from quadspec import CRAZYFLIE, PHYSICS_HZ, SIM_STEPS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class DynamicsConfig(_Strict):
    """Crazyflie 2.x rigid-body and motor model (SI units)."""

    mass: float = Field(CRAZYFLIE.mass, gt=0)
    arm: float = Field(CRAZYFLIE.arm, gt=0, description="centre-to-motor distance; also the collision radius unit")
    inertia: tuple[float, float, float] = CRAZYFLIE.inertia
    thrust_to_weight: float = Field(CRAZYFLIE.thrust_to_weight, gt=1.0)
    torque_to_thrust: float = Field(CRAZYFLIE.torque_to_thrust, ge=0)
    motor_time_up: float = Field(0.15, gt=0, description="motor settling time (4 tau) when spinning up, s")
    motor_time_down: float = Field(0.15, gt=0, description="motor settling time (4 tau) when spinning down, s")
    thrust_noise: float = Field(0.05, ge=0, description="Ornstein-Uhlenbeck thrust noise, fraction of thrust")
    max_omega: float = Field(40.0, gt=0, description="body-rate clip, rad/s")
    gravity: float = Field(CRAZYFLIE.gravity, gt=0)
    linear_drag: float = Field(0.0, ge=0, description="linear air drag, 1/s")
    floor_friction: float = Field(0.6, ge=0)
    wall_restitution: float = Field(0.5, ge=0, le=1, description="velocity kept (reversed) after a wall hit")
    wall_spin: float = Field(5.0, ge=0, description="std of the random body-rate kick on a wall hit, rad/s")
    physics_hz: float = Field(PHYSICS_HZ, gt=0)
    sim_steps: int = Field(SIM_STEPS, ge=1, description="physics steps per control step")
    orthonormalize_seconds: float = Field(0.5, gt=0)
    downwash: bool = False
    downwash_radius: float = Field(0.1, gt=0)
    downwash_height: float = Field(0.7, gt=0)

    @property
    def dt(self) -> float:
        """Physics step, s."""
        return 1.0 / self.physics_hz

    @property
    def control_dt(self) -> float:
        """Control step, s."""
        return self.sim_steps / self.physics_hz

    @property
    def max_thrust(self) -> float:
        """Maximum thrust of one motor, N."""
        return self.thrust_to_weight * self.mass * self.gravity / 4.0


class NoiseConfig(_Strict):
    """Sensor noise added to the observation (the true state is never perturbed)."""

    enabled: bool = False
    position: float = Field(0.005, ge=0)
    velocity: float = Field(0.01, ge=0)
    gyro: float = Field(0.01, ge=0)


class RandomizationConfig(_Strict):
    """Per-drone dynamics randomisation, drawn at each reset: value * U(1 - r, 1 + r)."""

    mass: float = Field(0.0, ge=0, lt=1)
    inertia: float = Field(0.0, ge=0, lt=1)
    thrust_to_weight: float = Field(0.0, ge=0, lt=1)
    density_range: tuple[float, float] | None = Field(
        None, description="obstacle density drawn per environment from this range at reset"
    )
    size_range: tuple[float, float] | None = Field(
        None, description="obstacle diameter drawn per environment from this range at reset"
    )


class RewardConfig(_Strict):
    """Reward terms and coefficients (per control step, before the clip)."""

    pos: float = 1.0
    action: float = 0.05
    floor: float = 1.0
    orient: float = 1.0
    spin: float = 0.1
    neighbour_collision: float = 5.0
    neighbour_proximity: float = 4.0
    proximity_radius_arms: float = Field(4.0, gt=0, description="proximity fall-off radius in arm lengths")
    obstacle_collision: float = 5.0
    # Goal holding: the linear pos term pulls with the same force at 1 m and at 1 cm; this bonus per second,
    # precision * exp(-(d / precision_radius)^2), is worth most within a few centimetres (Aerial Gym's
    # exponential position reward). 0 = the reference's reward.
    precision: float = Field(0.0, ge=0, description="goal-holding bonus per second at the goal")
    precision_radius: float = Field(0.1, gt=0, description="m; width of the goal-holding bonus")
    clip: float = Field(10.0, gt=0)


class SwarmConfig(_Strict):
    """One swarm environment (all of a batch share it)."""

    num_drones: int = Field(8, ge=1)
    num_neighbors: int = Field(2, ge=0, description="K nearest neighbours observed")
    leaders: int = Field(
        0, ge=0, description="drones 0..leaders-1 observe the goal, the others do not (0 = every drone does)"
    )
    scenario: str | dict[str, float] = Field(
        "o_random", description="a scenario name, or a mix {name: sampling weight}"
    )
    episode_seconds: float = Field(15.0, gt=0)
    grace_seconds: float = Field(1.5, ge=0, description="collisions before this are not counted in metrics")
    layout: str = Field(
        "reference",
        description="obstacle scenarios: 'reference' (quad-swarm-rl: columns anywhere, starts and goals on random "
        "free cells) or 'rows' (a free start row and goal row, columns between)",
    )
    density: float = Field(0.2, ge=0, lt=1, description="fraction of the obstacle-grid cells with a column")
    obstacle_size: float = Field(0.6, gt=0, description="column diameter, m")
    cell_size: float = Field(1.0, gt=0)
    obstacle_area: tuple[float, float] = (8.0, 8.0)
    room: tuple[float, float, float] = (10.0, 10.0, 10.0)
    spawn_heights: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5, 3.0)
    spawn_jitter: float = Field(0.1, ge=0)
    formation_size: float = Field(1.0, ge=0, description="radius of the goal formation in *_diff_goal scenarios")
    goal_change_seconds: float = Field(5.0, gt=0, description="period of goal changes in dynamic scenarios")
    reach_window: int = Field(5, ge=1, description="steps averaged for the reached-goal test")
    sdf_resolution: float = Field(0.1, gt=0)
    sdf_max: float = Field(10.0, gt=0, description="SDF values are clipped here (and set here with no obstacles)")
    dynamics: DynamicsConfig = DynamicsConfig()
    noise: NoiseConfig = NoiseConfig()
    randomization: RandomizationConfig = RandomizationConfig()
    reward: RewardConfig = RewardConfig()

    @field_validator("scenario")
    @classmethod
    def _known_scenario(cls, v: str | dict[str, float]) -> str | dict[str, float]:
        names = [v] if isinstance(v, str) else list(v)
        for name in names:
            if name not in SCENARIOS:
                raise ValueError(f"unknown scenario {name!r}; allowed: {', '.join(SCENARIOS)}")
        if isinstance(v, dict):
            if not v or any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
                raise ValueError("scenario mix weights must be >= 0 and not all zero")
        return v

    @field_validator("layout")
    @classmethod
    def _known_layout(cls, v: str) -> str:
        if v not in LAYOUTS:
            raise ValueError(f"unknown layout {v!r}; allowed: {', '.join(LAYOUTS)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SwarmConfig:
        if self.num_neighbors >= self.num_drones and self.num_neighbors > 0:
            raise ValueError(
                f"num_neighbors={self.num_neighbors} must be < num_drones={self.num_drones} "
                f"(allowed: 0..{self.num_drones - 1})"
            )
        if self.leaders >= self.num_drones:
            raise ValueError(
                f"leaders={self.leaders} must be < num_drones={self.num_drones} (allowed: 0..{self.num_drones - 1}; "
                "0 = every drone observes the goal)"
            )
        for i, (area, room) in enumerate(zip(self.obstacle_area, self.room[:2], strict=True)):
            if area > room:
                raise ValueError(f"obstacle_area[{i}]={area} exceeds room[{i}]={room}")
            if round(area / self.cell_size) < 3:
                raise ValueError(f"obstacle_area[{i}]={area} must hold at least 3 cells of cell_size={self.cell_size}")
        # The rows layout starts every drone in the start row; the reference layout and open rooms
        # anywhere on the grid (the reference layout caps its columns so that enough cells stay free).
        cells = self.grid[0] if self.uses_obstacles and self.layout == "rows" else self.grid[0] * self.grid[1]
        slots = cells * len(self.spawn_heights)
        if self.num_drones > slots:
            raise ValueError(
                f"num_drones={self.num_drones} exceeds the {slots} start slots "
                f"({cells} spawn cells x {len(self.spawn_heights)} spawn_heights); add spawn_heights"
            )
        if self.obstacle_size >= self.cell_size:
            raise ValueError(f"obstacle_size={self.obstacle_size} must be < cell_size={self.cell_size}")
        if max(self.spawn_heights) >= self.room[2]:
            raise ValueError(f"spawn_heights must lie below the ceiling room[2]={self.room[2]}")
        return self

    # Derived quantities used by the simulator.
    @property
    def episode_steps(self) -> int:
        """Control steps per episode."""
        return int(round(self.episode_seconds / self.dynamics.control_dt))

    @property
    def grid(self) -> tuple[int, int]:
        """Obstacle-grid cells along x and y."""
        return tuple(int(round(a / self.cell_size)) for a in self.obstacle_area)  # type: ignore[return-value]

    @property
    def scenario_weights(self) -> dict[str, float]:
        """The scenario mix as normalised weights."""
        mix = {self.scenario: 1.0} if isinstance(self.scenario, str) else dict(self.scenario)
        total = sum(mix.values())
        return {k: w / total for k, w in mix.items() if w > 0}

    @property
    def min_free_cells(self) -> int:
        """Cells the reference layout leaves free at any density: enough distinct start slots for the swarm."""
        return -(-self.num_drones // len(self.spawn_heights))

    @property
    def uses_obstacles(self) -> bool:
        """True when any scenario of the mix places obstacles."""
        return any(name in OBSTACLE_SCENARIOS for name in self.scenario_weights)

    @property
    def obs_dim(self) -> int:
        """Per-agent observation width: 19 (+1 leader flag with leaders) + 6K + 9."""
        return 19 + (1 if self.leaders else 0) + 6 * self.num_neighbors + 9


def make_config(**kwargs) -> SwarmConfig:
    """Build a validated SwarmConfig from keyword arguments (nested models as dicts).

    A pydantic ValidationError names the offending field and what is allowed; it subclasses ValueError.
    """
    return SwarmConfig(**kwargs)

