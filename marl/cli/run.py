"""``marl run``: a thin shell over marl.pipeline.run_pipeline (the README's main job end to end)."""

from __future__ import annotations

import argparse
import sys

from marl.pipeline import PipelineError, run_pipeline


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        run_pipeline(args.out, args.quick)
    except PipelineError as err:
        print(f"marl run: {err}", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``marl run`` to the ``marl`` parser."""
    p = sub.add_parser("run", help="the main job: demo, train, evaluate (sim + PyBullet), export, benchmark",
                       description="Run the README's main job end to end and print a summary of the pipeline.")
    p.add_argument("--out", default="runs", help="output directory (default runs)")
    p.add_argument("--quick", action="store_true", help="tiny budgets: checks that every step works (minutes)")
    p.set_defaults(func=_cmd_run)
