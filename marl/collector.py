"""The collector: vector envs, a copy of the policy, the rollout buffer, the episode window, collision
replay and annealing. ``collect(weights, progress)`` loads the learner's weights and fills one rollout.

One process trains with a learner plus one local ``Collector``; on Ray the same learner gathers from
remote collectors (``marl.distributed``). A collector builds no optimiser and computes no advantage:
it returns a :class:`Rollout` (the filled buffer, the bootstrap value and the episodes that finished)
and the learner does GAE and the update. What an env can do beyond ``marl.vec_env.VecEnv``
(snapshots, collision scale, per-step metrics) is checked once here. Design note:
docs/design/distributed.md ("Collector and learner").
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from agents.base import ActorCritic
from envs.state import SimState
from marl.imitation.data import make_teacher
from marl.ppo import ValueNorm, check_finite
from marl.replay import CollisionReplay
from marl.rollout import RolloutBuffer
from marl.train_config import RunConfig
from marl.vec_env import VecEnv, capabilities, make_vec_env
from quadspec import POS_ERROR

# Episode metrics of the simulator that every record holds (None before the first episode); other
# environments log the metrics they report (at least episode_return and episode_length).
EPISODE_KEYS = (
    "episode_return", "success_rate", "reached_goal_rate", "deadlock_rate", "collision_rate",
    "neighbour_collision_rate", "obstacle_collision_rate", "floor_collision_rate", "wall_collision_rate",
    "distance_to_goal_1s", "episode_length",
)
BASE_EPISODE_KEYS = ("episode_return", "episode_length")
# Rollout tensors a collector fills (a remote one sends them; the learner's buffer takes them as they are).
ROLLOUT_KEYS = ("obs", "actions", "logprobs", "values", "rewards", "dones")


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (the env and trainer generators are seeded apart)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Progress:
    """Where the run stands when a rollout starts: what the collector needs from the learner."""

    update: int  # completed updates
    num_updates: int
    agent_steps: int  # the run's agent steps so far (annealing follows them)


@dataclass
class Rollout:
    """One filled rollout: buffer rows without advantages yet, plus what GAE and the record need."""

    buf: RolloutBuffer
    last_value: torch.Tensor  # [E, M] denormalised value of the observation after the last step
    last_obs: torch.Tensor  # [E, M, D]
    episodes: dict[str, torch.Tensor]  # metric -> values of the (non-replayed) episodes that finished
    finished: int
    stats: dict[str, float] = field(default_factory=dict)  # collision_scale, replay counts (what the env has)
    teacher: bool = False  # buf.teacher_actions holds this rollout's teacher labels (pretrain.bc)


class EpisodeWindow:
    """Metrics of the most recent ``size`` finished (non-replayed) episodes; means are what gets logged."""

    def __init__(self, size: int, always: tuple[str, ...] = EPISODE_KEYS):
        self.size, self.always = size, always  # ``always``: keys every record holds (None before data)
        self.values: dict[str, torch.Tensor] = {}
        self.total = 0

    def add(self, metrics: dict[str, torch.Tensor], keep: torch.Tensor | None = None) -> int:
        """Append a batch of episodes (``keep`` masks out replays); returns how many were added."""
        n = 0
        for key, values in metrics.items():
            x = values.detach().float().cpu()
            if keep is not None:
                x = x[keep]
            n = x.numel()
            old = self.values.get(key, torch.zeros(0))
            self.values[key] = torch.cat([old, x])[-self.size :]
        self.total += n
        return n

    def means(self) -> dict[str, float | None]:
        """Mean of each metric over the window (None before the first episode)."""
        keys = dict.fromkeys((*self.always, *self.values))
        return {k: (float(self.values[k].mean()) if k in self.values and self.values[k].numel() else None)
                for k in keys}

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors (for the checkpoint)."""
        return {"values": dict(self.values), "total": self.total}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Inverse of state_dict."""
        self.values, self.total = dict(d["values"]), int(d["total"])


class Sampler(Protocol):
    """What the trainer needs from its rollout side: a local :class:`Collector` or Ray's remote ones."""

    num_envs: int  # the run's batch of envs
    window: EpisodeWindow  # the run's recent episodes

    def collect(self, weights: dict[str, Any], progress: Progress) -> Rollout: ...

    def record(self) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def generators(self) -> dict[str, torch.Generator]: ...

    def load_state_dict(self, ckpt: dict[str, Any], seed: int) -> None: ...

    def close(self) -> None: ...


class Collector:
    """``num_envs`` envs of ``cfg.env`` and a policy copy; ``collect`` fills one rollout.

    ``cfg.train.num_envs`` is the run's whole batch (annealing counts the run's agent steps, which a
    collector with a share of the envs advances by the batch per step); ``seed`` starts the envs and
    the replay draws.
    """

    def __init__(self, cfg: RunConfig, num_envs: int, seed: int, policy: ActorCritic,
                 device: str | torch.device | None = None, buffers: int = 1):
        tc = cfg.train
        self.cfg, self.num_envs, self.run_envs = cfg, num_envs, tc.num_envs
        self.device = torch.device(tc.device if device is None else device)
        self.env: VecEnv = make_vec_env(cfg.env, num_envs, self.device)
        self.caps = capabilities(self.env)
        self.num_agents = self.env.num_agents
        self.policy = policy.to(self.device)
        self.value_norm = ValueNorm().to(self.device) if tc.norm_value else None
        # pretrain.bc: a teacher labels every observation the policy flies (built only when the term is on,
        # so a run without it calls no controller and stores nothing more).
        bc = cfg.pretrain.bc if cfg.pretrain is not None else None
        self.teacher = (make_teacher(cfg.pretrain.teacher, cfg.env, device=self.device,
                                     gains=cfg.pretrain.teacher_gains)
                        if bc is not None and bc.coef > 0 else None)
        # ``buffers`` > 1: rollouts fill them in turn, so one can be collected while the learner reads the last
        # (train.overlap); ``buf`` is the one the last rollout filled.
        self.bufs = [RolloutBuffer(tc.rollout_steps, num_envs, self.num_agents, self.env.obs_dim, policy.act_dim,
                                   self.device, teacher=self.teacher is not None) for _ in range(buffers)]
        self.buf, self.rollouts = self.bufs[0], 0
        self.gen = torch.Generator().manual_seed(seed + 2)  # replay draws (the learner's is seed + 1)
        self.replay: CollisionReplay | None = None
        if tc.replay.enabled:
            if not (self.caps.snapshots and self.caps.step_metrics):
                raise ValueError("train.replay.enabled=true needs env snapshots and per-step collision flags "
                                 f"({type(self.env).__name__} has none): set it to false")
            self.replay = CollisionReplay(tc.replay, num_envs, self.num_agents, self.env.ctrl_dt)
        self.window = EpisodeWindow(cfg.logging.episode_window or tc.num_envs,
                                    EPISODE_KEYS if self.caps.step_metrics else BASE_EPISODE_KEYS)
        self.obs = self.env.reset(seed=seed)
        self.stats: dict[str, float] = {}

    def _collision_scale(self, agent_steps: int) -> float:
        a = self.cfg.train.anneal
        if a.collision_steps == 0:
            return 1.0
        return a.start + (1.0 - a.start) * min(1.0, agent_steps / a.collision_steps)

    def _denorm(self, value: torch.Tensor) -> torch.Tensor:
        return self.value_norm.denormalize(value) if self.value_norm is not None else value

    def load_weights(self, weights: dict[str, Any]) -> None:
        """Take the learner's policy and value-norm state (``Learner.weights``)."""
        self.policy.load_state_dict(weights["model"])
        if self.value_norm is not None:
            self.value_norm.load_state_dict(weights["value_norm"])

    @torch.no_grad()
    def collect(self, weights: dict[str, Any], progress: Progress) -> Rollout:
        """Fill the buffer with ``rollout_steps`` steps of the policy with ``weights``; NonFiniteError on NaN."""
        self.load_weights(weights)
        self.policy.set_training_progress(progress.update, progress.num_updates)
        self.buf = self.bufs[self.rollouts % len(self.bufs)]
        self.rollouts += 1
        tc, buf, env, policy, replay = self.cfg.train, self.buf, self.env, self.policy, self.replay
        update = progress.update + 1
        run_steps_per_step = self.run_envs * self.num_agents  # the run's agent steps per step of every collector
        episodes: dict[str, list[torch.Tensor]] = {}
        finished = 0
        # Once the BC term has decayed to 0 for good, the teacher is no longer called.
        teacher = self.teacher if self.teacher is not None and self.labels_teacher(progress.update) else None
        radius = self.cfg.pretrain.bc.radius if teacher is not None else None
        for t in range(tc.rollout_steps):
            if self.caps.collision_scale:
                env.set_collision_scale(self._collision_scale(progress.agent_steps + t * run_steps_per_step))
            dist, value = policy(self.obs)
            action = policy.sample(dist)
            check_finite("actions", action.float(), update)
            buf.obs[t] = self.obs
            buf.actions[t] = action.view(buf.actions.shape[1:])
            buf.logprobs[t] = policy.log_prob(dist, action)
            buf.values[t] = self._denorm(value)
            if teacher is not None:  # every step, on the flown observation: its integral follows the trajectory
                buf.teacher_actions[t] = teacher(self.obs)
                buf.teacher_weights[t] = (1.0 if radius is None else
                                          (self.obs[..., POS_ERROR].norm(dim=-1) < radius).float())
            t_before = env.live.t.clone() if replay is not None else None
            self.obs, reward, terminated, truncated, info = env.step(action)
            done = (terminated | truncated).any(-1)  # [E]: all agents of an env reset together
            ended = info.get("episode_env_ids")
            if ended is not None:
                # Time-limit cut: bootstrap from the value of the last observation (the obs has no clock).
                cut = (truncated[ended] & ~terminated[ended]).float()
                _, final_value = policy(info["final_obs"][ended])
                reward[ended] += tc.gamma * self._denorm(final_value) * cut
            replayed = replay.after_step(env, t_before, info) if replay is not None else None
            if ended is not None:
                if teacher is not None:
                    teacher.reset(ended)
                keep = None if replayed is None else ~replayed
                finished += self.window.add(info["episode"], keep)
                for key, values in info["episode"].items():
                    x = values.detach().float().cpu()
                    episodes.setdefault(key, []).append(x if keep is None else x[keep])
                if replay is not None:
                    restored = replay.restore(env, ended, self.gen)
                    if restored is not None:
                        self.obs = restored
            buf.rewards[t] = reward
            buf.dones[t] = done.float()
        check_finite("rewards", buf.rewards, update)
        check_finite("observations", buf.obs, update)
        _, last_value = policy(self.obs)
        stats: dict[str, float] = {}
        if self.caps.collision_scale:
            stats["collision_scale"] = env.collision_scale
        if replay is not None:
            stats.update(replay_events=len(replay.events), replay_stored=replay.stored)
        return Rollout(buf, self._denorm(last_value), self.obs, {k: torch.cat(v) for k, v in episodes.items()},
                       finished, stats, teacher=teacher is not None)

    def labels_teacher(self, update: int) -> bool:
        """Whether the rollout for update ``update`` (0-based) holds fresh teacher labels (``pretrain.bc``)."""
        if self.teacher is None:
            return False
        pre = self.cfg.pretrain
        return not (pre.bc.updates and update - pre.critic_warmup_updates >= pre.bc.updates)

    def record(self) -> dict[str, Any]:
        """Metrics of the rollout side beyond the rollout's own (none for one local collector)."""
        return {}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The episode window, the replay and, for an env with snapshots, the env state and observation."""
        state: dict[str, Any] = {"episodes": self.window.state_dict()}
        if self.replay is not None:
            state["replay"] = self.replay.state_dict()
        if self.caps.snapshots:
            ids = torch.arange(self.num_envs, device=self.device)
            state["env"] = {"state": self.env.get_state(ids).to_dict(), "obs": self.obs}
        integral = getattr(self.teacher, "integral", None)
        if integral is not None:  # the teacher's integral follows the envs (a resume continues it)
            state["teacher_integral"] = integral
        return state

    def generators(self) -> dict[str, torch.Generator]:
        """The generators a checkpoint saves: replay draws and, with snapshots, the env's own."""
        return {"collector": self.gen, **({"env": self.env.gen} if self.caps.snapshots else {})}

    def load_state_dict(self, ckpt: dict[str, Any], seed: int) -> None:
        """Restore from a checkpoint; without an env snapshot (a PettingZoo env, a Ray run) new episodes
        start from ``seed``. Raises KeyError / RuntimeError for a checkpoint that does not fit."""
        self.window.load_state_dict(ckpt["episodes"])
        if self.replay is not None and "replay" in ckpt:
            self.replay.load_state_dict(ckpt["replay"])
        if self.caps.snapshots and "env" in ckpt:
            ids = torch.arange(self.num_envs, device=self.device)
            self.env.set_state(ids, SimState.from_dict(ckpt["env"]["state"]))
            self.obs = ckpt["env"]["obs"].to(self.device)
            if self.teacher is not None and "teacher_integral" in ckpt:
                self.teacher.integral = ckpt["teacher_integral"].to(self.device)
        else:
            self.obs = self.env.reset(seed=seed)
            if self.teacher is not None:
                self.teacher.reset(None)

    def close(self) -> None:
        """Close the envs that have a ``close``."""
        close = getattr(self.env, "close", None)  # PettingZoo copies hold resources; the simulator has none
        if close is not None:
            close()
