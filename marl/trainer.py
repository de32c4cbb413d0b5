"""The training loop: config -> collector(s) -> learner -> log -> checkpoint.

    cfg = resolve_config("quickstart", ["train.lr=3e-4"])
    summary = train(cfg, "runs/quickstart")               # or train(..., resume=True) to continue

A :class:`Trainer` is one ``marl.learner.Learner`` plus a sampler: a local ``marl.collector.Collector``
(one process) or ``marl.distributed.RaySampler`` (remote collectors on Ray, ``distributed.backend:
ray``); the learner is the same in both. ``train`` runs updates to the step budget, writes one
metrics record per update, ``checkpoints/latest.pt`` every ``checkpoint_every`` updates and
``best.pt`` at the best success rate, and stops on a NaN with ``nan_report.json``. A resumed run
produces the same numbers as one never interrupted. Design note: docs/design/distributed.md.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml

from agents.base import ActorCritic
from marl.checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from marl.collector import Collector, EpisodeWindow, Sampler, seed_everything
from marl.devices import pinned
from marl.distributed import RaySampler, effective_config
from marl.evaluate import evaluate_policy
from marl.learner import Learner
from marl.logger import RunLogger, truncate_metrics
from marl.overlap import OverlappedSampler
from marl.ppo import NonFiniteError
from marl.pretrain import warm_start
from marl.train_config import RunConfig, apply_overrides, validate_run_config
from marl.vec_env import EnvInfo, build_policy, env_info

# Config keys a resume may change: they do not alter what the saved state means (train.threads: a run cut
# on one machine goes on on another with fewer or more cores).
RESUMABLE_CHANGES = (
    "name", "description", "train.total_agent_steps", "train.checkpoint_every", "train.eval_every",
    "train.eval_episodes", "train.threads", "logging.", "distributed.",
)
# Builds the rollout side of a run from its config, the env's description and the learner's policy.
SamplerFactory = Callable[[RunConfig, EnvInfo, ActorCritic], Sampler]


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


def local_sampler(cfg: RunConfig, info: EnvInfo, policy: ActorCritic) -> Collector | OverlappedSampler:
    """One collector with the whole batch in this process, acting with a copy of the learner's policy
    (``train.overlap``: collecting in a background thread while the learner updates)."""
    tc = cfg.train
    if not tc.overlap:
        return Collector(cfg, tc.num_envs, cfg.seed, copy.deepcopy(policy))
    collector = Collector(cfg, tc.num_envs, cfg.seed, copy.deepcopy(policy), buffers=2)
    return OverlappedSampler(collector, tc.num_envs * tc.rollout_steps * info.num_agents)


def _scalars(report: Any) -> list[tuple[str, float]]:
    """The numeric entries of an evaluation report (for the metrics record)."""
    if not isinstance(report, dict):
        return []
    return [(k, float(v)) for k, v in report.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]


class Trainer:
    """A learner and its sampler for one run; ``train_step()`` is one update, ``save`` a checkpoint.

    ``sampler``: how rollouts are gathered (default: :func:`local_sampler`, or Ray's remote collectors
    for ``distributed.backend: ray``). Errors in the config or the cluster surface here, before
    anything is written.
    """

    def __init__(self, cfg: RunConfig, run_dir: str | Path, sampler: SamplerFactory | None = None):
        ray = cfg.distributed.backend == "ray"
        if ray:
            cfg = effective_config(cfg)  # train.num_envs = workers x envs_per_worker
        self.cfg, self.run_dir = cfg, Path(run_dir)
        # The same order on every collector's process (seed, policy, envs), so one remote collector
        # reproduces the local run exactly.
        seed_everything(cfg.seed)
        info = env_info(cfg.env)
        policy = build_policy(cfg, info.spec, info.num_agents, info.num_actions, info.act_dim)
        policy = policy.to(torch.device(cfg.train.device))
        make = sampler or (RaySampler if ray else local_sampler)
        # The sampler first: a cluster that cannot run the section fails before optimisers are built
        # (torch's first optimiser pulls in its compiler stack, seconds on a loaded machine).
        self.sampler: Sampler = make(cfg, info, policy)
        steps = cfg.train.num_envs * cfg.train.rollout_steps * info.num_agents
        try:
            self.learner = Learner(cfg, policy, steps)
        except BaseException:
            self.sampler.close()  # release Ray workers it may have started
            raise

    # Read-only views the loop and the benchmarks use.
    @property
    def policy(self) -> ActorCritic:
        """The trained policy (the learner's)."""
        return self.learner.policy

    @property
    def steps_per_update(self) -> int:
        """Agent steps of one update (the whole batch)."""
        return self.learner.steps_per_update

    @property
    def window(self) -> EpisodeWindow:
        """The run's recent finished episodes."""
        return self.sampler.window

    def train_step(self) -> dict[str, Any]:
        """One update (rollout + learner update); returns its metrics record."""
        learner = self.learner
        t0 = time.perf_counter()
        rollout = self.sampler.collect(learner.weights(), learner.progress())
        t1 = time.perf_counter()
        stats = learner.update_from(rollout)
        t2 = time.perf_counter()
        record: dict[str, Any] = {
            "update": learner.update, "agent_steps": learner.agent_steps, "wall_s": learner.wall_s + (t2 - t0),
            "agent_steps_per_s": learner.steps_per_update / max(t2 - t0, 1e-9), "rollout_s": t1 - t0,
            "update_s": t2 - t1, "episodes": self.window.total, "episodes_update": rollout.finished,
            **rollout.stats, **self.window.means(), **stats, **learner.diagnostics(rollout.last_obs),
            **self.sampler.record(),
        }
        return record

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs, as tensors and plain containers."""
        gens = {**self.learner.generators(), **self.sampler.generators()}
        return {"config": self.cfg.to_dict(), **self.learner.state_dict(), **self.sampler.state_dict(),
                "rng": rng_state(gens)}

    def load_state_dict(self, ckpt: dict[str, Any], source: str = "checkpoint") -> None:
        """Restore from ``state_dict`` output; CheckpointError names what does not fit."""
        diffs = config_differences(ckpt.get("config", {}), self.cfg.to_dict())
        if diffs:
            raise CheckpointError(f"{source}: incompatible config: " + "; ".join(diffs))
        try:
            self.learner.load_state_dict(ckpt)
            gens = {**self.learner.generators(), **self.sampler.generators()}
            # A checkpoint of a Ray run has no env generator (its envs lived on the workers).
            set_rng_state(ckpt["rng"], {k: g for k, g in gens.items() if k in ckpt["rng"]["generators"]})
            self.sampler.load_state_dict(ckpt, self.cfg.seed + self.learner.update)
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            raise CheckpointError(f"{source} does not fit this run ({type(err).__name__}: {err})") from None

    def save(self, name: str) -> Path:
        """Write checkpoints/NAME.pt atomically."""
        return save_checkpoint(self.run_dir / "checkpoints" / f"{name}.pt", self.state_dict(),
                               policy=self.learner.policy)

    def close(self) -> None:
        """Release the sampler (Ray workers, env resources)."""
        self.sampler.close()


@contextmanager
def open_trainer(cfg: RunConfig, run_dir: str | Path) -> Iterator[Trainer]:
    """The run's trainer, closed on exit (Ray workers released)."""
    trainer = Trainer(cfg, run_dir)
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
    with pinned(tc.threads, tc.torch_threads), open_trainer(cfg, run_dir) as trainer:
        learner = trainer.learner
        if resume:
            ckpt = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
            trainer.load_state_dict(ckpt, str(run_dir / "checkpoints" / "latest.pt"))
            del ckpt
            truncate_metrics(run_dir / "metrics.jsonl", learner.update)
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "metrics.jsonl").write_text("")
            if cfg.pretrain is not None:
                # With the overlap torch runs one thread per Python thread: the warm start's independent
                # fits then take a core each.
                warm = warm_start(learner.policy, cfg.env, cfg.pretrain, cfg.seed,
                                  workers=tc.threads if tc.overlap else 1)
                learner.agent_steps += warm["agent_steps"]
                learner.wall_s += warm["wall_s"]
                (run_dir / "pretrain.json").write_text(json.dumps(warm, indent=2) + "\n")
        write_config(cfg, run_dir)
        show = cfg.logging.progress if progress is None else progress
        logger = RunLogger(run_dir, learner.num_updates * learner.steps_per_update, cfg.logging.tensorboard, show,
                           first_update=learner.update, start_steps=learner.agent_steps)
        session_updates = 0
        last: dict[str, Any] = {}
        try:
            while learner.update < learner.num_updates:
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
                left = learner.num_updates - learner.update
                record["eta_s"] = left * record["wall_s"] / max(learner.update, 1)
                if tc.eval_every and learner.update % tc.eval_every == 0:
                    report = evaluate_policy(learner.policy, cfg, tc.eval_episodes)
                    record.update({f"eval_{k}": v for k, v in _scalars(report)})
                logger.log(record)
                last = record
                success = record.get("success_rate")
                if success is not None and trainer.window.total > episodes_before and success > learner.best_success:
                    learner.best_success = success
                    trainer.save("best")
                if learner.update % tc.checkpoint_every == 0 or learner.update == learner.num_updates:
                    trainer.save("latest")
                # Wall time counts logging and checkpoints too (they are part of what a run costs).
                learner.wall_s += time.perf_counter() - t_start
            if session_updates and learner.update % tc.checkpoint_every != 0:
                trainer.save("latest")
        finally:
            logger.close()
        summary = {
            "run_dir": str(run_dir), "updates": learner.update, "agent_steps": learner.agent_steps,
            "wall_s": learner.wall_s, "best_success_rate": learner.best_success if learner.best_success >= 0 else None,
            "last": {k: last.get(k) for k in ("success_rate", "episode_return", "collision_rate")},
            "finished": learner.update >= learner.num_updates,
        }
        if summary["finished"]:
            summary["eval"] = evaluate_policy(learner.policy, cfg, tc.eval_episodes)
            (run_dir / "eval.json").write_text(json.dumps(summary["eval"], indent=2, default=str) + "\n")
    return summary
