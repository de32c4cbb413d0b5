"""Experiment files: read by shipped name or path, merged over their ``base:``, overridden by ``key=value``.

This is the raw half of the one config pipeline; ``marl.train_config.resolve_config`` is its single
entry point (read -> merge base -> overrides -> validate into a typed ``RunConfig``), used alike by
``marl train``, ``marl configs``, ``marl sweep`` and the benchmarks. A file is a mapping of the
top-level ``SECTIONS``; ``base: <name or path>`` merges mappings key by key (this file wins).
Shipped configs live in the top-level ``configs/`` and install as the data-only package
``marl.configs``, so a shipped name resolves from a checkout, an editable or a wheel install.
"""

from __future__ import annotations

import copy
import importlib.resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

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
    "distributed": "rollout workers on a Ray cluster (DistributedConfig)",
    "pretrain": "warm start by imitating a built-in controller before RL (PretrainConfig)",
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


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.lr=3e-4`` -> (["train", "lr"], 0.0003): a dotted key and a YAML-typed value."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ValueError(f"override {text!r} must look like section.key=value (e.g. train.lr=3e-4)")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    # YAML 1.1 reads "3e-4" as a string (it wants "3.0e-4"); numbers are what anyone means here.
    if isinstance(parsed, str):
        try:
            parsed = float(parsed) if any(c in parsed.lower() for c in ".e") else int(parsed)
        except ValueError:
            pass
    return key.split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A deep copy of ``raw`` with each ``dotted.key=value`` set (intermediate mappings are created)."""
    out = copy.deepcopy(raw) if raw else {}
    for text in overrides:
        path, value = parse_override(text)
        if path[0] not in SECTIONS:
            raise ValueError(f"override {text!r}: unknown section {path[0]!r}; allowed: {', '.join(SECTIONS)}")
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ValueError(f"override {text!r}: {'.'.join(path[: i + 1])} is not a mapping")
            node = child
        node[path[-1]] = value
    return out
