"""``marl zoo``: list the shipped pretrained policies; ``marl zoo add`` (maintainers) ships a trained run.

    marl zoo [--json]
    marl zoo add RUN_DIR --name NAME [--description TEXT] [--eval-json FILE]

A thin shell over marl.zoo (agents.zoo reads the entries). Every listed name is accepted as ``zoo:NAME``
wherever a policy is (marl eval, marl bench policies, marl export, marl demo --policy).
"""

from __future__ import annotations

import argparse
from typing import Any

from marl.cli.common import print_json


def _figure(report: dict[str, Any] | None, key: str, fmt: str) -> str:
    value = None if report is None else report.get(key)
    return "-" if value is None else format(value, fmt)


def format_zoo(entries: list[dict[str, Any]]) -> str:
    """The entries as a table: name, size, shipped figures per backend, description."""
    if not entries:
        return "the zoo is empty"
    head = f"{'policy':<24} {'KB':>6}  {'backend':<9} {'episodes':>8} {'success':>7} {'dist 1 s':>8} " \
           f"{'coll':>5} {'t goal':>6}  description"
    lines = [head]
    for e in entries:
        backends = list(e["eval"]) or [None]
        for i, backend in enumerate(backends):
            r = e["eval"].get(backend) if backend else None
            first = i == 0
            lines.append(
                f"{e['policy'] if first else '':<24} {format(e['size_kb'], '.1f') if first else '':>6}  "
                f"{backend or '-':<9} {_figure(r, 'episodes', 'd'):>8} {_figure(r, 'success_rate', '.3f'):>7} "
                f"{_figure(r, 'distance_to_goal_1s', '.3f'):>8} {_figure(r, 'collision_rate', '.3f'):>5} "
                f"{_figure(r, 'time_to_goal', '.2f'):>6}  {e['description'] if first else ''}"
            )
    return "\n".join(lines)


def _cmd_zoo(args: argparse.Namespace) -> int:
    from marl.zoo import list_zoo  # loads torch and the evaluator: only when the command runs

    entries = list_zoo()
    if args.json:
        print_json(entries)
    else:
        print(format_zoo(entries))
    return 0


def _cmd_add(args: argparse.Namespace) -> int:
    from marl.zoo import add_to_zoo

    record = add_to_zoo(args.run, args.name, description=args.description, eval_json=args.eval_json,
                        zoo_dir=args.zoo_dir)
    print_json(record)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``marl zoo`` (and ``marl zoo add``) to the ``marl`` parser."""
    p = sub.add_parser("zoo", help="list the shipped pretrained policies (zoo:NAME); add a run to the zoo",
                       description="List the pretrained policies shipped in the package, with their size and the "
                       "evaluation they were shipped with. Each is accepted as zoo:NAME wherever a policy is.")
    p.add_argument("--json", action="store_true", help="print the entries as JSON")
    p.set_defaults(func=_cmd_zoo)
    zsub = p.add_subparsers(dest="zoo_command", metavar="{add}")
    add = zsub.add_parser("add", help="(maintainers) ship a trained run as a zoo entry",
                          description="Write agents/zoo/NAME/: the weights-only checkpoint of RUN_DIR's "
                          "checkpoints/latest.pt (at most 200 KB), its resolved config.yaml and eval.json (the "
                          "given file, else a fresh evaluation on held-out seed 1000, 64 episodes, batched "
                          "simulator). An existing entry of that name is replaced.")
    add.add_argument("run", metavar="RUN_DIR", help="a training run directory (or checkpoint file)")
    add.add_argument("--name", required=True, help="the entry's name (zoo:NAME): lower-case letters, digits, _")
    add.add_argument("--description", default="", help="one line shown by marl zoo")
    add.add_argument("--eval-json", default=None,
                     help="the evaluation to ship: an eval.json, a `marl eval --json` report or a list of them")
    add.add_argument("--zoo-dir", default=None, help="write the entry here instead of the package's agents/zoo/")
    add.set_defaults(func=_cmd_add)
