"""Self-describing policy checkpoints: a trained policy rebuilt from its file alone, with no environment.

A checkpoint (marl.checkpoint writes it) holds, besides the weights (``model``), a ``policy`` record of
plain data: the ``PolicyConfig``, the observation layout (quadspec.ObsLayout's fields), the number of
agents, the action space (``act_dim``, ``num_actions``) and the environment section the run used (plain
data, or None). ``path`` everywhere is a checkpoint file, a run directory or a shipped ``zoo:NAME``
(``checkpoint_path``). ``load_policy(path)`` reads it with ``torch.load(..., weights_only=True)`` and returns
the policy in eval mode; ``load_policy_checkpoint`` also returns the environment section. Files of the
previous format (1: the layout had to be learnt by building the run's environment) are refused with
one line that says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agents.base import ActorCritic
from agents.config import PolicyConfig
from agents.registry import make_policy_from_config
from agents.zoo import is_zoo_name, zoo_path
from quadspec import ObsLayout

FORMAT = 2  # 1: no policy record (before checkpoints described their policy)
RECORD_KEYS = ("config", "layout", "num_agents", "act_dim", "num_actions", "env")


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, corrupt, of another format, or does not fit its own record."""


@dataclass
class PolicyCheckpoint:
    """A policy loaded from a checkpoint, with the plain-data environment section its run used."""

    policy: ActorCritic
    env: dict[str, Any] | None
    path: Path


def checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file, a run directory's checkpoints/latest.pt (the final policy of the run), or the
    file of a shipped zoo policy ``zoo:NAME`` (agents.zoo; ValueError names the allowed names).

    The one place a policy reference becomes a file: every loader goes through it.
    """
    if is_zoo_name(path):
        return zoo_path(str(path))
    path = Path(path)
    return path / "checkpoints" / "latest.pt" if path.is_dir() else path


def is_checkpoint_source(policy: object) -> bool:
    """True when ``policy`` names a trained policy to load: a ``zoo:NAME`` (known or not: loading it then
    names the allowed ones) or an existing run directory / checkpoint file. Built-in controller names and
    paths that do not exist are not."""
    return is_zoo_name(policy) or (isinstance(policy, str | Path) and Path(policy).exists())


def policy_record(policy: ActorCritic, env: dict[str, Any] | None = None) -> dict[str, Any]:
    """What rebuilds ``policy`` (plain data): its config, observation layout, agent count, action space,
    and ``env``, the environment section of its run as plain data (None when there is none).

    ValueError when the policy was not built by ``agents.make_policy_from_config`` (it carries no config).
    """
    cfg = getattr(policy, "config", None)
    if not isinstance(cfg, PolicyConfig):
        raise ValueError(
            f"{type(policy).__name__} carries no PolicyConfig: build it with agents.make_policy_from_config"
        )
    lay = policy.layout
    layout = ObsLayout(lay.self_dim, lay.num_neighbors, lay.neighbour_dim, lay.obstacle_dim)
    return {
        "config": cfg.model_dump(mode="json"),
        "layout": layout.to_dict(),
        "num_agents": int(policy.num_agents),
        "act_dim": int(policy.act_dim),
        "num_actions": None if policy.num_actions is None else int(policy.num_actions),
        "env": env,
    }


def policy_from_record(record: dict[str, Any], state_dict: dict[str, torch.Tensor] | None = None) -> ActorCritic:
    """The policy a ``policy_record`` describes, with ``state_dict``'s weights when given.

    ValueError (pydantic's, for the config) names what is missing or does not fit.
    """
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise ValueError(f"the policy record lacks {', '.join(missing)}")
    cfg = PolicyConfig(**record["config"])
    if cfg.num_actions != record["num_actions"]:
        raise ValueError(f"the record's num_actions={record['num_actions']} disagrees with its config's "
                         f"{cfg.num_actions}")
    policy = make_policy_from_config(cfg, ObsLayout.from_dict(record["layout"]), int(record["num_agents"]),
                                     act_dim=int(record["act_dim"]))
    if state_dict is not None:
        policy.load_state_dict(state_dict)
    return policy


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The contents of a checkpoint of this ``FORMAT`` (``torch.load`` with ``weights_only=True``).

    ``path``: a checkpoint file or a run directory. CheckpointError says why one cannot be used; a file
    of the previous format gets one line saying so.
    """
    file = checkpoint_path(path)
    if not file.is_file():
        raise CheckpointError(f"checkpoint {file} does not exist")
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a torn or foreign file
        raise CheckpointError(f"checkpoint {file} is corrupt or unreadable ({type(err).__name__}: {err})") from None
    fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
    if fmt == 1:
        raise CheckpointError(
            f"checkpoint {file} has format 1 (written before checkpoints described their policy); this version "
            f"reads format {FORMAT} only: retrain the run, or load it with a release from before the change"
        )
    if fmt != FORMAT:
        raise CheckpointError(f"checkpoint {file} is not a trainer checkpoint of format {FORMAT}")
    return ckpt


def policy_from_checkpoint(ckpt: dict[str, Any], source: str | Path = "checkpoint") -> ActorCritic:
    """The policy of a checkpoint's contents (``read_checkpoint``), on the CPU in eval mode."""
    record = ckpt.get("policy")
    if not isinstance(record, dict) or "model" not in ckpt:
        raise CheckpointError(f"checkpoint {source} holds no policy record or no weights")
    try:
        return policy_from_record(record, ckpt["model"]).eval()
    except (RuntimeError, ValueError, TypeError) as err:
        raise CheckpointError(f"checkpoint {source}: the policy does not fit its record ({err})") from None


def load_policy_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> PolicyCheckpoint:
    """The policy (in eval mode, on ``device``) of a run directory or checkpoint file, and its env section."""
    file = checkpoint_path(path)
    ckpt = read_checkpoint(file)
    policy = policy_from_checkpoint(ckpt, file)
    return PolicyCheckpoint(policy.to(device), ckpt["policy"]["env"], file)


def load_policy(path: str | Path, device: str | torch.device = "cpu") -> ActorCritic:
    """The trained policy (in eval mode) of a run directory or checkpoint file; no environment is built.

    CheckpointError says why a file cannot be used (missing, corrupt, previous format, weights that do
    not fit the record).
    """
    return load_policy_checkpoint(path, device).policy
