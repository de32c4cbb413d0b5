"""A learned policy with a classical safety fallback next to neighbours (``POLICY+shield`` wherever a policy is
evaluated).

Every drone flies the policy's action, except while the body gap to its nearest observed neighbour is below
``gap`` (default 0.2 m): then it flies ``pid_avoid``'s action, which brakes and turns away. Written for a
measured weakness: the students imitated from ``pid_avoid`` lose to it by their neighbour contacts, and
their actions within 0.2 m of a neighbour are far from the teacher's (mean squared error 0.13 against
~0.006 over their training data); taking over only there removes the contacts (docs/training.md, "Where the
neighbour collisions come from"). The shield is a host-side evaluation and deployment aid, not part of the
exported C policy; a shielded figure is the policy's and the fallback's together, and is reported as such.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from agents.pid import PIDController, neighbour_gaps

SHIELD_SUFFIX = "+shield"
SHIELD_GAP = 0.2  # m; tuned on seed 500: 0.1 left a third of the contacts, 0.2 none


def nearest_gap(obs: torch.Tensor, arm: float) -> torch.Tensor:
    """Body gap [E, M] (centre distance minus two arms) to the nearest observed neighbour; inf without one."""
    gap = neighbour_gaps(obs, arm)
    return gap.amin(-1) if gap.shape[-1] else obs.new_full(gap.shape[:2], float("inf"))


class Shield:
    """obs [E, M, D] -> actions [E, M, 4]: ``policy``'s, or ``fallback``'s for drones within ``gap`` of a neighbour.

    The fallback is called every step, so that its integral state follows the flight it may take over.
    ``taken`` counts the drone-steps it flew and ``steps`` all drone-steps, since construction.
    """

    def __init__(self, policy: Callable[[torch.Tensor], torch.Tensor], fallback: PIDController,
                 gap: float = SHIELD_GAP, reset: Callable[[torch.Tensor], None] | None = None):
        """reset: the policy's own reset(env_ids), if it has state."""
        if gap <= 0:
            raise ValueError(f"gap={gap} must be > 0 (m of body gap where the fallback takes over)")
        self.policy, self.fallback, self.gap, self._reset = policy, fallback, gap, reset
        self.taken = 0
        self.steps = 0

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Actions [E, M, 4] for observations [E, M, D]."""
        safe = self.fallback.act(obs)
        own = self.policy(obs)
        near = nearest_gap(obs, self.fallback.cfg.arm) < self.gap  # [E, M]
        self.taken += int(near.sum())
        self.steps += near.numel()
        return torch.where(near.unsqueeze(-1), safe.to(own), own)

    def reset(self, env_ids: torch.Tensor | None) -> None:
        """Forget the state of the given environments (the fallback's integral, the policy's own)."""
        self.fallback.reset(env_ids)
        if self._reset is not None:
            self._reset(env_ids)
