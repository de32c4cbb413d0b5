"""Calibration and test states: observations recorded from rollouts of the batched simulator.

    states = record_states(cfg, num_states=2048, seed=0)                 # flown by the built-in PID controller
    states = record_states(cfg, num_states=2048, seed=0, policy=actor)   # or by the policy's mean actions

The states are what the deployed policy will see (flight near goals, neighbours, SDF patches), which
matters for JLCM (it matches the actor's outputs on them) and for the fidelity figures (max abs action
error over many recorded states). Different seeds give disjoint rollouts: the reports measure
fidelity on states recorded with a seed other than the calibration one. ``load_actor`` gives the
actor they are recorded for (a trained run's, from its checkpoint alone, or an untrained preset).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agents import load_policy_checkpoint, make_policy
from agents.checkpoint import is_checkpoint_source
from agents.pid import PIDConfig, PIDController
from deploy.formats import QuantizedActor
from deploy.quantize import quantize_actor
from envs.config import SwarmConfig, make_config
from envs.swarm import QuadSwarmVecEnv
from quadspec import obs_layout

PRESETS = ("deployable",)  # untrained policies an export can start from (no run needed)
NUM_CALIB_STATES = 2048
NUM_TEST_STATES = 1000
GATED_ROUNDS = 4  # closed-loop calibration rounds of a gated actor's export (docs/deploy.md)
GATED_STATES = 2048  # states of each gated network recorded for its calibration (record_states(gated=...))


def default_env_config(num_neighbors: int = 2, scenario: str = "o_random") -> SwarmConfig:
    """The environment used for an untrained policy preset: 8 drones, K neighbours, obstacles."""
    return make_config(num_drones=max(8, num_neighbors + 1), num_neighbors=num_neighbors, scenario=scenario)


def load_actor(run: str | Path | None, preset: str | None = None, seed: int = 0) -> tuple[nn.Module, SwarmConfig]:
    """(actor in eval mode, env config) of a run directory / checkpoint / ``zoo:NAME``, or of an untrained
    policy preset.

    A run's policy and environment come from its self-describing checkpoint (agents.load_policy_checkpoint:
    no trainer code, no environment built); a run of a PettingZoo task is refused (deploy/ flies the
    swarm simulator).
    """
    if run is not None:
        if not is_checkpoint_source(run):
            raise ValueError(f"run {run!r} does not exist (give a run directory, checkpoint or zoo:NAME, or "
                             "--policy deployable)")
        loaded = load_policy_checkpoint(run)
        if loaded.env is None or "target" in loaded.env:
            raise ValueError(f"run {run!r} was not trained on the swarm simulator; deploy/ exports quadrotor policies")
        return loaded.policy.actor.eval(), make_config(**loaded.env)
    if preset not in PRESETS:
        raise ValueError(f"policy preset {preset!r} is unknown; allowed: {', '.join(PRESETS)}")
    cfg = default_env_config(2)
    torch.manual_seed(seed)
    policy = make_policy("attention", obs_layout(cfg.num_neighbors), cfg.num_drones, preset=preset)
    return policy.actor.eval(), cfg


def record_states(
    cfg: SwarmConfig,
    num_states: int = 2048,
    seed: int = 0,
    policy: nn.Module | None = None,
    num_envs: int = 16,
    steps: int = 300,
    every: int = 2,
    gated: int = 0,
) -> torch.Tensor:
    """``num_states`` observations [N, D] sampled from ``num_envs`` episodes of ``steps`` control steps.

    ``policy``: an actor (obs [..., D] -> action means [..., 4]); None flies the built-in PID controller.
    Every ``every``-th step is kept; a random subset (from ``seed``) of the pool is returned. ``gated``: for a
    policy with gated networks (agents.close_range), up to that many more states of each gated network
    (from the rest of the pool) follow the sample, for deploy.quantize.quantize_networks.
    """
    env = QuadSwarmVecEnv(cfg, num_envs=num_envs)
    obs = env.reset(seed=seed)
    pid = None if policy is not None else PIDController(PIDConfig.from_dynamics(cfg.dynamics))
    pool = []
    with torch.no_grad():
        for t in range(steps):
            if t % every == 0:
                pool.append(obs.reshape(-1, obs.shape[-1]).clone())
            act = pid(obs) if pid is not None else policy(obs).clamp(-1.0, 1.0)
            obs, _, _, _, info = env.step(act)
            if pid is not None and "episode_env_ids" in info:
                pid.reset(info["episode_env_ids"])
    states = torch.cat(pool)
    if num_states > states.shape[0]:
        raise ValueError(f"num_states={num_states} exceeds the {states.shape[0]} states recorded; raise steps")
    order = torch.randperm(states.shape[0], generator=torch.Generator().manual_seed(seed))
    out = [states[order[:num_states]]]
    if gated > 0 and hasattr(policy, "gates"):
        rest = states[order[num_states:]]
        with torch.no_grad():
            out += [rest[mask][:gated] for mask in policy.gates(rest).values()]
    return torch.cat(out).contiguous()


def load_states(path: str | Path, obs_dim: int) -> torch.Tensor:
    """States [N, obs_dim] from a .npy or .pt file; ValueError names the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"calibration file {path} does not exist")
    data = np.load(path) if path.suffix == ".npy" else torch.load(path, map_location="cpu", weights_only=True)
    states = torch.as_tensor(np.asarray(data), dtype=torch.float32)
    if states.dim() < 2 or states.shape[-1] != obs_dim or states.numel() == 0:
        raise ValueError(f"calibration file {path} holds shape {list(states.shape)}; expected [N, {obs_dim}]")
    return states.reshape(-1, obs_dim)


def calibration_states(cfg: SwarmConfig, num_states: int = NUM_CALIB_STATES, seed: int = 0,
                       policy: nn.Module | None = None) -> torch.Tensor:
    """Calibration states for compressing ``policy``: :func:`record_states`' sample of its flights (of the PID
    controller's with None) and, for a policy with gated networks, ``GATED_STATES`` more of each gated
    network's from 64 swarms (deploy.quantize.quantize_networks compresses each on its gate's states; a
    plain sample holds ~100 of them)."""
    gated = hasattr(policy, "gates")
    return record_states(cfg, num_states, seed=seed, policy=policy, num_envs=64 if gated else 16,
                         gated=GATED_STATES if gated else 0)


def calibrate_in_closed_loop(
    actor: nn.Module,
    cfg: SwarmConfig,
    method: str,
    bits: int,
    calib: torch.Tensor,
    rounds: int,
    seed: int = 0,
    **settings: Any,
) -> tuple[QuantizedActor, torch.Tensor]:
    """(compressed actor, calibration states) after ``rounds`` rounds of DAgger for compression: compress
    ``actor`` on ``calib``, fly the compressed actor, add the states it visits and compress again (from the
    float actor, whose actions stay the targets).

    Why: the states the float policy flies are not the ones its compressed copy gets into; its errors take
    it closer to columns and neighbours, where the next errors cost most. Each round records as many states
    as ``calib`` began with (seed ``seed + r``; a gated actor's rounds add 2,048 states of each gated
    network from 64 swarms). ``settings`` go to deploy.quantize.quantize_actor.
    """
    if rounds < 0:
        raise ValueError(f"rounds={rounds} must be >= 0 (rounds of closed-loop calibration)")
    q = quantize_actor(actor, method, bits, calib=calib, **settings)
    n = min(calib.shape[0], NUM_CALIB_STATES)
    for r in range(1, rounds + 1):
        calib = torch.cat([calib, calibration_states(cfg, n, seed=seed + r, policy=q.dequantized(actor).eval())])
        q = quantize_actor(actor, method, bits, calib=calib, **settings)
    return q, calib
