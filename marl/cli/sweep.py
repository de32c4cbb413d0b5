"""``marl sweep CONFIG [CONFIG ...] --seeds 0 1 2 [k=v ...]``: a thin shell over marl.sweep.sweep.

Prints one table of mean +- std over seeds per config (or the whole result with --json); exits 1
when a run failed (its log is RUN/train.log).
"""

from __future__ import annotations

import argparse
import sys

from marl.cli.common import print_json
from marl.sweep import format_table, sweep


def _split(words: list[str]) -> tuple[list[str], list[str]]:
    """(plain words, key=value words): positionals and greedy lists may swallow overrides."""
    return [w for w in words if "=" not in w], [w for w in words if "=" in w]


def _cmd_sweep(args: argparse.Namespace) -> int:
    configs, over_a = _split(args.configs)
    seeds, over_b = _split(args.seeds)
    if not all(s.lstrip("-").isdigit() for s in seeds):
        raise ValueError(f"--seeds takes integers, got {' '.join(seeds)}")
    overrides = [*over_a, *over_b, *args.overrides]
    if args.steps is not None:
        overrides.append(f"train.total_agent_steps={args.steps}")
    result = sweep(configs, [int(s) for s in seeds], overrides, args.out_dir, args.jobs,
                   log=lambda msg: print(msg, file=sys.stderr, flush=True))
    if args.json:
        print_json(result)
    else:
        print(format_table(result))
    for err in result["failed"]:
        print(f"marl sweep: {err}", file=sys.stderr)
    return 1 if result["failed"] else 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``marl sweep`` to the ``marl`` parser."""
    p = sub.add_parser(
        "sweep", help="train configs over seeds and compare them in one table (mean +- std)",
        description="Train each CONFIG with each seed (finished runs are read back, cut ones resumed), runs side by "
        "side where cores allow; evaluate each final policy and print success, distance to goal, collisions and "
        "return per config.",
    )
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="shipped config names or YAML paths")
    p.add_argument("--seeds", nargs="+", default=["0", "1", "2"], metavar="S", help="seeds (default 0 1 2)")
    p.add_argument("--steps", type=int, help="agent steps per run (train.total_agent_steps)")
    p.add_argument("--out-dir", default="runs/sweep", help="runs go to OUT_DIR/CONFIG/sSEED (default runs/sweep)")
    p.add_argument("--jobs", type=int, help="runs side by side (default: as many as the cores hold)")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    p.set_defaults(func=_cmd_sweep)
