"""The training loop: config -> env batch -> policy -> rollout buffer -> PPO update -> log -> checkpoint.

    cfg = resolve_config("quickstart", ["train.lr=3e-4"])
    summary = train(cfg, "runs/quickstart")               # or train(..., resume=True) to continue

One update collects ``rollout_steps`` control steps of ``num_envs`` environments (no gradients),
computes GAE, runs ``ppo_update``, writes one metrics record and, every ``checkpoint_every``
updates and at the end, ``checkpoints/latest.pt``. ``best.pt`` follows the best success rate of the
finished training episodes. A resumed run restores every RNG, the simulator state and the trainer's
counters, so it produces the same numbers as a run that was never interrupted (same machine, same
threads; runs on a PettingZoo environment restart their episodes, see ``marl.pettingzoo_env``).
A policy with a learned communication graph (CommFormer) is told where training stands before each
update (``set_training_progress``) and gets the bi-level schedule of ``optim.edge`` (a second
optimiser for its edge logits; see ``marl.ppo.Optimizers``). A NaN or inf stops the run with a
report naming the tensor and the update (``nan_report.json``), before anything is written over the
last good checkpoint.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from envs.state import SimState
from envs.swarm import ACTION_DIM, QuadSwarmVecEnv
from marl.bench import pinned
from marl.checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from marl.logger import RunLogger, truncate_metrics
from marl.optimizers import is_second_order, make_optimizer
from marl.pettingzoo_env import PettingZooEnvConfig, PettingZooVecEnv
from marl.ppo import NonFiniteError, Optimizers, ValueNorm, check_finite, ppo_update
from marl.replay import CollisionReplay
from marl.rollout import RolloutBuffer
from marl.train_config import RunConfig, validate_run_config

# Config keys a resume may change: they do not alter what the saved state means.
RESUMABLE_CHANGES = (
    "name", "description", "train.total_agent_steps", "train.checkpoint_every", "train.eval_every",
    "train.eval_episodes", "logging.", "distributed.",
)
# Episode metrics of the simulator that every record holds (None before the first episode); other
# environments log the metrics they report (at least episode_return and episode_length).
EPISODE_KEYS = (
    "episode_return", "success_rate", "reached_goal_rate", "deadlock_rate", "collision_rate",
    "neighbour_collision_rate", "obstacle_collision_rate", "floor_collision_rate", "wall_collision_rate",
    "distance_to_goal_1s", "episode_length",
)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (the env and trainer generators are seeded apart)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_vec_env(env_cfg: Any, num_envs: int, device: str | torch.device = "cpu") -> Any:
    """The batch of environments an ``env`` section describes: the simulator or a PettingZoo env."""
    if isinstance(env_cfg, PettingZooEnvConfig):
        return PettingZooVecEnv(env_cfg, num_envs, device)
    return QuadSwarmVecEnv(env_cfg, num_envs=num_envs, device=device)


def build_policy(
    cfg: RunConfig, layout: Any, num_agents: int, num_actions: int | None = None, act_dim: int = ACTION_DIM
) -> torch.nn.Module:
    """The policy of the ``agent`` section for the env's action space (``num_actions`` for Discrete)."""
    import agents

    agent = cfg.agent
    if agent.num_actions not in (None, num_actions):
        space = f"Discrete({num_actions})" if num_actions else f"a Box of {act_dim} dimensions"
        raise ValueError(f"agent.num_actions={agent.num_actions} does not match the environment's actions ({space})")
    return agents.make_policy_from_config(agent.model_copy(update={"num_actions": num_actions}), layout, num_agents,
                                          act_dim=act_dim)


def make_optimizers(cfg: RunConfig, policy: torch.nn.Module) -> Optimizers:
    """The policy optimiser and, for a policy with ``edge_parameters()`` and ``optim.edge.every`` > 0, the
    edge optimiser of the bi-level schedule."""
    oc, tc = cfg.optim, cfg.train
    if oc.name.lower() == "sso":  # functional mirror ascent on the actor, a gradient optimiser for the critic
        return Optimizers(None, fma=oc.fma,
                          value=make_optimizer(oc.fma.value_optimizer, policy.critic.parameters(), lr=tc.lr))
    bilevel = hasattr(policy, "edge_parameters") and oc.edge.every > 0
    params = policy.policy_parameters() if bilevel else list(policy.parameters())
    opts = Optimizers(make_optimizer(oc.name, params, lr=tc.lr, **oc.kwargs()),
                      second_order=is_second_order(oc.name))
    if bilevel:
        opts.edge = make_optimizer(oc.edge.name, policy.edge_parameters(), lr=oc.edge.lr, **oc.edge.settings)
        opts.edge_every = oc.edge.every
    return opts


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Keys whose values differ between two resolved configs, except those a resume may change."""
    a, b = _flatten(saved), _flatten(current)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE_CHANGES):
            continue
        if a.get(key) != b.get(key):
            diffs.append(f"{key}: {a.get(key)!r} in the checkpoint, {b.get(key)!r} now")
    return diffs


class EpisodeWindow:
    """Metrics of the most recent ``size`` finished (non-replayed) episodes; means are what gets logged."""

    def __init__(self, size: int, always: tuple[str, ...] = EPISODE_KEYS):
        self.size, self.always = size, always  # ``always``: keys every record holds (None before data)
        self.values: dict[str, torch.Tensor] = {}
        self.total = 0

    def add(self, metrics: dict[str, torch.Tensor], keep: torch.Tensor | None = None) -> int:
        """Append the episodes of one step (``keep`` masks out replays); returns how many were added."""
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


def _evaluator():
    """``evaluate_policy(policy, cfg, episodes)`` of the evaluation module when it has one, else None."""
    for name in ("marl.eval", "marl.evaluate"):
        if importlib.util.find_spec(name) is not None:
            fn = getattr(importlib.import_module(name), "evaluate_policy", None)
            if fn is not None:
                return fn
    return None


def _scalars(report: Any) -> list[tuple[str, float]]:
    """The numeric entries of an evaluation report (for the metrics record)."""
    if not isinstance(report, dict):
        return []
    return [(k, float(v)) for k, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]


class Trainer:
    """Holds the env batch, policy, optimiser and counters of one run; ``run()`` trains to the step budget."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        tc = cfg.train
        self.device = torch.device(tc.device)
        seed_everything(cfg.seed)
        self.env = make_vec_env(cfg.env, tc.num_envs, self.device)
        self.swarm = isinstance(self.env, QuadSwarmVecEnv)  # the simulator: replay, annealing, exact resume
        self.num_agents = self.env.num_agents
        self.policy = build_policy(cfg, self.env.spec, self.num_agents, self.env.num_actions,
                                   self.env.act_dim).to(self.device)
        self.optimizers = make_optimizers(cfg, self.policy)
        # The optimiser whose learning rate follows train.lr's schedule and whose state is checkpointed.
        self.optimizer = self.optimizers.policy or self.optimizers.value
        self.value_norm = ValueNorm() if tc.norm_value else None
        self.buf = RolloutBuffer(
            tc.rollout_steps, tc.num_envs, self.num_agents, self.env.obs_dim, self.policy.act_dim, self.device
        )
        # The trainer's own generator (minibatch order, replay draws), apart from the policy's sampling.
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.replay = CollisionReplay(tc.replay, tc.num_envs, self.num_agents, self.env.ctrl_dt)
        self.window = EpisodeWindow(cfg.logging.episode_window or tc.num_envs,
                                    EPISODE_KEYS if self.swarm else ("episode_return", "episode_length"))
        self.steps_per_update = tc.num_envs * tc.rollout_steps * self.num_agents
        self.num_updates = math.ceil(tc.total_agent_steps / self.steps_per_update)
        self.update = 0  # completed updates
        self.epochs = 0  # completed PPO epochs (the bi-level cadence counts them over the run)
        self.agent_steps = 0
        self.vec_steps = 0  # env.step calls
        self.wall_s = 0.0  # training wall time summed over sessions
        self.best_success = -1.0
        self.obs = self.env.reset(seed=cfg.seed)
        if self.swarm:
            self.env.set_collision_scale(self._collision_scale())

    # ------------------------------------------------------------------ schedules
    def _lr(self) -> float:
        tc = self.cfg.train
        if not tc.lr_decay:
            return tc.lr
        frac = 1.0 - self.update / self.num_updates
        return tc.lr * (tc.lr_final_fraction + (1.0 - tc.lr_final_fraction) * frac)

    def _collision_scale(self) -> float:
        a = self.cfg.train.anneal
        if a.collision_steps == 0:
            return 1.0
        return a.start + (1.0 - a.start) * min(1.0, self.agent_steps / a.collision_steps)

    # ------------------------------------------------------------------ one update
    @torch.no_grad()
    def collect(self) -> int:
        """Fill the rollout buffer; returns the number of (non-replayed) episodes that finished."""
        tc, buf, env, policy = self.cfg.train, self.buf, self.env, self.policy
        finished = 0
        for t in range(tc.rollout_steps):
            if self.swarm:
                env.set_collision_scale(self._collision_scale())
            dist, value = policy(self.obs)
            action = policy.sample(dist)
            check_finite("actions", action.float(), self.update + 1)
            buf.obs[t] = self.obs
            buf.actions[t] = action.view(buf.actions.shape[1:])
            buf.logprobs[t] = policy.log_prob(dist, action)
            buf.values[t] = self._denorm(value)
            t_before = env.live.t.clone() if tc.replay.enabled else None
            self.obs, reward, terminated, truncated, info = env.step(action)
            self.vec_steps += 1
            self.agent_steps += tc.num_envs * self.num_agents
            done = (terminated | truncated).any(-1)  # [E]: all agents of an env reset together
            if "episode_env_ids" in info:
                ids = info["episode_env_ids"]
                # Time-limit cut: bootstrap from the value of the last observation (the obs has no clock).
                cut = (truncated[ids] & ~terminated[ids]).float()
                _, final_value = policy(info["final_obs"][ids])
                reward[ids] += tc.gamma * self._denorm(final_value) * cut
            replayed = None
            if tc.replay.enabled:
                replayed = self.replay.after_step(env, self.vec_steps, t_before, info)
            if "episode_env_ids" in info:
                keep = None if replayed is None else ~replayed
                finished += self.window.add(info["episode"], keep)
                if tc.replay.enabled:
                    restored = self.replay.restore(env, info["episode_env_ids"], self.gen)
                    if restored is not None:
                        self.obs = restored
            buf.rewards[t] = reward
            buf.dones[t] = done.float()
        check_finite("rewards", buf.rewards, self.update + 1)
        check_finite("observations", buf.obs, self.update + 1)
        _, last_value = policy(self.obs)
        buf.compute_gae(self._denorm(last_value), tc.gamma, tc.gae_lambda)
        return finished

    def _denorm(self, value: torch.Tensor) -> torch.Tensor:
        return self.value_norm.denormalize(value) if self.value_norm is not None else value

    def train_step(self) -> dict[str, Any]:
        """One update (rollout + PPO); returns its metrics record."""
        lr = self._lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if hasattr(self.policy, "set_training_progress"):
            self.policy.set_training_progress(self.update, self.num_updates)
        t0 = time.perf_counter()
        finished = self.collect()
        t1 = time.perf_counter()
        stats = ppo_update(self.policy, self.optimizers, self.buf, self.cfg.train, self.value_norm, self.gen,
                           self.update + 1, self.epochs)
        t2 = time.perf_counter()
        self.update += 1
        self.epochs += int(stats["epochs"])
        record: dict[str, Any] = {
            "update": self.update, "agent_steps": self.agent_steps, "wall_s": self.wall_s + (t2 - t0),
            "agent_steps_per_s": self.steps_per_update / max(t2 - t0, 1e-9), "rollout_s": t1 - t0,
            "update_s": t2 - t1, "lr": lr, "episodes": self.window.total, "episodes_update": finished,
        }
        if self.swarm:
            record["collision_scale"] = self.env.collision_scale
        record.update(self.window.means())
        record.update(stats)
        with torch.no_grad():
            if self.policy.num_actions is None:
                record["action_std"] = float(self.policy(self.obs[:1])[0].stddev.mean())
            if hasattr(self.policy, "communication_stats"):  # what CommFormer's acting graph and gates do now
                record.update(self.policy.communication_stats(self.obs))
        if self.cfg.train.replay.enabled:
            record["replay_events"] = len(self.replay.events)
            record["replay_stored"] = self.replay.stored
        return record

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs, as tensors and plain containers."""
        env = self.env
        state = {
            "config": self.cfg.to_dict(),
            "counters": {"update": self.update, "agent_steps": self.agent_steps, "vec_steps": self.vec_steps,
                         "wall_s": self.wall_s, "best_success": self.best_success, "epochs": self.epochs},
            "model": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "edge_optimizer": self.optimizers.edge.state_dict() if self.optimizers.edge is not None else {},
            "value_norm": self.value_norm.state_dict() if self.value_norm is not None else {},
            "rng": rng_state({"trainer": self.gen, **({"env": env.gen} if self.swarm else {})}),
            "replay": self.replay.state_dict(),
            "episodes": self.window.state_dict(),
        }
        if self.swarm:
            state["env"] = {"state": env.get_state(torch.arange(env.num_envs, device=env.device)).to_dict(),
                            "obs": self.obs, "collision_scale": env.collision_scale}
        return state

    def load_state_dict(self, ckpt: dict[str, Any], source: str = "checkpoint") -> None:
        """Restore from ``state_dict`` output; CheckpointError names what does not fit."""
        diffs = config_differences(ckpt.get("config", {}), self.cfg.to_dict())
        if diffs:
            raise CheckpointError(f"{source}: incompatible config: " + "; ".join(diffs))
        try:
            self.policy.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            if self.optimizers.edge is not None:
                self.optimizers.edge.load_state_dict(ckpt["edge_optimizer"])
            if self.value_norm is not None:
                self.value_norm.load_state_dict(ckpt["value_norm"])
            if self.swarm:
                env_state = ckpt["env"]
                ids = torch.arange(self.env.num_envs, device=self.env.device)
                self.env.set_state(ids, SimState.from_dict(env_state["state"]))
                self.env.set_collision_scale(float(env_state["collision_scale"]))
                self.obs = env_state["obs"].to(self.device)
                set_rng_state(ckpt["rng"], {"trainer": self.gen, "env": self.env.gen})
            else:  # no snapshot of a PettingZoo env: fresh episodes, seeded by where the run stands
                set_rng_state(ckpt["rng"], {"trainer": self.gen})
                self.obs = self.env.reset(seed=self.cfg.seed + int(ckpt["counters"]["update"]))
            self.replay.load_state_dict(ckpt["replay"])
            self.window.load_state_dict(ckpt["episodes"])
            c = ckpt["counters"]
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            raise CheckpointError(f"{source} does not fit this run ({type(err).__name__}: {err})") from None
        self.update, self.agent_steps, self.vec_steps = int(c["update"]), int(c["agent_steps"]), int(c["vec_steps"])
        self.wall_s, self.best_success = float(c["wall_s"]), float(c["best_success"])
        self.epochs = int(c.get("epochs", self.update * self.cfg.train.epochs))

    def save(self, name: str) -> Path:
        """Write checkpoints/NAME.pt atomically."""
        return save_checkpoint(self.run_dir / "checkpoints" / f"{name}.pt", self.state_dict())


@contextmanager
def open_trainer(cfg: RunConfig, run_dir: str | Path) -> Iterator[Trainer]:
    """The run's trainer: a Trainer, or with ``distributed.backend: ray`` the learner of ``marl.distributed``
    (imported only then: a single-machine run never imports Ray), whose workers are released on exit."""
    if cfg.distributed.backend == "none":
        yield Trainer(cfg, run_dir)
        return
    from marl.distributed import DistributedTrainer

    trainer = DistributedTrainer(cfg, run_dir)
    try:
        yield trainer
    finally:
        trainer.close()


def write_config(cfg: RunConfig, run_dir: Path) -> None:
    """The resolved config as config.yaml (atomically)."""
    tmp = run_dir / ".config.yaml.tmp"
    tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    tmp.replace(run_dir / "config.yaml")


def load_run_config(run_dir: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """The resolved config of an existing run directory, with ``key=value`` overrides applied."""
    from marl.train_config import apply_overrides

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ValueError(f"{run_dir} is not a run directory (no config.yaml)")
    raw = yaml.safe_load(path.read_text()) or {}
    return validate_run_config(apply_overrides(raw, list(overrides or [])), str(path))


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    resume: bool = False,
    stop_after_updates: int | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train (or, with ``resume``, continue) the run in ``run_dir``; returns a summary dict.

    ``stop_after_updates`` ends this session after that many updates (with a checkpoint), as if the
    process had been stopped there; a later ``resume`` continues to the full step budget.
    Raises NonFiniteError (after writing nan_report.json) and CheckpointError.
    """
    run_dir = Path(run_dir)
    tc = cfg.train
    with pinned(tc.threads), open_trainer(cfg, run_dir) as trainer:
        if resume:
            ckpt = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
            trainer.load_state_dict(ckpt, str(run_dir / "checkpoints" / "latest.pt"))
            del ckpt
            truncate_metrics(run_dir / "metrics.jsonl", trainer.update)
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "metrics.jsonl").write_text("")
        write_config(cfg, run_dir)
        show = cfg.logging.progress if progress is None else progress
        logger = RunLogger(run_dir, trainer.num_updates * trainer.steps_per_update, cfg.logging.tensorboard, show,
                           first_update=trainer.update, start_steps=trainer.agent_steps)
        session_updates = 0
        last: dict[str, Any] = {}
        evaluate = _evaluator()
        try:
            while trainer.update < trainer.num_updates:
                if stop_after_updates is not None and session_updates >= stop_after_updates:
                    break
                episodes_before = trainer.window.total
                t_start = time.perf_counter()
                try:
                    record = trainer.train_step()
                except NonFiniteError as err:
                    report = {"update": err.update, "tensor": err.tensor, "message": str(err),
                              "last_good_checkpoint": str(run_dir / "checkpoints" / "latest.pt")}
                    (run_dir / "nan_report.json").write_text(json.dumps(report, indent=2) + "\n")
                    raise
                session_updates += 1
                left = trainer.num_updates - trainer.update
                record["eta_s"] = left * record["wall_s"] / max(trainer.update, 1)
                if evaluate is not None and tc.eval_every and trainer.update % tc.eval_every == 0:
                    report = evaluate(trainer.policy, cfg, tc.eval_episodes)
                    record.update({f"eval_{k}": v for k, v in _scalars(report)})
                logger.log(record)
                last = record
                success = record.get("success_rate")
                if success is not None and trainer.window.total > episodes_before and success > trainer.best_success:
                    trainer.best_success = success
                    trainer.save("best")
                if trainer.update % tc.checkpoint_every == 0 or trainer.update == trainer.num_updates:
                    trainer.save("latest")
                # Wall time counts logging and checkpoints too (they are part of what a run costs).
                trainer.wall_s += time.perf_counter() - t_start
            if session_updates and trainer.update % tc.checkpoint_every != 0:
                trainer.save("latest")
        finally:
            logger.close()
        summary = {
            "run_dir": str(run_dir), "updates": trainer.update, "agent_steps": trainer.agent_steps,
            "wall_s": trainer.wall_s, "best_success_rate": trainer.best_success if trainer.best_success >= 0 else None,
            "last": {k: last.get(k) for k in ("success_rate", "episode_return", "collision_rate")},
            "finished": trainer.update >= trainer.num_updates,
        }
        if evaluate is not None and summary["finished"]:
            summary["eval"] = evaluate(trainer.policy, cfg, tc.eval_episodes)
            (run_dir / "eval.json").write_text(json.dumps(summary["eval"], indent=2, default=str) + "\n")
    return summary
