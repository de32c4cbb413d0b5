"""The optimiser suites of ``marl bench optim --suite {sso,tpsgd,ppo}``: one JSON-ready dict per suite.

    from marl.bench.optim import run_suite
    run_suite("ppo", seeds=(0, 1, 2), out_dir="runs/bench_ppo")   # PPO on quickstart per optimiser

- sso: SSO vs SGD and Adam to a target loss (``marl.bench.studies.logreg``, then behaviour cloning
  of the PID teacher, ``marl.bench.studies.bc``).
- tpsgd: tpSGD vs back-propagation on digits and in policy distillation (``marl.bench.studies.digits``
  and ``.distill``).
- ppo: PPO on ``quickstart`` with adam, lion, sophiah and sso at one budget and largest step (here).

What is measured, the settings and the figures: docs/design/benchmarks.md.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from marl.bench.studies.digits import bench_tpsgd
from marl.bench.studies.logreg import bench_sso
from marl.logger import read_metrics
from marl.train_config import resolve_config
from marl.trainer import train

SUITES = ("sso", "tpsgd", "ppo")


PPO_OPTIMIZERS = ("adam", "lion", "sophiah", "sso")
# The same largest step per coordinate for all: Adam's and Lion's step is about lr (1e-3 in quickstart);
# SophiaH's is lr * clip(m / h, +-p) with p = 0.01, so at lr 1e-3 it could move a weight by 1e-5 at most
# and did not learn (eval return -48.5 at 3 M steps); lr 0.1 gives it the same 1e-3.
PPO_OVERRIDES: dict[str, tuple[str, ...]] = {"sophiah": ("train.lr=0.1",)}


def bench_ppo(
    optimizers: tuple[str, ...] = PPO_OPTIMIZERS,
    seeds: tuple[int, ...] = (0, 1, 2),
    steps: int | None = None,
    config: str = "quickstart",
    overrides: tuple[str, ...] = (),
    out_dir: str | None = None,
) -> dict[str, Any]:
    """PPO on ``config`` with each optimiser (``optim.name``; sso = functional mirror ascent on the actor),
    the same budget (``steps`` agent steps, default the config's) and seeds; returns per optimiser the
    success curve of each seed (agent steps, success rate of the recent training episodes), the final
    evaluation success and return (mean and std over seeds) and the wall time.
    """
    root = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="bench_ppo_"))
    out: dict[str, Any] = {"suite": "ppo", "config": config, "seeds": list(seeds), "optimizers": {}}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in optimizers}
    for seed in seeds:  # seed-major: a cut-short benchmark has every optimiser on the first seeds
        for name in optimizers:
            extra = [f"optim.name={name}", f"seed={seed}", "logging.tensorboard=false", "logging.progress=false",
                     *PPO_OVERRIDES.get(name, ()), *overrides, *([f"train.total_agent_steps={steps}"] if steps else [])]
            cfg = resolve_config(config, extra)
            run = root / f"{name}_s{seed}"
            # A finished run of an earlier invocation is read back, a cut one resumed (same numbers).
            if not (run / "eval.json").is_file():
                train(cfg, run, resume=(run / "checkpoints" / "latest.pt").is_file(), progress=False)
            records = read_metrics(run / "metrics.jsonl")
            ev = json.loads((run / "eval.json").read_text())
            results[name].append({"curve": [(r["agent_steps"], r.get("success_rate")) for r in records],
                                  "success": ev["success_rate"], "return": ev["episode_return"],
                                  "wall_s": records[-1]["wall_s"], "agent_steps": records[-1]["agent_steps"]})
    for name, rows in results.items():
        finals, returns = [r["success"] for r in rows], [r["return"] for r in rows]
        out["agent_steps"] = rows[0]["agent_steps"]
        out["optimizers"][name] = {
            "eval_success_mean": float(np.mean(finals)), "eval_success_std": float(np.std(finals)),
            "eval_return_mean": float(np.mean(returns)), "eval_return_std": float(np.std(returns)),
            "eval_success_by_seed": finals, "overrides": list(PPO_OVERRIDES.get(name, ())),
            "wall_s_mean": float(np.mean([r["wall_s"] for r in rows])),
            "success_curves": [r["curve"] for r in rows],
        }
    out["eval_success"] = {k: v["eval_success_mean"] for k, v in out["optimizers"].items()}
    return out


def run_suite(
    name: str,
    quick: bool = False,
    seeds: tuple[int, ...] | None = None,
    steps: int | None = None,
    out_dir: str | None = None,
) -> dict[str, Any]:
    """Run one suite by name; ``quick`` shrinks budgets for smoke tests. ``seeds``, ``steps`` (agent steps)
    and ``out_dir`` (runs kept there, finished ones read back) apply to the ppo suite."""
    if name == "sso":
        if not quick:
            return bench_sso()
        bc = {"seeds": 1, "budget": 20, "sgd_lrs": (0.1,), "adam_lrs": (0.01,), "num_envs": 2, "test_envs": 1,
              "rollout_steps": 100, "ref_steps": 50, "closed_loop_envs": 0, "dagger_iterations": 1,
              "dagger_fit_steps": 5}
        return bench_sso(seeds=1, budget=60, sgd_lrs=(0.1, 1.0), adam_lrs=(0.03,), bc=bc)
    if name == "tpsgd":
        distill = {"seeds": 1, "epochs": 2, "lrs": (0.05,), "num_envs": 2, "test_envs": 1, "rollout_steps": 100,
                   "closed_loop_envs": 0}
        return bench_tpsgd(epochs=2, seeds=1, distill=distill) if quick else bench_tpsgd()
    if name == "ppo":
        if quick:
            tiny = ("train.num_envs=8", "train.rollout_steps=8", "train.minibatches=2", "train.epochs=1",
                    "train.eval_episodes=2")
            return bench_ppo(seeds=seeds or (0,), steps=steps or 8 * 8 * 4 * 2, overrides=tiny, out_dir=out_dir)
        return bench_ppo(seeds=seeds or (0, 1, 2), steps=steps, out_dir=out_dir)
    raise ValueError(f"--suite must be one of {', '.join(SUITES)}, got {name!r}")
