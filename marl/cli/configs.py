"""``marl configs [NAME]``: list the shipped configs, or print the resolved config that ``marl train NAME`` runs.

The printed config is ``marl.train_config.resolve_config(NAME, overrides).to_dict()``, the same
call ``marl train`` makes, so base merging, overrides and defaults are exactly those of training.
"""

from __future__ import annotations

import argparse
import sys

from marl.cli.common import print_json
from marl.config import shipped_configs
from marl.train_config import resolve_config


def _cmd_configs(args: argparse.Namespace) -> int:
    if args.name:
        print_json(resolve_config(args.name, args.overrides).to_dict())
        return 0
    if args.overrides:
        raise ValueError("key=value overrides need a config NAME")
    configs = shipped_configs()
    if not configs:
        print("no shipped configs found", file=sys.stderr)
        return 1
    width = max(map(len, configs))
    for name, description in configs.items():
        print(f"{name:<{width}}  {description}".rstrip())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``marl configs`` to the ``marl`` parser."""
    p = sub.add_parser("configs", help="list the shipped configs, or validate and print one as training resolves it")
    p.add_argument("name", nargs="?", help="a shipped config name or a YAML path to validate and print")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, as for marl train")
    p.set_defaults(func=_cmd_configs)
