"""Multi-seed comparison of configs: train each config with each seed, evaluate, one table of mean +- std.

    from marl.sweep import sweep, format_table
    result = sweep(["predator_prey_commformer", "predator_prey_commformer_none"], seeds=[0, 1, 2])
    print(format_table(result))

Each run is ``marl train CONFIG seed=S [k=v ...]`` in its own process under ``OUT_DIR/CONFIG/sS``,
driven by one thread; as many run side by side as the cores allow for their ``train.threads``, each
pinned to its own cores. A run with an ``eval.json`` (the trainer's end-of-run evaluation) is read
back, one with a checkpoint is resumed, so a cut sweep continues where it stopped. Configs are
resolved (and so validated) before anything starts. Design note: docs/design/benchmarks.md.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marl.devices import available_cores
from marl.train_config import resolve_config

# (column, metric keys of eval.json in order of preference): what the table reports per config.
COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("success", ("success_rate",)),
    ("distance to goal", ("distance_to_goal_1s",)),
    ("collisions", ("collision_rate",)),
    ("return", ("episode_return",)),
)
LOG_NAME = "train.log"


@dataclass(frozen=True)
class SweepRun:
    """One (config, seed) run of a sweep and where it lives."""

    config: str
    seed: int
    run_dir: Path
    threads: int


def _label(config: str) -> str:
    """A directory name for a config given by shipped name or path."""
    return Path(config).stem if config.endswith((".yaml", ".yml")) else config


def plan(
    configs: Sequence[str], seeds: Sequence[int], overrides: Sequence[str] = (), out_dir: str | Path = "runs/sweep",
) -> list[SweepRun]:
    """The runs of a sweep, config-major; every config is resolved with each seed first (ValueError names a
    bad field before anything trains)."""
    if not configs or not seeds:
        raise ValueError("a sweep needs at least one CONFIG and one seed (--seeds 0 1 2)")
    labels = [_label(c) for c in configs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"configs {', '.join(configs)} name the same run directory twice")
    runs = []
    for config, label in zip(configs, labels, strict=True):
        for seed in seeds:
            cfg = resolve_config(config, [*overrides, f"seed={seed}"])
            runs.append(SweepRun(config, int(seed), Path(out_dir) / label / f"s{seed}", cfg.train.threads))
    return runs


def _train_command(run: SweepRun, overrides: Sequence[str]) -> list[str]:
    """The ``marl train`` command line of a run: resume a cut one, else start it (over any partial output)."""
    base = [sys.executable, "-m", "marl", "train"]
    quiet = ["--no-progress"]
    if (run.run_dir / "checkpoints" / "latest.pt").is_file():
        return [*base, "--resume", str(run.run_dir), *overrides, *quiet]
    return [*base, run.config, *overrides, f"seed={run.seed}", "logging.tensorboard=false", "--run-dir",
            str(run.run_dir), "--overwrite", *quiet]


def _execute(run: SweepRun, overrides: Sequence[str], cores: list[int]) -> None:
    """Train one run in a child process pinned to ``cores``; its output goes to RUN/train.log."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(run.run_dir / LOG_NAME, "a") as log:
        proc = subprocess.Popen(_train_command(run, overrides), stdout=log, stderr=subprocess.STDOUT, env=env)
        if hasattr(os, "sched_setaffinity"):
            # Set right after the start, while the child is still importing: the trainer pins itself
            # to the first train.threads cores it is allowed, which are then this run's own.
            try:
                os.sched_setaffinity(proc.pid, cores)
            except ProcessLookupError:
                pass  # it already ended (an error): the return code says so
        code = proc.wait()
    if code != 0 or not (run.run_dir / "eval.json").is_file():
        lines = (run.run_dir / LOG_NAME).read_text().strip().splitlines()
        raise RuntimeError(f"{run.run_dir}: marl train exited with {code}: {lines[-1] if lines else 'no output'}")


def _mean_std(values: list[float]) -> tuple[float, float] | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    return statistics.fmean(values), statistics.pstdev(values)


def summarise(runs: Sequence[SweepRun]) -> dict[str, Any]:
    """Per config: mean and std over its finished seeds of each column, and the seeds it has."""
    out: dict[str, Any] = {}
    for config in dict.fromkeys(r.config for r in runs):
        evals = [json.loads((r.run_dir / "eval.json").read_text()) for r in runs
                 if r.config == config and (r.run_dir / "eval.json").is_file()]
        row: dict[str, Any] = {"runs": len(evals)}
        for column, keys in COLUMNS:
            key = next((k for k in keys if any(k in e for e in evals)), None)
            stat = _mean_std([e.get(key) for e in evals]) if key else None
            row[column] = None if stat is None else {"mean": stat[0], "std": stat[1], "metric": key}
        out[config] = row
    return out


def sweep(
    configs: Sequence[str],
    seeds: Sequence[int],
    overrides: Sequence[str] = (),
    out_dir: str | Path = "runs/sweep",
    jobs: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train every config with every seed (finished runs read back, cut ones resumed), then summarise.

    ``jobs``: runs side by side (default: as many as the cores hold at each run's ``train.threads``).
    Returns ``{"runs": [...], "configs": summarise(...), "failed": [...]}``; a failed run is listed
    with its last log line and left out of the table.
    """
    runs = plan(configs, seeds, overrides, out_dir)
    cores = available_cores()
    width = max(r.threads for r in runs)
    if width > len(cores):
        raise ValueError(f"train.threads={width} exceeds the {len(cores)} cores available to this process")
    slots = max(1, len(cores) // width)
    jobs = min(slots, len(runs)) if jobs is None else jobs
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    free = [cores[i * width:(i + 1) * width] for i in range(slots)]  # core slots handed to runs in turn
    lock = threading.Lock()
    say = log or (lambda _msg: None)

    def one(run: SweepRun) -> str | None:
        if (run.run_dir / "eval.json").is_file():
            say(f"{run.run_dir}: finished, read back")
            return None
        with lock:
            slot = free.pop(0) if free else cores[:width]  # more jobs than slots: they share
        say(f"{run.run_dir}: training on cores {slot}")
        try:
            _execute(run, overrides, slot)
        except RuntimeError as err:
            return str(err)
        finally:
            with lock:
                free.append(slot)
        say(f"{run.run_dir}: done")
        return None

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        errors = list(pool.map(one, runs))
    return {
        "runs": [{"config": r.config, "seed": r.seed, "run_dir": str(r.run_dir)} for r in runs],
        "configs": summarise(runs),
        "failed": [e for e in errors if e is not None],
        "seeds": [int(s) for s in seeds],
        "overrides": list(overrides),
    }


def format_table(result: dict[str, Any]) -> str:
    """The sweep as a Markdown table: one row per config, mean +- std over seeds per column."""
    head = ["config", *(c for c, _ in COLUMNS), "runs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for config, row in result["configs"].items():
        cells = [config]
        for column, _ in COLUMNS:
            s = row[column]
            cells.append("-" if s is None else f"{s['mean']:.3f} +- {s['std']:.3f}")
        lines.append("| " + " | ".join([*cells, str(row["runs"])]) + " |")
    return "\n".join(lines)
