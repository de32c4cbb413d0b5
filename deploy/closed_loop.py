"""Closed-loop check of compressed policies: fly the dequantised (fake-quantised) torch actor of every method.

    from deploy.closed_loop import closed_loop_report
    rows = closed_loop_report(actor, env_cfg, methods=[("float32", 32), ("jlcm", 3)], episodes=20,
                              backends=("sim", "pybullet"), calib=states, test=test_states)

Every row: method, bits, weight bytes, bits per weight, max / mean abs action error against the float
actor on the test states, and per backend the success (and collision) rate of ``episodes`` episodes
flown with ``envs.evaluation.evaluate_swarm``, the same seed for every method, plus the change in
success against float32. The C code computes the dequantised actor to 1e-5 (deploy/verify.py), so
this measures what compression does to flight. The table of docs/deploy.md comes from

    python -m deploy.closed_loop RUN --episodes 100 --backends sim,pybullet [--methods jlcm:3,kmeans:3]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from deploy.calibration import NUM_CALIB_STATES, NUM_TEST_STATES, load_actor, record_states
from deploy.quantize import CALIBRATED, SUPPORTED_BITS, QuantizedActor, check_method_bits, parse_method, quantize_actor
from envs.evaluation import evaluate_swarm

DEFAULT_METHODS: tuple[tuple[str, int], ...] = (("float32", 32), ("int8", 8), ("int4", 4), ("kmeans", 3), ("jlcm", 3))


class ActorPolicy(nn.Module):
    """obs [E, M, D] -> clamped action means [E, M, 4] of an actor (deterministic, as deployed)."""

    def __init__(self, actor: nn.Module):
        super().__init__()
        self.actor = actor

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(obs).clamp(-1.0, 1.0)


def closed_loop_report(
    actor: nn.Module,
    cfg: Any,
    methods: Iterable[tuple[str, int | None]] = DEFAULT_METHODS,
    episodes: int = 20,
    backends: Sequence[str] = ("sim", "pybullet"),
    calib: torch.Tensor | None = None,
    test: torch.Tensor | None = None,
    seed: int = 0,
    jlcm_kwargs: dict[str, Any] | None = None,
    precomputed: dict[tuple[str, int | None], Any] | None = None,
    **eval_kwargs: Any,
) -> list[dict[str, Any]]:
    """Closed-loop success of the actor compressed with each (method, bits); see the module docstring.

    actor: a GaussianActor (``policy.actor``); cfg: the run config (with ``.env``) or a SwarmConfig.
    calib: calibration states [N, D] (jlcm, gptq and kmeans_w need them); test: states [N, D] for the action
    errors. jlcm_kwargs: settings of the jlcm rows (deploy.jlcm.JLCMConfig). precomputed: QuantizedActors by
    (method, bits) already made with these calib and jlcm_kwargs (the export's own), used instead of
    compressing again. eval_kwargs go to envs.evaluation.evaluate_swarm as overrides of the environment
    (e.g. ``episode_seconds``).
    """
    env_cfg = cfg.env if hasattr(cfg, "env") else cfg
    actor = actor.eval()
    rows: list[dict[str, Any]] = []
    float_success: dict[str, float] = {}
    for method, bits in methods:
        bits = check_method_bits(method, bits)
        if method in CALIBRATED and calib is None:
            raise ValueError(f"method {method!r} needs calibration states for the closed-loop check")
        q = (precomputed or {}).get((method, bits))
        if q is None:
            q = quantize_actor(actor, method, bits, calib=calib if method in CALIBRATED else None,
                               **((jlcm_kwargs or {}) if method == "jlcm" else {}))
        row = compressed_row(actor, q, env_cfg, episodes, backends, test, seed, **eval_kwargs)
        for backend in backends:
            if method == "float32":
                float_success[backend] = row[f"success_{backend}"]
            if backend in float_success:
                row[f"success_change_{backend}"] = row[f"success_{backend}"] - float_success[backend]
        rows.append(row)
    return rows


def compressed_row(
    actor: nn.Module, q: QuantizedActor, env_cfg: Any, episodes: int, backends: Sequence[str] = ("sim",),
    test: torch.Tensor | None = None, seed: int = 0, **eval_kwargs: Any,
) -> dict[str, Any]:
    """One row of the report for a compressed actor ``q``: storage, action errors on ``test`` against the
    float ``actor`` (clamped actions), and per backend the success (and collision) rate of ``episodes``
    episodes flown from ``seed`` with ``envs.evaluation.evaluate_swarm``."""
    actor = actor.eval()
    deq = q.dequantized(actor).eval()
    acc = q.accounting()
    row: dict[str, Any] = {"method": q.method, "bits": q.bits, "weight_bytes": acc["weight_bytes"],
                           "bits_per_weight": acc["bits_per_weight"]}
    if any(layer.bits != q.bits for layer in q.layers.values()) or q.method == "jlcm":
        row["layer_bits"] = {n: layer.bits for n, layer in q.layers.items()}
    if test is not None:
        with torch.no_grad():
            err = (deq(test).clamp(-1, 1) - actor(test).clamp(-1, 1)).abs()
        row.update(max_abs_action_error=float(err.max()), mean_abs_action_error=float(err.mean()))
    for backend in backends:
        res, _ = evaluate_swarm(ActorPolicy(deq), env_cfg, episodes, seed, backend, **eval_kwargs)
        row[f"success_{backend}"] = float(res["success_rate"])
        for key in ("collision_rate", "neighbour_collision_rate", "obstacle_collision_rate", "distance_to_goal_1s"):
            if key in res:
                row[f"{key}_{backend}"] = float(res[key])
    return row


def closed_loop_markdown(rows: list[dict[str, Any]], backends: Sequence[str] = ("sim", "pybullet")) -> str:
    """The rows as a markdown table (method, bits, storage, action errors, success per backend)."""
    head = "| method | bits | weight bytes | bits/weight | max abs action error | mean abs action error | " + \
        " | ".join(f"success {b}" for b in backends) + " |"
    lines = [head, "|" + "---|" * (6 + len(backends))]
    for r in rows:
        succ = " | ".join(f"{r.get(f'success_{b}', float('nan')):.3f}" for b in backends)
        lines.append(f"| {r['method']} | {r['bits']} | {r.get('weight_bytes', '')} | "
                     f"{r.get('bits_per_weight', float('nan')):.2f} | "
                     f"{r.get('max_abs_action_error', float('nan')):.3g} | "
                     f"{r.get('mean_abs_action_error', float('nan')):.3g} | {succ} |")
    return "\n".join(lines) + "\n"


def parse_methods(text: str) -> list[tuple[str, int]]:
    """``"float32,jlcm:3,int8"`` -> [(method, bits)], each checked and its bits filled in (the method's default
    where none is given), so they match the keys of closed_loop_report's ``precomputed``."""
    return [parse_method(item) for item in text.split(",")]


ALL_METHODS = ",".join(
    ["float32", "int8", "int4", *(f"{m}:{n}" for m in ("kmeans", "jlcm") for n in SUPPORTED_BITS[m]),
     "kmeans_w:3", "gptq:2", "gptq:3", "gptq:4"]
)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deploy.closed_loop RUN``: the closed-loop table of a trained run (markdown on stdout)."""
    ap = argparse.ArgumentParser(prog="python -m deploy.closed_loop", description=main.__doc__)
    ap.add_argument("run", help="a training run directory or checkpoint file")
    ap.add_argument("--methods", default=ALL_METHODS, help=f"method[:bits],... (default {ALL_METHODS})")
    ap.add_argument("--episodes", type=int, default=100, help="episodes per method and backend (default 100)")
    ap.add_argument("--backends", default="sim,pybullet", help="comma-separated (default sim,pybullet)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the episodes and of the recorded states")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    actor, cfg = load_actor(args.run)
    calib = record_states(cfg, NUM_CALIB_STATES, seed=1000 + args.seed, policy=actor)
    test = record_states(cfg, NUM_TEST_STATES, seed=2000 + args.seed, policy=actor)
    backends = tuple(b for b in args.backends.split(",") if b)
    rows = closed_loop_report(actor, cfg, parse_methods(args.methods), episodes=args.episodes, backends=backends,
                              calib=calib, test=test, seed=args.seed)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    print(closed_loop_markdown(rows, backends), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
