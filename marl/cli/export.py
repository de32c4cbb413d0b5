"""``marl export``: a thin shell over deploy.export.export_policy (compress, generate C, verify, report)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from deploy.export import export_policy
from deploy.quantize import METHODS, parse_network_methods
from deploy.selection import SELECT_EPISODES
from envs.config import SwarmConfig
from marl.evaluate import eval_config


def _select_cfgs(args: argparse.Namespace) -> list[SwarmConfig] | None:
    """The environments the --candidates fly: each --select-densities value on its own, at
    --select-obstacle-size if given (as marl bench policies flies a cell); None: the policy's own."""
    if args.select_densities is None:
        if args.select_obstacle_size is not None:
            raise ValueError("--select-obstacle-size needs --select-densities (the densities the candidates fly)")
        return None
    size = {} if args.select_obstacle_size is None else {"obstacle_size": args.select_obstacle_size}
    return [eval_config(args.run or "pid", density=float(d), **size) for d in args.select_densities.split(",") if d]


def _cmd_export(args: argparse.Namespace) -> int:
    if args.run is None and args.policy is None:
        raise ValueError("give a RUN directory / checkpoint or --policy deployable")
    report = export_policy(
        out=args.out, method=args.method, bits=args.bits, target=args.target, run=args.run,
        preset=args.policy, seed=args.seed, onnx=args.onnx, calib=args.calib, calib_rounds=args.calib_rounds,
        candidates=args.candidates, select_episodes=args.select_episodes,
        select_cfgs=_select_cfgs(args), network_methods=parse_network_methods(args.network_method),
        closed_loop=args.closed_loop,
        closed_loop_backends=tuple(b for b in args.closed_loop_backends.split(",") if b),
    )
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k not in ("layers", "quantizer")}, indent=2))
    else:
        print((Path(args.out) / "report.md").read_text())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``marl export`` to the ``marl`` parser."""
    ex = sub.add_parser(
        "export", help="compress a policy and export it as C (and ONNX) for a flight controller",
        description="Compress RUN's actor (or an untrained --policy preset), write policy.c / policy.h / "
        "controller_policy.c / report.json / report.md to --out, verify the C against torch on the host "
        "(sanitizers) and, for --target cortex-m4, under QEMU.",
    )
    ex.add_argument("run", nargs="?", default=None,
                    help="a training run directory, checkpoint file or shipped zoo:NAME (marl zoo)")
    ex.add_argument("--method", choices=METHODS, default="jlcm", help="compression method (default jlcm)")
    ex.add_argument("--bits", type=int, default=None,
                    help="bits per weight index (jlcm / gptq / kmeans / kmeans_w: 2, 3, 4, 8; default 3)")
    ex.add_argument("--network-method", action="append", default=None, metavar="NETWORK=METHOD[:BITS]",
                    help="a method of its own for one network of a close-range policy (far, near, column), e.g. "
                    "near=int8; repeatable (default: every network with --method)")
    ex.add_argument("--target", default="host", help="host or cortex-m4 (default host)")
    ex.add_argument("--out", default="runs/export", help="output directory (default runs/export)")
    ex.add_argument("--onnx", action="store_true", help="also write policy.onnx and check it with onnxruntime")
    ex.add_argument("--policy", default=None, help="untrained policy preset when no RUN is given: deployable")
    ex.add_argument("--seed", type=int, default=0, help="seed of the preset's weights and of the states")
    ex.add_argument("--calib", default="rollout",
                    help="calibration states: rollout (the policy's own flights), pid (the PID controller's), "
                    "a .npy/.pt file, or none")
    ex.add_argument("--calib-rounds", type=int, default=None, metavar="N",
                    help="rounds of closed-loop calibration: the compressed actor's own flights are added to the "
                    "calibration states and it is compressed again (default: 4 for a policy with close-range "
                    "networks under jlcm / gptq / kmeans_w, else 0)")
    ex.add_argument("--candidates", type=int, default=1, metavar="K",
                    help="compress K times from independent calibration draws and keep the one that fails the "
                    "fewest drones on selection maps (default 1: no selection)")
    ex.add_argument("--select-densities", default=None, metavar="D,...",
                    help="densities the --candidates fly, each on its own with the policy's other settings "
                    "(default: the policy's own environment)")
    ex.add_argument("--select-obstacle-size", type=float, default=None, metavar="M",
                    help="column diameter (m) of the selection flights (default: the policy's own, or its range)")
    ex.add_argument("--select-episodes", type=int, default=SELECT_EPISODES, metavar="N",
                    help=f"episodes per selection density (default {SELECT_EPISODES})")
    ex.add_argument("--closed-loop", type=int, default=0, metavar="N",
                    help="also fly the dequantised actor of every method N episodes (report.json closed_loop)")
    ex.add_argument("--closed-loop-backends", default="sim,pybullet",
                    help="backends of --closed-loop, comma-separated (default sim,pybullet)")
    ex.add_argument("--json", action="store_true", help="print report.json instead of a summary")
    ex.set_defaults(func=_cmd_export)
