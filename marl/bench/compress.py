"""``marl bench compress``: JLCM against baselines that get the same calibration data and re-learning.

    marl bench compress RUN --calib-seed 5000 --test-seed 6000 --episode-seed 7000 --seeds 0,1,2 \\
        --json runs/compress.json --markdown runs/compress.md

Every row compresses the actor of RUN (deploy.quantize.quantize_actor) with the same calibration states
(recorded from the policy's own closed-loop rollouts, ``--calib-seed``), measures the max / mean abs
action error against the float actor on test states from other rollouts (``--test-seed``) and flies
the dequantised actor ``--episodes`` episodes per backend from ``--episode-seed`` (the same episodes for
every row). Rows whose compression depends on a seed (JLCM's row grouping and batches, the re-learning's
batches) run once per ``--seeds`` entry and report mean and std; the others run once. The rows
(:data:`ROWS`) isolate what JLCM's joint codebook + mapping learning adds over GPTQ with the same
calibration, per-layer widths (at JLCM's byte budget) and bias / LayerNorm re-learning.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deploy.calibration import calibration_states, load_actor, record_states
from deploy.closed_loop import compressed_row
from deploy.jlcm import JLCMConfig, uniform_budget_bytes
from deploy.quantize import CALIBRATED, quantize_actor


@dataclass(frozen=True)
class Row:
    """One compression of the comparison: a label, quantize_actor's method / bits / settings."""

    label: str
    method: str
    bits: int
    settings: dict[str, Any] = field(default_factory=dict)
    seeded: bool = False  # the result depends on the compression seed
    jlcm_budget: bool = False  # allocate within JLCM's uniform b-bit bytes (same storage as JLCM)


ROWS: tuple[Row, ...] = (
    Row("float32", "float32", 32),
    Row("int8", "int8", 8),
    Row("int4", "int4", 4),
    Row("kmeans 3", "kmeans", 3),
    Row("kmeans-weighted 3", "kmeans_w", 3),
    Row("kmeans-weighted 3 + tune_float", "kmeans_w", 3, {"tune_float": True}, seeded=True),
    Row("gptq 2", "gptq", 2),
    Row("gptq 3", "gptq", 3),
    Row("gptq 4", "gptq", 4),
    Row("gptq 3 + tune_float", "gptq", 3, {"tune_float": True}, seeded=True),
    Row("gptq+alloc 3 (JLCM 3's bytes)", "gptq", 3, {"allocate": True}, jlcm_budget=True),
    Row("gptq+alloc+tune_float 3 (JLCM 3's bytes)", "gptq", 3, {"allocate": True, "tune_float": True},
        seeded=True, jlcm_budget=True),
    Row("gptq+alloc+tune_float 3 (int 3-bit bytes)", "gptq", 3, {"allocate": True, "tune_float": True},
        seeded=True),
    Row("jlcm 2", "jlcm", 2, seeded=True),
    Row("jlcm 3", "jlcm", 3, seeded=True),
    Row("jlcm 4", "jlcm", 4, seeded=True),
    Row("jlcm 3 mappings frozen after GPTQ", "jlcm", 3, {"map_every": 10**9}, seeded=True),
    # JLCM's format, allocation, GPTQ mappings and re-learned float32 parameters, nothing of the codebook learned:
    # what the codebook + scale learning adds over the format
    Row("jlcm 3 codebooks + mappings frozen (tune_float only)", "jlcm", 3,
        {"map_every": 10**9, "lr_codebook": 1e-12}, seeded=True),
)


def _stats(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0}


def bench_compress(
    run: str, rows: Sequence[Row] = ROWS, seeds: Sequence[int] = (0, 1, 2), episodes: int = 100,
    backends: Sequence[str] = ("sim",), calib_seed: int = 5000, test_seed: int = 6000, episode_seed: int = 7000,
    calib_states: int = 2048, test_states: int = 4000, threads: int = 1,
) -> dict[str, Any]:
    """The comparison on the policy of ``run`` (see the module docstring); returns a JSON-able dict."""
    torch.set_num_threads(threads)
    actor, cfg = load_actor(run)
    calib = calibration_states(cfg, calib_states, seed=calib_seed, policy=actor)
    test = record_states(cfg, test_states, seed=test_seed, policy=actor)
    out_rows = []
    for row in rows:
        settings = dict(row.settings)
        if row.jlcm_budget:
            budget = uniform_budget_bytes(actor, row.bits)
            n_weights = sum(m.weight.numel() for m in actor.modules() if isinstance(m, torch.nn.Linear))
            settings["budget_bits"] = (8 * budget + 0.5) / n_weights
        runs = []
        for seed in seeds if row.seeded else seeds[:1]:
            t0 = time.perf_counter()
            extra = {"seed": seed} if row.seeded else {}
            q = quantize_actor(actor, row.method, row.bits, calib=calib if row.method in CALIBRATED or
                               settings.get("tune_float") else None, **settings, **extra)
            seconds = time.perf_counter() - t0
            r = compressed_row(actor, q, cfg, episodes, backends, test, episode_seed)
            r.update(seed=seed if row.seeded else None, compress_s=seconds)
            runs.append(r)
        summary: dict[str, Any] = {"label": row.label, "method": row.method, "bits": row.bits,
                                   "settings": settings, "n": len(runs)}
        keys = ["weight_bytes", "bits_per_weight", "max_abs_action_error", "mean_abs_action_error", "compress_s",
                *(f"success_{b}" for b in backends)]
        summary.update({k: _stats([r[k] for r in runs]) for k in keys})
        if "layer_bits" in runs[0]:
            summary["layer_bits"] = runs[0]["layer_bits"]
        summary["runs"] = runs
        out_rows.append(summary)
        print(f"{row.label}: done", flush=True)
    return {
        "run": str(run), "seeds": list(seeds), "episodes": episodes, "backends": list(backends),
        "calib_seed": calib_seed, "test_seed": test_seed, "episode_seed": episode_seed,
        "calib_states": calib_states, "test_states": test_states, "threads": threads,
        "jlcm_defaults": JLCMConfig().model_dump(), "rows": out_rows,
    }


def _pm(s: dict[str, float], fmt: str, n: int) -> str:
    return format(s["mean"], fmt) if n == 1 else f"{format(s['mean'], fmt)} ± {format(s['std'], fmt)}"


def markdown_table(result: dict[str, Any]) -> str:
    """The rows as a markdown table (mean ± std over the seeds where a row is seeded)."""
    backends = result["backends"]
    lines = ["| method | weight bytes | bits/weight | max abs action error | mean abs action error | "
             + " | ".join(f"success {b}" for b in backends) + " | n |",
             "|" + "---|" * (6 + len(backends))]
    for r in result["rows"]:
        n = r["n"]
        succ = " | ".join(_pm(r[f"success_{b}"], ".3f", n) for b in backends)
        lines.append(f"| {r['label']} | {r['weight_bytes']['mean']:,.0f} | {r['bits_per_weight']['mean']:.2f} | "
                     f"{_pm(r['max_abs_action_error'], '.3f', n)} | {_pm(r['mean_abs_action_error'], '.4f', n)} | "
                     f"{succ} | {n} |")
    return "\n".join(lines) + "\n"


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers (e.g. 0,1,2), got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``marl bench compress``."""
    p.add_argument("run", help="a trained run directory or checkpoint (a swarm-simulator policy)")
    p.add_argument("--rows", default=None, help="comma-separated row labels to run (default: all of ROWS)")
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="compression seeds of the seeded rows (0,1,2)")
    p.add_argument("--episodes", type=int, default=100, help="episodes per row and backend (default 100)")
    p.add_argument("--backends", default="sim", help="comma-separated: sim, pybullet (default sim)")
    p.add_argument("--calib-seed", type=int, default=5000, help="seed of the calibration rollouts (default 5000)")
    p.add_argument("--test-seed", type=int, default=6000, help="seed of the test-state rollouts (default 6000)")
    p.add_argument("--episode-seed", type=int, default=7000, help="seed of the closed-loop episodes (default 7000)")
    p.add_argument("--calib-states", type=int, default=2048, help="calibration states (default 2048)")
    p.add_argument("--test-states", type=int, default=4000, help="test states (default 4000)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the result as JSON here")
    p.add_argument("--markdown", default=None, metavar="PATH", help="write the markdown table here")


def run(args: argparse.Namespace) -> int:
    """Run the comparison of parsed arguments, print the markdown table, write JSON / markdown if asked."""
    rows = ROWS
    if args.rows:
        wanted = [x.strip() for x in args.rows.split(",")]
        known = {r.label: r for r in ROWS}
        bad = [w for w in wanted if w not in known]
        if bad:
            raise ValueError(f"--rows: unknown {', '.join(map(repr, bad))}; allowed: {', '.join(known)}")
        rows = tuple(known[w] for w in wanted)
    result = bench_compress(args.run, rows, args.seeds, args.episodes,
                            tuple(b for b in args.backends.split(",") if b), args.calib_seed, args.test_seed,
                            args.episode_seed, args.calib_states, args.test_states, args.threads)
    table = markdown_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(table)
    print(table, end="")
    return 0
