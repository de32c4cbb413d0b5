"""The policy zoo's maintainer side: list the shipped entries and add a trained run as one.

    entries = list_zoo()                                    # agents.zoo.zoo_entry of every name
    add_to_zoo("runs/qs", "quickstart", description="...")  # weights-only checkpoint, config, evaluation

An entry's checkpoint is the run's final one (checkpoints/latest.pt) cut down to what rebuilds and
describes the policy: ``format``, ``model`` (weights), ``policy`` (the record of agents.checkpoint) and
``config`` (the resolved run config as plain data, which marl.evaluate reads for the run's environment);
optimiser, value-norm, RNG and simulator states are dropped. Without an evaluation file the entry is
evaluated on held-out seed ``EVAL_SEED`` (``EVAL_EPISODES`` episodes, batched simulator).
"""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml

import agents.zoo as zoo
from agents.checkpoint import FORMAT, checkpoint_path, policy_from_checkpoint, read_checkpoint
from marl.evaluate import evaluate

__all__ = ["EVAL_EPISODES", "EVAL_SEED", "KEEP", "add_to_zoo", "list_zoo", "weights_only"]

KEEP = ("format", "model", "policy", "config")  # what a zoo checkpoint holds
EVAL_SEED = 1000  # held out: no training or tuning run uses it
EVAL_EPISODES = 64
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def list_zoo() -> list[dict[str, Any]]:
    """Every shipped entry (agents.zoo.zoo_entry), sorted by name."""
    return [zoo.zoo_entry(name) for name in zoo.zoo_names()]


def weights_only(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A trainer checkpoint's contents cut down to ``KEEP`` (weights, policy record, resolved config)."""
    missing = [k for k in KEEP if k not in ckpt]
    if missing:
        raise ValueError(f"the checkpoint lacks {', '.join(missing)}; a zoo entry needs {', '.join(KEEP)}")
    return {k: ckpt[k] for k in KEEP}


def _eval_section(given: Any) -> dict[str, Any]:
    """eval.json's ``eval`` (per backend) from a given file's contents: an eval.json, one ``marl eval --json``
    report or a list of them."""
    if isinstance(given, dict) and isinstance(given.get("eval"), dict):
        return given["eval"]
    reports = given if isinstance(given, list) else [given]
    if not all(isinstance(r, dict) and "backend" in r for r in reports):
        raise ValueError("--eval-json must hold an eval.json (with 'eval'), a `marl eval --json` report or a list "
                         "of them")
    return {r["backend"]: r for r in reports}


def add_to_zoo(
    run: str | Path,
    name: str,
    description: str = "",
    eval_json: str | Path | None = None,
    zoo_dir: str | Path | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write zoo entry ``name`` from run directory (or checkpoint) ``run``; returns eval.json's contents.

    Writes ``<zoo_dir>/<name>/policy.pt`` (weights-only, refused when over agents.zoo.MAX_POLICY_BYTES),
    ``config.yaml`` (the run's resolved config: RUN/config.yaml, else the checkpoint's) and ``eval.json``
    (``eval_json``'s evaluation, else a fresh one on seed EVAL_SEED, EVAL_EPISODES episodes, batched
    simulator). An existing entry of that name is replaced. zoo_dir: default the shipped agents/zoo/.
    """
    if not _NAME.match(name):
        raise ValueError(f"name={name!r}: a zoo name is lower-case letters, digits and '_', starting with a letter")
    file = checkpoint_path(run)
    ckpt = read_checkpoint(file)
    slim = weights_only(ckpt)
    if ckpt["format"] != FORMAT:  # read_checkpoint refuses other formats; kept explicit for the record
        raise ValueError(f"checkpoint {file} has format {ckpt['format']}; the zoo ships format {FORMAT}")
    policy_from_checkpoint(slim, file)  # the weights fit the record before anything is written
    buf = io.BytesIO()
    torch.save(slim, buf)
    size = buf.tell()
    if size > zoo.MAX_POLICY_BYTES:
        raise ValueError(f"checkpoint {file} is {size / 1024:.0f} KB without optimiser state; the zoo takes "
                         f"deployable policies of at most {zoo.MAX_POLICY_BYTES // 1024} KB")
    given = json.loads(Path(eval_json).read_text()) if eval_json is not None else None

    entry = Path(zoo_dir if zoo_dir is not None else zoo.ZOO_DIR) / name
    entry.mkdir(parents=True, exist_ok=True)
    (entry / "policy.pt").write_bytes(buf.getvalue())
    run_dir = Path(run) if Path(run).is_dir() else None
    if run_dir is not None and (run_dir / "config.yaml").is_file():
        shutil.copyfile(run_dir / "config.yaml", entry / "config.yaml")
    else:
        (entry / "config.yaml").write_text(yaml.safe_dump(ckpt["config"], sort_keys=False))
    if given is not None:
        evals = _eval_section(given)
    else:
        report = evaluate(str(entry / "policy.pt"), backend="sim", episodes=EVAL_EPISODES, seed=EVAL_SEED)
        evals = {"sim": report}
    record: dict[str, Any] = {"name": name, "description": "",
                              "source": {"run": str(run), "checkpoint": str(file), "counters": ckpt.get("counters")}}
    if isinstance(given, dict):
        record.update({k: v for k, v in given.items() if k != "eval"})
    record.update(meta or {})
    record["name"], record["eval"] = name, evals
    if description:
        record["description"] = description
    (entry / "eval.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
