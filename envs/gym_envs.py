"""Single-drone Gymnasium environments over the batched swarm core (num_envs=1, num_drones=1).

    import gymnasium, envs                  # importing envs registers the ids below
    env = gymnasium.make("QuadHover-v0", episode_seconds=5.0)
    obs, info = env.reset(seed=0)           # float32 (28,): self (19) + obstacle SDF (9), no neighbours

Registered ids (see ``envs/__init__.py``): ``QuadHover-v0`` (scenario "hover"), ``QuadGoal-v0``
("static_diff_goal"), ``QuadGoalObstacles-v0`` ("o_random"). Every other keyword goes to
``make_config``. Episodes end by truncation after ``episode_seconds``; the step that truncates returns
the episode's last observation and ``info["metrics"]`` (the core's episode metrics) plus
``info["scenario"]``. The core never terminates early, so ``terminated`` is always False today.

Seeding follows Gymnasium: ``reset(seed=s)`` seeds ``np_random`` and the core with ``s``; an unseeded
reset draws the core's seed from ``np_random``, so a seeded run stays reproducible across resets.

One env per ``step`` costs about 0.8 ms of Python and tensor overhead; to train with many envs, SB3
users should take ``envs.sb3_vec_env.make_sb3_vec_env(env_id, num_envs)`` (same observations and
rewards, all envs in one tensor step) rather than a ``DummyVecEnv`` of these.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from envs.config import SwarmConfig, make_config
from envs.observations import ObsSpec
from envs.quad_swarm_v0 import SEED_HIGH, episode_info, validate_action
from envs.swarm import ACTION_DIM, QuadSwarmVecEnv


class QuadSingleEnv(gym.Env[np.ndarray, np.ndarray]):
    """One quadrotor, one environment: a Gymnasium view of ``QuadSwarmVecEnv``."""

    metadata = {"render_modes": []}

    def __init__(self, device: str | torch.device = "cpu", render_mode: str | None = None, **config: Any):
        if render_mode is not None:
            raise ValueError(f"render_mode={render_mode!r} is not supported; allowed: None")
        self.render_mode = render_mode
        config.setdefault("num_drones", 1)
        config.setdefault("num_neighbors", 0)
        if config["num_drones"] != 1:
            raise ValueError(
                f"num_drones={config['num_drones']} is not allowed in a single-drone env (allowed: 1); "
                "use envs.quad_swarm_v0 or QuadSwarmVecEnv for swarms"
            )
        self.cfg: SwarmConfig = make_config(**config)
        self._core = QuadSwarmVecEnv(self.cfg, num_envs=1, device=device)
        self.obs_spec: ObsSpec = self._core.spec
        self.observation_space = spaces.Box(-np.inf, np.inf, (self._core.obs_dim,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        self._needs_reset = True

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Start a new episode; ``options`` is accepted for API compatibility and ignored."""
        super().reset(seed=seed)
        # Never draw from np_random outside reset: check_env requires step() to leave it untouched.
        core_seed = int(seed) if seed is not None else int(self.np_random.integers(SEED_HIGH))
        obs = self._core.reset(seed=core_seed)
        self._needs_reset = False
        return self._to_numpy(obs), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Apply one action (4 motor commands in [-1, 1]); returns obs, reward, terminated, truncated, info."""
        if self._needs_reset:
            # The core has already auto-reset; stepping on would silently skip that episode's first obs.
            raise RuntimeError("call reset() before step() (and again after an episode ends)")
        act = torch.from_numpy(validate_action(action, "the drone")).view(1, 1, ACTION_DIM)
        obs, reward, terminated, truncated, core_info = self._core.step(act)
        term, trunc = bool(terminated[0, 0]), bool(truncated[0, 0])
        info: dict[str, Any] = {}
        if "final_obs" in core_info:
            obs = core_info["final_obs"]  # the core's obs already belongs to the next episode
            info = episode_info(core_info)
        if term or trunc:
            self._needs_reset = True
        return self._to_numpy(obs), float(reward[0, 0]), term, trunc, info

    def close(self) -> None:
        """Nothing to release (no window, no subprocess); safe to call any number of times."""

    @staticmethod
    def _to_numpy(obs: torch.Tensor) -> np.ndarray:
        # Copy: the caller keeps the array, and the core may reuse its tensors in place.
        return obs[0, 0].detach().to("cpu", torch.float32).numpy().copy()
