"""Experiment configuration: YAML files of sections, loaded by path or by shipped name and validated.

An experiment file is a mapping of top-level sections (see ``SECTIONS``). The ``env`` section is
validated through ``envs.config.SwarmConfig`` (unknown keys and bad values fail naming the field);
the other sections are passed through as plain mappings until their config classes exist. Unknown
top-level sections are rejected with the allowed names.

A file may start from another with ``base: <name or path>``: mappings are merged key by key (this
file wins), anything else is replaced; comparison variants of an experiment are a few lines each.

Shipped configs live in the repository's top-level ``configs/`` directory and are installed as the
data-only package ``marl.configs``, so ``load_config("o_random_8")`` works from a checkout, an
editable install and a regular (wheel) install alike.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from envs.config import SwarmConfig

# Allowed top-level keys of an experiment file, with what each holds.
SECTIONS: dict[str, str] = {
    "name": "experiment name",
    "description": "one line about the experiment",
    "base": "a config (shipped name or path) this file extends: its sections are merged under this file's",
    "seed": "base random seed",
    "env": "simulator settings (envs.config.SwarmConfig)",
    "agent": "policy and value networks",
    "optim": "optimiser and schedules",
    "train": "rollout and update loop",
    "eval": "evaluation episodes and metrics",
    "deploy": "compression and export",
    "bench": "benchmark settings",
    "logging": "logging and checkpoints",
    "distributed": "rollout workers on a Ray cluster (marl.distributed.DistributedConfig)",
}
_SUFFIXES = (".yaml", ".yml")
_REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def check_sections(raw: Any, source: str) -> None:
    """Raise ValueError unless ``raw`` is a mapping whose keys are all known top-level sections."""
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: top level must be a mapping of sections, got {type(raw).__name__}")
    unknown = [k for k in raw if k not in SECTIONS]
    if unknown:
        raise ValueError(
            f"{source}: unknown top-level section {', '.join(map(repr, unknown))}; allowed: {', '.join(SECTIONS)}"
        )


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line naming each offending field: ``env.density: Input should be less than 1 (got 1.5)``."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in (prefix, *e.get("loc", ())) if x != "")
        msg = str(e.get("msg", "invalid value")).removeprefix("Value error, ")
        if e.get("type") == "extra_forbidden":
            msg = "unknown field"
        elif "input" in e and e.get("type") not in ("missing",) and not isinstance(e["input"], dict):
            msg = f"{msg} (got {e['input']!r})"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def _shipped_dir():
    """The directory (a Traversable) holding the shipped YAML configs."""
    try:
        d = importlib.resources.files("marl.configs")
        if any(p.name.endswith(_SUFFIXES) for p in d.iterdir()):
            return d
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        pass
    return _REPO_CONFIGS  # a plain checkout that is not installed


def shipped_configs() -> dict[str, str]:
    """Names of the shipped configs mapped to their description (sorted by name)."""
    out = {}
    d = _shipped_dir()
    if not d.is_dir():
        return out
    for p in sorted(d.iterdir(), key=lambda p: p.name):
        if p.name.endswith(_SUFFIXES):
            try:
                raw = yaml.safe_load(p.read_text()) or {}
            except yaml.YAMLError:
                raw = {}
            out[p.name.rsplit(".", 1)[0]] = str(raw.get("description", "")) if isinstance(raw, dict) else ""
    return out


def _read(name_or_path: str | Path) -> tuple[str, str]:
    """(source label, YAML text) for a file path or a shipped config name."""
    path = Path(name_or_path)
    if path.is_file():
        return str(path), path.read_text()
    name = str(name_or_path)
    if "/" not in name and "\\" not in name:
        d = _shipped_dir()
        for cand in (name, *(name + s for s in _SUFFIXES)):
            f = d / cand
            if f.is_file():
                return f"shipped config {name!r}", f.read_text()
    shipped = ", ".join(shipped_configs()) or "none"
    raise ValueError(f"config {name!r} not found: not a file and not a shipped config (shipped: {shipped})")


def validate_config(raw: Any, source: str = "config") -> dict[str, Any]:
    """Validate a mapping of sections; returns it with ``env`` as a SwarmConfig (or PettingZooEnvConfig)."""
    if raw is None:
        raw = {}
    check_sections(raw, source)
    out: dict[str, Any] = dict(raw)
    env = raw.get("env") or {}
    from marl.pettingzoo_env import is_pettingzoo_env, pettingzoo_env_config

    if not isinstance(env, dict) and not is_pettingzoo_env(env):
        raise ValueError(f"{source}: section 'env' must be a mapping, got {type(env).__name__}")
    try:
        out["env"] = pettingzoo_env_config(env) if is_pettingzoo_env(env) else SwarmConfig(**env)
    except ValidationError as err:
        raise ValueError(f"{source}: {format_validation_error(err, 'env')}") from None
    for key in ("agent", "optim", "train", "eval", "deploy", "bench", "logging"):
        if key in out and out[key] is not None and not isinstance(out[key], dict):
            raise ValueError(f"{source}: section {key!r} must be a mapping, got {type(out[key]).__name__}")
    if "seed" in out and not isinstance(out["seed"], int):
        raise ValueError(f"{source}: seed must be an integer, got {out['seed']!r}")
    return out


def load_config(name_or_path: str | Path) -> dict[str, Any]:
    """Load and validate an experiment: a YAML file path, or the name of a shipped config.

    Returns the sections as a dict; ``env`` is a validated ``SwarmConfig`` (defaults when absent).
    Raises ValueError naming the offending section or field.
    """
    source, text = _read(name_or_path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{source}: invalid YAML: {' '.join(str(err).split())}") from None
    return validate_config(raw, source)


def load_raw_config(name_or_path: str | Path, _depth: int = 0) -> tuple[str, dict[str, Any]]:
    """(source label, the unvalidated mapping) of a YAML path or shipped config, for overrides before validation."""
    source, text = _read(name_or_path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{source}: invalid YAML: {' '.join(str(err).split())}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: top level must be a mapping of sections, got {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise ValueError(f"{source}: base must be a config name or path, got {base!r}")
        if _depth >= 8:
            raise ValueError(f"{source}: base configs nest more than 8 deep (a cycle?)")
        path = Path(base)
        if not path.is_absolute() and (Path(source).parent / base).is_file():
            base = str(Path(source).parent / base)  # relative to the file that names it
        raw = merge_configs(load_raw_config(base, _depth + 1)[1], raw)
    return source, raw


def merge_configs(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``: nested mappings merged key by key, other values replaced."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_configs(out[key], value)
        else:
            out[key] = value
    return out
