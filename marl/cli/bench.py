"""``marl bench sim|train|optim``: thin shells over marl.bench.sim, marl.bench.train and marl.bench.optim.

    marl bench sim --drones 8 --envs 1024 --steps 100 --density 0.2 [--json]     -> bench_sim
    marl bench sim --sweep [--json]                                                -> bench_sweep
    marl bench train [--config NAME] [--seconds S] [--threads N] [--json] [k=v ...] -> bench_train
    marl bench train --overlap [--config NAME] [--seconds S] [k=v ...] -> bench_train_overlap
    marl bench train --distributed [--workers N ...] [--envs-per-worker E] [k=v ...] -> bench_train_distributed
    marl bench optim --suite {sso,tpsgd,ppo,all} [--quick] [--json]                -> run_suite
    marl bench policies [--policies pid,pid_avoid,sbc] [--densities ...] [--json PATH] -> bench_policies
    marl bench compress RUN [--seeds 0,1,2] [--episodes 100] [--json PATH] [--markdown PATH] -> bench_compress
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from marl.bench import compress, policies
from marl.bench.optim import SUITES, run_suite
from marl.bench.plots import plot_success_curves
from marl.bench.sim import BACKENDS, bench_sim, bench_sweep, sweep_ratios
from marl.bench.train import bench_train, bench_train_distributed, bench_train_overlap
from marl.cli.common import print_json


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _cmd_sim(args: argparse.Namespace) -> int:
    if args.sweep:
        backends = BACKENDS if args.backend is None else ("sim", args.backend)
        results = bench_sweep(steps=args.steps, density=args.density, scenario=args.scenario, threads=args.threads,
                              device=args.device, backends=backends)
        table = Table(title=f"agent-steps/s, {args.threads} thread(s), {args.scenario}, density {args.density}")
        for col in ("drones", "sim", "pettingzoo", "pybullet", "sim / pettingzoo", "sim / pybullet"):
            table.add_column(col, justify="right")
        for row in sweep_ratios(results):
            ratios = ["-" if r is None else f"{r:.1f}x" for r in (row["ratio"], row["ratio_pybullet"])]
            table.add_row(str(row["drones"]), _rate(row["sim"]), _rate(row["pettingzoo"]), _rate(row["pybullet"]),
                          *ratios)
        if args.json:
            print_json(results)
            Console(stderr=True).print(table)
        else:
            Console().print(table)
        return 0
    result = bench_sim(drones=args.drones, envs=args.envs, steps=args.steps, density=args.density,
                       scenario=args.scenario, backend=args.backend or "sim", threads=args.threads, device=args.device)
    if args.json:
        print_json(result)
        return 0
    table = Table(title=f"marl bench sim ({result['backend']})", show_header=False)
    for key in ("agent_steps_per_s", "env_steps_per_s", "drones", "envs", "steps", "density", "scenario",
                "threads", "device", "seconds", "torch_version"):
        table.add_row(key, _rate(result[key]) if key.endswith("_per_s") else str(result[key]))
    Console().print(table)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    if args.distributed:
        # ``--workers 1 2 train.epochs=1``: the greedy list takes the overrides that follow it; give them back.
        overrides = [*args.overrides, *(w for w in args.workers if "=" in w)]
        if args.threads is not None:  # the learner's cores (the workers get distributed.cpus_per_worker)
            overrides.append(f"train.threads={args.threads}")
        counts = [w for w in args.workers if "=" not in w]
        if not all(w.isdigit() for w in counts):
            raise ValueError(f"--workers takes worker counts (integers >= 1), got {' '.join(counts)}")
        result = bench_train_distributed(args.config, args.seconds, [int(w) for w in counts], args.envs_per_worker,
                                         args.address, args.cpus_per_worker, overrides)
        if args.json:
            print_json(result)
            return 0
        print(f"{'workers':>8} {'envs':>6} {'agent-steps/s':>14} {'vs 1 process':>13} {'rollout steps/s':>16} "
              f"{'rollout':>8} {'update':>7}")
        for row in [{**result["single"], "workers": "1 proc", "speedup_vs_single": 1.0}, *result["distributed"]]:
            print(f"{row['workers']:>8} {row['envs']:>6} {row['agent_steps_per_s']:>14,.0f} "
                  f"{row['speedup_vs_single']:>12.2f}x {row['rollout_agent_steps_per_s']:>16,.0f} "
                  f"{row['rollout_share']:>8.0%} {row['update_share']:>7.0%}")
        return 0
    if args.overlap:
        if args.threads is not None:
            raise ValueError("--overlap times 1 core serially against 2 overlapped; leave out --threads")
        result = bench_train_overlap(args.config, args.seconds, args.overrides)
        if args.json:
            print_json(result)
            return 0
        print(f"{'':>10} {'threads':>7} {'agent-steps/s':>14} {'rollout':>8} {'update':>7}")
        for name in ("serial", "overlap"):
            row = result[name]
            print(f"{name:>10} {row['threads']:>7} {row['agent_steps_per_s']:>14,.0f} {row['rollout_share']:>8.0%} "
                  f"{row['update_share']:>7.0%}")
        print(f"{'speed-up':>10} {result['speedup']:>22.2f}x")
        return 0
    result = bench_train(args.config, args.seconds, args.threads, args.overrides)
    if args.json:
        print_json(result)
        return 0
    for key in ("agent_steps_per_s", "rollout_agent_steps_per_s", "rollout_share", "update_share", "updates",
                "envs", "drones", "threads", "policy", "parameters"):
        value = result[key]
        print(f"{key:>26}  {value:,.3f}" if isinstance(value, float) else f"{key:>26}  {value}")
    return 0


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def _cmd_optim(args: argparse.Namespace) -> int:
    for name in SUITES if args.suite == "all" else (args.suite,):
        result = run_suite(name, quick=args.quick, seeds=args.seeds, steps=args.steps, out_dir=args.out_dir)
        if name == "ppo" and args.plot:
            result["plot"] = str(plot_success_curves(result, args.plot))
        if args.json:
            print(json.dumps(result, default=str))
            continue
        print(f"[{name}]")
        for key, value in result.items():
            if not isinstance(value, dict | list):
                print(f"  {key}: {_short(value)}")
    return 0


def _seed_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes comma-separated integers (e.g. 0,1,2), got {text!r}") from None


def _add_sim(what: argparse._SubParsersAction) -> None:
    sim = what.add_parser("sim", help="simulator throughput (agent-steps/s)",
                          description="Time env steps with random actions; the process is pinned to --threads cores.")
    sim.add_argument("--drones", type=int, default=8, help="drones per environment (default 8)")
    sim.add_argument("--envs", type=int, default=1024, help="environments stepped together (default 1024)")
    sim.add_argument("--steps", type=int, default=100, help="timed control steps (default 100)")
    sim.add_argument("--density", type=float, default=0.2, help="obstacle density in [0, 1) (default 0.2)")
    sim.add_argument("--scenario", default="o_random", help="scenario name (default o_random)")
    sim.add_argument("--backend", choices=BACKENDS, default=None,
                     help="sim: the batched core; pettingzoo: --envs separate parallel_env instances in a Python "
                     "loop; pybullet: the batched core on PyBullet physics (default sim; with --sweep, all)")
    sim.add_argument("--threads", type=int, default=1, help="cores (and torch threads) to use (default 1)")
    sim.add_argument("--device", default="cpu", help="torch device of the batched core (default cpu)")
    sim.add_argument("--sweep", action="store_true",
                     help="run drones 1, 8, 32, 128 with envs = 8192 // drones (--drones/--envs ignored)")
    sim.add_argument("--json", action="store_true", help="print the results as JSON")
    sim.set_defaults(func=_cmd_sim)


def _add_train(what: argparse._SubParsersAction) -> None:
    bt = what.add_parser("train", help="end-to-end training throughput (agent-steps/s)",
                         description="Time whole PPO updates (simulation, inference and the update) of a config.")
    bt.add_argument("--config", default="quickstart", help="shipped config name or YAML path (default quickstart)")
    bt.add_argument("--seconds", type=float, default=30.0, help="timed seconds after one warm-up update (default 30)")
    bt.add_argument("--threads", type=int, help="cores to pin to (default: the config's train.threads)")
    bt.add_argument("--json", action="store_true", help="print the result as JSON")
    bt.add_argument("--overlap", action="store_true",
                    help="time serial updates on 1 core against train.overlap on 2 (collection beside the update)")
    bt.add_argument("--distributed", action="store_true",
                    help="time Ray rollout workers (marl.distributed) for each --workers count against one process")
    bt.add_argument("--workers", nargs="+", default=["1", "2"], metavar="N",
                    help="worker counts with --distributed (default 1 2)")
    bt.add_argument("--envs-per-worker", type=int, metavar="E",
                    help="with --distributed: E envs per worker (weak scaling; default: train.num_envs split)")
    bt.add_argument("--address", help="with --distributed: a Ray cluster to join (default: a local instance)")
    bt.add_argument("--cpus-per-worker", type=float, default=1.0, help="with --distributed: Ray CPUs per worker")
    bt.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    bt.set_defaults(func=_cmd_train)


def _add_optim(what: argparse._SubParsersAction) -> None:
    p = what.add_parser("optim", help="optimiser benchmarks (SSO vs SGD/Adam, tpSGD vs back-propagation, PPO)",
                        description="Run an optimiser benchmark suite and print one JSON object per suite with --json.")
    p.add_argument("--suite", choices=(*SUITES, "all"), default="all", help="which suite (default all)")
    p.add_argument("--quick", action="store_true", help="tiny budgets, for smoke tests")
    p.add_argument("--json", action="store_true", help="print one JSON object per suite")
    ppo = p.add_argument_group("ppo suite")
    ppo.add_argument("--steps", type=int, help="agent steps per run (default: the config's budget)")
    ppo.add_argument("--seeds", type=_seed_list, help="comma-separated seeds (default 0,1,2)")
    ppo.add_argument("--out-dir", help="keep the runs here; finished ones are read back, cut ones resumed")
    ppo.add_argument("--plot", help="write the success curves to this PNG")
    p.set_defaults(func=_cmd_optim)


def _add_policies(what: argparse._SubParsersAction) -> None:
    p = what.add_parser("policies", help="policies side by side on the field's obstacle task (same episodes)",
                        description="Fly each policy on the same episodes of every cell (backend x drones x obstacle "
                        "size x density) and print a Markdown table of the field's metrics.")
    policies.add_arguments(p)
    p.set_defaults(func=policies.run)


def _add_compress(what: argparse._SubParsersAction) -> None:
    p = what.add_parser("compress", help="JLCM against calibrated baselines (GPTQ, weighted k-means) on a run",
                        description="Compress a trained run's actor with every method of the fair comparison "
                        "(same calibration states and re-learning), measure action errors on other states and "
                        "the closed-loop success; print a Markdown table.")
    compress.add_arguments(p)
    p.set_defaults(func=compress.run)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``marl bench`` and its benchmarks (sim, train, optim, policies, compress) to the ``marl`` parser."""
    bench = sub.add_parser("bench", help="benchmarks")
    what = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    _add_sim(what)
    _add_train(what)
    _add_optim(what)
    _add_policies(what)
    _add_compress(what)
