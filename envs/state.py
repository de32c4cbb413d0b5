"""The full batched simulator state: one dataclass, in two layouts.

* Snapshot layout (public): every field has the env axis first, [E, M, ...] as documented on the
  fields. ``QuadSwarmVecEnv.get_state`` returns it and ``set_state`` takes it: what a trainer's
  collision replay buffer or an exact resume needs.
* Working layout (the simulator's live copy): the same fields with the env axis last, the drone
  axis before it and components first ([E, M, 3] -> [3, M, E], [E, M, 3, 3] -> [3, 3, M, E],
  [E, O, 2] -> [2, O, E]), so that element-wise physics runs over long contiguous rows.
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
    arrive_t: torch.Tensor  # [E, M] control step of the first arrival within the reach radius (inf: none yet)
    # Collision response decided at the last observation, applied at the start of the next step
    dpos: torch.Tensor  # [E, M, 3]
    dvel: torch.Tensor  # [E, M, 3]

    def to_live(self) -> SimState:
        """This snapshot in the working layout (new tensors)."""
        return SimState(**{f.name: _to_live(getattr(self, f.name)) for f in fields(self)})

    def select_live(self, env_ids: torch.Tensor) -> SimState:
        """From a live state: a detached snapshot (env axis first) of the chosen environments."""
        return SimState(**{f.name: _to_snapshot(getattr(self, f.name)[..., env_ids]) for f in fields(self)})

    def assign_live(self, env_ids: torch.Tensor, snapshot: SimState) -> None:
        """Into a live state: overwrite the chosen environments with a snapshot (env axis first)."""
        for f in fields(self):
            dst, src = getattr(self, f.name), _to_live(getattr(snapshot, f.name))
            if src.shape[:-1] != dst.shape[:-1] or src.shape[-1] != env_ids.numel():
                want = [env_ids.numel(), *_to_snapshot(dst[..., :1]).shape[1:]]
                got = list(getattr(snapshot, f.name).shape)
                raise ValueError(f"snapshot field {f.name!r} has shape {got}, expected {want}")
            dst[..., env_ids] = src.to(dst.device, dst.dtype)

    def to_dict(self) -> dict[str, torch.Tensor]:
        """Plain tensor dict (for torch.save; loads back with weights_only=True)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, torch.Tensor]) -> SimState:
        """Inverse of to_dict."""
        names = {f.name for f in fields(cls)}
        if set(d) != names:
            missing, unknown = sorted(names - set(d)), sorted(set(d) - names)
            raise ValueError(f"snapshot keys differ: missing {missing}, unknown {unknown}")
        return cls(**d)


def _live_perm(ndim: int) -> tuple[int, ...]:
    # [E, A, c...] -> [c..., A, E]
    return (0,) if ndim == 1 else (*range(2, ndim), 1, 0)


def _to_live(x: torch.Tensor) -> torch.Tensor:
    return x.permute(_live_perm(x.dim())).contiguous()


def _to_snapshot(x: torch.Tensor) -> torch.Tensor:
    perm = _live_perm(x.dim())
    inverse = sorted(range(len(perm)), key=perm.__getitem__)
    return x.permute(inverse).contiguous()
