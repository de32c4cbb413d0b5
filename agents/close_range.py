"""A Gaussian actor with close-range networks: ``agent.close_range`` / ``agent.column_range`` (hand-written;
no library has it).

    mean(obs) = near(obs)     if an observed neighbour's centre is within ``close_range`` m (with ``close_time``:
                              or would be within it in that many s at the pair's closing speed)
                column(obs)   else, with ``column_range``, if the nearest column's surface is within that
                              (with ``column_time``: or would be in that many s at the drone's closing speed)
                far(obs)      otherwise          (far: the usual encoder + linear mean; near, column: copies)

Why: the students imitated from ``pid_avoid`` fly well until the last ~0.2 m to a neighbour (or a column),
where the teacher brakes hard and their actions are far from its (mean squared error 0.13 against ~0.006
elsewhere, next to neighbours). A network of the same size fitted only to those states does fit them, and
flown in the fallback's place it removes most contacts (docs/training.md, "Where the neighbour collisions
come from"). Here those experts are part of the policy: every network is learned, the gates are fixed
(distance tests on the observation), the whole actor is checkpointed, compressed and exported to C as one
(deploy/export_c.py emits the gates as branches, so a drone runs one network per step). Gradients reach
each network only through the states it flies, so DAgger trains each on its own share of the data; the
warm start then fits the gated networks on many more of their states (``pretrain.close_range``).
"""

from __future__ import annotations

import torch
from torch import nn

from agents.base import ObsLayout
from agents.layers import ACTION_GAIN, Encoder, GaussianActor, init_linear, split_obs
from agents.pid import column_normal_xy


def closing_speeds(neighbours: torch.Tensor) -> torch.Tensor:
    """Closing speed -d(dist)/dt (m/s, >= 0) [..., K] of each neighbour [..., K, 6] (p_j - p, v_j - v)."""
    dist = neighbours[..., :3].norm(dim=-1)
    return (-(neighbours[..., :3] * neighbours[..., 3:6]).sum(-1) / dist.clamp_min(1e-6)).clamp_min(0.0)


def column_closing_speed(own: torch.Tensor, sdf: torch.Tensor) -> torch.Tensor:
    """Speed (m/s, >= 0) [...] at which a drone (own state [..., >= 6], velocity at 3:6) closes in on the column
    its SDF patch [..., 9] shows, along the patch's normal (``agents.pid.column_normal_xy``, as pid_avoid)."""
    return (-(own[..., 3:5] * column_normal_xy(sdf)).sum(-1)).clamp_min(0.0)


class ActionHead(nn.Module):
    """An encoder and a linear action mean: obs [..., D] -> mean [..., act_dim] (a gated network)."""

    def __init__(self, encoder: Encoder, act_dim: int, mean: nn.Linear | None = None):
        super().__init__()
        self.encoder = encoder
        self.mean = init_linear(nn.Linear(encoder.out_dim, act_dim), ACTION_GAIN) if mean is None else mean

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [..., D] -> action mean [..., act_dim]."""
        flat = obs.reshape(-1, obs.shape[-1])
        return self.mean(self.encoder(flat)).view(*obs.shape[:-1], self.mean.out_features)


class CloseRangeActor(GaussianActor):
    """``GaussianActor`` whose mean comes from ``near`` (an ``ActionHead``) for the agents within
    ``close_range`` m (centre distance) of an observed neighbour and, with ``column_range``, from ``column``
    (another) for the other agents whose obstacle SDF reads less than it at the centre (the nearest
    column's surface); the far network flies the rest. The log-std is shared."""

    def __init__(
        self,
        encoder: Encoder,
        near_encoder: Encoder,
        layout: ObsLayout,
        close_range: float,
        init_log_std: float,
        log_std_bounds: tuple[float, float],
        act_dim: int,
        column_range: float | None = None,
        column_encoder: Encoder | None = None,
        close_time: float | None = None,
        column_time: float | None = None,
    ):
        super().__init__(encoder, init_log_std, log_std_bounds, act_dim)
        if layout.num_neighbors < 1:
            raise ValueError("close_range needs an observation with neighbours (num_neighbors >= 1)")
        if not close_range > 0:
            raise ValueError(f"close_range={close_range} must be > 0 (m, centre distance)")
        if close_time is not None and not close_time > 0:
            raise ValueError(f"close_time={close_time} must be > 0 (s of closing at the current speed)")
        if column_time is not None and (column_range is None or not column_time > 0):
            raise ValueError(f"column_time={column_time} must be > 0 (s of closing) and needs column_range")
        if column_range is not None and (not column_range > 0 or layout.obstacle_dim != 9):
            raise ValueError(f"column_range={column_range} needs to be > 0 and a 3 x 3 obstacle SDF in the "
                             f"observation (obstacle_dim {layout.obstacle_dim})")
        self.layout = layout
        self.close_range = float(close_range)
        self.close_time = None if close_time is None else float(close_time)
        self.column_range = None if column_range is None else float(column_range)
        self.column_time = None if column_time is None else float(column_time)
        self.near = ActionHead(near_encoder, act_dim)
        self.column = None if column_encoder is None else ActionHead(column_encoder, act_dim)
        if (self.column is None) != (self.column_range is None):
            raise ValueError("column_range and column_encoder come together")

    @classmethod
    def around(cls, actor: GaussianActor, near_encoder: Encoder, layout: ObsLayout, close_range: float,
               column_range: float | None = None, column_encoder: Encoder | None = None,
               close_time: float | None = None, column_time: float | None = None) -> CloseRangeActor:
        """The close-range actor whose far network is ``actor``'s encoder (its mean layer is drawn anew)."""
        return cls(actor.encoder, near_encoder, layout, close_range, float(actor.log_std.detach()[0]),
                   actor.log_std_bounds, actor.mean.out_features, column_range, column_encoder, close_time,
                   column_time)

    def heads(self) -> dict[str, ActionHead]:
        """The gated networks by name (``near``, and ``column`` with ``column_range``)."""
        return {"near": self.near} if self.column is None else {"near": self.near, "column": self.column}

    def networks(self) -> dict[str, ActionHead]:
        """Every network by the prefix of its parameters: ``""`` the far one (a view sharing this actor's
        encoder and mean), then ``"near."`` (and ``"column."``)."""
        far = ActionHead(self.encoder, self.mean.out_features, mean=self.mean)
        return {"": far, **{f"{name}.": head for name, head in self.heads().items()}}

    def gates(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Bool [...] per gated network: the agents it flies (``near`` first; ``column`` only where not near)."""
        flat = obs.reshape(-1, obs.shape[-1])
        own, neighbours, sdf = split_obs(flat, self.layout)  # [N, K, 6]: p_j - p, v_j - v; [N, 9]
        dist = neighbours[..., :3].norm(dim=-1)  # [N, K]
        if self.close_time is not None:  # the distance close_time s ahead at the closing speed
            dist = dist - self.close_time * closing_speeds(neighbours)
        near = dist.amin(-1) < self.close_range
        out = {"near": near.view(obs.shape[:-1])}
        if self.column_range is not None:
            clear = sdf[:, 4]
            if self.column_time is not None:  # the surface distance column_time s ahead at the closing speed
                clear = clear - self.column_time * column_closing_speed(own, sdf)
            out["column"] = ((clear < self.column_range) & ~near).view(obs.shape[:-1])
        return out

    def is_close(self, obs: torch.Tensor) -> torch.Tensor:
        """Bool [...]: a gated network (not the far one) flies the agent."""
        gates = list(self.gates(obs).values())
        return gates[0] if len(gates) == 1 else gates[0] | gates[1]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [..., D] -> action mean [..., act_dim]: each agent's from the network its gate picks."""
        # Every network runs on every agent (3x the actor's work) rather than on the gated rows alone: a
        # matmul over a subset rounds differently (measured: not bitwise equal), and torch.where keeps each
        # agent's action independent of how many others a gate picks, so runs and shipped figures reproduce.
        # The C export branches instead and runs one network per call.
        mean = super().forward(obs)
        for name, gate in self.gates(obs).items():
            mean = torch.where(gate.unsqueeze(-1), self.heads()[name](obs), mean)
        return mean
