"""A Stable-Baselines3 ``VecEnv`` over the batched core: E environments x M drones in one tensor step.

    import envs.sb3_vec_env as sv
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor
    vec = VecMonitor(sv.make_sb3_vec_env("QuadHover-v0", num_envs=64, episode_seconds=2.0))
    PPO("MlpPolicy", vec).learn(200_000)          # SB3 sees 64 single-drone envs

SB3 sees ``num_envs * num_drones`` environments, one per drone, and every SB3 step is one
``QuadSwarmVecEnv.step`` of all of them (not one Python ``gym.Env.step`` per environment as in
``DummyVecEnv``). SB3 is optional: ``envs/__init__`` does not import this module.

Design note (agent numbering, episode ends, why it lives in envs/): docs/design/pettingzoo_views.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn

from envs import GYM_ENV_IDS
from envs.config import SwarmConfig, make_config
from envs.observations import ObsSpec
from envs.quad_swarm_v0 import METRICS_KEY, SEED_HIGH
from envs.swarm import ACTION_DIM, QuadSwarmVecEnv


class QuadSB3VecEnv(VecEnv):
    """SB3 ``VecEnv`` of ``num_envs`` x ``num_drones`` agents stepped by one ``QuadSwarmVecEnv``.

    ``config`` goes to ``make_config``; ``num_drones`` defaults to 1 and then ``num_neighbors`` to 0
    (the single-drone tasks). ``seed`` seeds the draw of core seeds for unseeded resets.
    """

    def __init__(self, num_envs: int, device: str | torch.device = "cpu", seed: int | None = None, **config: Any):
        config.setdefault("num_drones", 1)
        if config["num_drones"] == 1:
            config.setdefault("num_neighbors", 0)
        self.cfg: SwarmConfig = make_config(**config)
        self.core = QuadSwarmVecEnv(self.cfg, num_envs=num_envs, device=device)
        self.obs_spec: ObsSpec = self.core.spec
        self.num_swarms, self.num_drones = num_envs, self.cfg.num_drones
        self.render_mode = None
        obs_space = spaces.Box(-np.inf, np.inf, (self.core.obs_dim,), np.float32)
        act_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        super().__init__(num_envs * self.num_drones, obs_space, act_space)
        self._rng = np.random.default_rng(seed)
        self._actions: torch.Tensor | None = None

    # ------------------------------------------------------------------ the VecEnv protocol
    def reset(self) -> np.ndarray:
        """Reset every environment; the core is seeded with ``seed()``'s value if one is pending."""
        seed = self._seeds[0]
        if seed is None:
            seed = int(self._rng.integers(SEED_HIGH))
        else:
            self._rng = np.random.default_rng(seed)  # later unseeded resets stay reproducible
        self._reset_seeds()
        self._reset_options()
        return self._flat(self.core.reset(seed=int(seed)))

    def step_async(self, actions: np.ndarray) -> None:
        """Store the actions [num_envs * num_drones, 4] for ``step_wait``."""
        act = torch.as_tensor(np.asarray(actions, dtype=np.float32), device=self.core.device)
        if act.shape != (self.num_envs, ACTION_DIM):
            raise ValueError(f"actions must have shape ({self.num_envs}, {ACTION_DIM}), got {tuple(act.shape)}")
        self._actions = act.view(self.num_swarms, self.num_drones, ACTION_DIM)

    def step_wait(self) -> VecEnvStepReturn:
        """One core step of every agent: obs [N, D], rewards [N], dones [N], infos (N dicts)."""
        if self._actions is None:
            raise RuntimeError("step_async() must come before step_wait()")
        obs, reward, terminated, truncated, core_info = self.core.step(self._actions)
        self._actions = None
        dones = (terminated | truncated).reshape(-1).cpu().numpy()
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if "final_obs" in core_info:
            self._episode_infos(infos, core_info, truncated)
        return self._flat(obs), reward.reshape(-1).cpu().numpy().astype(np.float32), dones, infos

    def close(self) -> None:
        """Nothing to release (no window, no subprocess)."""

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The view's attribute, once per selected agent (all agents share one simulator)."""
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the view (shared by all agents, whatever ``indices``)."""
        setattr(self, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """Call a method of the view once per selected agent."""
        method = getattr(self, method_name)
        return [method(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """No agent is a wrapped ``gym.Env`` here."""
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """No rendering: one None per agent."""
        return [None] * self.num_envs

    def set_collision_scale(self, scale: float) -> None:
        """Scale of the swarm's collision penalties in [0, 1] (see ``QuadSwarmVecEnv``)."""
        self.core.set_collision_scale(scale)

    # ------------------------------------------------------------------ internals
    def _flat(self, obs: torch.Tensor) -> np.ndarray:
        # [E, M, D] -> [E * M, D]; a copy, since SB3 keeps the array and the core reuses its tensors.
        return obs.detach().reshape(self.num_envs, -1).to("cpu", torch.float32).numpy().copy()

    def _episode_infos(self, infos: list[dict[str, Any]], core_info: dict[str, Any], truncated: torch.Tensor) -> None:
        final = self._flat(core_info["final_obs"])
        trunc = truncated.reshape(-1).cpu().numpy()
        episode = core_info["episode"]
        names = list(episode)
        values = np.stack([episode[n].detach().cpu().double().numpy() for n in names], -1)  # [ended, metrics]
        scenarios = core_info["scenario"]
        m = self.num_drones
        for row, e in enumerate(core_info["episode_env_ids"].tolist()):
            metrics = dict(zip(names, values[row].tolist(), strict=True))
            for i in range(e * m, (e + 1) * m):
                infos[i]["terminal_observation"] = final[i]
                infos[i]["TimeLimit.truncated"] = bool(trunc[i])
                infos[i][METRICS_KEY] = metrics
                infos[i]["scenario"] = scenarios[row]


def make_sb3_vec_env(env_id: str, num_envs: int, **kwargs: Any) -> QuadSB3VecEnv:
    """The batched twin of ``gymnasium.make(env_id)`` for the single-drone ids of ``envs.GYM_ENV_IDS``."""
    if env_id not in GYM_ENV_IDS:
        raise ValueError(f"unknown env id {env_id!r}; allowed: {', '.join(GYM_ENV_IDS)}")
    kwargs.setdefault("scenario", GYM_ENV_IDS[env_id])
    return QuadSB3VecEnv(num_envs, **kwargs)



def episode_returns(env: QuadSB3VecEnv, act: Callable[[np.ndarray], np.ndarray], seed: int) -> np.ndarray:
    """Undiscounted return [num_envs * num_drones] of one seeded episode of every agent under ``act``.

    ``act`` maps observations [N, D] to actions [N, 4] (a trained model's ``predict``, or random ones);
    the same seed gives the same starts and vehicles, so two policies can be compared on equal terms.
    """
    env.seed(seed)
    obs = env.reset()
    total = np.zeros(env.num_envs)
    while True:
        obs, reward, dones, _ = env.step(act(obs))
        total += reward
        if dones.all():  # every episode has the core's fixed length: they all end on this step
            return total
