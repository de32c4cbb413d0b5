"""PettingZoo view of the batched swarm simulator (one environment, M drones as agents).

    from envs import quad_swarm_v0
    env = quad_swarm_v0.parallel_env(num_drones=8, scenario="o_random")
    obs, infos = env.reset(seed=0)                       # {"drone_0": float32 (D,), ...}
    obs, rew, term, trunc, infos = env.step({a: env.action_space(a).sample() for a in env.agents})

All drones start and end together; at the last step each agent's info holds the swarm's episode
metrics (``infos[agent]["metrics"]``). ``env(**config)`` is the same as an AEC environment.

Design note (episode ends, seeding): docs/design/pettingzoo_views.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils.conversions import parallel_to_aec

from envs.config import SwarmConfig, make_config
from envs.observations import ObsSpec
from envs.swarm import ACTION_DIM, QuadSwarmVecEnv

# Key of the per-episode metrics in the info dicts of both the PettingZoo and the Gymnasium views.
# Not "episode": Gymnasium's RecordEpisodeStatistics asserts that key is free, and SB3's Monitor
# overwrites it, so metrics stored there would break or vanish under the usual wrappers.
METRICS_KEY = "metrics"
# Upper bound (exclusive) of core seeds drawn for unseeded resets; torch.manual_seed takes 64 bits.
SEED_HIGH = 2**63 - 1


def validate_action(action: Any, who: str) -> np.ndarray:
    """Return ``action`` as a float32 array of shape (4,), or raise ValueError naming ``who``.

    Accepts numpy arrays, torch tensors and sequences of real numbers. Values outside [-1, 1] are
    allowed (the core clips them); NaN/inf, wrong shapes and non-numeric values are not.
    """
    if isinstance(action, torch.Tensor):
        action = action.detach().cpu().numpy()
    try:
        arr = np.asarray(action)
    except (TypeError, ValueError) as exc:  # ragged lists and the like
        raise ValueError(f"action for {who} cannot be read as an array: {exc}") from exc
    # Only real numbers: np.asarray would happily turn None, strings or bools into arrays.
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"action for {who} must be real numbers, got {action!r} (dtype {arr.dtype})")
    if arr.shape != (ACTION_DIM,):
        raise ValueError(f"action for {who} must have shape ({ACTION_DIM},) (one command per motor), got {arr.shape}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"action for {who} contains NaN or inf: {arr.tolist()}; allowed: finite values in [-1, 1]")
    return arr


def episode_info(core_info: dict[str, Any], env_index: int = 0) -> dict[str, Any]:
    """Per-episode metrics of environment ``env_index`` from a core step's info, as plain Python values."""
    ids = core_info["episode_env_ids"].tolist()
    row = ids.index(env_index)
    metrics = {name: float(values[row]) for name, values in core_info["episode"].items()}
    return {METRICS_KEY: metrics, "scenario": core_info["scenario"][row]}


class QuadSwarmParallelEnv(ParallelEnv[str, np.ndarray, np.ndarray]):
    """Parallel PettingZoo environment: agents ``drone_0 .. drone_{M-1}`` of one swarm environment."""

    metadata = {"name": "quad_swarm_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self, device: str | torch.device = "cpu", render_mode: str | None = None, **config: Any):
        if render_mode is not None:
            raise ValueError(f"render_mode={render_mode!r} is not supported; allowed: None")
        self.render_mode = render_mode
        self.cfg: SwarmConfig = make_config(**config)
        self._core = QuadSwarmVecEnv(self.cfg, num_envs=1, device=device)
        self.obs_spec: ObsSpec = self._core.spec  # segment sizes, for policies that split the obs
        self.possible_agents = [f"drone_{i}" for i in range(self.cfg.num_drones)]
        self.agents: list[str] = []
        self._index = {a: i for i, a in enumerate(self.possible_agents)}
        # One space object per agent, created once: PettingZoo requires identity across calls, and
        # distinct objects keep per-agent action-space seeding independent.
        dim = self._core.obs_dim
        self.observation_spaces = {a: spaces.Box(-np.inf, np.inf, (dim,), np.float32) for a in self.possible_agents}
        self.action_spaces = {a: spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32) for a in self.possible_agents}
        self._np_random: np.random.Generator | None = None

    def observation_space(self, agent: str) -> spaces.Box:
        """The (cached) observation space of ``agent``: Box(-inf, inf, (D,), float32)."""
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Box:
        """The (cached) action space of ``agent``: Box(-1, 1, (4,), float32), one command per motor."""
        return self.action_spaces[agent]

    def reset(
        self, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        """Start a new episode; ``options`` is accepted for API compatibility and ignored."""
        if seed is not None:
            self._np_random, _ = seeding.np_random(seed)
            core_seed = int(seed)
        else:
            if self._np_random is None:
                self._np_random, _ = seeding.np_random()
            core_seed = int(self._np_random.integers(SEED_HIGH))
        obs = self._core.reset(seed=core_seed)
        self.agents = self.possible_agents[:]
        return self._obs_dict(obs), {a: {} for a in self.agents}

    def step(self, actions: Mapping[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        """Apply one action per live agent; returns observations, rewards, terminations, truncations, infos."""
        if not self.agents:
            raise RuntimeError("no live agents: call reset() first (the previous episode has ended)")
        if not isinstance(actions, Mapping):
            raise ValueError(f"actions must be a dict {{agent: action}}, got {type(actions).__name__}")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"missing actions for agents {missing}; every live agent must act")
        unknown = [a for a in actions if a not in self.agents]
        if unknown:
            raise ValueError(f"actions given for unknown or finished agents {unknown}; live agents: {self.agents}")
        # Rows by drone index; a finished drone (none today: all end together) would idle at zero.
        batch = np.zeros((len(self.possible_agents), ACTION_DIM), np.float32)  # [M, 4]
        for a in self.agents:
            batch[self._index[a]] = validate_action(actions[a], a)
        act = torch.from_numpy(batch).unsqueeze(0)  # [1, M, 4]

        obs, reward, terminated, truncated, info = self._core.step(act)
        ended = "final_obs" in info
        if ended:
            obs = info["final_obs"]  # the core's obs is already the next episode's first one
        # Only live agents get entries (PettingZoo rule); today all drones live and end together.
        live = self.agents
        all_obs = self._obs_dict(obs)
        observations = {a: all_obs[a] for a in live}
        rew, term, trunc = reward[0].tolist(), terminated[0].tolist(), truncated[0].tolist()
        rewards = {a: rew[self._index[a]] for a in live}
        terms = {a: term[self._index[a]] for a in live}
        truncs = {a: trunc[self._index[a]] for a in live}
        if ended:
            ep = episode_info(info)
            # Fresh dicts per agent: a caller mutating one agent's info must not change another's.
            infos = {a: {METRICS_KEY: dict(ep[METRICS_KEY]), "scenario": ep["scenario"]} for a in self.agents}
        else:
            infos = {a: {} for a in self.agents}
        self.agents = [a for a in self.agents if not (terms[a] or truncs[a])]
        return observations, rewards, terms, truncs, infos

    def close(self) -> None:
        """Nothing to release (no window, no subprocess); safe to call any number of times."""

    def _obs_dict(self, obs: torch.Tensor) -> dict[str, np.ndarray]:
        # Copy: the caller keeps these arrays, and the core may reuse its tensors in place.
        arr = obs[0].detach().to("cpu", torch.float32).numpy().copy()  # [M, D]
        return {a: arr[i] for i, a in enumerate(self.possible_agents)}


def parallel_env(**config: Any) -> QuadSwarmParallelEnv:
    """The parallel PettingZoo environment; keywords go to ``make_config`` (plus ``device``, ``render_mode``)."""
    return QuadSwarmParallelEnv(**config)


def env(**config: Any) -> AECEnv:
    """The AEC PettingZoo environment (the parallel one behind ``parallel_to_aec``, order enforced)."""
    return parallel_to_aec(parallel_env(**config))
