"""``marl eval POLICY``: a thin shell over marl.evaluate.evaluate (a built-in controller or a trained run)."""

from __future__ import annotations

import argparse
import json

from marl.evaluate import BACKENDS, BUILTIN_POLICIES, evaluate, format_report


def _cmd_eval(args: argparse.Namespace) -> int:
    report = evaluate(
        args.policy, backend=args.backend, scenario=args.scenario, drones=args.drones, episodes=args.episodes,
        seed=args.seed, density=args.density, episode_seconds=args.episode_seconds, video=args.video, plot=args.plot,
    )
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``marl eval`` to the ``marl`` parser."""
    ev = sub.add_parser(
        "eval", help="evaluate a policy (built-in controller or trained run) and print the field's metrics",
        description="Fly POLICY for N episodes side by side and print success, collisions, deadlock and distance.",
    )
    ev.add_argument("policy", help=f"built-in controller ({', '.join(BUILTIN_POLICIES)}), zoo:NAME (marl zoo) "
                                   "or a run dir / checkpoint")
    ev.add_argument("--backend", default="sim", help=f"physics engine: {', '.join(BACKENDS)} (default sim)")
    ev.add_argument("--scenario", default=None, help="scenario name (default: the run's, or o_random)")
    ev.add_argument("--drones", type=int, default=None, help="drones per episode (default: the run's, or 8)")
    ev.add_argument("--episodes", type=int, default=20, help="episodes (default 20)")
    ev.add_argument("--density", type=float, default=None, help="obstacle density in [0, 1)")
    ev.add_argument("--episode-seconds", type=float, default=None, help="episode length in seconds")
    ev.add_argument("--seed", type=int, default=0, help="seed of the maps, starts and noise (default 0)")
    ev.add_argument("--video", default=None, help="write an .mp4 or .gif of episode 0")
    ev.add_argument("--plot", default=None, help="write a top-down .png of episode 0")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.set_defaults(func=_cmd_eval)
