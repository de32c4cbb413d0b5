"""Train on any PettingZoo ParallelEnv: ``env: pettingzoo:<module>:<constructor>`` in an experiment.

    env: pettingzoo:mpe2.simple_spread_v3:parallel_env          # shorthand
    env:                                                         # with constructor keywords
      target: pettingzoo:envs.predator_prey_v0:parallel_env
      kwargs: {grid_size: 5, vision: 1, num_predators: 3}

``PettingZooVecEnv`` steps ``num_envs`` copies in a Python loop behind ``marl.vec_env.VecEnv`` (obs
[E, M, D], one shared Box or Discrete observation and action space); it declares no optional
capability: no snapshots (a resume starts fresh episodes), no collision scale, no clock. Spaces,
early-finishing agents, seeding and the ``info`` of finished episodes: ``PettingZooVecEnv.step``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agents.layers import Layout

PREFIX = "pettingzoo:"


def parse_target(text: str) -> tuple[str, str]:
    """``pettingzoo:pkg.module:constructor`` -> ("pkg.module", "constructor"); ValueError otherwise."""
    if not isinstance(text, str) or not text.startswith(PREFIX) or text.count(":") != 2:
        raise ValueError(
            f"env target {text!r} must look like pettingzoo:<module>:<constructor> "
            "(e.g. pettingzoo:mpe2.simple_spread_v3:parallel_env)"
        )
    _, module, ctor = text.split(":")
    if not module or not ctor:
        raise ValueError(f"env target {text!r}: module and constructor must not be empty")
    return module, ctor


def load_constructor(text: str) -> Callable[..., Any]:
    """The callable a target names; ValueError if its module or attribute does not exist."""
    module_name, ctor = parse_target(text)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"env target {text!r}: cannot import module {module_name!r} ({err})") from None
    fn = getattr(module, ctor, None)
    if not callable(fn):
        raise ValueError(f"env target {text!r}: module {module_name!r} has no callable {ctor!r}")
    return fn


class PettingZooEnvConfig(BaseModel):
    """The ``env`` section for a PettingZoo environment (``target`` and constructor keywords)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str = Field(description="pettingzoo:<module>:<constructor>, a function returning a ParallelEnv")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keywords for the constructor")

    @field_validator("target")
    @classmethod
    def _loadable(cls, v: str) -> str:
        load_constructor(v)
        return v

    def make(self) -> Any:
        """One instance, checked to be a PettingZoo ParallelEnv."""
        env = load_constructor(self.target)(**self.kwargs)
        if not isinstance(env, ParallelEnv):
            raise ValueError(
                f"env target {self.target!r} returned a {type(env).__name__}, not a pettingzoo ParallelEnv "
                "(point it at a parallel_env constructor; AEC environments are not supported)"
            )
        return env


def is_pettingzoo_env(section: Any) -> bool:
    """Whether an ``env`` section (raw YAML value) names a PettingZoo environment."""
    if isinstance(section, str):
        return section.startswith(PREFIX)
    return isinstance(section, dict) and "target" in section


def pettingzoo_env_config(section: Any) -> PettingZooEnvConfig:
    """The validated config of a raw ``env`` section (the string shorthand or the mapping)."""
    return PettingZooEnvConfig(target=section) if isinstance(section, str) else PettingZooEnvConfig(**section)


def _obs_size(space: spaces.Space, where: str) -> int:
    if isinstance(space, spaces.Box):
        return int(np.prod(space.shape))
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    raise ValueError(f"{where}: observation space {space} is not supported; allowed: Box, Discrete")


class PettingZooVecEnv:
    """``num_envs`` copies of a PettingZoo ParallelEnv behind the trainer's batched interface."""

    def __init__(self, cfg: PettingZooEnvConfig, num_envs: int, device: str | torch.device = "cpu"):
        if num_envs < 1:
            raise ValueError(f"num_envs={num_envs} must be >= 1")
        self.cfg, self.num_envs, self.device = cfg, num_envs, torch.device(device)
        self.envs = [cfg.make() for _ in range(num_envs)]
        first = self.envs[0]
        self.agents: list[str] = list(first.possible_agents)
        self._column = {a: j for j, a in enumerate(self.agents)}  # agent name -> its column in [E, M]
        self.num_agents = len(self.agents)
        obs_spaces = {a: first.observation_space(a) for a in self.agents}
        act_spaces = {a: first.action_space(a) for a in self.agents}
        obs_space, act_space = obs_spaces[self.agents[0]], act_spaces[self.agents[0]]
        for a in self.agents:
            if obs_spaces[a] != obs_space or act_spaces[a] != act_space:
                raise ValueError(
                    f"{cfg.target}: agent {a!r} has spaces {obs_spaces[a]} / {act_spaces[a]}, agent "
                    f"{self.agents[0]!r} {obs_space} / {act_space}; shared-parameter training needs one space for all"
                )
        self.obs_space, self.action_space = obs_space, act_space
        self.obs_dim = _obs_size(obs_space, cfg.target)
        if isinstance(act_space, spaces.Discrete):
            self.num_actions: int | None = int(act_space.n)
            self.act_dim = 1
        elif isinstance(act_space, spaces.Box):
            self.num_actions, self.act_dim = None, int(np.prod(act_space.shape))
        else:
            raise ValueError(f"{cfg.target}: action space {act_space} is not supported; allowed: Box, Discrete")
        layout = getattr(first, "obs_layout", None)
        self.spec = layout if layout is not None and layout.dim == self.obs_dim else Layout(self.obs_dim, 0, 1, 0)
        self._obs = np.zeros((num_envs, self.num_agents, self.obs_dim), np.float32)
        self._return = np.zeros((num_envs, self.num_agents))
        self._length = np.zeros(num_envs, np.int64)

    # ------------------------------------------------------------------ conversions
    def _flat(self, o: Any) -> np.ndarray:
        if isinstance(self.obs_space, spaces.Discrete):
            return np.eye(self.obs_dim, dtype=np.float32)[int(o) - self.obs_space.start]
        return np.asarray(o, np.float32).reshape(-1)

    def _fill(self, i: int, obs: dict[str, Any]) -> None:
        for j, a in enumerate(self.agents):
            if a in obs:
                self._obs[i, j] = self._flat(obs[a])

    def _action(self, a: torch.Tensor) -> Any:
        if self.num_actions is not None:
            return int(a.reshape(()).item()) + int(self.action_space.start)
        return a.detach().cpu().numpy().astype(self.action_space.dtype).reshape(self.action_space.shape)

    def _check_actions(self, actions: torch.Tensor) -> torch.Tensor:
        if not isinstance(actions, torch.Tensor):
            raise ValueError(f"actions must be a torch.Tensor, got {type(actions).__name__}")
        e, m = self.num_envs, self.num_agents
        want = (e, m) if self.num_actions is not None else (e, m, self.act_dim)
        if self.num_actions is not None and tuple(actions.shape) == (e, m, 1):
            actions = actions.squeeze(-1)
        if tuple(actions.shape) != want:
            raise ValueError(f"actions must have shape {list(want)}, got {list(actions.shape)}")
        if not bool(torch.isfinite(actions.float()).all()):
            raise ValueError("actions contain NaN or inf")
        if self.num_actions is not None:
            bad = (actions < 0) | (actions >= self.num_actions) | (actions != actions.round())
            if bool(bad.any()):
                raise ValueError(f"discrete actions must be integers in 0..{self.num_actions - 1}")
        return actions.cpu()

    # ------------------------------------------------------------------ the batched interface
    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Reset every copy (copy i with ``seed + i``); returns obs [E, M, D]."""
        self._obs[:] = 0.0
        for i, env in enumerate(self.envs):
            obs, _ = env.reset(seed=None if seed is None else seed + i)
            self._fill(i, obs)
        self._return[:] = 0.0
        self._length[:] = 0
        return torch.from_numpy(self._obs.copy()).to(self.device)

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """One step of every copy: obs [E, M, D], reward, terminated, truncated [E, M], info.

        A copy whose episode ended for every agent is reset; ``info`` then holds ``episode_env_ids`` [n],
        ``final_obs`` [E, M, D] (the last observation of those rows) and ``episode``: the return, the
        length and the env's numeric ``infos[agent]["metrics"]`` (``success`` as ``success_rate``). An
        agent that finishes early keeps its last observation and gets reward 0 until all are done.
        Copy i is seeded with ``seed + i`` at the first reset and draws its own seeds after that.
        """
        actions = self._check_actions(actions)
        e, m = self.num_envs, self.num_agents
        reward = np.zeros((e, m), np.float32)
        terminated = np.zeros((e, m), bool)
        truncated = np.zeros((e, m), bool)
        ended: list[int] = []
        final_obs = None
        metrics: list[dict[str, float]] = []
        for i, env in enumerate(self.envs):
            live = list(env.agents)
            acts = {a: self._action(actions[i, self._column[a]]) for a in live}
            obs, rew, term, trunc, infos = env.step(acts)
            self._fill(i, obs)
            for j, a in enumerate(self.agents):
                reward[i, j] = float(rew.get(a, 0.0))
                terminated[i, j] = bool(term.get(a, False))
                truncated[i, j] = bool(trunc.get(a, False))
            self._return[i] += reward[i]
            self._length[i] += 1
            if not env.agents:  # the episode is over for everyone
                ended.append(i)
                if final_obs is None:
                    final_obs = self._obs.copy()
                final_obs[i] = self._obs[i]
                info_metrics = next((v.get("metrics") for v in infos.values() if isinstance(v, dict)), None) or {}
                row = {"episode_return": float(self._return[i].mean()), "episode_length": float(self._length[i])}
                for key, value in info_metrics.items():
                    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
                        row["success_rate" if key == "success" else key] = float(value)
                metrics.append(row)
                # A copy that ends has every agent terminated or truncated at this step (or before).
                truncated[i] |= ~terminated[i]
                self._obs[i] = 0.0
                new_obs, _ = env.reset()
                self._fill(i, new_obs)
                self._return[i] = 0.0
                self._length[i] = 0
        info: dict[str, Any] = {}
        if ended:
            keys = sorted(set().union(*metrics))
            info["episode_env_ids"] = torch.tensor(ended, device=self.device)
            info["final_obs"] = torch.from_numpy(final_obs).to(self.device)
            info["episode"] = {k: torch.tensor([row.get(k, float("nan")) for row in metrics]) for k in keys}
        dev = self.device
        return (torch.from_numpy(self._obs.copy()).to(dev), torch.from_numpy(reward).to(dev),
                torch.from_numpy(terminated).to(dev), torch.from_numpy(truncated).to(dev), info)

    def close(self) -> None:
        """Close every copy."""
        for env in self.envs:
            env.close()
