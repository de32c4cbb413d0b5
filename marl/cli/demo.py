"""``marl demo``: a thin shell over marl.demo.run_demo (one episode flown by a built-in controller)."""

from __future__ import annotations

import argparse

from agents.controllers import CONTROLLERS
from marl.cli.common import print_json
from marl.demo import run_demo


def _cmd_demo(args: argparse.Namespace) -> int:
    print_json(run_demo(out_dir=args.out, seed=args.seed, quick=args.quick, policy=args.policy))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``marl demo`` to the ``marl`` parser."""
    p = sub.add_parser("demo", help="run the demo and write its outputs")
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--quick", action="store_true", help="a short run (for tests and smoke checks)")
    p.add_argument("--policy", default="pid_avoid",
                   help=f"built-in controller ({', '.join(CONTROLLERS)}), zoo:NAME (marl zoo) or a run dir / "
                   "checkpoint (default pid_avoid)")
    p.set_defaults(func=_cmd_demo)
