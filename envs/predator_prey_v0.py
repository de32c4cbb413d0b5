"""Predator-prey on a grid, in the style of IC3Net (Singh et al., 2019) as used by CommFormer.

    from envs import predator_prey_v0
    env = predator_prey_v0.parallel_env(grid_size=5, vision=1, num_predators=3, max_steps=20)
    obs, infos = env.reset(seed=0)                  # {"predator_0": float32 (D,), ...}
    obs, rew, term, trunc, infos = env.step({a: env.action_space(a).sample() for a in env.agents})

N predators with limited vision must all reach one static prey; Discrete(5) actions, flat Box
observations of D = 3 + 3 (2 vision + 1)^2 (``env.obs_layout`` describes them for agents/), the
episode's metrics in ``infos[agent]["metrics"]`` at the last step. numpy only.

Design note (task, reward, observation layout, metrics): docs/design/predator_prey.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils.conversions import parallel_to_aec

from quadspec import flat_layout  # the observation is one self segment (the contract's layout record)

# Same key as envs.quad_swarm_v0.METRICS_KEY (not imported: that module pulls in torch and the core).
METRICS_KEY = "metrics"
TIMESTEP_PENALTY = -0.05
PREY_REWARD = 0.05
# Action index -> (dx, dy) with y growing "up": up, right, down, left, stay (IC3Net's order).
MOVES = np.array([[0, 1], [1, 0], [0, -1], [-1, 0], [0, 0]], dtype=np.int64)
NUM_ACTIONS = len(MOVES)
SELF_FEATURES = 3  # x, y, on_prey
CELL_CHANNELS = 3  # predators, prey, outside


@dataclass(frozen=True)
class PredatorPreyConfig:
    """Settings of the task; ``validate`` names the offending field."""

    grid_size: int = 5
    vision: int = 1
    num_predators: int = 3
    max_steps: int = 20

    def validate(self) -> None:
        """Raise ValueError naming a field that is out of range."""
        for name, low in (("grid_size", 2), ("vision", 0), ("num_predators", 1), ("max_steps", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name}={value!r} must be an integer >= {low}")
        if self.num_predators >= self.grid_size**2:
            raise ValueError(
                f"num_predators={self.num_predators} must be < grid_size**2={self.grid_size**2} (room for the prey)"
            )


def obs_dim(vision: int) -> int:
    """Width of a predator's observation for a vision radius."""
    return SELF_FEATURES + CELL_CHANNELS * (2 * vision + 1) ** 2


class PredatorPreyParallelEnv(ParallelEnv[str, np.ndarray, np.int64]):
    """Parallel PettingZoo environment: agents ``predator_0 .. predator_{N-1}``."""

    metadata = {"name": "predator_prey_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self, render_mode: str | None = None, **config: Any):
        if render_mode is not None:
            raise ValueError(f"render_mode={render_mode!r} is not supported; allowed: None")
        try:
            self.config = PredatorPreyConfig(**config)
        except TypeError as exc:
            allowed = ", ".join(PredatorPreyConfig.__dataclass_fields__)
            raise ValueError(f"unknown predator_prey_v0 option in {sorted(config)}; allowed: {allowed}") from exc
        self.config.validate()
        self.render_mode = None
        n = self.config.num_predators
        self.possible_agents = [f"predator_{i}" for i in range(n)]
        self.agents: list[str] = []
        self.obs_layout = flat_layout(obs_dim(self.config.vision))
        self._obs_space = spaces.Box(0.0, 1.0, (self.obs_layout.dim,), np.float32)
        self._act_space = spaces.Discrete(NUM_ACTIONS)
        self._obs_spaces = {a: self._obs_space for a in self.possible_agents}
        self._act_spaces = {a: self._act_space for a in self.possible_agents}
        self._rng = np.random.default_rng()
        self._predators = np.zeros((n, 2), np.int64)
        self._prey = np.zeros(2, np.int64)
        self._steps = 0

    def observation_space(self, agent: str) -> spaces.Box:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.Discrete:
        return self._act_spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            for i, space in enumerate(self._act_spaces.values()):
                space.seed(seed + i)
        g = self.config.grid_size
        self._predators = self._rng.integers(0, g, size=(self.config.num_predators, 2))
        taken = {tuple(p) for p in self._predators.tolist()}
        free = [(x, y) for x in range(g) for y in range(g) if (x, y) not in taken]
        self._prey = np.array(free[self._rng.integers(len(free))], np.int64)
        self._steps = 0
        self.agents = list(self.possible_agents)
        return self._observations(), {a: {} for a in self.agents}

    def step(self, actions: Mapping[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        if not self.agents:
            raise RuntimeError("step() called with no live agents; call reset() first")
        unknown = set(actions) - set(self.agents)
        missing = set(self.agents) - set(actions)
        if unknown or missing:
            raise ValueError(
                f"actions must cover exactly the live agents; unknown: {sorted(unknown)}, missing: {sorted(missing)}"
            )
        on_prey = self._on_prey()
        g = self.config.grid_size
        for i, agent in enumerate(self.possible_agents):
            action = _validate_action(actions[agent], agent)
            if not on_prey[i]:  # a predator on the prey stays there
                self._predators[i] = np.clip(self._predators[i] + MOVES[action], 0, g - 1)
        self._steps += 1
        on_prey = self._on_prey()
        count = int(on_prey.sum())
        rewards_arr = np.where(on_prey, PREY_REWARD * count, TIMESTEP_PENALTY)
        success = count == self.config.num_predators
        truncated = not success and self._steps >= self.config.max_steps
        obs = self._observations()
        rewards = {a: float(rewards_arr[i]) for i, a in enumerate(self.agents)}
        terms = {a: success for a in self.agents}
        truncs = {a: truncated for a in self.agents}
        infos: dict[str, dict[str, Any]] = {a: {"on_prey": bool(on_prey[i])} for i, a in enumerate(self.agents)}
        if success or truncated:
            metrics = {
                "success": float(success),
                "steps": float(self._steps),
                "predators_on_prey": count / self.config.num_predators,
            }
            for a in self.agents:
                infos[a][METRICS_KEY] = dict(metrics)
            self.agents = []
        return obs, rewards, terms, truncs, infos

    def state(self) -> np.ndarray:
        """Global state: predator and prey positions normalised to [0, 1], float32 (2 N + 2,)."""
        g = self.config.grid_size - 1
        return (np.concatenate([self._predators.reshape(-1), self._prey]) / g).astype(np.float32)

    def render(self) -> None:
        return None

    def close(self) -> None:
        return None

    def _on_prey(self) -> np.ndarray:
        return (self._predators == self._prey).all(-1)

    def _observations(self) -> dict[str, np.ndarray]:
        cfg = self.config
        g, v, n = cfg.grid_size, cfg.vision, cfg.num_predators
        w = 2 * v + 1
        # Padded grids: predator counts and prey, with the outside band marked.
        pad = g + 2 * v
        counts = np.zeros((pad, pad), np.float32)
        np.add.at(counts, (self._predators[:, 0] + v, self._predators[:, 1] + v), 1.0)
        prey = np.zeros((pad, pad), np.float32)
        prey[self._prey[0] + v, self._prey[1] + v] = 1.0
        outside = np.ones((pad, pad), np.float32)
        outside[v : v + g, v : v + g] = 0.0
        on_prey = self._on_prey()
        out = {}
        for i, agent in enumerate(self.possible_agents):
            x, y = self._predators[i]
            window = (slice(x, x + w), slice(y, y + w))  # padded coordinates: the window around (x, y)
            others = counts[window].copy()
            others[v, v] -= 1.0  # not oneself
            cells = np.stack([others / n, prey[window], outside[window]], -1).reshape(-1)
            own = np.array([x / (g - 1), y / (g - 1), float(on_prey[i])], np.float32)
            out[agent] = np.concatenate([own, cells]).astype(np.float32)
        return {a: out[a] for a in self.agents} if self.agents else out


def _validate_action(action: Any, who: str) -> int:
    """An integer action in [0, 5), or ValueError naming ``who``."""
    arr = np.asarray(action)
    if arr.shape not in ((), (1,)) or arr.dtype.kind not in "iu":
        raise ValueError(f"action for {who} must be an integer in [0, {NUM_ACTIONS}), got {action!r}")
    value = int(arr.reshape(()))
    if not 0 <= value < NUM_ACTIONS:
        raise ValueError(
            f"action for {who} must be an integer in [0, {NUM_ACTIONS}) (up, right, down, left, stay), got {value}"
        )
    return value


def parallel_env(**config: Any) -> PredatorPreyParallelEnv:
    """The parallel environment; ``config``: grid_size, vision, num_predators, max_steps."""
    return PredatorPreyParallelEnv(**config)


def env(**config: Any) -> AECEnv:
    """The same task as an AEC environment."""
    return parallel_to_aec(parallel_env(**config))
