"""``marl train``: a thin shell over marl.trainer.train (resolve the config, prepare the run directory, train).

    marl train CONFIG [key=value ...] [--run-dir DIR] [--steps N] [--overwrite]
    marl train --resume RUN [key=value ...]            (RUN: a run directory, or a name under runs/)
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from marl.cli.common import RUNS, print_json, run_path
from marl.ppo import NonFiniteError
from marl.train_config import RunConfig, resolve_config
from marl.trainer import load_run_config, train

RUN_OUTPUTS = ("config.yaml", "metrics.jsonl", "checkpoints", "tb", "plots", "nan_report.json", "eval.json")


def _holds_run(path: Path) -> bool:
    metrics = path / "metrics.jsonl"
    return (path / "checkpoints").is_dir() or (metrics.is_file() and metrics.stat().st_size > 0)


def _fresh(args: argparse.Namespace, overrides: list[str]) -> tuple[RunConfig, Path]:
    """The config of a new run and its directory, emptied with --overwrite (refused otherwise)."""
    if args.config is None:
        raise ValueError("give a CONFIG (a shipped name such as quickstart, or a YAML path) or --resume RUN")
    cfg = resolve_config(args.config, overrides)  # validated before anything is created
    run_dir = Path(args.run_dir) if args.run_dir else RUNS / cfg.name
    if _holds_run(run_dir):
        if not args.overwrite:
            raise ValueError(f"run directory {run_dir} already holds a run; continue it with --resume {run_dir}, "
                             "start over with --overwrite, or choose another --run-dir")
        for name in RUN_OUTPUTS:
            p = run_dir / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    return cfg, run_dir


def _resumed(args: argparse.Namespace, overrides: list[str]) -> tuple[RunConfig, Path]:
    """The stored config of the run to continue (with overrides) and its directory."""
    if args.config is not None:
        if "=" not in args.config:
            raise ValueError(f"with --resume the config comes from the run; got an extra config {args.config!r}")
        overrides.insert(0, args.config)
    run_dir = run_path(args.resume)
    if not (run_dir / "checkpoints" / "latest.pt").is_file():
        raise ValueError(f"--resume {args.resume}: no checkpoint at {run_dir / 'checkpoints' / 'latest.pt'}")
    return load_run_config(run_dir, overrides), run_dir


def _cmd_train(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(f"train.total_agent_steps={args.steps}")
    cfg, run_dir = _resumed(args, overrides) if args.resume else _fresh(args, overrides)
    try:
        summary = train(cfg, run_dir, resume=bool(args.resume), progress=not args.no_progress)
    except NonFiniteError as err:
        print(f"marl: training stopped: {err}. Nothing was written over the last good checkpoint "
              f"({run_dir / 'checkpoints' / 'latest.pt'}); see {run_dir / 'nan_report.json'}. "
              "Lower train.lr or train.max_grad_norm and resume or start over.", file=sys.stderr)
        return 1
    print_json(summary)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``marl train`` to the ``marl`` parser."""
    p = sub.add_parser(
        "train", help="train a policy with PPO (MAPPO / IPPO)",
        description="Train on a shipped config (e.g. quickstart) or a YAML file; key=value overrides use dotted "
        "keys with YAML values (train.lr=3e-4 env.num_drones=4). Writes runs/NAME/ (config.yaml, metrics.jsonl, "
        "tb/, checkpoints/latest.pt and best.pt).",
    )
    p.add_argument("config", nargs="?", help="shipped config name or YAML path (omit with --resume)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--run-dir", help="output directory (default runs/NAME)")
    p.add_argument("--steps", type=int, help="total agent steps (train.total_agent_steps)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this directory (or runs/RUN)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in the run directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    p.set_defaults(func=_cmd_train)
