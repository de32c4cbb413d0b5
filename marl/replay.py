"""Collision replay (quad-swarm-rl): restart new episodes from states shortly before past crashes.

A ring of periodic env snapshots, an event buffer of states taken ``lookback_seconds`` before a
crash, and per-env episode bookkeeping; a new episode starts from an event with probability
``prob`` while recent crashes are rare. Replayed episodes are flagged, so the collector keeps them
out of the reported success rates. Everything is plain tensors and lists, so ``state_dict`` /
``load_state_dict`` make a resume exact. How it works, step by step: docs/design/distributed.md
("Collision replay").
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import torch

from envs.state import SimState
from marl.train_config import ReplayConfig


def _take(snapshot: dict[str, torch.Tensor], env: int) -> dict[str, torch.Tensor]:
    return {k: v[env : env + 1].clone() for k, v in snapshot.items()}


class CollisionReplay:
    """The ring of snapshots, the event buffer and the per-env episode bookkeeping."""

    def __init__(self, cfg: ReplayConfig, num_envs: int, num_drones: int, ctrl_dt: float):
        self.cfg = cfg
        self.num_drones = num_drones
        self.snap_every = max(1, round(cfg.snapshot_seconds / ctrl_dt))
        self.lookback = round(cfg.lookback_seconds / ctrl_dt)
        self.ring: deque[tuple[dict[str, torch.Tensor], torch.Tensor]] = deque(
            maxlen=math.ceil(cfg.history_seconds / cfg.snapshot_seconds) + 1
        )
        self.events: list[dict[str, torch.Tensor]] = []  # one-env snapshots (SimState.to_dict)
        self.replays: list[int] = []
        self.crash_history: deque[float] = deque(maxlen=cfg.recent_episodes)
        self.episode = torch.zeros(num_envs, dtype=torch.long)  # episode number per env
        self.crashed = torch.zeros(num_envs, dtype=torch.bool)  # a crash was seen in this episode
        self.replayed = torch.zeros(num_envs, dtype=torch.bool)  # this episode started from an event
        self.stored = 0  # events ever stored (a diagnostic)
        self.steps = 0  # env steps seen (the snapshot cadence counts them)

    def active(self) -> bool:
        """True while new episodes may start from events (there are some and recent crashes are rare)."""
        if not self.cfg.enabled or not self.events or not self.crash_history:
            return False
        return sum(self.crash_history) / len(self.crash_history) < self.cfg.max_crashes

    def after_step(self, env: Any, t_before: torch.Tensor, info: dict) -> torch.Tensor | None:
        """Record crashes of the step just taken and take the periodic snapshot.

        env: a vec env with snapshots and per-step metrics (``marl.vec_env.Snapshots``,
        ``StepMetrics``); t_before: [E] env time before the step, so a crash in an episode that just
        ended is placed correctly.
        Returns, for the episodes that ended in this step (``info["episode_env_ids"]``), whether each
        was a replay (bool [n]), or None when none ended.
        """
        live = env.live  # the working layout: flags are [M, E]
        crash = (live.col_nbr | live.col_obs).any(0).cpu()
        done_ids = info.get("episode_env_ids")
        if done_ids is not None:  # their flags were already reset: read the finished episode's metrics
            ids = done_ids.cpu()
            crash[ids] = info["episode"]["collision_rate"].cpu() > 0
        new = (crash & ~self.crashed).nonzero().flatten().tolist()
        crash_t = t_before.cpu() + 1
        for e in new:
            self._store(e, int(crash_t[e]))
        self.crashed |= crash
        was_replayed = None
        if done_ids is not None:
            ids = done_ids.cpu()
            was_replayed = self.replayed[ids].clone()
            rates = info["episode"]["collision_rate"].cpu()[~was_replayed]
            self.crash_history.extend((rates * self.num_drones).tolist())
            self.episode[ids] += 1
            self.crashed[ids] = False
            self.replayed[ids] = False
        self.steps += 1
        if self.cfg.enabled and self.steps % self.snap_every == 0:
            snap = env.get_state(torch.arange(env.num_envs)).to_dict()
            self.ring.append(({k: v.cpu() for k, v in snap.items()}, self.episode.clone()))
        return was_replayed

    def _store(self, e: int, crash_t: int) -> None:
        if not self.cfg.enabled:
            return
        for snap, episode in reversed(self.ring):
            if int(episode[e]) == int(self.episode[e]) and int(snap["t"][e]) <= crash_t - self.lookback:
                self.events.append(_take(snap, e))
                self.replays.append(0)
                self.stored += 1
                if len(self.events) > self.cfg.capacity:
                    self.events.pop(0)
                    self.replays.pop(0)
                return

    def restore(self, env: Any, ids: torch.Tensor, gen: torch.Generator) -> torch.Tensor | None:
        """Maybe restart some of the just-reset envs ``ids`` from events; returns the new obs or None."""
        if ids.numel() == 0 or not self.active():
            return None
        pick = torch.rand(ids.numel(), generator=gen) < self.cfg.prob
        chosen = ids.cpu()[pick]
        if chosen.numel() == 0:
            return None
        which = torch.randint(len(self.events), (chosen.numel(),), generator=gen).tolist()
        parts = [self.events[i] for i in which]
        stacked = SimState.from_dict({k: torch.cat([p[k] for p in parts]) for k in parts[0]})
        obs = env.set_state(chosen.to(env.device), stacked)
        for i in which:
            self.replays[i] += 1
        keep = [i for i, n in enumerate(self.replays) if n < self.cfg.max_replays]
        self.events = [self.events[i] for i in keep]
        self.replays = [self.replays[i] for i in keep]
        self.replayed[chosen] = True
        return obs

    def state_dict(self) -> dict:
        """Plain tensors and lists (loads with torch.load(weights_only=True))."""
        return {
            "ring": [{"snapshot": s, "episode": e} for s, e in self.ring],
            "events": list(self.events), "replays": list(self.replays),
            "crash_history": list(self.crash_history), "episode": self.episode, "crashed": self.crashed,
            "replayed": self.replayed, "stored": self.stored, "steps": self.steps,
        }

    def load_state_dict(self, d: dict) -> None:
        """Inverse of state_dict."""
        self.ring.clear()
        for item in d["ring"]:
            self.ring.append((item["snapshot"], item["episode"]))
        self.events, self.replays = list(d["events"]), [int(n) for n in d["replays"]]
        self.crash_history.clear()
        self.crash_history.extend(float(x) for x in d["crash_history"])
        self.episode, self.crashed, self.replayed = d["episode"].clone(), d["crashed"].clone(), d["replayed"].clone()
        self.stored, self.steps = int(d["stored"]), int(d["steps"])
