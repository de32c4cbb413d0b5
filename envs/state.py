"""The full batched simulator state, one dataclass whose every field has the env axis first.

Because every field is indexed by environment first, a snapshot of chosen environments is a plain
gather (``select``) and a restore a plain scatter (``assign``): this is what a trainer's collision
replay buffer needs, and what makes resume exact.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class SimState:
    """Everything that determines the future of each environment. Shapes: E envs, M drones."""

    # Vehicles
    pos: torch.Tensor  # [E, M, 3]
    vel: torch.Tensor  # [E, M, 3]
    rot: torch.Tensor  # [E, M, 3, 3] body-to-world
    omega: torch.Tensor  # [E, M, 3] body rates
    motor: torch.Tensor  # [E, M, 4] lagged sqrt(thrust fraction)
    ou: torch.Tensor  # [E, M, 4] thrust-noise process
    mass: torch.Tensor  # [E, M]
    inertia: torch.Tensor  # [E, M, 3]
    max_thrust: torch.Tensor  # [E, M] per motor
    # Task
    scenario: torch.Tensor  # [E] long, index into scenarios.SCENARIO_NAMES
    goals: torch.Tensor  # [E, M, 3]
    goal_center: torch.Tensor  # [E, 3]
    goal_scale: torch.Tensor  # [E] formation radius, m
    obstacles: torch.Tensor  # [E, O, 2] column centres (inactive ones parked far away)
    obstacle_radius: torch.Tensor  # [E]
    occupied: torch.Tensor  # [E, cells] bool
    t: torch.Tensor  # [E] long, control steps since reset
    # Collision bookkeeping (new collisions are penalised once)
    prev_nbr_col: torch.Tensor  # [E, M, M] bool
    prev_obs_col: torch.Tensor  # [E, M] bool
    # Episode metrics being accumulated
    ret: torch.Tensor  # [E, M]
    reached: torch.Tensor  # [E, M] bool
    dist_window: torch.Tensor  # [E, M, W]
    col_nbr: torch.Tensor  # [E, M] bool, after the grace period
    col_obs: torch.Tensor  # [E, M] bool
    col_floor: torch.Tensor  # [E, M] bool
    col_wall: torch.Tensor  # [E, M] bool
    dist_last: torch.Tensor  # [E, M, 3] summed distance over the last 1, 3, 5 s

    def select(self, env_ids: torch.Tensor) -> SimState:
        """A detached copy of the chosen environments' state."""
        return SimState(**{f.name: getattr(self, f.name)[env_ids].clone() for f in fields(self)})

    def assign(self, env_ids: torch.Tensor, other: SimState) -> None:
        """Overwrite the chosen environments with ``other`` (same number of envs as env_ids)."""
        for f in fields(self):
            dst, src = getattr(self, f.name), getattr(other, f.name)
            if src.shape[1:] != dst.shape[1:]:
                raise ValueError(f"snapshot field {f.name!r} has shape {tuple(src.shape)}, expected [n, {list(dst.shape[1:])}]")
            dst[env_ids] = src.to(dst.device, dst.dtype)

    def to_dict(self) -> dict[str, torch.Tensor]:
        """Plain tensor dict (for torch.save; loads back with weights_only=True)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, torch.Tensor]) -> SimState:
        """Inverse of to_dict."""
        names = {f.name for f in fields(cls)}
        if set(d) != names:
            raise ValueError(f"snapshot keys differ: missing {sorted(names - set(d))}, unknown {sorted(set(d) - names)}")
        return cls(**d)
