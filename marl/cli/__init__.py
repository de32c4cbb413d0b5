"""The ``marl`` command line: one module per command, each a thin shell over one library function.

    marl bench sim|train|optim   marl configs [NAME]   marl demo   marl train CONFIG [k=v ...]
    marl eval POLICY   marl export RUN   marl plot RUN   marl sweep CONFIG ... --seeds ...   marl run
    marl zoo [add RUN --name NAME]   (POLICY / RUN may be a shipped zoo:NAME)

Every module named in ``COMMANDS`` has ``register(sub)`` (adds its parser with ``set_defaults(func=...)``);
only the module of the command being run is imported, so ``marl configs`` does not load the simulator,
PyBullet or scikit-learn, and a command whose dependencies are broken does not break the others.
Commands that take ``key=value`` overrides declare an ``overrides`` positional; overrides given
after options are collected here (``parse_known_args``), so they may stand anywhere on the line.
Bad settings (a ValueError or a pydantic ValidationError) print one line naming the field to stderr
and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from marl.config import format_validation_error

EXIT_USAGE = 2
# command -> (its module under marl.cli, the one-line help `marl --help` shows without importing it)
COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("bench", "benchmarks: sim, train, optim, policies"),
    "configs": ("configs", "list the shipped configs, or validate and print one as training resolves it"),
    "demo": ("demo", "run the demo and write its outputs"),
    "train": ("train", "train a config (or resume a run)"),
    "eval": ("eval", "evaluate a policy (built-in controller or trained run) and print the field's metrics"),
    "export": ("export", "compress a policy and export it as C (and ONNX) for a flight controller"),
    "plot": ("plot", "learning curves (PNG) of a run"),
    "sweep": ("sweep", "train and evaluate configs x seeds, one table of mean +- std"),
    "run": ("run", "the main job: demo, train, evaluate (sim + PyBullet), export, benchmark"),
    "zoo": ("zoo", "list the shipped pretrained policies (zoo:NAME); add a run to the zoo"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``marl`` parser: ``command``'s full parser (every command's when None), the others by name only."""
    parser = argparse.ArgumentParser(prog="marl", description="Multi-agent RL for quadrotor swarms.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        if command is None or name == command:
            importlib.import_module(f"marl.cli.{module}").register(sub)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a command line; ``key=value`` words after options join the command's overrides."""
    words = list(sys.argv[1:] if argv is None else argv)
    command = next((w for w in words if not w.startswith("-")), None)
    parser = build_parser(command) if command in COMMANDS else build_parser("")
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
