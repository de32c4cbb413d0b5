"""Does a zoo policy survive JLCM compression? Fly float32 and JLCM 3-bit on the same held-out episodes.

    python scripts/zoo_compressed.py zoo:swarm8_obstacles --densities 0.2,0.4 --episodes 32
    python scripts/zoo_compressed.py zoo:swarm_dense_close --densities 0.4,0.6 --episodes 1024 --seed 3000 \
        --backends sim --methods float32,int8,jlcm:3,jlcm:4 --calib rollout --joint
    python scripts/zoo_compressed.py zoo:swarm_dense_close --densities 0.4,0.6 --episodes 1024 --seed 3000 \
        --backends sim --methods float32,int8,jlcm:3 --calib rollout --calib-rounds 4
    python scripts/zoo_compressed.py zoo:swarm_dense_close --densities 0.4,0.6 --episodes 1024 --seed 3000 \
        --backends sim --methods float32,jlcm:3 --calib rollout --calib-rounds 4 --candidates 4

Prints one JSON object: per density, deploy.closed_loop's rows (bytes, action errors, success and collision
rate per backend) for each method and pid_avoid's on the same maps and seeds for reference.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from deploy.calibration import (
    NUM_CALIB_STATES,
    NUM_TEST_STATES,
    calibration_states,
    load_actor,
    record_states,
)
from deploy.closed_loop import closed_loop_report, parse_methods
from deploy.quantize import CALIBRATED, parse_network_methods
from deploy.selection import choose_compression
from marl.evaluate import eval_config, evaluate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("policy")
    p.add_argument("--densities", default="0.2,0.4")
    p.add_argument("--episodes", type=int, default=32, help="episodes per density and backend")
    p.add_argument("--seed", default="1000", help="seed of the episodes (held out); several, comma-separated, fly "
                   "the same compressions on each (JSON: seeds -> densities)")
    p.add_argument("--calib-seed", type=int, default=5000)
    p.add_argument("--calib", choices=("pid", "rollout"), default="pid",
                   help="states flown by the PID controller, or by the policy itself (marl export's default)")
    p.add_argument("--calib-rounds", type=int, default=0,
                   help="rounds of closed-loop calibration (the compressed actor's own flights added) per method")
    p.add_argument("--candidates", type=int, default=1,
                   help="compressions per method from independent calibration draws; the one that fails the fewest "
                   "drones on selection maps (the evaluation's densities, another seed) is kept (deploy.selection)")
    p.add_argument("--joint", action="store_true", help="compress a gated actor as one, not network by network")
    p.add_argument("--backends", default="sim,pybullet")
    p.add_argument("--methods", default="float32,jlcm:3", help="method[:bits], comma-separated")
    p.add_argument("--save", default=None, metavar="DIR",
                   help="also write each compressed method's dequantised actor (state dict, METHOD_BITS.pt) to DIR")
    p.add_argument("--network-method", action="append", default=None, metavar="NETWORK=METHOD[:BITS]",
                   help="a method of its own for one network of the calibrated methods' compressions, e.g. "
                   "near=int8 (repeatable)")
    p.add_argument("--obstacle-size", type=float, default=0.6, help="column diameter (m) of the episodes")
    args = p.parse_args()
    torch.set_num_threads(1)
    backends = tuple(args.backends.split(","))
    methods = parse_methods(args.methods)
    own = parse_network_methods(args.network_method)
    actor, env = load_actor(args.policy)
    flyer = actor if args.calib == "rollout" else None
    gather = record_states if args.joint else calibration_states  # the one-actor rows: a plain sample, as before
    calib = gather(env, NUM_CALIB_STATES, seed=args.calib_seed, policy=flyer)
    test = record_states(env, NUM_TEST_STATES, seed=args.calib_seed + 1, policy=flyer)
    densities = [float(x) for x in args.densities.split(",")]
    cfgs = {d: eval_config(args.policy, drones=env.num_drones, density=d, obstacle_size=args.obstacle_size)
            for d in densities}
    if args.candidates > 1 and args.joint:
        raise ValueError("--candidates draws each candidate's states as calibration_states does; not with --joint")
    precomputed, selection = {}, {}
    for method, bits in methods:
        if method in CALIBRATED:
            t0 = time.perf_counter()
            precomputed[(method, bits)], _, selection[f"{method}:{bits}"] = choose_compression(
                actor, env, method, bits, calib, args.candidates, args.calib_rounds, calib_seed=args.calib_seed,
                round_seed=args.calib_seed + 100, flyer=flyer, select_cfgs=list(cfgs.values()),
                per_network=not args.joint, network_methods=own)
            print(f"{method}:{bits} compressed in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            if args.save:
                Path(args.save).mkdir(parents=True, exist_ok=True)
                torch.save(precomputed[(method, bits)].dequantized(actor).state_dict(),
                           Path(args.save) / f"{method}_{bits}.pt")
    seeds = [int(s) for s in args.seed.split(",")]
    out = {"policy": args.policy, "seed": seeds[0] if len(seeds) == 1 else seeds, "calib": args.calib,
           "calib_rounds": args.calib_rounds, "network_methods": own or {},
           "per_network": hasattr(actor, "gates") and not args.joint, "candidates": args.candidates,
           "selection": selection}
    names = [m for m, _ in methods]
    by_seed: dict[str, dict] = {}
    for seed in seeds:
        by_seed[str(seed)] = {}
        for d, cfg in cfgs.items():
            rows = {r["method"] if names.count(r["method"]) == 1 else f"{r['method']}:{r['bits']}": r
                    for r in closed_loop_report(actor, cfg, methods=methods, episodes=args.episodes, backends=backends,
                                                calib=calib, test=test, seed=seed, precomputed=precomputed)}
            rows["pid_avoid"] = {}
            for b in backends:
                ref = evaluate("pid_avoid", backend=b, episodes=args.episodes, seed=seed, env_config=cfg)
                rows["pid_avoid"].update({f"success_{b}": ref["success_rate"],
                                          f"collision_rate_{b}": ref["collision_rate"]})
            by_seed[str(seed)][str(d)] = rows
    if len(seeds) == 1:
        out["densities"] = by_seed[str(seeds[0])]
    else:
        out["seeds"] = by_seed
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
