"""PettingZoo view of the swarm task on the PyBullet backend (evaluation; see envs/pybullet_backend.py).

    from envs import quad_swarm_pybullet_v0
    env = quad_swarm_pybullet_v0.parallel_env(num_drones=8, scenario="o_random")
    obs, infos = env.reset(seed=0)

Everything but the engine is ``envs.quad_swarm_v0``: the same agents, spaces, observations, rewards,
episode ends, metrics in the infos and seeding (``reset(seed=s)`` gives the scenario, map and starts
of ``quad_swarm_v0.parallel_env(...).reset(seed=s)``). The class subclasses
``QuadSwarmParallelEnv`` and swaps its core for ``QuadSwarmVecEnv(cfg, num_envs=1,
physics=PyBulletPhysics(cfg))``. ``close()`` disconnects the PyBullet client; a later ``reset``
reconnects. ``make_pybullet_vec_env`` gives the vector API on the same engine.
"""

from __future__ import annotations

from typing import Any

import torch
from pettingzoo import AECEnv
from pettingzoo.utils.conversions import parallel_to_aec

from envs.pybullet_backend import PyBulletPhysics, make_pybullet_vec_env
from envs.quad_swarm_v0 import QuadSwarmParallelEnv
from envs.swarm import QuadSwarmVecEnv

__all__ = ["QuadSwarmPyBulletParallelEnv", "env", "make_pybullet_vec_env", "parallel_env"]


class QuadSwarmPyBulletParallelEnv(QuadSwarmParallelEnv):
    """``QuadSwarmParallelEnv`` whose vehicles are stepped by PyBullet (one headless client)."""

    metadata = {"name": "quad_swarm_pybullet_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self, device: str | torch.device = "cpu", render_mode: str | None = None, **config: Any):
        super().__init__(device=device, render_mode=render_mode, **config)
        self.physics = PyBulletPhysics(self.cfg)
        self._core = QuadSwarmVecEnv(self.cfg, num_envs=1, device=device, physics=self.physics)
        self.obs_spec = self._core.spec

    def close(self) -> None:
        """Disconnect the PyBullet client (a later ``reset`` reconnects); safe to call more than once."""
        self.physics.close()


def parallel_env(**config: Any) -> QuadSwarmPyBulletParallelEnv:
    """The parallel PettingZoo environment on PyBullet; keywords go to ``make_config`` (plus ``device``)."""
    return QuadSwarmPyBulletParallelEnv(**config)


def env(**config: Any) -> AECEnv:
    """The AEC PettingZoo environment on PyBullet (the parallel one behind ``parallel_to_aec``)."""
    return parallel_to_aec(parallel_env(**config))
