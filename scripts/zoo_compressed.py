"""Does a zoo policy survive JLCM compression? Fly float32 and JLCM 3-bit on the same held-out episodes.

    python scripts/zoo_compressed.py zoo:swarm8_obstacles --densities 0.2,0.4 --episodes 32

Prints one JSON object: per density, deploy.closed_loop's rows (bytes, action errors, success per
backend) for float32, JLCM 3 and pid_avoid's success on the same maps and seeds for reference.
"""

from __future__ import annotations

import argparse
import json

import torch

from deploy.calibration import NUM_CALIB_STATES, NUM_TEST_STATES, load_actor, record_states
from deploy.closed_loop import closed_loop_report
from marl.evaluate import evaluate

BACKENDS = ("sim", "pybullet")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("policy")
    p.add_argument("--densities", default="0.2,0.4")
    p.add_argument("--episodes", type=int, default=32, help="episodes per density and backend")
    p.add_argument("--seed", type=int, default=1000, help="episodes (held out)")
    p.add_argument("--calib-seed", type=int, default=5000)
    args = p.parse_args()
    torch.set_num_threads(1)
    actor, env = load_actor(args.policy)
    calib = record_states(env, NUM_CALIB_STATES, seed=args.calib_seed)
    test = record_states(env, NUM_TEST_STATES, seed=args.calib_seed + 1)
    out = {"policy": args.policy, "seed": args.seed, "densities": {}}
    for d in (float(x) for x in args.densities.split(",")):
        cfg = env.model_copy(update={"density": d, "randomization": env.randomization.model_copy(
            update={"density_range": None})})
        rows = {r["method"]: r for r in closed_loop_report(
            actor, cfg, methods=[("float32", 32), ("jlcm", 3)], episodes=args.episodes, backends=BACKENDS,
            calib=calib, test=test, seed=args.seed)}
        rows["pid_avoid"] = {f"success_{b}": evaluate("pid_avoid", backend=b, scenario=cfg.scenario,
                                                      drones=cfg.num_drones, episodes=args.episodes, seed=args.seed,
                                                      density=d)["success_rate"] for b in BACKENDS}
        out["densities"][str(d)] = rows
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
