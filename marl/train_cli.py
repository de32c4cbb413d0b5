"""``marl train``, ``marl plot`` and ``marl bench train``: thin shells over marl.trainer, marl.plot, marl.bench_train.

    marl train CONFIG [key=value ...] [--run-dir DIR] [--steps N] [--overwrite]
    marl train --resume RUN [key=value ...]            (RUN: a run directory, or a name under runs/)
    marl plot RUN [--out DIR]
    marl bench train [--config NAME] [--seconds S] [--threads N] [--json] [key=value ...]
    marl bench train --distributed [--workers N ...] [--envs-per-worker E] [--address A] [--json] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

RUNS = Path("runs")
RUN_OUTPUTS = ("config.yaml", "metrics.jsonl", "checkpoints", "tb", "plots", "nan_report.json", "eval.json")


def _run_path(run: str) -> Path:
    """A run directory given as a path, or as a name under runs/."""
    path = Path(run)
    if path.is_dir() or "/" in run or os.sep in run:
        return path
    return RUNS / run


def _holds_run(path: Path) -> bool:
    metrics = path / "metrics.jsonl"
    return (path / "checkpoints").is_dir() or (metrics.is_file() and metrics.stat().st_size > 0)


def _cmd_train(args: argparse.Namespace) -> int:
    from marl.ppo import NonFiniteError
    from marl.train_config import resolve_config
    from marl.trainer import load_run_config, train

    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(f"train.total_agent_steps={args.steps}")
    if args.resume:
        if args.config is not None:
            if "=" not in args.config:
                raise ValueError(f"with --resume the config comes from the run; got an extra config {args.config!r}")
            overrides.insert(0, args.config)
        run_dir = _run_path(args.resume)
        if not (run_dir / "checkpoints" / "latest.pt").is_file():
            raise ValueError(f"--resume {args.resume}: no checkpoint at {run_dir / 'checkpoints' / 'latest.pt'}")
        cfg = load_run_config(run_dir, overrides)
    else:
        if args.config is None:
            raise ValueError("give a CONFIG (a shipped name such as quickstart, or a YAML path) or --resume RUN")
        cfg = resolve_config(args.config, overrides)  # validated before anything is created
        run_dir = Path(args.run_dir) if args.run_dir else RUNS / cfg.name
        if _holds_run(run_dir):
            if not args.overwrite:
                raise ValueError(
                    f"run directory {run_dir} already holds a run; continue it with --resume {run_dir}, "
                    "start over with --overwrite, or choose another --run-dir"
                )
            for name in RUN_OUTPUTS:
                p = run_dir / name
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    try:
        summary = train(cfg, run_dir, resume=bool(args.resume), progress=not args.no_progress)
    except NonFiniteError as err:
        print(
            f"marl: training stopped: {err}. Nothing was written over the last good checkpoint "
            f"({run_dir / 'checkpoints' / 'latest.pt'}); see {run_dir / 'nan_report.json'}. "
            "Lower train.lr or train.max_grad_norm and resume or start over.",
            file=sys.stderr,
        )
        return 1
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from marl.plot import plot_run

    run_dir = _run_path(args.run)
    if not run_dir.is_dir():
        raise ValueError(f"run {args.run!r} not found (looked for {run_dir})")
    from marl.comm_plot import plot_communication

    for path in plot_run(run_dir, args.out):
        print(path)
    if (run_dir / "checkpoints" / "latest.pt").is_file():
        for path in plot_communication(run_dir, args.out):  # CommFormer runs: graph and gates
            print(path)
    return 0


def _cmd_bench_train(args: argparse.Namespace) -> int:
    from marl.bench_train import bench_train, bench_train_distributed

    if args.distributed:
        # ``--workers 1 2 train.epochs=1``: the greedy list takes the overrides that follow it; give them back.
        overrides = [*args.overrides, *(w for w in args.workers if "=" in w)]
        if args.threads is not None:  # the learner's cores (the workers get distributed.cpus_per_worker)
            overrides.append(f"train.threads={args.threads}")
        counts = [w for w in args.workers if "=" not in w]
        if not all(w.isdigit() for w in counts):
            raise ValueError(f"--workers takes worker counts (integers >= 1), got {' '.join(counts)}")
        result = bench_train_distributed(args.config, args.seconds, [int(w) for w in counts], args.envs_per_worker,
                                         args.address, args.cpus_per_worker, overrides)
        if args.json:
            print(json.dumps(result, indent=2, default=str))
            return 0
        print(f"{'workers':>8} {'envs':>6} {'agent-steps/s':>14} {'vs 1 process':>13} {'rollout steps/s':>16} "
              f"{'rollout':>8} {'update':>7}")
        for row in [{**result["single"], "workers": "1 proc", "speedup_vs_single": 1.0}, *result["distributed"]]:
            print(f"{row['workers']:>8} {row['envs']:>6} {row['agent_steps_per_s']:>14,.0f} "
                  f"{row['speedup_vs_single']:>12.2f}x {row['rollout_agent_steps_per_s']:>16,.0f} "
                  f"{row['rollout_share']:>8.0%} {row['update_share']:>7.0%}")
        return 0
    result = bench_train(args.config, args.seconds, args.threads, args.overrides)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        for key in ("agent_steps_per_s", "rollout_agent_steps_per_s", "rollout_share", "update_share", "updates",
                    "envs", "drones", "threads", "policy", "parameters"):
            value = result[key]
            print(f"{key:>26}  {value:,.3f}" if isinstance(value, float) else f"{key:>26}  {value}")
    return 0


class _Intermixed(argparse.ArgumentParser):
    """A sub-command parser that accepts ``key=value`` positionals before and after options.

    Plain argparse matches all positionals in one go, so ``marl train quickstart --steps 5 train.lr=1``
    would reject ``train.lr=1``; intermixed parsing (the stdlib's) takes them wherever they stand.
    """

    _busy = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._busy:  # parse_known_intermixed_args calls back into this method
            return super().parse_known_args(args, namespace)
        self._busy = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._busy = False


def _bench_subparsers(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The ``bench WHAT`` sub-command group that marl.cli created."""
    bench = sub.choices["bench"]
    for action in bench._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise RuntimeError("marl bench has no sub-commands")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train``, ``plot`` and ``bench train`` to the ``marl`` parser."""
    train = sub.add_parser(
        "train", help="train a policy with PPO (MAPPO / IPPO)",
        description="Train on a shipped config (e.g. quickstart) or a YAML file; key=value overrides use dotted "
        "keys with YAML values (train.lr=3e-4 env.num_drones=4). Writes runs/NAME/ (config.yaml, metrics.jsonl, "
        "tb/, checkpoints/latest.pt and best.pt).",
    )
    train.add_argument("config", nargs="?", help="shipped config name or YAML path (omit with --resume)")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    train.add_argument("--run-dir", help="output directory (default runs/NAME)")
    train.add_argument("--steps", type=int, help="total agent steps (train.total_agent_steps)")
    train.add_argument("--resume", metavar="RUN", help="continue the run in this directory (or runs/RUN)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run in the run directory")
    train.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    train.set_defaults(func=_cmd_train)
    train.__class__ = _Intermixed

    plot = sub.add_parser("plot", help="learning curves (PNG) of a run; the graph and gate rate of CommFormer runs")
    plot.add_argument("run", help="run directory, or a name under runs/")
    plot.add_argument("--out", help="output directory (default RUN/plots)")
    plot.set_defaults(func=_cmd_plot)

    bt = _bench_subparsers(sub).add_parser(
        "train", help="end-to-end training throughput (agent-steps/s)",
        description="Time whole PPO updates (simulation, inference and the update) of a config.",
    )
    bt.add_argument("--config", default="quickstart", help="shipped config name or YAML path (default quickstart)")
    bt.add_argument("--seconds", type=float, default=30.0, help="timed seconds after one warm-up update (default 30)")
    bt.add_argument("--threads", type=int, help="cores to pin to (default: the config's train.threads)")
    bt.add_argument("--json", action="store_true", help="print the result as JSON")
    bt.add_argument("--distributed", action="store_true",
                    help="time Ray rollout workers (marl.distributed) for each --workers count against one process")
    bt.add_argument("--workers", nargs="+", default=["1", "2"], metavar="N",
                    help="worker counts with --distributed (default 1 2)")
    bt.add_argument("--envs-per-worker", type=int, metavar="E",
                    help="with --distributed: E envs per worker (weak scaling; default: train.num_envs split)")
    bt.add_argument("--address", help="with --distributed: a Ray cluster to join (default: a local instance)")
    bt.add_argument("--cpus-per-worker", type=float, default=1.0, help="with --distributed: Ray CPUs per worker")
    bt.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    bt.set_defaults(func=_cmd_bench_train)
    bt.__class__ = _Intermixed
