"""Choosing among compressions of one policy by how they fly.

A closed-loop compression (deploy.calibration.calibrate_in_closed_loop) depends on its calibration draw:
the same policy, method and bits from two draws failed 55 and 38 drones of 16,384 on the same held-out maps
(docs/deploy.md, "The close-range policy, compressed"). Which draw flies better cannot be read off the
calibration loss, but it can be flown: :func:`choose_compression` makes ``candidates`` compressions from
independent calibration draws, flies each on the same selection maps (a seed of their own, apart from the
calibration and evaluation seeds) and keeps the one that fails the fewest drones. It is model selection on a
validation set, with flights as the score; the held-out figures stay on other maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from deploy.calibration import NUM_CALIB_STATES, calibrate_in_closed_loop, calibration_states
from deploy.closed_loop import ActorPolicy
from deploy.quantize import QuantizedActor
from envs.config import SwarmConfig
from envs.evaluation import evaluate_swarm

SELECT_SEED = 9000  # the selection maps' seed: apart from calibration (1000+) and the evaluation seeds
SELECT_EPISODES = 1024  # per selection config: 8,192 drone-episodes of 8 drones, ~40 s of sim on one core
CANDIDATE_STRIDE = 10_000  # candidate k's calibration and round seeds are candidate 0's + k * stride


def failed_drones(policy: nn.Module, cfg: SwarmConfig, episodes: int, seed: int) -> int:
    """Drones that did not succeed in ``episodes`` episodes of ``cfg`` (batched simulator, from ``seed``)
    flown by the actor ``policy`` (its actions clamped, as deployed)."""
    res, _ = evaluate_swarm(ActorPolicy(policy), cfg, episodes, seed, "sim")
    return round((1.0 - float(res["success_rate"])) * episodes * cfg.num_drones)


def choose_compression(
    actor: nn.Module,
    cfg: SwarmConfig,
    method: str,
    bits: int,
    calib: torch.Tensor,
    candidates: int,
    rounds: int,
    calib_seed: int,
    round_seed: int,
    flyer: nn.Module | None,
    episodes: int = SELECT_EPISODES,
    select_cfgs: Sequence[SwarmConfig] | None = None,
    select_seed: int = SELECT_SEED,
    **settings: Any,
) -> tuple[QuantizedActor, torch.Tensor, dict[str, Any]]:
    """(chosen compression, its calibration states, the selection log) among ``candidates`` closed-loop
    compressions of ``actor`` (``rounds`` rounds each, deploy.calibration.calibrate_in_closed_loop).

    Candidate 0 starts from ``calib`` (drawn with ``calib_seed``) and flies its rounds from ``round_seed``, as
    without selection; candidate k draws its states from ``flyer``'s flights (None: the PID controller's) with
    both seeds shifted by ``k * CANDIDATE_STRIDE``. Each candidate flies ``episodes`` episodes of each of
    ``select_cfgs`` (None: ``cfg``; e.g. the evaluation's densities) from ``select_seed``; the fewest failed
    drones in all win, the earlier candidate on a tie. One candidate is returned without flying (and an empty
    log). ``settings`` go to deploy.quantize.quantize_actor.
    """
    if candidates < 1:
        raise ValueError(f"candidates={candidates} must be >= 1 (compressions to choose among)")
    n = min(calib.shape[0], NUM_CALIB_STATES)
    cfgs = list(select_cfgs) if select_cfgs is not None else [cfg]
    best: tuple[QuantizedActor, torch.Tensor] | None = None
    chosen = 0
    log: list[dict[str, Any]] = []
    for k in range(candidates):
        shift = k * CANDIDATE_STRIDE
        states = calib if k == 0 else calibration_states(cfg, n, seed=calib_seed + shift, policy=flyer)
        q, states = calibrate_in_closed_loop(actor, cfg, method, bits, states, rounds, seed=round_seed + shift,
                                             **settings)
        if candidates == 1:
            return q, states, {}
        failed = [failed_drones(q.dequantized(actor).eval(), c, episodes, select_seed) for c in cfgs]
        log.append({"candidate": k, "calib_seed": calib_seed + shift, "failed_drones": failed, "total": sum(failed)})
        if best is None or sum(failed) < log[chosen]["total"]:  # a tie keeps the earlier
            best, chosen = (q, states), k
    assert best is not None
    return best[0], best[1], {
        "candidates": log, "chosen": chosen, "episodes": episodes, "seed": select_seed,
        "flown": [_conditions(c) for c in cfgs]}


def _conditions(cfg: SwarmConfig) -> dict[str, Any]:
    rnd = cfg.randomization
    return {"density": rnd.density_range or cfg.density, "obstacle_size": rnd.size_range or cfg.obstacle_size}
