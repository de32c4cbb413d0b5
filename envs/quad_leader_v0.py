"""The leader task: only some drones observe the goal, and the whole swarm must reach it together.

    from envs import quad_leader_v0
    env = quad_leader_v0.parallel_env()                    # 4 drones, 1 leader, static_same_goal
    obs, infos = env.reset(seed=0)

The PettingZoo face of a communication task on the batched simulator: drones ``0 .. leaders-1``
observe p - g, the followers get zeros there and a leader flag of 0. Training uses the same core
directly (``env: {leaders: 1, ...}``, see ``configs/quad_leader_commformer.yaml``).

Design note (the task, why it needs communication): docs/design/pettingzoo_views.md.
"""

from __future__ import annotations

from typing import Any

from pettingzoo import AECEnv
from pettingzoo.utils.conversions import parallel_to_aec

from envs.quad_swarm_v0 import QuadSwarmParallelEnv

# The task's defaults; any SwarmConfig keyword overrides them.
DEFAULTS: dict[str, Any] = {
    "num_drones": 4,
    "leaders": 1,
    "num_neighbors": 2,
    "scenario": "static_same_goal",
    "episode_seconds": 10.0,
}


class QuadLeaderParallelEnv(QuadSwarmParallelEnv):
    """QuadSwarmParallelEnv with the leader task's defaults (and at least one leader)."""

    metadata = {"name": "quad_leader_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self, **config: Any):
        merged = {**DEFAULTS, **config}
        if not merged["leaders"]:
            raise ValueError("leaders=0 makes every drone see the goal; the leader task needs leaders >= 1")
        super().__init__(**merged)


def parallel_env(**config: Any) -> QuadLeaderParallelEnv:
    """The parallel PettingZoo environment; keywords override ``DEFAULTS`` (any SwarmConfig field)."""
    return QuadLeaderParallelEnv(**config)


def env(**config: Any) -> AECEnv:
    """The AEC PettingZoo environment."""
    return parallel_to_aec(parallel_env(**config))
