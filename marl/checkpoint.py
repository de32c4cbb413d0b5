"""Checkpoints: written atomically, holding only tensors and plain containers, and describing their policy.

A checkpoint loads with ``torch.load(path, weights_only=True)``: model, optimiser and value-norm
state dicts, every RNG state (torch generators as uint8 tensors, numpy's and Python's converted to
tensors and lists), the simulator state (``SimState.to_dict``), the trainer's counters, the resolved
config as plain data, and the ``policy`` record of agents.checkpoint (policy config, observation layout,
agent count, action space, env section) so that ``agents.load_policy`` rebuilds the policy without an
environment. Writing goes to a temporary file in the same directory, is flushed to disk and then
renamed over the target (``os.replace``), so a crash mid-write never leaves a torn ``latest.pt``: the
previous one stays until the new one is complete. The format is agents.checkpoint's ``FORMAT``;
files of the previous format are refused with one line that says so.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.base import ActorCritic
from agents.checkpoint import (
    FORMAT,
    CheckpointError,
    checkpoint_path,
    policy_from_checkpoint,
    policy_record,
    read_checkpoint,
)
from marl.train_config import validate_run_config

__all__ = ["FORMAT", "CheckpointError", "checkpoint_path", "load_checkpoint", "load_policy", "rng_state",
           "save_checkpoint", "set_rng_state"]


def save_checkpoint(path: str | Path, payload: dict[str, Any], *, policy: ActorCritic) -> Path:
    """Write ``payload`` and the record of ``policy`` to ``path`` atomically (tmp file + fsync +
    os.replace); returns the path.

    ``payload["model"]`` defaults to ``policy.state_dict()``; the record's env section is
    ``payload["config"]["env"]`` (the run's resolved config), when there is one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    env = payload.get("config", {}).get("env")
    state = {"format": FORMAT, "model": policy.state_dict(), **payload, "policy": policy_record(policy, env)}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; CheckpointError says why one cannot be used."""
    return read_checkpoint(path)


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every RNG the run uses: torch's global one, the named generators, numpy's and Python's."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in generators.items()},
        "numpy": {
            "name": str(np_name), "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss),
        },
        "python": [int(py_version), [int(x) for x in py_state], py_gauss],
    }


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Inverse of rng_state."""
    torch.set_rng_state(state["torch"])
    for name, g in generators.items():
        g.set_state(state["generators"][name])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))


def load_policy(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Any]:
    """The trained policy (an ``agents.ActorCritic``, in eval mode) and env config of a run or checkpoint.

    ``path``: a run directory (its checkpoints/latest.pt) or a checkpoint file. Returns (policy, the
    ``env`` section validated: an envs.config.SwarmConfig or a PettingZooEnvConfig). The policy comes
    from its record (agents.checkpoint; no environment is built). CheckpointError says why one
    cannot be used.
    """
    file = checkpoint_path(path)
    ckpt = read_checkpoint(file)
    policy = policy_from_checkpoint(ckpt, file)
    try:
        cfg = validate_run_config(ckpt["config"], str(file))
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"checkpoint {file} holds no usable config ({err})") from None
    return policy.to(device), cfg.env
