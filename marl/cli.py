"""The ``marl`` command line. Each subcommand is a thin shell over one function:

    marl bench sim --drones 8 --envs 1024 --steps 100 --density 0.2 [--json]   -> marl.bench.bench_sim
    marl bench sim --sweep [--json]                                              -> marl.bench.bench_sweep
    marl demo [--out runs/demo] [--seed 0] [--quick] [--policy pid_avoid]        -> marl.demo.run_demo
    marl configs [NAME]                                                          -> marl.config

Bad settings (a pydantic ValidationError or a ValueError) print one line naming the field to stderr
and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from agents.controllers import CONTROLLERS
from marl.config import format_validation_error, load_config, shipped_configs

EXIT_USAGE = 2
# Subcommands that live in their own modules: each module has ``register(subparsers)``, adding its
# parser(s) with ``set_defaults(func=...)``. Importing them lazily keeps ``marl --help`` fast.
COMMAND_MODULES: tuple[str, ...] = (
    "marl.evaluate", "marl.train_cli", "marl.bench_optim", "marl.export_cmd", "marl.pipeline",
)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _cmd_bench_sim(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from marl.bench import bench_sim, bench_sweep, sweep_ratios

    if args.sweep:
        backends = ("sim", "pettingzoo", "pybullet") if args.backend is None else ("sim", args.backend)
        results = bench_sweep(
            steps=args.steps, density=args.density, scenario=args.scenario, threads=args.threads,
            device=args.device, backends=backends,
        )
        table = Table(title=f"agent-steps/s, {args.threads} thread(s), {args.scenario}, density {args.density}")
        for col in ("drones", "sim", "pettingzoo", "pybullet", "sim / pettingzoo", "sim / pybullet"):
            table.add_column(col, justify="right")
        for row in sweep_ratios(results):
            ratios = ["-" if r is None else f"{r:.1f}x" for r in (row["ratio"], row["ratio_pybullet"])]
            table.add_row(str(row["drones"]), _fmt(row["sim"]), _fmt(row["pettingzoo"]), _fmt(row["pybullet"]), *ratios)
        if args.json:
            _print_json(results)
            Console(stderr=True).print(table)
        else:
            Console().print(table)
        return 0

    result = bench_sim(
        drones=args.drones, envs=args.envs, steps=args.steps, density=args.density, scenario=args.scenario,
        backend=args.backend or "sim", threads=args.threads, device=args.device,
    )
    if args.json:
        _print_json(result)
        return 0
    table = Table(title=f"marl bench sim ({result['backend']})", show_header=False)
    for key in ("agent_steps_per_s", "env_steps_per_s", "drones", "envs", "steps", "density", "scenario",
                "threads", "device", "seconds", "torch_version"):
        value = result[key]
        table.add_row(key, _fmt(value) if key.endswith("_per_s") else str(value))
    Console().print(table)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from marl.demo import run_demo

    result = run_demo(out_dir=args.out, seed=args.seed, quick=args.quick, policy=args.policy)
    _print_json(result)
    return 0


def _cmd_configs(args: argparse.Namespace) -> int:
    if args.name:
        cfg = load_config(args.name)
        out = {k: (v.model_dump(mode="json") if hasattr(v, "model_dump") else v) for k, v in cfg.items()}
        _print_json(out)
        return 0
    configs = shipped_configs()
    if not configs:
        print("no shipped configs found", file=sys.stderr)
        return 1
    width = max(map(len, configs))
    for name, description in configs.items():
        print(f"{name:<{width}}  {description}".rstrip())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marl", description="Multi-agent RL for quadrotor swarms.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    sim = bench_sub.add_parser(
        "sim", help="simulator throughput (agent-steps/s)",
        description="Time env steps with random actions; the process is pinned to --threads cores.",
    )
    sim.add_argument("--drones", type=int, default=8, help="drones per environment (default 8)")
    sim.add_argument("--envs", type=int, default=1024, help="environments stepped together (default 1024)")
    sim.add_argument("--steps", type=int, default=100, help="timed control steps (default 100)")
    sim.add_argument("--density", type=float, default=0.2, help="obstacle density in [0, 1) (default 0.2)")
    sim.add_argument("--scenario", default="o_random", help="scenario name (default o_random)")
    sim.add_argument(
        "--backend", choices=("sim", "pettingzoo", "pybullet"), default=None,
        help="sim: the batched core; pettingzoo: --envs separate parallel_env instances in a Python loop "
        "(default sim; with --sweep, both)",
    )
    sim.add_argument("--threads", type=int, default=1, help="cores (and torch threads) to use (default 1)")
    sim.add_argument("--device", default="cpu", help="torch device of the batched core (default cpu)")
    sim.add_argument(
        "--sweep", action="store_true",
        help="run drones 1, 8, 32, 128 with envs = 8192 // drones (--drones/--envs ignored) on both backends",
    )
    sim.add_argument("--json", action="store_true", help="print the results as JSON")
    sim.set_defaults(func=_cmd_bench_sim)

    demo = sub.add_parser("demo", help="run the demo and write its outputs")
    demo.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--quick", action="store_true", help="a short run (for tests and smoke checks)")
    demo.add_argument("--policy", choices=CONTROLLERS, default="pid_avoid",
                      help="built-in controller (default pid_avoid)")
    demo.set_defaults(func=_cmd_demo)

    configs = sub.add_parser("configs", help="list the shipped configs, or validate and print one")
    configs.add_argument("name", nargs="?", help="a shipped config name or a YAML path to validate and print")
    configs.set_defaults(func=_cmd_configs)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``marl`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValidationError as err:
        print(f"marl: error: {format_validation_error(err)}", file=sys.stderr)
    except ValueError as err:
        print(f"marl: error: {' '.join(str(err).split())}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
