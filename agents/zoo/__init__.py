"""The policy zoo: pretrained deployable policies shipped in the package, accepted as ``zoo:NAME``.

    marl zoo                          # list the entries with their shipped evaluation
    marl eval zoo:quickstart          # any command that takes a policy takes a zoo name

One directory per entry, ``agents/zoo/<name>/``: ``policy.pt`` (a weights-only checkpoint of format 2,
agents.checkpoint: model weights, the policy record and the resolved config, no optimiser, simulator or
RNG state), ``config.yaml`` (the fully resolved training config) and ``eval.json`` (the description and
the evaluation the policy was shipped with). ``zoo:NAME`` is resolved to the checkpoint file by
agents.checkpoint.checkpoint_path, the one place policies are resolved; ``marl zoo add`` writes entries.
This module reads plain files only (no torch), so listing the zoo stays cheap.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ZOO_PREFIX = "zoo:"
ZOO_DIR = Path(__file__).resolve().parent
FILES = ("policy.pt", "config.yaml", "eval.json")  # what every entry holds
MAX_POLICY_BYTES = 200 * 1024  # a deployable policy is tens of KB; anything larger is not one

__all__ = ["FILES", "MAX_POLICY_BYTES", "ZOO_DIR", "ZOO_PREFIX", "is_zoo_name", "zoo_entry", "zoo_names",
           "zoo_path"]


def zoo_names() -> list[str]:
    """The names of the shipped entries (directories holding a policy.pt), sorted."""
    return sorted(p.name for p in ZOO_DIR.iterdir() if (p / "policy.pt").is_file())


def is_zoo_name(policy: object) -> bool:
    """True when ``policy`` is a string of the form ``zoo:NAME`` (whether or not NAME exists)."""
    return isinstance(policy, str) and policy.startswith(ZOO_PREFIX)


def _entry_dir(name: str) -> Path:
    name = name.removeprefix(ZOO_PREFIX)
    names = zoo_names()
    if name not in names:
        raise ValueError(f"zoo policy {name!r} does not exist; allowed: "
                         f"{', '.join(ZOO_PREFIX + n for n in names) or '(the zoo is empty)'}")
    return ZOO_DIR / name


def zoo_path(name: str) -> Path:
    """The checkpoint file of entry ``name`` (with or without the ``zoo:`` prefix); ValueError names the
    allowed names."""
    return _entry_dir(name) / "policy.pt"


def zoo_entry(name: str) -> dict[str, Any]:
    """One entry as plain data: name, description, checkpoint path, size in bytes and KB, and its shipped
    evaluation (eval.json's ``eval``, per backend)."""
    entry = _entry_dir(name)
    meta = json.loads((entry / "eval.json").read_text())
    size = (entry / "policy.pt").stat().st_size
    return {
        "name": entry.name,
        "policy": ZOO_PREFIX + entry.name,
        "description": meta.get("description", ""),
        "path": str(entry / "policy.pt"),
        "size_bytes": size,
        "size_kb": round(size / 1024, 1),
        "eval": meta.get("eval", {}),
        "meta": {k: v for k, v in meta.items() if k not in ("description", "eval")},
    }
