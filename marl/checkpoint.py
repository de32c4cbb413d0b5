"""Checkpoints: written atomically, holding only tensors and plain containers.

A checkpoint loads with ``torch.load(path, weights_only=True)``: model, optimiser and value-norm
state dicts, every RNG state (torch generators as uint8 tensors, numpy's and Python's converted to
tensors and lists), the simulator state (``SimState.to_dict``), the trainer's counters and the
resolved config as plain data. Writing goes to a temporary file in the same directory, is flushed to
disk and then renamed over the target (``os.replace``), so a crash mid-write never leaves a torn
``latest.pt``: the previous one stays until the new one is complete.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, corrupt, or does not fit the run it should resume."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (tmp file + fsync + os.replace); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; CheckpointError says why one cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a torn or foreign file
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a trainer checkpoint of format {FORMAT}")
    return ckpt


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


def checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file, or a run directory's checkpoints/latest.pt (the final policy of the run)."""
    path = Path(path)
    return path / "checkpoints" / "latest.pt" if path.is_dir() else path


def load_policy(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Any]:
    """The trained policy (an ``agents.ActorCritic``, in eval mode) and env config of a run or checkpoint.

    ``path``: a run directory (its checkpoints/latest.pt) or a checkpoint file. Returns (policy, the
    ``env`` section: an envs.config.SwarmConfig or a PettingZooEnvConfig). CheckpointError says why
    one cannot be used.
    """
    from marl.train_config import validate_run_config
    from marl.trainer import build_policy, make_vec_env

    file = checkpoint_path(path)
    ckpt = load_checkpoint(file)
    try:
        cfg = validate_run_config(ckpt["config"], str(file))
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"checkpoint {file} holds no usable config ({err})") from None
    env = make_vec_env(cfg.env, 1)  # one env tells the layout and the action space
    policy = build_policy(cfg, env.spec, env.num_agents, env.num_actions, env.act_dim)
    try:
        policy.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {file}: the model does not fit its config ({err})") from None
    return policy.to(device).eval(), cfg.env
