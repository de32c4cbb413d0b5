"""Quadrotor-swarm simulation: the batched core (``envs.swarm``) and its PettingZoo/Gymnasium views.

Importing this package registers the single-drone Gymnasium ids, so ``gymnasium.make("QuadHover-v0")``
works after ``import envs`` (or without it, as ``gymnasium.make("envs:QuadHover-v0")``).
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

# Gymnasium id -> scenario of envs.scenarios; every id runs envs.gym_envs.QuadSingleEnv.
GYM_ENV_IDS: dict[str, str] = {
    "QuadHover-v0": "hover",
    "QuadGoal-v0": "static_diff_goal",
    "QuadGoalObstacles-v0": "o_random",
}


def _register_gym_envs() -> None:
    """Register the ids once; a reload of this module must not re-register (Gymnasium warns on that)."""
    for env_id, scenario in GYM_ENV_IDS.items():
        if env_id not in registry:
            register(id=env_id, entry_point="envs.gym_envs:QuadSingleEnv", kwargs={"scenario": scenario})


_register_gym_envs()
