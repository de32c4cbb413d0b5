"""``marl plot RUN``: learning curves of a run (marl.plot) and, for CommFormer runs, its graph (marl.comm_plot)."""

from __future__ import annotations

import argparse

from marl.cli.common import run_path
from marl.comm_plot import plot_communication
from marl.plot import plot_run


def _cmd_plot(args: argparse.Namespace) -> int:
    run_dir = run_path(args.run)
    if not run_dir.is_dir():
        raise ValueError(f"run {args.run!r} not found (looked for {run_dir})")
    for path in plot_run(run_dir, args.out):
        print(path)
    if (run_dir / "checkpoints" / "latest.pt").is_file():
        for path in plot_communication(run_dir, args.out):  # [] unless the policy communicates
            print(path)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``marl plot`` to the ``marl`` parser."""
    p = sub.add_parser("plot", help="learning curves (PNG) of a run; the graph and gate rate of CommFormer runs")
    p.add_argument("run", help="run directory, or a name under runs/")
    p.add_argument("--out", help="output directory (default RUN/plots)")
    p.set_defaults(func=_cmd_plot)
