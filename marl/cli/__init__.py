"""The ``marl`` command line: one module per command, each a thin shell over one library function.

    marl bench sim|train|optim   marl configs [NAME]   marl demo   marl train CONFIG [k=v ...]
    marl eval POLICY   marl export RUN   marl plot RUN   marl sweep CONFIG ... --seeds ...   marl run

Every module in ``COMMANDS`` has ``register(sub)`` (adds its parser with ``set_defaults(func=...)``).
Commands that take ``key=value`` overrides declare an ``overrides`` positional; overrides given
after options are collected here (``parse_known_args``), so they may stand anywhere on the line.
Bad settings (a ValueError or a pydantic ValidationError) print one line naming the field to stderr
and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from marl.cli import bench, configs, demo, export, plot, run, sweep, train
from marl.cli import eval as evaluate
from marl.config import format_validation_error

EXIT_USAGE = 2
COMMANDS = (bench, configs, demo, train, evaluate, export, plot, sweep, run)


def build_parser() -> argparse.ArgumentParser:
    """The ``marl`` parser with every command of ``COMMANDS`` registered."""
    parser = argparse.ArgumentParser(prog="marl", description="Multi-agent RL for quadrotor swarms.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a command line; ``key=value`` words after options join the command's overrides."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse fills positionals in one go, so `marl train quickstart --steps 5 train.lr=1` leaves the
    # override over; a command that takes overrides gets it, any other left-over word is an error.
    if extra and isinstance(getattr(args, "overrides", None), list) and all("=" in w for w in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``marl`` console script; returns the exit status."""
    args = parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValidationError as err:
        print(f"marl: error: {format_validation_error(err)}", file=sys.stderr)
    except ValueError as err:
        print(f"marl: error: {' '.join(str(err).split())}", file=sys.stderr)
    return EXIT_USAGE
