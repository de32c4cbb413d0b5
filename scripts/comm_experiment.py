"""The CommFormer comparison: sparsity 0.4 vs full communication vs none vs the attention swarm policy.

    python scripts/comm_experiment.py predator_prey --seeds 0 1 2      # trains 4 variants x 3 seeds
    python scripts/comm_experiment.py quad_leader --seeds 0 1 2 --table-only

Each run is ``marl train <task>_<variant> seed=S`` into runs/comm/<task>/<variant>_s<S> with the
config's own budget (the same for every variant); its end-of-run evaluation (eval.json, the config's
eval_episodes) gives success and return. Prints one JSON object (per variant: mean and std over
seeds of success, return and communication rate, and wall time) and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

VARIANTS = ("commformer", "commformer_full", "commformer_none", "attention")
LABELS = {"commformer": "CommFormer S=0.4", "commformer_full": "CommFormer S=1 (full)",
          "commformer_none": "CommFormer, no communication", "attention": "attention swarm policy"}


def run_dir(root: Path, task: str, variant: str, seed: int) -> Path:
    return root / task / f"{variant}_s{seed}"


def train_all(task: str, seeds: list[int], root: Path) -> None:
    for variant in VARIANTS:
        for seed in seeds:
            out = run_dir(root, task, variant, seed)
            if (out / "eval.json").is_file():
                continue
            cmd = [sys.executable, "-m", "marl", "train", f"{task}_{variant}", f"seed={seed}", "--run-dir", str(out),
                   "--overwrite", "--no-progress", "logging.tensorboard=false"]
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def summarise(task: str, seeds: list[int], root: Path) -> dict:
    out = {"task": task, "seeds": seeds, "variants": {}}
    for variant in VARIANTS:
        rows = []
        for seed in seeds:
            d = run_dir(root, task, variant, seed)
            if not (d / "eval.json").is_file():
                continue
            ev = json.loads((d / "eval.json").read_text())
            last = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()][-1]
            rows.append({"success": ev.get("success_rate"), "return": ev.get("episode_return"),
                         "comm": ev.get("communication_rate", 0.0), "wall_s": last["wall_s"],
                         "agent_steps": last["agent_steps"]})
        if not rows:
            continue

        def stat(key: str, rows: list[dict] = rows) -> tuple[float, float]:
            xs = [r[key] for r in rows if r[key] is not None]
            return (statistics.mean(xs), statistics.pstdev(xs)) if xs else (float("nan"), float("nan"))

        out["variants"][variant] = {k: stat(k) for k in ("success", "return", "comm", "wall_s")}
        out["variants"][variant]["runs"] = len(rows)
        out["variants"][variant]["agent_steps"] = rows[0]["agent_steps"]
    return out


def table(summary: dict) -> str:
    lines = ["| policy | success | return | communication rate | runs | wall s per run |", "|---|---|---|---|---|---|"]
    for variant, s in summary["variants"].items():
        lines.append(f"| {LABELS[variant]} | {s['success'][0]:.3f} ± {s['success'][1]:.3f} | "
                     f"{s['return'][0]:.3f} ± {s['return'][1]:.3f} | {s['comm'][0]:.2f} | {s['runs']} | "
                     f"{s['wall_s'][0]:.0f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task", choices=("predator_prey", "quad_leader"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--root", default="runs/comm")
    p.add_argument("--table-only", action="store_true", help="summarise finished runs, train nothing")
    args = p.parse_args()
    root = Path(args.root)
    if not args.table_only:
        train_all(args.task, args.seeds, root)
    summary = summarise(args.task, args.seeds, root)
    print(json.dumps(summary, indent=2))
    print(table(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
