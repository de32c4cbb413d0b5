"""Which network's compression costs flights? Fly a compressed close-range policy with named networks put back.

    python scripts/zoo_compressed.py zoo:swarm_dense_gaps_mix ... --save runs/jmix     # writes runs/jmix/jlcm_3.pt
    python scripts/network_ablation.py zoo:swarm_dense_gaps_mix runs/jmix/jlcm_3.pt near=float32
    python scripts/network_ablation.py zoo:swarm_dense_gaps_mix runs/jmix/jlcm_3.pt near=int8,column=int8

The compressed actor (a dequantised state dict) flies with each named network's parameters replaced: by the
float32 policy's (``float32``) or by its plain per-channel int8 weights with float32 biases and LayerNorms
(``int8``, which needs no calibration); the other networks keep their compressed values. ``none`` flies the
compressed actor as it is. Prints one JSON object: failed drones and collision / deadlock rates per seed and
density (``--backend``: the batched simulator or PyBullet; the policy's own drone count).
"""

from __future__ import annotations

import argparse
import json

import torch

from deploy.calibration import load_actor
from deploy.closed_loop import ActorPolicy
from deploy.quantize import linear_layers, quantize_uniform
from envs.evaluation import evaluate_swarm
from marl.evaluate import eval_config

RESTORES = ("float32", "int8")


def restored_state(actor: torch.nn.Module, compressed: dict[str, torch.Tensor], spec: str) -> dict[str, torch.Tensor]:
    """``compressed`` with the networks named in ``spec`` (``near=float32,column=int8`` or ``none``) put back."""
    names = {"far", *actor.heads()}
    wanted: dict[str, str] = {}
    for item in ([] if spec == "none" else spec.split(",")):
        name, _, how = item.partition("=")
        if name not in names or how not in RESTORES:
            raise ValueError(f"{item!r}: expected NETWORK=HOW with NETWORK in {sorted(names)} and HOW in {RESTORES}")
        wanted[name] = how
    original = actor.state_dict()
    int8 = {f"{n}.weight": quantize_uniform(n, m, 8).weight for n, m in linear_layers(actor).items()}

    def network(key: str) -> str:
        head = key.split(".")[0]
        return head if head in names else "far"

    out = {}
    for key, value in compressed.items():
        how = wanted.get(network(key))
        out[key] = original[key] if how == "float32" else int8.get(key, original[key]) if how == "int8" else value
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("policy", help="the float32 policy (zoo:NAME or a run directory)")
    p.add_argument("compressed", help="its compressed actor's state dict (scripts/zoo_compressed.py --save)")
    p.add_argument("restore", help="NETWORK=float32|int8, comma-separated, or none")
    p.add_argument("--densities", default="0.4,0.6")
    p.add_argument("--seed", default="3000,4000", help="seeds of the episodes, comma-separated")
    p.add_argument("--episodes", type=int, default=1024)
    p.add_argument("--obstacle-size", type=float, default=0.6)
    p.add_argument("--backend", default="sim", help="sim (the batched simulator) or pybullet")
    args = p.parse_args()
    torch.set_num_threads(1)
    actor, env = load_actor(args.policy)
    if not hasattr(actor, "networks"):
        raise ValueError(f"{args.policy} has no close-range networks to restore one by one")
    actor.load_state_dict(restored_state(actor, torch.load(args.compressed, weights_only=True), args.restore))
    actor.eval()
    rows = []
    for seed in (int(s) for s in args.seed.split(",")):
        for density in (float(d) for d in args.densities.split(",")):
            cfg = eval_config(args.policy, drones=env.num_drones, density=density, obstacle_size=args.obstacle_size)
            res, _ = evaluate_swarm(ActorPolicy(actor), cfg, args.episodes, seed, args.backend)
            rows.append({
                "seed": seed, "density": density,
                "failed": round((1.0 - float(res["success_rate"])) * args.episodes * cfg.num_drones),
                **{k: res[k] for k in ("neighbour_collision_rate", "obstacle_collision_rate", "deadlock_rate",
                                       "distance_to_goal_1s")}})
    print(json.dumps({"policy": args.policy, "compressed": args.compressed, "restore": args.restore,
                      "backend": args.backend, "episodes": args.episodes, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
